"""Pictures of a model's answers: the held-out images it got most confidently wrong, and per class a few
it got right. ``evaluate`` writes ``errors.png`` + ``errors.csv``; the report embeds small JPEG
thumbnails (base64, so report.html stays one self-contained file of a few MB at most)."""

from __future__ import annotations

import base64
import html
import io
import logging
from pathlib import Path

from imgcls.core.files import atomic_write
from imgcls.core.tables import read_table, write_csv

log = logging.getLogger(__name__)
THUMB = 112  # px, longest side


def confident_errors(rows: list[dict], count: int = 16) -> list[dict]:
    wrong = [r for r in rows if r["true"] != r["predicted"]]
    return sorted(wrong, key=lambda r: (-r["probability"], r["path"]))[:count]


def correct_examples(rows: list[dict], per_class: int = 3) -> dict[str, list[dict]]:
    """Per true class, its most confident correct answers."""
    out: dict[str, list[dict]] = {}
    for r in sorted((r for r in rows if r["true"] == r["predicted"]), key=lambda r: (-r["probability"], r["path"])):
        picked = out.setdefault(r["true"], [])
        if len(picked) < per_class:
            picked.append(r)
    return out


def thumbnail(path: str, size: int = THUMB):
    """A small RGB image of ``path``, or None when it no longer decodes (the gallery then skips it)."""
    from imgcls.core.errors import BadImageError
    from imgcls.data.decode import load_rgb

    try:
        image = load_rgb(path, draft_size=size)
    except BadImageError as exc:
        log.warning("gallery: skipping %s", exc)
        return None
    image.thumbnail((size, size))
    return image


def thumbnail_jpeg_b64(path: str, size: int = THUMB) -> str | None:
    image = thumbnail(path, size)
    if image is None:
        return None
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=80)
    return base64.b64encode(buf.getvalue()).decode()


def write_error_gallery(folder: Path, rows: list[dict], *, count: int = 16, title: str = "") -> list[dict]:
    """``errors.csv`` (every listed error) and ``errors.png`` (a grid of them) in ``folder``."""
    errors = confident_errors(rows, count)
    write_csv(
        folder / "errors.csv",
        ["path", "true", "predicted", "probability"],
        [[r["path"], r["true"], r["predicted"], f"{r['probability']:.4f}"] for r in errors],
    )
    heading = f"{title}: the {len(errors)} most confident errors" if errors else f"{title}: no errors"
    captions = [f"true: {r['true'][:40]}\npredicted: {r['predicted'][:40]}\np = {r['probability']:.2f}" for r in errors]
    _grid(folder / "errors.png", errors, captions, heading)
    return errors


def _font(size: int):
    """matplotlib's DejaVu Sans (covers far more scripts than Pillow's default) at ``size`` pixels."""
    from PIL import ImageFont

    try:
        import matplotlib

        return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"), size)
    except (ImportError, OSError):
        return ImageFont.load_default(size)


