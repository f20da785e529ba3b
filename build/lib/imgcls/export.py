"""``imgcls export``: a run's best model as ONNX (verified against PyTorch) or safetensors, with a sidecar.

The sidecar JSON (``model.json``) holds what a consumer needs to preprocess and label: class names,
image size, eval resize, mean/std and the model spec.
"""

from __future__ import annotations

from pathlib import Path

import torch

from imgcls.data.transforms import IMAGENET_MEAN, IMAGENET_STD, eval_resize
from imgcls.engine.predictor import load_predictor
from imgcls.errors import ImgclsError
from imgcls.rundir import RunLock, read_json, write_json

MAX_PROB_DIFF = 1e-4
FORMATS = ("onnx", "safetensors")


def sidecar(loaded, fmt: str, weights_file: str) -> dict:
    summary = loaded.paths.summary
    return {
        "format": fmt,
        "file": weights_file,
        "model": loaded.name,
        "classes": loaded.classes,
        "image_size": loaded.image_size,
        "resize": eval_resize(loaded.image_size),
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "input": "float32 NCHW RGB in [0,1] after Resize(resize)+CenterCrop(image_size), then (x-mean)/std",
        "output": "logits (apply softmax for probabilities)",
        "best_val_acc": read_json(summary).get("best_val_acc") if summary.is_file() else None,
    }


def verify_onnx(model: torch.nn.Module, path: Path, image_size: int, *, seed: int = 0) -> float:
    """Max |probability difference| between ONNX Runtime and PyTorch on random inputs (batch 1 and 3)."""
    from imgcls.engine.onnx_engine import OrtRunner

    runner = OrtRunner(path)
    gen = torch.Generator().manual_seed(seed)
    worst = 0.0
    with torch.no_grad():
        for batch in (1, 3):
            x = torch.randn(batch, 3, image_size, image_size, generator=gen)
            diff = (runner(x).softmax(1) - model(x).softmax(1)).abs().max().item()
            worst = max(worst, diff)
    return worst


def export(run_dir: str | Path, fmt: str = "onnx", out: str | Path | None = None, quantize: str | None = None) -> dict:
    if quantize not in (None, "int8") or (quantize and fmt != "onnx"):
        raise ImgclsError(f"--quantize {quantize!r}: only int8, and only with --format onnx")
    if fmt not in FORMATS:
        raise ImgclsError(f"unknown --format {fmt!r}; use one of {', '.join(FORMATS)}")
    loaded = load_predictor(run_dir, engine="torch")
    folder = Path(out) if out else loaded.paths.export_dir
    with RunLock(loaded.paths.root):  # a training or another export of this run waits its turn
        folder.mkdir(parents=True, exist_ok=True)
        return _export(loaded, fmt, folder, quantize)


def _export(loaded, fmt: str, folder: Path, quantize: str | None) -> dict:
    model = loaded.model.eval()
    if fmt == "safetensors":
        from safetensors.torch import save_file

        path = folder / "model.safetensors"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
        info = sidecar(loaded, fmt, path.name)
        write_json(folder / "model.safetensors.json", info)
        return {"path": str(path), "sidecar": str(folder / "model.safetensors.json")}
    from imgcls.engine.onnx_engine import export_onnx, onnxruntime_available

    path = export_onnx(model, loaded.image_size, folder / "model.onnx")
    if not onnxruntime_available():
        raise ImgclsError(f"wrote {path} but cannot verify it: onnxruntime is not installed")
    diff = verify_onnx(model, path, loaded.image_size)
    if not diff <= MAX_PROB_DIFF:
        path.rename(path.with_suffix(".onnx.unverified"))
        raise ImgclsError(f"ONNX export disagrees with PyTorch: max |Δ probability| {diff:.2e} > {MAX_PROB_DIFF}")
    info = {**sidecar(loaded, fmt, path.name), "verified_max_prob_diff": diff}
    write_json(folder / "model.json", info)
    result = {"path": str(path), "sidecar": str(folder / "model.json"), "max_prob_diff": diff}
    if quantize == "int8":
        result["int8"] = _export_int8(loaded, path, folder)
    return result


def _export_int8(loaded, fp32: Path, folder: Path) -> dict:
    """int8 beside the fp32 export, calibrated on training images, checked on the validation split."""
    from imgcls.config import load_run_config
    from imgcls.data.layouts import discover
    from imgcls.engine.onnx_engine import OrtRunner
    from imgcls.quantize import quantize_int8, timed

    cfg = load_run_config(loaded.paths.config)
    if not cfg.data or not Path(cfg.data).is_dir():
        raise ImgclsError(f"--quantize int8 calibrates on the run's training images, but {cfg.data} is not there")
    splits = discover(cfg.data, val_split=cfg.val_split, seed=cfg.seed)
    out = folder / "model.int8.onnx"
    r = quantize_int8(fp32, out, calibration=splits.train, validation=splits.val, transform=loaded.transform)
    r["fp32_images_per_s"] = round(timed(OrtRunner(fp32), loaded.image_size), 1)
    r["int8_images_per_s"] = round(timed(OrtRunner(out), loaded.image_size), 1)
    write_json(folder / "model.int8.json", {**sidecar(loaded, "onnx-int8", out.name), **r})
    return {"path": str(out), **r}
