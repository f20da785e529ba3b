"""The run folder: its paths (``RunPaths``), what is and is not a run folder, and the formats of the two
files that are not plain JSON or CSV (``metrics.csv``, ``thresholds.json``). Writing goes through
``files``; the one-writer rule is ``lock.RunLock``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imgcls.core.errors import ImgclsError
from imgcls.core.files import atomic_write_text, read_json

METRICS_COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_acc5", "lr", "epoch_seconds"]
# Multi-label runs: micro-F1 while training; validation mean average precision (macro) and macro-F1 at 0.5.
MULTILABEL_COLUMNS = ["epoch", "train_loss", "train_f1", "val_loss", "val_mAP", "val_f1", "lr", "epoch_seconds"]


def metrics_columns(task: str) -> list[str]:
    return MULTILABEL_COLUMNS if task == "multilabel" else METRICS_COLUMNS


@dataclass(frozen=True)
class RunPaths:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def classes(self) -> Path:
        return self.root / "classes.json"

    @property
    def splits(self) -> Path:
        return self.root / "splits.csv"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.csv"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def best(self) -> Path:
        return self.checkpoints / "best.ckpt"

    @property
    def last(self) -> Path:
        return self.checkpoints / "last.ckpt"

    @property
    def bad_files(self) -> Path:
        return self.root / "bad_files.txt"

    @property
    def eval_dir(self) -> Path:
        return self.root / "eval"

    @property
    def export_dir(self) -> Path:
        return self.root / "export"

    @property
    def export_onnx(self) -> Path:
        return self.export_dir / "model.onnx"

    @property
    def inference(self) -> Path:
        return self.root / "inference.json"

    @property
    def thresholds(self) -> Path:
        return self.root / "thresholds.json"

    @property
    def edits(self) -> Path:
        return self.root / "data_edits.csv"


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    try:
        return _parse_metrics(path)
    except (ValueError, TypeError, KeyError, ImgclsError) as exc:
        raise ImgclsError(
            f"{path} is damaged ({type(exc).__name__}: {str(exc)[:120]}); delete it to go on (its "
            "earlier rows are lost), or start the run over with --force"
        ) from None


def _parse_metrics(path: Path) -> list[dict[str, Any]]:
    from imgcls.core.tables import read_table

    rows = read_table(path, exact=True, empty_ok=True).rows
    if rows:
        expected = MULTILABEL_COLUMNS if "val_mAP" in rows[0] else METRICS_COLUMNS
        if set(expected) - set(rows[0]):
            raise ValueError(f"missing columns {sorted(set(expected) - set(rows[0]))}")
    return [
        {
            k: (float(v) if v not in ("", None) and k != "epoch" else (int(v) if k == "epoch" else None))
            for k, v in row.items()
        }
        for row in rows
    ]


def write_metrics(path: Path, rows: list[dict[str, Any]], columns: list[str] = METRICS_COLUMNS) -> None:
    """Floats are written with repr (shortest round-trip form), so summary numbers equal the file's."""
    lines = [",".join(columns)]
    for row in rows:
        lines.append(",".join("" if row.get(c) is None else repr(row[c]) for c in columns))
    atomic_write_text(path, "\n".join(lines) + "\n")


DEFAULT_THRESHOLD = 0.5  # a multi-label class without a tuned threshold (none in the run, or no positives)


def read_thresholds(path: Path, classes: list[str]) -> list[float]:
    """The run's thresholds in class order (0.5 for every label, with a warning, when the file is missing)."""
    if not Path(path).is_file():
        import logging

        logging.getLogger(__name__).warning(
            "%s is missing: every label is decided at %.1f instead of its tuned threshold", path, DEFAULT_THRESHOLD
        )
        return [DEFAULT_THRESHOLD] * len(classes)
    record = read_json(path, expect=dict)
    values = record.get("thresholds")
    if record.get("classes") != classes or not isinstance(values, list) or len(values) != len(classes):
        raise ImgclsError(f"{path}: its classes or thresholds do not match the run's {len(classes)} classes")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1 for v in values):
        raise ImgclsError(f"{path}: thresholds must be numbers between 0 and 1")
    return [float(v) for v in values]


def open_run(run_dir: str | Path, *, checkpoint: str = "best") -> RunPaths:
    """A run directory that has what consumers need, or a clear error saying what is missing."""
    paths = RunPaths(Path(run_dir))
    if not paths.root.is_dir():
        raise ImgclsError(f"run folder not found: {paths.root}")
    for needed in (paths.config, paths.classes):
        if not needed.is_file():
            raise ImgclsError(f"{paths.root} is not an imgcls run folder (missing {needed.name})")
    ckpt = paths.best if checkpoint == "best" else paths.last
    if not ckpt.is_file():
        raise ImgclsError(
            f"{paths.root} has no checkpoint ({ckpt.relative_to(paths.root)}); "
            "train it first, or resume with: imgcls train --resume " + str(paths.root)
        )
    return paths


RUN_FILES = (
    "config.yaml",
    "classes.json",
    "splits.csv",
    "metrics.csv",
    "summary.json",
    "bad_files.txt",
    "inference.json",
    "thresholds.json",
    "data_edits.csv",
    "validation_probs.npz",
)
RUN_DIRS = ("checkpoints", "eval", "export", "explain")
LOCK_NAME = ".lock"


def folder_state(root: Path) -> str:
    """'empty' (or missing), 'run' (an imgcls run folder: config.yaml + classes.json) or 'foreign'."""
    root = Path(root)
    if not root.is_dir():
        if root.exists():
            return "foreign"
        return "empty"
    entries = [p for p in root.iterdir() if p.name != LOCK_NAME]
    if not entries:
        return "empty"
    if (root / "config.yaml").is_file() and (root / "classes.json").is_file() and _looks_like_a_run(root):
        return "run"
    return "foreign"


def _looks_like_a_run(root: Path) -> bool:
    """config.yaml is a mapping with a model, and classes.json a list of names: a user's own files with
    those names are not taken for a run (and never cleared by --force)."""
    import yaml

    try:
        config = yaml.safe_load((root / "config.yaml").read_text())
        classes = json.loads((root / "classes.json").read_text())
    except (OSError, ValueError, yaml.YAMLError):
        return False
    return isinstance(config, dict) and "model" in config and isinstance(classes, list)


def clear_run(root: Path) -> None:
    """Remove what an imgcls run wrote (and only that), so a new run can start in the folder."""
    import shutil

    for name in RUN_FILES:
        (root / name).unlink(missing_ok=True)
    for name in RUN_DIRS:
        if (root / name).is_dir():
            shutil.rmtree(root / name)
    for tmp in root.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)
