"""A run's data splits as a file list (``splits.csv`` in the run folder): which image was trained on,
validated on and held out, with its label. Written when training starts; ``evaluate``, ``export`` and a
resume read the exact splits back instead of recomputing them from the folder, the split fraction and
the seed (files added to the folder later, or another random hold-out, cannot change them)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from imgcls.core.errors import ImgclsError
from imgcls.core.rundir import RunPaths
from imgcls.core.tables import read_table, write_csv
from imgcls.data.layouts import UNLABELED, DatasetSplits, Sample

SPLITS = ("train", "val", "test")


def relative_path(path: str, root: Path) -> str:
    """``path`` relative to ``root`` with forward slashes (as the CSVs of a run or a check name files),
    or whole when it lies outside ``root``."""
    import os

    p = Path(os.path.normpath(os.path.abspath(path)))
    try:
        return p.relative_to(os.path.normpath(os.path.abspath(root))).as_posix()
    except ValueError:
        return Path(path).as_posix()


def _label_text(label) -> str:
    return " ".join(str(i) for i in label) if isinstance(label, tuple) else str(label)


def write_splits(paths: RunPaths, splits: DatasetSplits) -> None:
    """Paths relative to the data folder (forward slashes), so a moved data folder still matches; an
    unlabeled held-out split is listed with label -1."""
    root = Path(splits.root)
    multi = splits.task == "multilabel"
    rows = [[name, relative_path(s.path, root), _label_text(s.label)] for name in SPLITS for s in splits.split(name)]
    write_csv(paths.splits, ["split", "path", "labels" if multi else "label"], rows)


def read_splits(paths: RunPaths, data: str | Path, *, allow_outside: bool = False) -> DatasetSplits | None:
    """The splits a run recorded, with paths under ``data`` (the run's data folder, or where it moved);
    None for runs made before splits.csv existed. A path that leads out of ``data`` is refused unless the
    run was trained with ``--allow-outside-data`` (an edited splits.csv must not read other files)."""
    if not paths.splits.is_file():
        return None
    from imgcls.core.files import read_json

    classes = read_json(paths.classes, expect=list)
    root = Path(data).resolve()
    by_split: dict[str, list[Sample]] = {name: [] for name in SPLITS}
    table = read_table(paths.splits, ours=True, exact=True, empty_ok=True)
    multi = "labels" in table.header
    column = "labels" if multi else "label"
    if column not in table.header or "split" not in table.header or "path" not in table.header:
        raise ImgclsError(
            f"{paths.splits} is damaged (columns {', '.join(table.header)}); start the run over with --force"
        )
    for k, row in enumerate(table.rows):
        text = row[column]
        try:
            if text == str(UNLABELED):
                label = UNLABELED
            else:
                label = tuple(int(i) for i in text.split()) if multi else int(text)
            if row["split"] not in by_split or any(i < 0 or i >= len(classes) for i in np.atleast_1d(label) if i != -1):
                raise ValueError(f"split {row['split']!r}, label {text!r}")
        except ValueError as exc:
            raise ImgclsError(
                f"{paths.splits} is damaged ({table.where(k)}: {exc}); start the run over with --force"
            ) from None
        by_split[row["split"]].append(Sample(str(root / row["path"]), label))
    splits = DatasetSplits(
        str(root),
        "saved",
        classes,
        by_split["train"],
        by_split["val"],
        by_split["test"],
        test_labeled=bool(by_split["test"]) and all(s.label != UNLABELED for s in by_split["test"]),
        task="multilabel" if multi else "single",
    )
    return splits.check(allow_outside=allow_outside, where=str(paths.splits))
