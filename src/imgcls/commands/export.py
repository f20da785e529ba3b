"""``imgcls export``: a run's best model as ONNX (verified against PyTorch) or safetensors, with a sidecar.

The sidecar JSON (``model.json`` beside ``model.onnx``, ``model.safetensors.json`` beside the
safetensors file, ``model.int8.json`` beside ``model.int8.onnx``) holds what a consumer needs to
preprocess and label: class names, image size, eval resize, mean/std and the model spec. It also ties the
export to its weights: the SHA-256 of the exported file and of the ``best.ckpt`` it came from, so a model
trained or resumed since, or a file copied in from another run, is never taken for this one
(``predictor.export_problem``). ``load_predictor`` reads any of them back.
"""

from __future__ import annotations

from pathlib import Path

import torch

from imgcls.core.errors import ImgclsError
from imgcls.core.files import atomic_write, remove_dead_temporaries, sha256_file, write_json
from imgcls.core.lock import RunLock
from imgcls.data.transforms import IMAGENET_MEAN, IMAGENET_STD, eval_resize
from imgcls.engine.predictor import EXPORT_SUFFIXES, load_predictor, onnx_predictor, read_sidecar, sidecar_path

MAX_PROB_DIFF = 1e-4
FORMATS = ("onnx", "safetensors")
FILES = {"onnx": ("model.onnx",), "safetensors": ("model.safetensors",), "int8": ("model.int8.onnx",)}


def sidecar(loaded, fmt: str, weights: Path) -> dict:
    summary = loaded.info.get("summary") or {}
    info = {
        "format": fmt,
        "file": weights.name,
        "sha256": sha256_file(weights),
        "checkpoint_sha256": sha256_file(loaded.paths.best),
        "model": loaded.name,
        "task": loaded.task,
        "classes": loaded.classes,
        "category": loaded.category,
        "image_size": loaded.image_size,
        "eval_crop": loaded.eval_crop,
        "resize": eval_resize(loaded.image_size) if loaded.eval_crop else loaded.image_size,
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "input": (
            "float32 NCHW RGB in [0,1] after Resize(resize)+CenterCrop(image_size), then (x-mean)/std"
            if loaded.eval_crop
            else "float32 NCHW RGB in [0,1] after Resize((image_size, image_size)) of the whole image, then (x-mean)/std"
        ),
        "output": "logits (apply softmax for probabilities)",
        "best_val_acc": summary.get("best_val_acc"),
    }
    if loaded.multilabel:
        info.update(
            output="logits, one per label (apply a sigmoid; a label is predicted when its probability >= its threshold)",
            thresholds=loaded.thresholds,
            best_val_mAP=summary.get("best_val_mAP"),
        )
    return info


def verify_onnx(model: torch.nn.Module, exported, *, seed: int = 0) -> float:
    """Max |probability difference| between the exported predictor and PyTorch on random inputs (batch 1 and 3)."""
    gen = torch.Generator().manual_seed(seed)
    worst = 0.0
    with torch.no_grad():
        for batch in (1, 3):
            x = torch.randn(batch, 3, exported.image_size, exported.image_size, generator=gen)
            diff = (exported.run(x).softmax(1) - model(x).softmax(1)).abs().max().item()
            worst = max(worst, diff)
    return worst


def foreign_files(folder: Path, names: tuple[str, ...]) -> list[str]:
    """Which of the files an export would write in ``folder`` are not an earlier export's: a file whose
    sidecar is missing or is not imgcls export's."""
    foreign = []
    for name in names:
        weights = folder / name
        side = sidecar_path(weights)
        if not weights.exists() and not side.exists():
            continue
        try:
            ours = "format" in read_sidecar(side, weights)
        except ImgclsError:
            ours = False
        if not ours:
            foreign += [p.name for p in (weights, side) if p.exists()]
    return foreign


