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
from imgcls.files import read_json
from imgcls.rundir import RunPaths

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
    task: str = "single"  # or "multilabel": sigmoid per label, predicted above its threshold
    thresholds: list[float] | None = None  # multi-label, per class
    eval_crop: bool = True  # Resize + CenterCrop; else the whole image resized (multi-label default)

    @property
    def multilabel(self) -> bool:
        return self.task == "multilabel"

    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits -> probabilities: softmax over classes, or a sigmoid per label (multi-label)."""
        return logits.float().sigmoid() if self.multilabel else logits.float().softmax(dim=1)

    @property
    def engine(self) -> str:
        return self.run.engine

    def describe(self) -> dict:
        """What produced the numbers: the engine and the file it ran."""
        return {"engine": self.engine, "file": self.run.file, "model": self.name}

    @property
    def transform(self):
        return build_eval_transform(self.image_size, crop=self.eval_crop)

    def probabilities(self, images: list[Image.Image]) -> torch.Tensor:
        x = torch.stack([self.transform(im) for im in images])
        with torch.no_grad():
            return self.activate(self.run(x).cpu())

    def topk(self, images: list[Image.Image], k: int = 5) -> list[list[dict]]:
        p, i = self.probabilities(images).topk(min(k, len(self.classes)), dim=1)
        return [
            [{"class": self.classes[int(c)], "index": int(c), "probability": float(q)} for q, c in zip(pr, ir)]
            for pr, ir in zip(p, i)
        ]

    def labels(self, images: list[Image.Image]) -> list[list[dict]]:
        """Multi-label: every label with its probability, threshold and whether it is predicted, most
        probable first."""
        out = []
        for probs in self.probabilities(images):
            rows = [
                {"class": c, "index": j, "probability": float(q), "threshold": t, "predicted": bool(q >= t)}
                for j, (c, q, t) in enumerate(zip(self.classes, probs, self.thresholds or [0.5] * len(self.classes)))
            ]
            out.append(sorted(rows, key=lambda r: -r["probability"]))
        return out

    def decide(self, probs: torch.Tensor) -> torch.Tensor:
        """Multi-label decisions (N, C) bool: each probability against its label's threshold."""
        return probs >= torch.tensor(self.thresholds or [0.5] * len(self.classes))


def predictor_for_module(
    model: nn.Module, image_size: int, *, classes=None, name: str = "", engine=None, file: str | None = None
) -> Predictor:
    from imgcls.engine.onnx_engine import make_runner

    runner = make_runner(model.eval(), image_size, engine=engine, file=file)
    return Predictor(runner, list(classes or []), image_size, name, model=model)


def imagenet_categories() -> list[str]:
    from torchvision.models import EfficientNet_B0_Weights

    return list(EfficientNet_B0_Weights.IMAGENET1K_V1.meta["categories"])


def load_trained_model(run, *, checkpoint: str = "best") -> nn.Module:
    """The model of a ``SavedRun`` with the checkpoint's weights, in eval mode."""
    from imgcls.models.weights import load_state_dict_file
    from imgcls.plan import ModelChoice

    cfg = run.cfg
    # Weights come from the checkpoint; pretrained=False so nothing is downloaded here.
    model = ModelChoice.parse(cfg.model).build(len(run.classes), image_size=cfg.image_size)
    ckpt = run.paths.best if checkpoint == "best" else run.paths.last
    state = load_state_dict_file(ckpt)
    if not isinstance(state, dict) or not isinstance(state.get("state_dict"), dict):
        raise ImgclsError(f"{ckpt}: not an imgcls checkpoint (no state_dict)")
    weights = {k.removeprefix("model."): v for k, v in state["state_dict"].items() if k.startswith("model.")}
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise ImgclsError(f"{ckpt} does not fit model {cfg.model!r}: {str(exc).splitlines()[0]}") from None
    return model.eval()


