"""A run's data splits as a file list (``splits.csv`` in the run folder): which image was trained on,
validated on and held out, with its label. Written when training starts; ``evaluate``, ``export`` and a
resume read the exact splits back instead of recomputing them from the folder, the split fraction and
the seed (files added to the folder later, or another random hold-out, cannot change them)."""

from __future__ import annotations

import csv
from pathlib import Path

from imgcls.data.layouts import UNLABELED, DatasetSplits, Sample
from imgcls.errors import ImgclsError
from imgcls.rundir import RunPaths
from imgcls.tables import write_csv

SPLITS = ("train", "val", "test")


def relative_path(path: str, root: Path) -> str:
    """``path`` relative to ``root`` with forward slashes (as the CSVs of a run or a check name files),
    or whole when it lies outside ``root``."""
    p = Path(path)
    try:
        return p.relative_to(root).as_posix()
    except ValueError:
        return p.as_posix()


def _label_text(label) -> str:
    return " ".join(str(i) for i in label) if isinstance(label, tuple) else str(label)


def write_splits(paths: RunPaths, splits: DatasetSplits) -> None:
    """Paths relative to the data folder (forward slashes), so a moved data folder still matches; an
    unlabeled held-out split is listed with label -1."""
    root = Path(splits.root)
    multi = splits.task == "multilabel"
    rows = [[name, relative_path(s.path, root), _label_text(s.label)] for name in SPLITS for s in splits.split(name)]
    write_csv(paths.splits, ["split", "path", "labels" if multi else "label"], rows)


def read_splits(paths: RunPaths, data: str | Path) -> DatasetSplits | None:
    """The splits a run recorded, with paths under ``data`` (the run's data folder, or where it moved);
    None for runs made before splits.csv existed."""
    if not paths.splits.is_file():
        return None
    import json

    classes = json.loads(paths.classes.read_text())
    root = Path(data).resolve()
    by_split: dict[str, list[Sample]] = {name: [] for name in SPLITS}
    try:
        with open(paths.splits, newline="") as fh:
            reader = csv.DictReader(fh)
            multi = "labels" in (reader.fieldnames or [])
            for row in reader:
                text = row["labels" if multi else "label"].strip()
                if text == str(UNLABELED):
                    label = UNLABELED
                else:
                    label = tuple(int(i) for i in text.split()) if multi else int(text)
                by_split[row["split"]].append(Sample(str(root / row["path"]), label))
    except (KeyError, ValueError, TypeError, csv.Error, UnicodeDecodeError) as exc:
        raise ImgclsError(
            f"{paths.splits} is damaged ({type(exc).__name__}: {exc}); start the run over with --force"
        ) from None
    return DatasetSplits(
        str(root),
        "saved",
        classes,
        by_split["train"],
        by_split["val"],
        by_split["test"],
        test_labeled=bool(by_split["test"]) and all(s.label != UNLABELED for s in by_split["test"]),
        task="multilabel" if multi else "single",
    )
