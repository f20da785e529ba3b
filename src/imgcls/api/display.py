"""How the API's objects show themselves in a notebook: small HTML built from their own files (curves as an
inline PNG, tables from DataFrames, JPEG thumbnails), never a second copy of a number."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

THUMB = 96  # px, the longer side of a thumbnail


def png(fig) -> str:
    """A matplotlib figure as an ``<img>`` tag (closed after)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return f"<img src='data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}'/>"


def curves(metrics, title: str = "") -> str:
    """Accuracy (or mAP) and loss per epoch, training against validation, from metrics.csv's rows."""
    if metrics is None or len(metrics) == 0:
        return "<p>no completed epoch yet</p>"
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    score = "val_mAP" if "val_mAP" in metrics else "val_acc"
    train_score = "train_f1" if score == "val_mAP" else "train_acc"
    fig, (a, b) = plt.subplots(1, 2, figsize=(8, 2.6))
    a.plot(metrics["epoch"], metrics[train_score], label=train_score, marker=".")
    a.plot(metrics["epoch"], metrics[score], label=score, marker=".")
    b.plot(metrics["epoch"], metrics["train_loss"], label="train_loss", marker=".")
    b.plot(metrics["epoch"], metrics["val_loss"], label="val_loss", marker=".")
    for ax in (a, b):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return png(fig)


def table(df, *, max_rows: int = 20) -> str:
    return df.to_html(max_rows=max_rows, index=False, float_format=lambda v: f"{v:.4f}", border=0)


def facts(pairs: list[tuple[str, object]]) -> str:
    """A two-column table of (name, value)."""
    rows = "".join(
        f"<tr><th style='text-align:left'>{html.escape(k)}</th><td>{html.escape(_fmt(v))}</td></tr>" for k, v in pairs
    )
    return f"<table>{rows}</table>"


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def thumbnail(image) -> str:
    """A small JPEG of a PIL image as a data URI."""
    small = image.copy()
    small.thumbnail((THUMB, THUMB))
    buf = io.BytesIO()
    small.convert("RGB").save(buf, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def link(path: Path, text: str) -> str:
    return f"<a href='{html.escape(Path(path).as_posix())}' target='_blank'>{html.escape(text)}</a>"