def export(
    run_dir: str | Path,
    fmt: str = "onnx",
    out: str | Path | None = None,
    quantize: str | None = None,
    *,
    force: bool = False,
) -> dict:
    if quantize not in (None, "int8") or (quantize and fmt != "onnx"):
        raise ImgclsError(f"--quantize {quantize!r}: only int8, and only with --format onnx")
    if fmt not in FORMATS:
        raise ImgclsError(f"unknown --format {fmt!r}; use one of {', '.join(FORMATS)}")
    loaded = load_predictor(run_dir, engine="torch")
    if loaded.paths is None or loaded.model is None or Path(str(run_dir)).suffix in EXPORT_SUFFIXES:
        raise ImgclsError(f"{run_dir}: export takes a run folder (imgcls train's output)")
    folder = Path(out) if out else loaded.paths.export_dir
    if folder.exists() and not folder.is_dir():
        raise ImgclsError(f"{folder} is a file; --out takes a folder")
    names = FILES[fmt] + (FILES["int8"] if quantize else ())
    foreign = foreign_files(folder, names)
    if foreign and not force:
        raise ImgclsError(
            f"{folder} holds {', '.join(foreign)} that imgcls export did not write; choose another --out "
            "(or pass --force to replace them)"
        )
    with RunLock(loaded.paths.root):  # a training or another export of this run waits its turn
        folder.mkdir(parents=True, exist_ok=True)
        remove_dead_temporaries(folder, ".model*.tmp")  # a killed export's half file
        return _export(loaded, fmt, folder, quantize)


def _export(loaded, fmt: str, folder: Path, quantize: str | None) -> dict:
    model = loaded.model.eval()
    if fmt == "safetensors":
        from safetensors.torch import save

        path = folder / "model.safetensors"
        blob = save({k: v.contiguous() for k, v in model.state_dict().items()})
        atomic_write(path, lambda fh: fh.write(blob), binary=True)
        info = sidecar(loaded, fmt, path)
        write_json(folder / "model.safetensors.json", info)
        return {"path": str(path), "sidecar": str(folder / "model.safetensors.json")}
    from imgcls.engine.onnx_engine import export_onnx, onnxruntime_available

    path = export_onnx(model, loaded.image_size, folder / "model.onnx")
    if not onnxruntime_available():
        raise ImgclsError(f"wrote {path} but cannot verify it: onnxruntime is not installed")
    info = sidecar(loaded, fmt, path)
    diff = verify_onnx(model, onnx_predictor(path, info))
    if not diff <= MAX_PROB_DIFF:
        path.rename(path.with_suffix(".onnx.unverified"))
        raise ImgclsError(f"ONNX export disagrees with PyTorch: max |Δ probability| {diff:.2e} > {MAX_PROB_DIFF}")
    info["verified_max_prob_diff"] = diff
    write_json(folder / "model.json", info)
    result = {"path": str(path), "sidecar": str(folder / "model.json"), "max_prob_diff": diff}
    if quantize == "int8":
        result["int8"] = _export_int8(loaded, path, folder, info)
    return result


def _export_int8(loaded, fp32: Path, folder: Path, info: dict) -> dict:
    """int8 beside the fp32 export, calibrated on training images, checked on the validation split."""
    from imgcls.commands.quantize import quantize_int8
    from imgcls.engine.timing import images_per_second

    splits = loaded.saved.splits()  # the exact training and validation images
    out = folder / "model.int8.onnx"
    r = quantize_int8(onnx_predictor(fp32, info), out, calibration=splits.train, validation=splits.val)
    timing = dict(min_repeats=5, min_seconds=0.0)
    r["fp32_images_per_s"] = round(images_per_second(onnx_predictor(fp32, info).run, loaded.image_size, **timing), 1)
    r["int8_images_per_s"] = round(images_per_second(onnx_predictor(out, info).run, loaded.image_size, **timing), 1)
    write_json(folder / "model.int8.json", {**sidecar(loaded, "onnx-int8", out), **r})
    return {"path": str(out), **r}
