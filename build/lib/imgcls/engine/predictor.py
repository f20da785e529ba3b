"""The one door from a trained model to class scores: ``load_predictor`` and ``predict_samples``.

``evaluate``, ``predict``, ``serve``, ``compare``'s inference column, ``export`` (for its PyTorch model),
the feature cache and head-only training's frozen backbone all get a runnable model here, and each
records which engine ran and from which file (``Predictor.describe``).

Sources: a run folder (its ``export/model.onnx`` when that is newer than the checkpoint, else the
checkpoint run by the fastest engine), an exported ``.onnx`` with its sidecar, or the name of a
registered model with ImageNet weights.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from imgcls.data.layouts import Sample
from imgcls.data.transforms import build_eval_transform
from imgcls.errors import ImgclsError
from imgcls.rundir import RunPaths, open_run, read_json

log = logging.getLogger(__name__)


@dataclass
class Predictor:
    run: object  # a runner: normalised NCHW float batch -> outputs (logits, or features for a backbone)
    classes: list[str]
    image_size: int
    name: str
    model: nn.Module | None = None  # the PyTorch model, when the source has one
    paths: RunPaths | None = None
    info: dict = field(default_factory=dict)

    @property
    def engine(self) -> str:
        return self.run.engine

    def describe(self) -> dict:
        """What produced the numbers: the engine and the file it ran."""
        return {"engine": self.engine, "file": self.run.file, "model": self.name}

    @property
    def transform(self):
        return build_eval_transform(self.image_size)

    def probabilities(self, images: list[Image.Image]) -> torch.Tensor:
        x = torch.stack([self.transform(im) for im in images])
        with torch.no_grad():
            return self.run(x).float().cpu().softmax(dim=1)

    def topk(self, images: list[Image.Image], k: int = 5) -> list[list[dict]]:
        p, i = self.probabilities(images).topk(min(k, len(self.classes)), dim=1)
        return [
            [{"class": self.classes[int(c)], "index": int(c), "probability": float(q)} for q, c in zip(pr, ir)]
            for pr, ir in zip(p, i)
        ]


def predictor_for_module(
    model: nn.Module, image_size: int, *, classes=None, name: str = "", engine=None, file: str | None = None
) -> Predictor:
    from imgcls.engine.onnx_engine import make_runner

    runner = make_runner(model.eval(), image_size, engine=engine, file=file)
    return Predictor(runner, list(classes or []), image_size, name, model=model)


def imagenet_categories() -> list[str]:
    from torchvision.models import EfficientNet_B0_Weights

    return list(EfficientNet_B0_Weights.IMAGENET1K_V1.meta["categories"])


def load_trained_model(paths: RunPaths, *, checkpoint: str = "best") -> tuple[nn.Module, list[str], int, str]:
    """(model with the checkpoint's weights, classes, image size, model spec) of a run folder."""
    from imgcls.config import load_run_config
    from imgcls.models.registry import create_model, parse_model_spec
    from imgcls.models.weights import load_state_dict_file

    cfg = load_run_config(paths.config)
    classes = read_json(paths.classes)
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise ImgclsError(f"{paths.classes}: expected a list of class names")
    if not cfg.model:
        raise ImgclsError(f"{paths.config}: no model recorded")
    name, kwargs = parse_model_spec(cfg.model)
    # Weights come from the checkpoint; pretrained=False so nothing is downloaded here.
    model = create_model(name, len(classes), pretrained=False, image_size=cfg.image_size, **kwargs)
    ckpt = paths.best if checkpoint == "best" else paths.last
    state = load_state_dict_file(ckpt)
    if not isinstance(state, dict) or not isinstance(state.get("state_dict"), dict):
        raise ImgclsError(f"{ckpt}: not an imgcls checkpoint (no state_dict)")
    weights = {k.removeprefix("model."): v for k, v in state["state_dict"].items() if k.startswith("model.")}
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise ImgclsError(f"{ckpt} does not fit model {cfg.model!r}: {str(exc).splitlines()[0]}") from None
    return model.eval(), classes, cfg.image_size, cfg.model


def read_sidecar(path: Path) -> dict:
    """An export's ``model.json``, checked: a hand-edited or foreign file fails in one line."""
    if not path.is_file():
        raise ImgclsError(
            f"{path.with_suffix('.onnx').name}: its sidecar {path.name} is missing (made by imgcls export)"
        )
    info = read_json(path)
    problems = []
    if not isinstance(info, dict):
        raise ImgclsError(f"{path}: expected a JSON object (made by imgcls export)")
    classes = info.get("classes")
    if not isinstance(classes, list) or len(classes) < 2 or not all(isinstance(c, str) for c in classes):
        problems.append("'classes' must be a list of at least two names")
    size = info.get("image_size")
    if isinstance(size, bool) or not isinstance(size, int) or not 16 <= size <= 4096:
        problems.append("'image_size' must be a whole number of pixels between 16 and 4096")
    if not isinstance(info.get("model", ""), str):
        problems.append("'model' must be a string")
    if problems:
        raise ImgclsError(f"{path}: {'; '.join(problems)}")
    return info


def _from_onnx(path: Path, sidecar: Path) -> Predictor:
    from imgcls.engine.onnx_engine import OrtRunner, onnxruntime_available

    info = read_sidecar(sidecar)
    if not onnxruntime_available():
        raise ImgclsError(f"{path}: running an ONNX model needs onnxruntime (pip install onnxruntime)")
    return Predictor(OrtRunner(path), info["classes"], info["image_size"], info.get("model") or path.stem, info=info)


def _fresh_export(paths: RunPaths) -> Path | None:
    onnx = paths.export_onnx
    if onnx.is_file() and onnx.with_name("model.json").is_file() and paths.best.is_file():
        if onnx.stat().st_mtime >= paths.best.stat().st_mtime:
            return onnx
    return None


def load_predictor(ref: str | Path, *, engine: str | None = None, checkpoint: str = "best") -> Predictor:
    """``engine``: auto (ONNX Runtime on CPU when possible) | onnx | torch (always the PyTorch model)."""
    from imgcls.engine.onnx_engine import ENGINE_ENV, onnxruntime_available

    engine = engine or os.environ.get(ENGINE_ENV) or "auto"
    ref_s = str(ref)
    path = Path(ref_s)
    if path.suffix == ".onnx":
        if not path.is_file():
            raise ImgclsError(f"not found: {path}")
        if engine == "torch":
            raise ImgclsError(f"{path}: an ONNX file runs in ONNX Runtime only (drop the torch engine)")
        sidecar = path.with_name("model.json") if path.name == "model.onnx" else path.with_suffix(".json")
        return _from_onnx(path, sidecar)
    if not path.exists():
        from imgcls.models.registry import create_model, get_model_info, list_models

        if ref_s in list_models() and get_model_info(ref_s).has_weights:
            model = create_model(ref_s, 1000, pretrained=True)
            size = get_model_info(ref_s).default_image_size
            return predictor_for_module(model, size, classes=imagenet_categories(), name=ref_s, engine=engine)
    paths = open_run(path, checkpoint=checkpoint)
    summary = read_json(paths.summary) if paths.summary.is_file() else {}
    export = _fresh_export(paths) if checkpoint == "best" and engine != "torch" else None
    if export is not None and onnxruntime_available():
        predictor = _from_onnx(export, export.with_name("model.json"))
        predictor.paths = paths
        predictor.info["summary"] = summary
        return predictor
    model, classes, size, spec = load_trained_model(paths, checkpoint=checkpoint)
    ckpt = paths.best if checkpoint == "best" else paths.last
    predictor = predictor_for_module(model, size, classes=classes, name=spec, engine=engine, file=str(ckpt))
    predictor.paths = paths
    predictor.info["summary"] = summary
    return predictor


@torch.no_grad()
def predict_samples(
    predictor: Predictor,
    samples: list[Sample],
    *,
    transform=None,
    batch_size: int = 64,
    workers: int | None = None,
    probabilities: bool = True,
    on_batch=None,
    tta: str | None = None,
) -> tuple[torch.Tensor, list[int]]:
    """Outputs for the samples that decoded (softmax unless ``probabilities=False``), and their indices.

    Decoding runs in the project's DataLoader (``make_loader``); files that fail are skipped and logged.
    ``on_batch(outputs, indices)``: receive each batch instead of keeping them all (large activations).
    ``tta="flip"``: average the probabilities of each image and its mirror image.
    """
    if tta not in (None, "flip"):
        raise ImgclsError(f"--tta {tta!r}: only flip is offered")
    from imgcls.data.datamodule import default_workers, make_loader
    from imgcls.data.dataset import ImageDataset

    dataset = ImageDataset(samples, transform or predictor.transform, with_index=True)
    workers = default_workers() if workers is None else workers
    loader = make_loader(
        dataset, batch_size=batch_size, workers=min(workers, max(0, len(samples) // batch_size)), shuffle=False
    )
    outputs, kept = [], []
    for batch in loader:
        if batch is None:
            continue
        x, _, idx = batch
        out = predictor.run(x).float().cpu()
        out = out.softmax(dim=1) if probabilities else out
        if tta == "flip" and probabilities:
            out = (out + predictor.run(x.flip(3)).float().cpu().softmax(dim=1)) / 2
        if on_batch is not None:
            on_batch(out, idx.tolist())
        else:
            outputs.append(out)
        kept += idx.tolist()
    skipped = len(samples) - len(kept)
    if skipped:
        log.warning("%d of %d images could not be decoded and were skipped", skipped, len(samples))
    width = outputs[0].shape[1] if outputs else len(predictor.classes)
    return (torch.cat(outputs) if outputs else torch.zeros(0, width)), kept
