"""``imgcls evaluate`` for a multi-label run: mean average precision, F1 at the run's per-label
thresholds, exact match, a per-label table, precision-recall curves and a gallery of the images with
the most missed or wrong labels."""

from __future__ import annotations

from pathlib import Path

import torch
from torchmetrics.functional.classification import (
    multilabel_average_precision,
    multilabel_exact_match,
    multilabel_f1_score,
    multilabel_precision,
    multilabel_precision_recall_curve,
    multilabel_recall,
)

from imgcls.core.files import save_figure, write_json
from imgcls.core.tables import write_csv
from imgcls.engine.label_metrics import present, present_mean
from imgcls.report.gallery import MULTILABEL_COLUMNS, read_multilabel_predictions, write_multilabel_gallery

MAX_CURVES = 20  # labels drawn in pr_curves.png (the most frequent); the table has them all


def multilabel_metrics(probs: torch.Tensor, targets: torch.Tensor, decided: torch.Tensor) -> dict:
    """``decided``: the (N, C) 0/1 predictions at the per-label thresholds (ints: torchmetrics applies no
    threshold of its own). mAP and macro-F1 average over the labels with a positive in ``targets``
    (``label_metrics``); ``absent`` lists the indices of the others."""
    n = targets.shape[1]
    kw = dict(num_labels=n)
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(False)  # see evaluate.classification_metrics
    try:
        ap = multilabel_average_precision(probs, targets, average="none", **kw)
        f1 = multilabel_f1_score(decided, targets, average="none", **kw)
        return {
            "mAP": present_mean(ap, targets),
            "f1_macro": present_mean(f1, targets),
            "f1_micro": float(multilabel_f1_score(decided, targets, average="micro", **kw)),
            "exact_match": float(multilabel_exact_match(decided, targets, **kw)),
            "ap": ap.tolist(),
            "precision": multilabel_precision(decided, targets, average="none", **kw).tolist(),
            "recall": multilabel_recall(decided, targets, average="none", **kw).tolist(),
            "f1": f1.tolist(),
            "absent": (~present(targets)).nonzero().flatten().tolist(),
        }
    finally:
        torch.use_deterministic_algorithms(deterministic)


def write_multilabel(loaded, probs: torch.Tensor, samples: list, header: dict, out: Path, *, gallery: int) -> dict:
    classes = loaded.classes
    targets = torch.zeros(len(samples), len(classes), dtype=torch.long)
    for row, s in enumerate(samples):
        targets[row, list(s.label)] = 1
    decided = loaded.decide(probs).long()
    m = multilabel_metrics(probs, targets, decided)
    support = targets.sum(0).tolist()
    thresholds = loaded.thresholds
    absent = set(m["absent"])
    per_label = [
        {
            "class": c,
            "support": int(support[i]),
            "ap": None if i in absent else m["ap"][i],
            "precision": m["precision"][i],
            "recall": m["recall"][i],
            "f1": m["f1"][i],
            "threshold": thresholds[i],
        }
        for i, c in enumerate(classes)
    ]
    result = {
        **header,
        "task": "multilabel",
        **{k: m[k] for k in ("mAP", "f1_macro", "f1_micro", "exact_match")},
        "labels_present": len(classes) - len(absent),
        # mAP and F1 macro average over the labels with a positive image here; these had none.
        "labels_without_positives": [classes[i] for i in sorted(absent)],
        "thresholds": "per label, tuned on validation (thresholds.json)" if loaded.paths else "from the sidecar",
        "per_label": per_label,
    }
    write_json(out / "metrics.json", result)
    columns = ["class", "support", "ap", "precision", "recall", "f1", "threshold"]
    write_csv(
        out / "per_label.csv",
        columns,
        [[r["class"], r["support"], *("" if r[k] is None else f"{r[k]:.4f}" for k in columns[2:])] for r in per_label],
    )
    rows = []
    for r, s in enumerate(samples):
        true = {classes[i] for i in s.label}
        predicted = {classes[i] for i in range(len(classes)) if decided[r, i]}
        rows.append(
            [
                s.path,
                " ".join(sorted(true)),
                " ".join(sorted(predicted)),
                " ".join(sorted(true - predicted)),
                " ".join(sorted(predicted - true)),
                " ".join(f"{float(p):.4f}" for p in probs[r]),
            ]
        )
    write_csv(out / "predictions.csv", MULTILABEL_COLUMNS, rows)
    _pr_curves(probs, targets, classes, out / "pr_curves.png", f"{loaded.name} - {header['split']}: mAP {m['mAP']:.3f}")
    write_multilabel_gallery(
        out,
        read_multilabel_predictions(out / "predictions.csv"),
        count=gallery,
        title=f"{loaded.name}: {header['split']}",
    )
    return result


def _pr_curves(probs: torch.Tensor, targets: torch.Tensor, classes: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = sorted(range(len(classes)), key=lambda i: -int(targets[:, i].sum()))[:MAX_CURVES]
    precision, recall, _ = multilabel_precision_recall_curve(probs, targets, num_labels=len(classes))
    fig, ax = plt.subplots(figsize=(7, 5))
    for i in order:
        ax.plot(recall[i].numpy(), precision[i].numpy(), label=classes[i][:24], lw=1.2)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    shown = "" if len(order) == len(classes) else f" ({len(order)} most frequent of {len(classes)} labels)"
    ax.set_title(title + shown, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left", ncol=2)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
