"""Acting on check-data's findings without touching the user's files: ``--exclude FILE.csv`` trains
without the listed images (a ``path`` column, e.g. an edited label_issues.csv; or duplicates.csv, whose
``path_b`` is the second image of each pair) and ``--relabel FILE.csv`` applies ``path,suggested``
corrections. Paths are relative to the data folder (forward slashes) or absolute."""

from __future__ import annotations

import csv
import logging
from dataclasses import replace
from pathlib import Path

from imgcls.data.samples import DatasetSplits, Sample
from imgcls.data.splitfile import relative_path
from imgcls.errors import ImgclsError

log = logging.getLogger(__name__)


def _table(path: str, columns: tuple[str, ...]) -> tuple[str, list[dict]]:
    file = Path(path)
    if not file.is_file():
        raise ImgclsError(f"{path}: no such file")
    try:
        with open(file, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            header = [h.strip() for h in reader.fieldnames or []]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ImgclsError(f"{path}: cannot read it as CSV ({exc})") from None
    column = next((c for c in columns if c in header), None)
    if column is None:
        raise ImgclsError(f"{path}: needs a {' or '.join(columns)} column; it has {', '.join(header) or 'none'}")
    return column, rows


def _key(path: str, root: Path) -> str:
    p = Path(path)
    return str(p if p.is_absolute() else (root / p)).replace("\\", "/")


def apply_edits(splits: DatasetSplits, *, exclude: str | None, relabel: str | None) -> tuple[DatasetSplits, list[list]]:
    """(edited splits, rows of data_edits.csv: path, action, old, new)."""
    root = Path(splits.root)
    edits: list[list] = []
    everything = splits.train + splits.val + splits.test
    by_path = {str(Path(s.path)).replace("\\", "/"): s for s in everything}

    def name(label) -> str:
        return " ".join(splits.classes[c] for c in label) if isinstance(label, tuple) else splits.classes[label]

    drop: set[str] = set()
    if exclude:
        column, rows = _table(exclude, ("path", "path_b"))
        listed = {_key(r[column].strip(), root) for r in rows if r.get(column, "").strip()}
        drop = listed & set(by_path)
        if len(drop) < len(listed):
            log.warning("%s: %d listed path(s) are not in %s (ignored)", exclude, len(listed) - len(drop), root)
        edits += [
            [relative_path(p, root), "exclude", name(by_path[p].label) if by_path[p].label != -1 else "", ""]
            for p in sorted(drop)
        ]
    new_labels: dict[str, object] = {}
    if relabel:
        column, rows = _table(relabel, ("path",))
        index = {c: i for i, c in enumerate(splits.classes)}
        target = next((c for c in ("suggested", "label", "labels") if c in rows[0]), None) if rows else None
        if target is None:
            raise ImgclsError(f"{relabel}: needs a suggested (or label) column beside path")
        unknown_paths = []
        for r in rows:
            key = _key(r[column].strip(), root)
            if key not in by_path:
                unknown_paths.append(r[column])
                continue
            names = r[target].split() if splits.task == "multilabel" else [r[target].strip()]
            bad = [n for n in names if n not in index]
            if bad:
                raise ImgclsError(f"{relabel}: {', '.join(bad)} is not among the classes of {root}")
            label = tuple(sorted(index[n] for n in names)) if splits.task == "multilabel" else index[names[0]]
            if label != by_path[key].label:
                new_labels[key] = label
                edits.append([relative_path(key, root), "relabel", name(by_path[key].label), name(label)])
        if unknown_paths:
            shown = ", ".join(unknown_paths[:10])
            raise ImgclsError(f"{relabel}: {len(unknown_paths)} path(s) are not images of {root}: {shown}")

    def edit(samples: list[Sample]) -> list[Sample]:
        key = lambda s: str(Path(s.path)).replace("\\", "/")  # noqa: E731
        return [Sample(s.path, new_labels.get(key(s), s.label)) for s in samples if key(s) not in drop]

    edited = replace(splits, train=edit(splits.train), val=edit(splits.val), test=edit(splits.test))
    if exclude and not edited.train:
        raise ImgclsError(f"--exclude {exclude} leaves no training image")
    return edited, edits
