"""``imgcls predict``: a CSV of predictions (``Id,Category``) for files or folders, labelled or not."""

from __future__ import annotations

from pathlib import Path

from imgcls.data.layouts import samples_with_ids
from imgcls.engine.predictor import load_predictor, predict_samples
from imgcls.errors import ImgclsError
from imgcls.rundir import write_csv


def predict(
    ref: str,
    inputs: list[str],
    *,
    out: str | Path,
    topk: int = 0,
    batch_size: int = 64,
    workers: int | None = None,
    tta: str | None = None,
) -> dict:
    loaded = load_predictor(ref)  # the model first: a bad model reference is the error to report
    if topk < 0 or topk > len(loaded.classes):
        raise ImgclsError(f"--topk must be between 0 and {len(loaded.classes)}")
    pairs = samples_with_ids(inputs)
    samples = [s for s, _ in pairs]
    probs, kept = predict_samples(loaded, samples, batch_size=batch_size, workers=workers, tta=tta)
    if not kept:
        raise ImgclsError(f"none of the {len(samples)} input file(s) could be decoded as an image; nothing predicted")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    k = max(topk, 1)
    top_p, top_i = probs.topk(k, dim=1) if len(kept) else (probs, probs.long())
    header = ["Id", "Category"]
    for j in range(1, topk + 1):
        header += [f"top{j}_class", f"top{j}_prob"]
    rows = []
    for row, idx in enumerate(kept):
        line = [pairs[idx][1], int(top_i[row, 0])]
        for j in range(topk):
            line += [loaded.classes[int(top_i[row, j])], f"{float(top_p[row, j]):.6f}"]
        rows.append(line)
    write_csv(out, header, rows)
    skipped = [samples[i].path for i in sorted(set(range(len(samples))) - set(kept))]
    first = [
        (pairs[kept[r]][1], loaded.classes[int(top_i[r, 0])], float(top_p[r, 0])) for r in range(min(len(kept), 5))
    ]
    return {"out": str(out), "predicted": len(kept), "skipped": skipped, "first": first, "engine": loaded.describe()}
