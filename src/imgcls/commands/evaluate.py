"""``imgcls evaluate``: accuracy, per-class precision/recall/F1 and a confusion matrix for a run."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_confusion_matrix,
    multiclass_f1_score,
    multiclass_precision,
    multiclass_recall,
)

from imgcls.core.errors import ImgclsError
from imgcls.core.files import staged_folder, write_json
from imgcls.core.tables import write_csv
from imgcls.data.csv_layout import CsvOptions
from imgcls.data.layouts import SPLIT_ALIASES, DatasetSplits, canonical_split, discover
from imgcls.engine.predictor import EXPORT_SUFFIXES, load_predictor, predict_samples
from imgcls.report.figures import confusion_png
from imgcls.report.gallery import PREDICTION_COLUMNS, read_predictions, write_error_gallery

SPLIT_DIRNAMES = {"train": "training", "val": "validation", "test": "evaluation"}
WHOLE_FOLDER = "all"  # the split name when --data is one folder of class folders


def select_split(splits: DatasetSplits, split: str | None) -> tuple[str, str, str | None]:
    """(split key, its name, a note when it fell back). ``split=None``: the held-out evaluation split,
    else validation when the data has no labelled one (as compare does)."""
    if splits.layout == "imagefolder" and not splits.train and not splits.val:
        if split not in (None, WHOLE_FOLDER, *SPLIT_ALIASES["test"], "test"):
            raise ImgclsError(
                f"{splits.root} is one folder of class folders: every image in it is evaluated (drop --split)"
            )
        return "test", WHOLE_FOLDER, None
    if split is not None:
        key = canonical_split(split)
        return key, SPLIT_DIRNAMES[key], None
    if splits.test and splits.test_labeled:
        return "test", SPLIT_DIRNAMES["test"], None
    why = "is unlabeled" if splits.test else "does not exist"
    return "val", SPLIT_DIRNAMES["val"], f"the evaluation split of {splits.root} {why}: evaluated on validation"


def _labels_in_run_order(splits: DatasetSplits, split: str, run_classes: list[str], *, multilabel: bool) -> list:
    """The split's samples with labels as the run's class indices (multi-label runs: tuples)."""
    samples = _in_run_order(splits, split, run_classes)
    if splits.task == "multilabel" and not multilabel:
        raise ImgclsError(f"{splits.root} has several labels per image; this run predicts one class per image")
    if multilabel:  # single-label data evaluated by a multi-label run: one positive label each
        return [type(s)(s.path, (s.label,)) if isinstance(s.label, int) else s for s in samples]
    return samples


def _in_run_order(splits: DatasetSplits, split: str, run_classes: list[str]) -> list:
    samples = splits.split(split)
    if not samples:
        raise ImgclsError(f"{splits.root} has no {SPLIT_DIRNAMES[split]} split; try --split validation")
    if split == "test" and not splits.test_labeled:
        raise ImgclsError(f"the {SPLIT_DIRNAMES[split]} split of {splits.root} is unlabeled; use imgcls predict")
    if splits.layout == "saved":  # the run's own splits.csv: labels are already the run's indices
        return samples
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
    return [
        type(s)(s.path, tuple(remap[i] for i in s.label) if isinstance(s.label, tuple) else remap[s.label])
        for s in samples
    ]


def classification_metrics(probs: torch.Tensor, labels: torch.Tensor, n: int) -> dict:
    # torchmetrics counts with a (samples x classes²) comparison instead of bincount when deterministic
    # algorithms are on (Lightning leaves them on after a CPU fit): 16 GB at 1,000 classes. Counting is
    # exact either way.
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(False)
    try:
        return _metrics(probs, labels, n)
    finally:
        torch.use_deterministic_algorithms(deterministic)


def _metrics(probs: torch.Tensor, labels: torch.Tensor, n: int) -> dict:
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


def eval_folder(eval_root: Path, data: str, run_data: str | None, split_name: str) -> Path:
    """``<eval_root>/<split>`` for the run's own data; ``<eval_root>/on-<folder>/<split>`` for other data,
    so an evaluation elsewhere never replaces the one on the data the run was trained on. Two data
    folders of the same name (``a/x``, ``b/x``) get ``on-x`` and ``on-x-<hash of the path>``."""
    import hashlib
    import json

    if run_data and Path(data).resolve() == Path(run_data).resolve():
        return eval_root / split_name
    resolved = Path(data).resolve()
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", resolved.name) or "data"
    plain = eval_root / f"on-{slug}"
    recorded = [json.loads(p.read_text()).get("data") for p in plain.glob("*/metrics.json")]
    if any(r is not None and r != str(resolved) for r in recorded):
        plain = eval_root / f"on-{slug}-{hashlib.sha1(str(resolved).encode()).hexdigest()[:8]}"
    return plain / split_name


def evaluate(
    run_dir: str | Path,
    *,
    data: str | None = None,
    split: str | None = None,
    batch_size: int = 64,
    workers: int | None = None,
    engine: str | None = None,
    gallery: int = 16,
    tta: str | None = None,
    csv: CsvOptions | None = None,
) -> dict:
    """``split=None``: the held-out evaluation split, or validation when the data has none. ``csv``: how
    to read a label CSV (``--labels``, ``--image-col`` ...); given, the data is read through it even when it
    is the run's own folder (whose recorded splits are used otherwise).

    ``run_dir`` may also be an exported ``.onnx``/``.safetensors`` file: its results go beside it
    (``eval/<file stem>/``), apart from the checkpoint's; so do the int8 engine's
    (``RUN/export/eval/model.int8/``).
    """
    loaded = load_predictor(run_dir, engine=engine)
    run = loaded.saved
    run_data = run.cfg.data if run is not None else None
    data = data or run_data
    if not data:
        raise ImgclsError("no data folder: pass --data DIR")
    if not Path(data).is_dir():
        moved = " (the run's data folder has moved? point to it with --data DIR)" if data == run_data else ""
        raise ImgclsError(f"data folder not found: {data}{moved}")
    same = bool(run_data) and Path(data).resolve() == Path(run_data).resolve()
    splits = run.splits(data) if same and csv is None else discover(data, seed=0, for_eval=True, csv=csv)
    key, split_name, note = select_split(splits, split)
    if note:
        print(f"note: {note}")
    samples = _labels_in_run_order(splits, key, loaded.classes, multilabel=loaded.multilabel)
    probs, kept = predict_samples(loaded, samples, batch_size=batch_size, workers=workers, tta=tta)
    if not kept:
        raise ImgclsError(f"no image of the {split_name} split could be decoded")
    # An export's results (a file given, or the int8 engine) go beside it, apart from the checkpoint's.
    exported = Path(str(run_dir)).suffix in EXPORT_SUFFIXES or engine == "int8"
    file = Path(loaded.run.file)
    eval_root = file.parent / "eval" / file.stem if exported else loaded.paths.eval_dir
    out = eval_folder(eval_root, data, run_data, split_name)
    header = {
        "split": split_name,
        "fallback": note,
        "data": str(Path(data).resolve()),
        "images": len(kept),
        "skipped": len(samples) - len(kept),
        "engine": loaded.describe(),
        "tta": tta,
    }
    from imgcls.commands.evaluate_multilabel import write_multilabel

    write = write_multilabel if loaded.multilabel else _write_single
    with staged_folder(out) as stage:  # the folder is replaced whole: never half old, half new
        result = write(loaded, probs, [samples[i] for i in kept], header, stage, gallery=gallery)
    result["out"] = str(out)
    return result


def _write_single(loaded, probs: torch.Tensor, samples: list, header: dict, out: Path, *, gallery: int) -> dict:
    """metrics.json, per_class.csv, confusion matrix, predictions.csv and the error gallery."""
    split_name = header["split"]
    labels = torch.tensor([s.label for s in samples])
    n = len(loaded.classes)
    m = classification_metrics(probs, labels, n)
    confusion = m.pop("confusion")
    support = confusion.sum(dim=1).tolist()
    result = {
        **header,
        "task": "single",
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
    write_csv(
        out / "per_class.csv",
        ["class", "support", "precision", "recall", "f1"],
        [
            [r["class"], r["support"], f"{r['precision']:.4f}", f"{r['recall']:.4f}", f"{r['f1']:.4f}"]
            for r in result["per_class"]
        ],
    )
    write_csv(
        out / "confusion_matrix.csv",
        ["true\\predicted", *loaded.classes],
        [[c, *[int(v) for v in confusion[i]]] for i, c in enumerate(loaded.classes)],
    )
    top_p, top_i = probs.max(dim=1)
    predictions = [
        [
            s.path,
            loaded.classes[s.label],
            loaded.classes[int(top_i[r])],
            f"{float(top_p[r]):.6f}",
            f"{float(probs[r, s.label]):.6f}",
        ]
        for r, s in enumerate(samples)
    ]
    write_csv(out / "predictions.csv", PREDICTION_COLUMNS, predictions)
    title = f"{loaded.name} - {split_name}: top-1 {m['top1']:.3f}, macro-F1 {m['macro_f1']:.3f}"
    confusion_png(confusion, loaded.classes, out / "confusion_matrix.png", title)
    write_error_gallery(
        out, read_predictions(out / "predictions.csv"), count=gallery, title=f"{loaded.name}: {split_name}"
    )
    return result