def _grid(path: Path, rows: list[dict], captions: list[str], heading: str) -> None:
    """A PNG grid of the rows' images (4 across), each above its caption. Drawn with Pillow: a
    matplotlib grid of 16 axes took a second of every evaluate."""
    import textwrap

    from PIL import Image, ImageDraw

    cols, thumb, pad, line = 4, 160, 10, 14
    wrapped = [[w for part in c.split("\n") for w in textwrap.wrap(part, 30) or [""]][:6] for c in captions]
    text_h = line * max((len(w) for w in wrapped), default=1)
    cell_w, cell_h = thumb + 2 * pad + 20, thumb + text_h + 2 * pad
    n_rows = max(1, -(-len(rows) // cols))
    top = 32
    canvas = Image.new("RGB", (cols * cell_w, top + n_rows * cell_h), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((pad, 8), heading, fill="black", font=_font(15))
    font = _font(11)
    for i, (r, lines) in enumerate(zip(rows, wrapped)):
        x, y = (i % cols) * cell_w + pad, top + (i // cols) * cell_h + pad
        image = thumbnail(r["path"], thumb)
        if image is not None:
            if max(image.size) < thumb:  # small photos fill the cell too (thumbnail() never enlarges)
                k = thumb / max(image.size)
                image = image.resize((max(1, round(image.width * k)), max(1, round(image.height * k))), Image.BICUBIC)
            canvas.paste(image, (x + (cell_w - 2 * pad - image.width) // 2, y + (thumb - image.height) // 2))
        for k, text in enumerate(lines):
            draw.text((x, y + thumb + 4 + k * line), text, fill="black", font=font)
    atomic_write(Path(path), lambda fh: canvas.save(fh, format="PNG", optimize=False), binary=True)


def figure_html(path: str, caption: str, *, alt: str, unreadable: str = "") -> str:
    """One thumbnail (embedded JPEG) with its HTML ``caption``; a file that no longer decodes gives
    ``unreadable`` in its place (or nothing)."""
    data = thumbnail_jpeg_b64(path)
    if data is None:
        return unreadable and f'<figure class="thumb"><p>{unreadable}</p><figcaption>{caption}</figcaption></figure>'
    return (
        f'<figure class="thumb"><img alt="{html.escape(alt)}" src="data:image/jpeg;base64,{data}">'
        f"<figcaption>{caption}</figcaption></figure>"
    )


def _figure(row: dict, caption: str) -> str:
    return figure_html(row["path"], caption, alt=f"{Path(row['path']).name}: {caption}")


def gallery_html(rows: list[dict], *, count: int = 16, per_class: int = 3, max_classes: int = 30) -> str:
    """The report's section for one variant: confident errors, then correct examples per class (for at
    most ``max_classes`` classes, so the page stays a few MB whatever the class count)."""
    errors = confident_errors(rows, count)
    wrong = "".join(
        _figure(
            r,
            f"true <b>{html.escape(r['true'])}</b><br>predicted <b>{html.escape(r['predicted'])}</b>"
            f" ({r['probability']:.2f})",
        )
        for r in errors
    )
    right = "".join(
        f"<div class='cls'><b>{html.escape(cls)}</b><div class='row'>"
        + "".join(_figure(r, f"{r['probability']:.2f}") for r in picks)
        + "</div></div>"
        for cls, picks in sorted(correct_examples(rows, per_class).items())[:max_classes]
    )
    return (
        f"<h4>Most confident errors ({len(errors)})</h4><div class='gallery'>{wrong or '<p>none</p>'}</div>"
        f"<h4>Correct examples per class</h4><div class='correct'>{right or '<p>none</p>'}</div>"
    )


PREDICTION_COLUMNS = ["path", "true", "predicted", "probability", "true_probability"]


def read_predictions(path: Path) -> list[dict]:
    rows = read_table(path, ours=True, exact=True, empty_ok=True).rows
    for row in rows:
        row["probability"] = float(row["probability"])
        row["true_probability"] = float(row["true_probability"])
    return rows


# Multi-label predictions.csv: labels as space-separated names; probabilities in class order.
MULTILABEL_COLUMNS = ["path", "true", "predicted", "missed", "wrong", "probabilities"]


def read_multilabel_predictions(path: Path) -> list[dict]:
    rows = read_table(path, ours=True, exact=True, empty_ok=True).rows
    for row in rows:
        row["errors"] = len(row["missed"].split()) + len(row["wrong"].split())
    return rows


def label_errors(rows: list[dict], count: int = 16) -> list[dict]:
    """The images with the most missed plus wrong labels."""
    wrong = [r for r in rows if r["errors"]]
    return sorted(wrong, key=lambda r: (-r["errors"], r["path"]))[:count]


def _caption(r: dict) -> str:
    return f"true: {r['true'] or '-'}\nmissed: {r['missed'] or '-'}\nwrong: {r['wrong'] or '-'}"


def write_multilabel_gallery(folder: Path, rows: list[dict], *, count: int = 16, title: str = "") -> list[dict]:
    """``errors.csv`` and ``errors.png``: the images with the most missed and wrong labels."""
    errors = label_errors(rows, count)
    write_csv(
        folder / "errors.csv",
        ["path", "true", "predicted", "missed", "wrong"],
        [[r["path"], r["true"], r["predicted"], r["missed"], r["wrong"]] for r in errors],
    )
    heading = f"{title}: the {len(errors)} images with the most label errors" if errors else f"{title}: no errors"
    _grid(folder / "errors.png", errors, [_caption(r) for r in errors], heading)
    return errors


def multilabel_gallery_html(rows: list[dict], *, count: int = 16) -> str:
    """The report's section for a multi-label variant: the images with the most label errors."""
    errors = label_errors(rows, count)
    figures = "".join(
        _figure(
            r,
            f"true <b>{html.escape(r['true'] or '-')}</b><br>missed <b>{html.escape(r['missed'] or '-')}</b>"
            f"<br>wrong <b>{html.escape(r['wrong'] or '-')}</b>",
        )
        for r in errors
    )
    return f"<h4>Most label errors ({len(errors)})</h4><div class='gallery'>{figures or '<p>none</p>'}</div>"
