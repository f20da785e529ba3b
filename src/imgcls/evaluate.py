"""``imgcls evaluate``: accuracy, per-class precision/recall/F1 and a confusion matrix for a run."""

from __future__ import annotations

import csv
from pathlib import Path

import torch
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_confusion_matrix,
    multiclass_f1_score,
    multiclass_precision,
    multiclass_recall,
)

from imgcls.config import load_run_config
from imgcls.data.layouts import DatasetSplits, canonical_split, discover
from imgcls.engine.predictor import load_predictor, predict_samples
from imgcls.errors import ImgclsError
from imgcls.rundir import write_json

SPLIT_DIRNAMES = {"train": "training", "val": "validation", "test": "evaluation"}


def _labels_in_run_order(splits: DatasetSplits, split: str, run_classes: list[str]) -> list:
    samples = splits.split(split)
    if not samples:
        raise ImgclsError(f"{splits.root} has no {SPLIT_DIRNAMES[split]} split; try --split validation")
    if split == "test" and not splits.test_labeled:
        raise ImgclsError(f"the {SPLIT_DIRNAMES[split]} split of {splits.root} is unlabeled; use imgcls predict")
    if splits.layout == "flat":
        if len(splits.classes) > len(run_classes):
            raise ImgclsError(
                f"{splits.root} has class indices up to {len(splits.classes) - 1}, "
                f"but the run knows {len(run_classes)} classes"
            )
        return samples
    unknown = sorted(set(splits.classes) - set(run_classes))
    if unknown:
        raise ImgclsError(f"{splits.root}: classes {', '.join(unknown)} are not among the run's classes")
    remap = [run_classes.index(c) for c in splits.classes]
    return [type(s)(s.path, remap[s.label]) for s in samples]


def confusion_png(matrix: torch.Tensor, classes: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(classes)
    fig, ax = plt.subplots(figsize=(max(5, 0.55 * n + 2), max(4.5, 0.55 * n + 1.5)))
    row_sums = matrix.sum(dim=1, keepdim=True).clamp(min=1)
    ax.imshow((matrix / row_sums).numpy(), cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            v = int(matrix[i, j])
            if v:
                ax.text(
                    j,
                    i,
                    str(v),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if matrix[i, j] / row_sums[i, 0] > 0.5 else "black",
                )
    ax.set_xticks(range(n), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def classification_metrics(probs: torch.Tensor, labels: torch.Tensor, n: int) -> dict:
    kw = dict(num_classes=n)
    return {
        "top1": float(multiclass_accuracy(probs, labels, average="micro", **kw)),
        "top5": float(multiclass_accuracy(probs, labels, top_k=5, average="micro", **kw)) if n >= 6 else None,
        "macro_f1": float(multiclass_f1_score(probs, labels, average="macro", **kw)),
        "precision": multiclass_precision(probs, labels, average="none", **kw).tolist(),
        "recall": multiclass_recall(probs, labels, average="none", **kw).tolist(),
        "f1": multiclass_f1_score(probs, labels, average="none", **kw).tolist(),
        "confusion": multiclass_confusion_matrix(probs, labels, **kw),
    }


def evaluate(
    run_dir: str | Path,
    *,
    data: str | None = None,
    split: str = "evaluation",
    batch_size: int = 64,
    workers: int | None = None,
    engine: str | None = None,
) -> dict:
    loaded = load_predictor(run_dir, engine=engine)
    data = data or load_run_config(loaded.paths.config).data
    if not data:
        raise ImgclsError("no data folder: pass --data DIR")
    key = canonical_split(split)
    samples = _labels_in_run_order(discover(data), key, loaded.classes)
    probs, kept = predict_samples(loaded, samples, batch_size=batch_size, workers=workers)
    if not kept:
        raise ImgclsError(f"no image of the {SPLIT_DIRNAMES[key]} split could be decoded")
    labels = torch.tensor([samples[i].label for i in kept])
    n = len(loaded.classes)
    m = classification_metrics(probs, labels, n)
    confusion = m.pop("confusion")
    support = confusion.sum(dim=1).tolist()

    out = loaded.paths.eval_dir / SPLIT_DIRNAMES[key]
    out.mkdir(parents=True, exist_ok=True)
    result = {
        "split": SPLIT_DIRNAMES[key],
        "data": str(data),
        "images": len(kept),
        "skipped": len(samples) - len(kept),
        "engine": loaded.describe(),
        "top1": m["top1"],
        "top5": m["top5"],
        "macro_f1": m["macro_f1"],
        "per_class": [
            {
                "class": c,
                "support": int(support[i]),
                "precision": m["precision"][i],
                "recall": m["recall"][i],
                "f1": m["f1"][i],
            }
            for i, c in enumerate(loaded.classes)
        ],
    }
    write_json(out / "metrics.json", result)
    with open(out / "per_class.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["class", "support", "precision", "recall", "f1"])
        for row in result["per_class"]:
            w.writerow(
                [row["class"], row["support"], f"{row['precision']:.4f}", f"{row['recall']:.4f}", f"{row['f1']:.4f}"]
            )
    with open(out / "confusion_matrix.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["true\\predicted", *loaded.classes])
        for i, c in enumerate(loaded.classes):
            w.writerow([c, *[int(v) for v in confusion[i]]])
    title = f"{loaded.name} - {SPLIT_DIRNAMES[key]}: top-1 {m['top1']:.3f}, macro-F1 {m['macro_f1']:.3f}"
    confusion_png(confusion, loaded.classes, out / "confusion_matrix.png", title)
    result["out"] = str(out)
    return result
