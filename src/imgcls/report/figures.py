"""Matplotlib figures of a comparison, each saved as a PNG file."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from imgcls.core.files import save_figure  # noqa: E402
from imgcls.report.collect import Variant  # noqa: E402

COLOURS = plt.rcParams["axes.prop_cycle"].by_key()["color"]


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return path


def curves(variants: list[Variant], path: Path) -> Path:
    """Per variant: train/val accuracy and train/val loss per epoch."""
    fig, axes = plt.subplots(len(variants), 2, figsize=(10, 2.6 * len(variants)), squeeze=False)
    for row, v in enumerate(variants):
        epochs = [r["epoch"] for r in v.epochs]
        acc, loss = axes[row]
        train_key, name = (
            ("train_f1", "mAP (validation), micro-F1 (train)") if v.multilabel else ("train_acc", "accuracy")
        )
        acc.plot(epochs, [r[train_key] for r in v.epochs], "o-", label="train", ms=3)
        acc.plot(epochs, [r[v.metric] for r in v.epochs], "o-", label="validation", ms=3)
        acc.set_title(f"{v.name}: {name}", fontsize=10)
        acc.set_ylim(0, 1)
        loss.plot(epochs, [r["train_loss"] for r in v.epochs], "o-", label="train", ms=3)
        loss.plot(epochs, [r["val_loss"] for r in v.epochs], "o-", label="validation", ms=3)
        loss.set_title(f"{v.name}: loss", fontsize=10)
        for ax in (acc, loss):
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    return _save(fig, path)


def val_overlay(variants: list[Variant], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, v in enumerate(variants):
        ax.plot(
            [r["epoch"] for r in v.epochs],
            [r[v.metric] for r in v.epochs],
            "o-",
            ms=3,
            label=v.name,
            color=COLOURS[i % len(COLOURS)],
        )
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    name = "mAP" if any(v.multilabel for v in variants) else "accuracy"
    ax.set_ylabel(f"validation {name}")
    ax.set_title(f"Validation {name}, all variants", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def tradeoff(variants: list[Variant], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, v in enumerate(variants):
        ax.scatter(v.summary["train_seconds"], v.score, s=60, color=COLOURS[i % len(COLOURS)], label=v.name)
    ax.set_xscale("log")
    ax.set_xlabel("training time (s, log scale)")
    name = "mAP" if any(v.multilabel for v in variants) else "accuracy"
    ax.set_ylabel(f"held-out {name}" if all(v.heldout_acc is not None for v in variants) else name)
    ax.set_title(f"{name[0].upper() + name[1:]} versus training time", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return _save(fig, path)


def per_class(v: Variant, path: Path) -> Path:
    """Per-class accuracy (recall) with the number of images of each class; per-label average precision
    for a multi-label variant."""
    rows, key, what = (
        (v.eval["per_label"], "ap", "per-label AP")
        if v.multilabel
        else (v.eval["per_class"], "recall", "per-class accuracy")
    )
    title = v.name
    rows = [r for r in rows if r[key] is not None]  # labels without a positive image have no AP
    if len(rows) > 50:  # bounded figure: the 25 worst and 25 best classes
        ordered = sorted(rows, key=lambda r: r[key])
        rows = ordered[:25] + ordered[-25:]
        title = f"{v.name}: 25 worst and 25 best of {len(ordered)} classes"
    fig, ax = plt.subplots(figsize=(7, 0.32 * len(rows) + 1.2))
    names = [r["class"] for r in rows]
    values = [r[key] for r in rows]
    ax.barh(range(len(rows)), values, color="#4c72b0")
    for i, r in enumerate(rows):
        ax.text(
            min(r[key], 0.98),
            i,
            f" {r[key]:.2f} (n={r['support']})",
            va="center",
            fontsize=7,
            ha="right" if r[key] > 0.5 else "left",
            color="white" if r[key] > 0.5 else "black",
        )
    ax.set_yticks(range(len(rows)), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"{what} ({v.eval_split})")
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def confusion(v: Variant, path: Path) -> Path:
    import torch

    title = f"{v.name} - {v.eval_split}: top-1 {v.eval['top1']:.3f}"
    confusion_png(torch.tensor(v.confusion), v.classes, path, title)
    return path


MAX_ANNOTATED_CLASSES = 50  # above this a confusion figure drops per-cell text and tick labels


def confusion_png(matrix, classes: list[str], path: Path, title: str) -> None:
    """Row-normalised confusion matrix. The figure's size is bounded whatever the class count: above
    ``MAX_ANNOTATED_CLASSES`` it is a plain heat map beside a list of the most confused pairs."""
    import torch

    n = len(classes)
    row_sums = matrix.sum(dim=1, keepdim=True).clamp(min=1)
    normalised = (matrix / row_sums).numpy()
    if n <= MAX_ANNOTATED_CLASSES:
        side = min(14.0, max(5.0, 0.28 * n + 3))
        fig, ax = plt.subplots(figsize=(side, side * 0.9))
        ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
        font = 7 if n <= 20 else 5
        for i in range(n):
            for j in range(n):
                v = int(matrix[i, j])
                if v:
                    colour = "white" if normalised[i, j] > 0.5 else "black"
                    ax.text(j, i, str(v), ha="center", va="center", fontsize=font, color=colour)
        ax.set_xticks(range(n), classes, rotation=45, ha="right", fontsize=8 if n <= 20 else 5)
        ax.set_yticks(range(n), classes, fontsize=8 if n <= 20 else 5)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
    else:
        fig, (ax, side) = plt.subplots(1, 2, figsize=(14, 8), gridspec_kw={"width_ratios": [3, 2]})
        ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
        ax.set_xlabel(f"predicted (class index, {n} classes)")
        ax.set_ylabel("true (class index)")
        off = matrix.clone()
        off.fill_diagonal_(0)
        count = int((off > 0).sum())
        values, flat = (
            off.flatten().topk(min(25, count)) if count else (torch.zeros(0), torch.zeros(0, dtype=torch.long))
        )
        lines = [
            f"{int(v):>5}  {classes[int(k) // n][:28]} -> {classes[int(k) % n][:28]}" for v, k in zip(values, flat)
        ]
        side.axis("off")
        side.text(
            0,
            1,
            "most confused (true -> predicted)\n\n" + "\n".join(lines),
            va="top",
            family="monospace",
            fontsize=8,
            transform=side.transAxes,
        )
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
