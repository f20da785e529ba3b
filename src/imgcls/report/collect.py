"""Read a comparison folder's run directories into plain rows: the report's only input."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from imgcls.core.errors import ImgclsError
from imgcls.core.files import read_json
from imgcls.core.rundir import RunPaths, read_metrics
from imgcls.core.tables import read_table
from imgcls.report.gallery import read_multilabel_predictions, read_predictions


@dataclass
class Variant:
    name: str  # the run folder's name
    model: str  # the model spec
    summary: dict
    epochs: list[dict]
    eval_split: str | None = None
    eval: dict | None = None
    confusion: list[list[int]] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    inference: dict | None = None
    predictions: list[dict] = field(default_factory=list)

    @property
    def multilabel(self) -> bool:
        return self.summary.get("task") == "multilabel"

    @property
    def metric(self) -> str:
        """The validation metric of metrics.csv that ranks epochs: val_acc, or val_mAP (multi-label)."""
        return self.summary.get("metric", "val_acc")

    @property
    def heldout_acc(self) -> float | None:
        """The held-out score: top-1, or mAP for a multi-label variant."""
        key = "mAP" if self.multilabel else "top1"
        return self.eval[key] if self.eval and self.eval_split == "evaluation" else None

    @property
    def flags(self) -> list[str]:
        """Reasons not to trust this variant's place in a ranking."""
        out = []
        first, last = self.epochs[0]["train_loss"], self.epochs[-1]["train_loss"]
        if len(self.epochs) >= 2 and first and (first - last) / first < 0.10:
            out.append(f"loss barely moved ({first:.2f} -> {last:.2f})")
        size, default = self.summary.get("image_size"), self.summary.get("default_image_size")
        if self.summary.get("pretrained") and size and default and size < default / 2:
            out.append(f"{size} px is far below the {default} px its pretrained weights expect")
        return out

    @property
    def score(self) -> float:
        """The accuracy used to rank variants: held-out when there is one, else best validation."""
        return self.heldout_acc if self.heldout_acc is not None else self.summary[f"best_{self.metric}"]


def _read_confusion(path: Path) -> list[list[int]]:
    table = read_table(path, ours=True, exact=True, empty_ok=True)
    return [[int(row[c]) for c in table.header[1:]] for row in table.rows]


def _ordered_run_dirs(root: Path) -> list[Path]:
    found = sorted(p for p in root.iterdir() if (p / "summary.json").is_file() and (p / "metrics.csv").is_file())
    meta = root / "compare.json"
    if meta.is_file():  # keep the order the user asked for (compare records each variant's folder name)
        try:
            wanted = list(json.loads(meta.read_text()).get("dirs", []))
        except (ValueError, AttributeError):
            wanted = []
        found.sort(key=lambda p: wanted.index(p.name) if p.name in wanted else len(wanted))
    return found


def collect(root: str | Path, runs: list[Path] | None = None) -> list[Variant]:
    """The variants of a comparison folder (its run folders, in compare.json's order), or of ``runs``."""
    root = Path(root)
    if not root.is_dir():
        raise ImgclsError(f"comparison folder not found: {root}")
    variants = []
    for run_dir in runs if runs is not None else _ordered_run_dirs(root):
        paths = RunPaths(run_dir)
        rows = read_metrics(paths.metrics)
        if not rows:
            continue
        v = Variant(run_dir.name, read_json(paths.summary).get("model", run_dir.name), read_json(paths.summary), rows)
        v.classes = read_json(paths.classes)
        for split in ("evaluation", "validation"):
            folder = paths.eval_dir / split
            if (folder / "metrics.json").is_file():
                v.eval_split, v.eval = split, read_json(folder / "metrics.json")
                if (folder / "confusion_matrix.csv").is_file():
                    v.confusion = _read_confusion(folder / "confusion_matrix.csv")
                if (folder / "predictions.csv").is_file():
                    reader = read_multilabel_predictions if v.multilabel else read_predictions
                    v.predictions = reader(folder / "predictions.csv")
                break
        if (run_dir / "inference.json").is_file():
            v.inference = read_json(run_dir / "inference.json")
        variants.append(v)
    if not variants:
        raise ImgclsError(f"{root}: no finished run folders (with summary.json and metrics.csv) to report on")
    return variants