def read_sidecar(path: Path, weights: Path) -> dict:
    """An export's sidecar (``model.json``), checked: a hand-edited or foreign file fails in one line."""
    if not path.is_file():
        raise ImgclsError(f"{weights.name}: its sidecar {path.name} is missing (made by imgcls export)")
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
    for key in ("mean", "std"):
        values = info.get(key)
        if values is None:
            continue
        if not isinstance(values, list) or len(values) != 3 or not all(isinstance(v, (int, float)) for v in values):
            problems.append(f"'{key}' must be three numbers")
        elif key == "std" and not all(0 < v < 10 for v in values):
            problems.append("'std' values must be positive")
        elif key == "mean" and not all(-10 < v < 10 for v in values):
            problems.append("'mean' values must be within (-10, 10)")
    if info.get("task", "single") not in ("single", "multilabel"):
        problems.append("'task' must be single or multilabel")
    thresholds = info.get("thresholds")
    if thresholds is not None and (
        not isinstance(thresholds, list)
        or not isinstance(classes, list)
        or len(thresholds) != len(classes)
        or not all(isinstance(t, (int, float)) and 0 <= t <= 1 for t in thresholds)
    ):
        problems.append("'thresholds' must be one number in [0, 1] per class")
    if problems:
        raise ImgclsError(f"{path}: {'; '.join(problems)}")
    return info


def sidecar_path(weights: Path) -> Path:
    """``model.onnx`` -> ``model.json`` (imgcls export's names); any other file: ``<file>.json``."""
    if weights.name == "model.onnx":
        return weights.with_name("model.json")
    if weights.suffix == ".safetensors":
        return weights.with_name(weights.name + ".json")
    return weights.with_suffix(".json")


def onnx_predictor(path: Path, info: dict) -> Predictor:
    """An ONNX file in ONNX Runtime, checked against ``info`` (the sidecar): its input takes
    ``image_size`` images and its output has one score per class."""
    from imgcls.engine.onnx_engine import OrtRunner, onnxruntime_available

    if not onnxruntime_available():
        raise ImgclsError(f"{path}: running an ONNX model needs onnxruntime (pip install onnxruntime)")
    runner = OrtRunner(path)
    size, classes = info["image_size"], info["classes"]
    in_shape, out_shape = runner.shapes()
    if len(in_shape) != 4 or any(isinstance(d, int) and d != want for d, want in zip(in_shape[1:], (3, size, size))):
        raise ImgclsError(f"{path}: the model takes input {in_shape}, but its sidecar says {size} px RGB images")
    width = out_shape[-1] if out_shape else None
    if isinstance(width, int) and width != len(classes):
        raise ImgclsError(f"{path}: the model gives {width} scores, but its sidecar lists {len(classes)} classes")
    predictor = Predictor(runner, list(classes), size, info.get("model") or path.stem, info=info)
    return _with_task(predictor, info)


def _with_task(predictor: Predictor, info: dict) -> Predictor:
    """Task, thresholds and evaluation crop from a sidecar (exports made before them: single-label, crop)."""
    predictor.task = info.get("task", "single")
    predictor.eval_crop = bool(info.get("eval_crop", True))
    if predictor.multilabel:
        predictor.thresholds = [float(t) for t in info.get("thresholds") or [0.5] * len(predictor.classes)]
    return predictor


def _from_export(path: Path, engine: str) -> Predictor:
    """An exported ``.onnx`` (ONNX Runtime) or ``.safetensors`` (PyTorch) with its sidecar."""
    if not path.is_file():
        raise ImgclsError(f"not found: {path}")
    info = read_sidecar(sidecar_path(path), path)
    if path.suffix == ".onnx":
        if engine == "torch":
            raise ImgclsError(f"{path}: an ONNX file runs in ONNX Runtime only (drop the torch engine)")
        predictor = onnx_predictor(path, info)
    else:
        from imgcls.models.weights import load_state_dict_file
        from imgcls.plan import ModelChoice

        if not info.get("model"):
            raise ImgclsError(f"{sidecar_path(path)}: 'model' (the model spec) is needed to rebuild the network")
        model = ModelChoice.parse(info["model"]).build(len(info["classes"]), image_size=info["image_size"])
        try:
            model.load_state_dict(load_state_dict_file(path))
        except RuntimeError as exc:
            raise ImgclsError(f"{path} does not fit {info['model']!r}: {str(exc).splitlines()[0]}") from None
        predictor = predictor_for_module(
            model.eval(), info["image_size"], classes=info["classes"], name=info["model"], engine=engine, file=str(path)
        )
        predictor.info = info
        _with_task(predictor, info)
    run = path.parent.parent  # RUN/export/model.onnx: the run it came from, for its data and splits
    if (run / "config.yaml").is_file() and (run / "classes.json").is_file():
        predictor.paths = RunPaths(run)
    return predictor


