"""``imgcls predict``: a CSV of predictions (``Id,Category``) for files or folders, labelled or not."""
from __future__ import annotations

import csv
from pathlib import Path

from imgcls.data.layouts import unlabeled_samples
from imgcls.engine.infer import load_model_or_run, predict_probs
from imgcls.errors import ImgclsError


def predict(ref: str, inputs: list[str], *, out: str | Path, topk: int = 0, batch_size: int = 64,
            workers: int | None = None) -> dict:  # fmt: skip
    if str(ref).endswith(".onnx"):
        from imgcls.engine.predictor import load_predictor

        loaded = load_predictor(ref)  # the model first: a bad model reference is the error to report
        samples = unlabeled_samples(inputs)
        probs, kept = _predict_exported(loaded, samples, batch_size)
    else:
        loaded = load_model_or_run(ref)
        samples = unlabeled_samples(inputs)
        probs, kept = predict_probs(loaded.model, samples, loaded.image_size, batch_size=batch_size, workers=workers)
    if topk < 0 or topk > len(loaded.classes):
        raise ImgclsError(f"--topk must be between 0 and {len(loaded.classes)}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    k = max(topk, 1)
    top_p, top_i = probs.topk(k, dim=1) if len(kept) else (probs, probs.long())
    with open(out, "w", newline="") as fh:
        w = csv.writer(fh)
        header = ["Id", "Category"]
        for j in range(1, topk + 1):
            header += [f"top{j}_class", f"top{j}_prob"]
        w.writerow(header)
        for row, idx in enumerate(kept):
            line = [Path(samples[idx].path).stem, int(top_i[row, 0])]
            for j in range(topk):
                line += [loaded.classes[int(top_i[row, j])], f"{float(top_p[row, j]):.6f}"]
            w.writerow(line)
    skipped = [samples[i].path for i in sorted(set(range(len(samples))) - set(kept))]
    return {"out": str(out), "predicted": len(kept), "skipped": skipped,
            "first": [(Path(samples[kept[r]].path).name, loaded.classes[int(top_i[r, 0])], float(top_p[r, 0]))
                      for r in range(min(len(kept), 5))]}  # fmt: skip


def _predict_exported(predictor, samples, batch_size: int):
    """An exported model.onnx (+ model.json): ONNX Runtime only, no checkpoint needed."""
    import logging

    import torch

    from imgcls.data.decode import load_rgb
    from imgcls.errors import BadImageError

    probs, kept = [], []
    for start in range(0, len(samples), batch_size):
        images, idx = [], []
        for i in range(start, min(start + batch_size, len(samples))):
            try:
                images.append(load_rgb(samples[i].path))
                idx.append(i)
            except BadImageError as exc:
                logging.getLogger(__name__).warning("skipping bad image %s", exc)
        if images:
            probs.append(predictor.probabilities(images))
            kept += idx
    return (torch.cat(probs) if probs else torch.zeros(0, len(predictor.classes))), kept
