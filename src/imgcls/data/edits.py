"""Acting on check-data's findings without touching the user's files: ``--exclude FILE.csv`` trains
without the listed images (a ``path`` column, e.g. an edited label_issues.csv; or duplicates.csv, whose
``path_b`` is the second image of each pair) and ``--relabel FILE.csv`` applies ``path,suggested``
corrections. Paths are relative to the data folder (forward slashes) or absolute."""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path

from imgcls.core.errors import ImgclsError
from imgcls.core.tables import read_table
from imgcls.data.samples import DatasetSplits, Sample
from imgcls.data.splitfile import relative_path

log = logging.getLogger(__name__)


def _table(path: str, columns: tuple[str, ...]):
    table = read_table(path, ours=True, empty_ok=True, what="CSV")
    column = next((c for c in columns if c in table.header), None)
    if column is None:
        raise ImgclsError(f"{path}: needs a {' or '.join(columns)} column; it has {', '.join(table.header) or 'none'}")
    return column, table


def _key(path: str | Path, root: Path | None = None) -> str:
    """The one spelling of a file: absolute, with ``..``/``.`` and doubled slashes resolved lexically
    (``a/../a/b``, ``./a/b`` and an absolute path all name ``ROOT/a/b``; a symbolic link is not followed).
    ``root``: what a relative path in a user's list is relative to (a sample's path already includes it)."""
    p = Path(str(path).replace("\\", "/"))
    return os.path.normpath(os.path.abspath(p if p.is_absolute() or root is None else root / p))


def apply_edits(splits: DatasetSplits, *, exclude: str | None, relabel: str | None) -> tuple[DatasetSplits, list[list]]:
    """(edited splits, rows of data_edits.csv: path, action, old, new)."""
    root = Path(splits.root)
    edits: list[list] = []
    everything = splits.train + splits.val + splits.test
    by_path = {_key(s.path): s for s in everything}

    def name(label) -> str:
        return " ".join(splits.classes[c] for c in label) if isinstance(label, tuple) else splits.classes[label]

    drop: set[str] = set()
    if exclude:
        column, table = _table(exclude, ("path", "path_b"))
        rows = table.rows
        listed = {_key(r[column], root) for r in rows if r.get(column, "")}
        drop = listed & set(by_path)
        if len(drop) < len(listed):
            log.warning("%s: %d listed path(s) are not in %s (ignored)", exclude, len(listed) - len(drop), root)
        edits += [
            [relative_path(p, root), "exclude", name(by_path[p].label) if by_path[p].label != -1 else "", ""]
            for p in sorted(drop)
        ]
    new_labels: dict[str, object] = {}
    if relabel:
        column, table = _table(relabel, ("path",))
        rows = table.rows
        index = {c: i for i, c in enumerate(splits.classes)}
        target = next((c for c in ("suggested", "label", "labels") if c in rows[0]), None) if rows else None
        if target is None:
            raise ImgclsError(f"{relabel}: needs a suggested (or label) column beside path")
        unknown_paths = []
        for k, r in enumerate(rows):
            if not r.get(column):
                continue
            if not r[target] and splits.task != "multilabel":  # multi-label: no label at all is a label set
                raise ImgclsError(f"{relabel} line {table.line_of(k)}: no {target} label for {r[column]}")
            key = _key(r[column], root)
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
        return [Sample(s.path, new_labels.get(_key(s.path), s.label)) for s in samples if _key(s.path) not in drop]

    edited = replace(splits, train=edit(splits.train), val=edit(splits.val), test=edit(splits.test))
    if exclude and not edited.train:
        raise ImgclsError(f"--exclude {exclude} leaves no training image")
    if exclude and splits.val and not edited.val:
        raise ImgclsError(f"--exclude {exclude} leaves no validation image (best.ckpt is chosen on them)")
    return edited, edits