def _fresh_export(paths: RunPaths) -> Path | None:
    onnx = paths.export_onnx
    if onnx.is_file() and onnx.with_name("model.json").is_file() and paths.best.is_file():
        if onnx.stat().st_mtime >= paths.best.stat().st_mtime:
            return onnx
    return None


EXPORT_SUFFIXES = (".onnx", ".safetensors")
ENGINES = ("auto", "onnx", "torch", "int8")


def load_predictor(ref: str | Path, *, engine: str | None = None, checkpoint: str = "best") -> Predictor:
    """``engine``: auto (ONNX Runtime on CPU when possible) | onnx | torch (always the PyTorch model) |
    int8 (the run's accepted ``export/model.int8.onnx``; never chosen unless asked)."""
    from imgcls.engine.onnx_engine import ENGINE_ENV, onnxruntime_available
    from imgcls.plan import open_saved_run

    engine = engine or os.environ.get(ENGINE_ENV) or "auto"
    if engine not in ENGINES:
        raise ImgclsError(f"unknown engine {engine!r}; use one of {', '.join(ENGINES)}")
    ref_s = str(ref)
    path = Path(ref_s)
    if path.suffix in EXPORT_SUFFIXES:
        return _from_export(path, "auto" if engine == "int8" else engine)
    if engine == "int8":  # only when asked: the run's accepted int8 export
        int8 = path / "export" / "model.int8.onnx"
        if not int8.is_file():
            raise ImgclsError(
                f"{path} has no int8 export; make one with: imgcls export {path} --quantize int8 "
                "(it is written only when it keeps the model's answers)"
            )
        predictor = _from_export(int8, "auto")
        predictor.info["summary"] = read_json(predictor.paths.summary) if predictor.paths.summary.is_file() else {}
        return predictor
    if not path.exists():
        from imgcls.models.registry import create_model, get_model_info, list_models

        if ref_s in list_models() and get_model_info(ref_s).has_weights:
            model = create_model(ref_s, 1000, pretrained=True)
            size = get_model_info(ref_s).default_image_size
            return predictor_for_module(model, size, classes=imagenet_categories(), name=ref_s, engine=engine)
    run = open_saved_run(path, checkpoint=checkpoint)
    paths = run.paths
    summary = read_json(paths.summary) if paths.summary.is_file() else {}
    export = _fresh_export(paths) if checkpoint == "best" and engine != "torch" else None
    if export is not None and onnxruntime_available():
        predictor = _from_export(export, engine)
    else:
        model = load_trained_model(run, checkpoint=checkpoint)
        ckpt = paths.best if checkpoint == "best" else paths.last
        predictor = predictor_for_module(
            model, run.cfg.image_size, classes=run.classes, name=run.cfg.model, engine=engine, file=str(ckpt)
        )
        predictor.task = run.cfg.task if run.cfg.task != "auto" else "single"
        predictor.eval_crop = run.cfg.eval_crop is not False
        if predictor.multilabel:
            from imgcls.rundir import read_thresholds

            predictor.thresholds = read_thresholds(paths.thresholds, run.classes)
    predictor.paths = paths
    predictor.info["summary"] = summary
    return predictor


def check_batch_args(batch_size: int, workers: int | None) -> None:
    """The batch arguments of every command that runs ``predict_samples`` (evaluate, predict)."""
    if batch_size < 1:
        raise ImgclsError(f"--batch-size must be at least 1, got {batch_size}")
    if workers is not None and workers < 0:
        raise ImgclsError(f"--workers must be 0 or more, got {workers}")


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
    """Outputs for the samples that decoded (probabilities: softmax, or sigmoid per label for a
    multi-label predictor; raw outputs with ``probabilities=False``), and their indices.

    Decoding runs in the project's DataLoader (``make_loader``); files that fail are skipped and logged.
    ``on_batch(outputs, indices)``: receive each batch instead of keeping them all (large activations).
    ``tta="flip"``: average the probabilities of each image and its mirror image.
    """
    if tta not in (None, "flip"):
        raise ImgclsError(f"--tta {tta!r}: only flip is offered")
    from imgcls.data.dataset import ImageDataset
    from imgcls.data.loader import default_workers, make_loader

    dataset = ImageDataset(
        samples, transform or predictor.transform, with_index=True, num_classes=len(predictor.classes)
    )
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
        out = predictor.activate(out) if probabilities else out
        if tta == "flip" and probabilities:
            out = (out + predictor.activate(predictor.run(x.flip(3)).cpu())) / 2
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
