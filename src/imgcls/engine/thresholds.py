"""Multi-label decision thresholds: per label, the probability above which it is predicted, tuned on the
validation split to maximise that label's F1 and saved as ``thresholds.json`` in the run folder, where
evaluate, predict, serve and the export sidecar read them."""

from __future__ import annotations

import torch

from imgcls.core.files import write_json
from imgcls.core.rundir import DEFAULT_THRESHOLD as DEFAULT
from imgcls.core.rundir import RunPaths

GRID = torch.linspace(0.02, 0.98, 49)  # candidate thresholds; ties go to the one nearest 0.5


def tune(probs: torch.Tensor, targets: torch.Tensor) -> tuple[list[float], list[float]]:
    """(threshold, validation F1) per label. ``probs`` (N, C) in [0, 1]; ``targets`` (N, C) 0/1."""
    targets = targets.bool()
    best_f1 = torch.full((probs.shape[1],), -1.0)
    best_t = torch.full((probs.shape[1],), DEFAULT)
    for t in sorted(GRID.tolist(), key=lambda v: abs(v - DEFAULT)):  # nearest 0.5 first: it wins ties
        predicted = probs >= t
        tp = (predicted & targets).sum(0).float()
        fp = (predicted & ~targets).sum(0).float()
        fn = (~predicted & targets).sum(0).float()
        f1 = 2 * tp / (2 * tp + fp + fn).clamp(min=1)
        better = f1 > best_f1
        best_f1 = torch.where(better, f1, best_f1)
        best_t = torch.where(better, torch.tensor(t), best_t)
    no_positives = targets.sum(0) == 0
    best_t[no_positives] = DEFAULT
    return [round(float(t), 4) for t in best_t], [round(float(f), 4) for f in best_f1.clamp(min=0)]


def write_thresholds(paths: RunPaths, *, workers: int = 0) -> dict:
    """Tune on the run's recorded validation split with its best checkpoint; returns what was written."""
    from imgcls.engine.predictor import load_predictor, predict_samples

    predictor = load_predictor(paths.root)
    run = predictor.saved
    samples = run.splits().val
    probs, kept = predict_samples(predictor, samples, workers=workers)
    targets = torch.zeros(len(kept), len(run.classes))
    for row, i in enumerate(kept):
        targets[row, list(samples[i].label)] = 1
    thresholds, f1 = tune(probs, targets)
    record = {
        "classes": run.classes,
        "thresholds": thresholds,
        "validation_f1": f1,
        "images": len(kept),
        "rule": "per label, the threshold in 0.02..0.98 (step 0.02) with the highest validation F1",
    }
    write_json(paths.thresholds, record)
    return record
