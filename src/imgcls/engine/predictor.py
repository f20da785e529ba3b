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
from typing import TYPE_CHECKING

import torch
from PIL import Image
from torch import nn

from imgcls.core.deadline import check as check_deadline
from imgcls.core.errors import ImgclsError
from imgcls.core.files import read_json
from imgcls.core.rundir import DEFAULT_THRESHOLD, RunPaths
from imgcls.data.layouts import Sample
from imgcls.data.transforms import build_eval_transform

if TYPE_CHECKING:
    from imgcls.plan import SavedRun

log = logging.getLogger(__name__)


@dataclass
class Predictor:
    """A runnable model and everything needed to read its outputs, complete when made (``load_predictor``,
    ``predictor_for_module``): classes, input size and crop, task and per-label thresholds, and the run
    folder it came from (``saved``), so callers never reopen it."""

    run: object  # a runner: normalised NCHW float batch -> outputs (logits, or features for a backbone)
    classes: list[str]
    image_size: int
    name: str
    model: nn.Module | None = None  # the PyTorch model, when the source has one
    saved: SavedRun | None = None  # the run folder it came from (an export inside one, too)
    info: dict = field(default_factory=dict)  # the export's sidecar; "summary": the run's summary.json
    task: str = "single"  # or "multilabel": sigmoid per label, predicted above its threshold
    thresholds: list[float] = field(default_factory=list)  # multi-label: one per class (0.5 when untuned)
    eval_crop: bool = True  # Resize + CenterCrop; else the whole image resized (multi-label default)
    category: str = "name"  # what a predictions CSV writes for a class: its name, or its index (flat layouts)

    def __post_init__(self):
        if self.multilabel and not self.thresholds:
            self.thresholds = [DEFAULT_THRESHOLD] * len(self.classes)

    @property
    def paths(self) -> RunPaths | None:
        return self.saved.paths if self.saved is not None else None

    @property
    def multilabel(self) -> bool:
        return self.task == "multilabel"

    def label(self, index: int) -> str:
        """Class ``index`` as the data labels it (a predictions CSV's answer)."""
        return str(index) if self.category == "index" else self.classes[index]

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
                for j, (c, q, t) in enumerate(zip(self.classes, probs, self.thresholds))
            ]
            out.append(sorted(rows, key=lambda r: -r["probability"]))
        return out

    def decide(self, probs: torch.Tensor) -> torch.Tensor:
        """Multi-label decisions (N, C) bool: each probability against its label's threshold."""
        return probs >= torch.tensor(self.thresholds)


def predictor_for_module(
    model: nn.Module, image_size: int, *, classes=None, name: str = "", engine=None, file: str | None = None
) -> Predictor:
    """A bare module (a frozen backbone, a stock ImageNet classifier) on the fastest engine."""
    return Predictor(_runner(model, image_size, engine, file), list(classes or []), image_size, name, model=model)


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
    info = read_json(path, expect=dict, what="a JSON object (made by imgcls export)")
    problems = []
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
    if info.get("category", "name") not in ("name", "index"):
        problems.append("'category' must be name or index")
    thresholds = info.get("thresholds")
    if thresholds is not None and (
        not isinstance(thresholds, list)
        or not isinstance(classes, list)
        or len(thresholds) != len(classes)
        or not all(isinstance(t, (int, float)) and not isinstance(t, bool) and 0 <= t <= 1 for t in thresholds)
    ):
        problems.append("'thresholds' must be one number in [0, 1] per class")
    for key in ("sha256", "checkpoint_sha256"):
        if key in info and not (isinstance(info[key], str) and len(info[key]) == 64):
            problems.append(f"'{key}' must be a SHA-256 in hex")
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


def _sidecar_fields(info: dict) -> dict:
    """Predictor fields from a sidecar (exports made before some of them: single-label, crop, names)."""
    task = info.get("task", "single")
    thresholds = [float(t) for t in info.get("thresholds") or []] if task == "multilabel" else []
    return dict(
        task=task,
        eval_crop=bool(info.get("eval_crop", True)),
        thresholds=thresholds,
        category=info.get("category", "name"),
    )


def onnx_predictor(path: Path, info: dict, *, saved: SavedRun | None = None) -> Predictor:
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
    name = info.get("model") or path.stem
    return Predictor(runner, list(classes), size, name, saved=saved, info=info, **_sidecar_fields(info))


def export_problem(path: Path, info: dict, saved: SavedRun | None) -> str | None:
    """Why an export cannot stand for its run, or None: the file is not the one its sidecar describes (a
    file copied in from elsewhere), or it was made from another ``best.ckpt`` than the run's now (trained
    or resumed since). Exports from before these records have neither, and only the first check needs them."""
    from imgcls.core.files import sha256_file

    if "sha256" in info and sha256_file(path) != info["sha256"]:
        return f"{path} is not the file its sidecar {sidecar_path(path).name} describes (replaced, or copied from another run)"
    if saved is None or not saved.paths.best.is_file():
        return None
    if "checkpoint_sha256" not in info:
        return f"{path} does not record the checkpoint it came from (made by an older imgcls)"
    if info["checkpoint_sha256"] != sha256_file(saved.paths.best):
        return f"{path} was made from an earlier {saved.paths.best.relative_to(saved.paths.root)} than the run's now"
    return None


def _owning_run(path: Path) -> SavedRun | None:
    """The run folder an export lies in (``RUN/export/model.onnx``), if it is one."""
    from imgcls.core.rundir import folder_state
    from imgcls.plan import open_saved_run

    root = path.parent.parent
    if folder_state(root) != "run" or not RunPaths(root).best.is_file():
        return None
    return open_saved_run(root)


def _from_export(path: Path, engine: str, saved: SavedRun | None = None) -> Predictor:
    """An exported ``.onnx`` (ONNX Runtime) or ``.safetensors`` (PyTorch) with its sidecar, refused when it
    does not match its sidecar or its run's current checkpoint (``export_problem``)."""
    if not path.is_file():
        raise ImgclsError(f"not found: {path}")
    info = read_sidecar(sidecar_path(path), path)
    saved = saved or _owning_run(path)
    problem = export_problem(path, info, saved)
    if problem:
        again = f"imgcls export {saved.paths.root}" if saved else "imgcls export RUN"
        raise ImgclsError(f"{problem}; export it again: {again}{' --quantize int8' if '.int8.' in path.name else ''}")
    if saved is not None:
        info["summary"] = _summary(saved)
    if path.suffix == ".onnx":
        if engine == "torch":
            raise ImgclsError(f"{path}: an ONNX file runs in ONNX Runtime only (drop the torch engine)")
        return onnx_predictor(path, info, saved=saved)
    from imgcls.models.weights import load_state_dict_file
    from imgcls.plan import ModelChoice

    if not info.get("model"):
        raise ImgclsError(f"{sidecar_path(path)}: 'model' (the model spec) is needed to rebuild the network")
    model = ModelChoice.parse(info["model"]).build(len(info["classes"]), image_size=info["image_size"])
    try:
        model.load_state_dict(load_state_dict_file(path))
    except RuntimeError as exc:
        raise ImgclsError(f"{path} does not fit {info['model']!r}: {str(exc).splitlines()[0]}") from None
    runner = _runner(model, info["image_size"], engine, str(path))
    fields = _sidecar_fields(info)
    return Predictor(runner, list(info["classes"]), info["image_size"], info["model"], model, saved, info, **fields)


def _summary(saved: SavedRun) -> dict:
    if not saved.paths.summary.is_file():
        return {}
    summary = read_json(saved.paths.summary)
    return summary if isinstance(summary, dict) else {}


def _runner(model: nn.Module, image_size: int, engine: str | None, file: str | None):
    from imgcls.engine.onnx_engine import make_runner

    return make_runner(model.eval(), image_size, engine=engine, file=file)


def _fresh_export(saved: SavedRun) -> Path | None:
    """The run's ``export/model.onnx`` when it stands for the current best checkpoint; a stale one is
    passed over with a warning (the checkpoint runs instead)."""
    onnx = saved.paths.export_onnx
    if not (onnx.is_file() and sidecar_path(onnx).is_file() and saved.paths.best.is_file()):
        return None
    try:
        problem = export_problem(onnx, read_sidecar(sidecar_path(onnx), onnx), saved)
    except ImgclsError as exc:
        problem = str(exc)
    if problem:
        log.warning("%s; running the checkpoint instead (imgcls export %s makes a new one)", problem, saved.paths.root)
        return None
    return onnx


EXPORT_SUFFIXES = (".onnx", ".safetensors")
ENGINES = ("auto", "onnx", "torch", "int8")


def load_predictor(ref: str | Path, *, engine: str | None = None, checkpoint: str = "best") -> Predictor:
    """The one loader of trained models. ``ref``: a run folder, an exported ``.onnx``/``.safetensors``, or a
    registered model with ImageNet weights. ``engine``: auto (ONNX Runtime on CPU when possible) | onnx |
    torch (always the PyTorch model) | int8 (the run's accepted ``export/model.int8.onnx``; only when asked)."""
    from imgcls.engine.onnx_engine import ENGINE_ENV, onnxruntime_available
    from imgcls.plan import open_saved_run

    engine = engine or os.environ.get(ENGINE_ENV) or "auto"
    if engine not in ENGINES:
        raise ImgclsError(f"unknown engine {engine!r}; use one of {', '.join(ENGINES)}")
    path = Path(str(ref))
    if path.suffix in EXPORT_SUFFIXES:
        if engine == "int8" and ".int8." not in path.name:
            raise ImgclsError(f"{path} is not an int8 export; --engine int8 takes a run folder or a model.int8.onnx")
        return _from_export(path, "auto" if engine == "int8" else engine)
    if engine == "int8":  # only when asked: the run's accepted int8 export
        saved = open_saved_run(path, checkpoint="best")
        int8 = saved.paths.export_dir / "model.int8.onnx"
        if not int8.is_file():
            raise ImgclsError(
                f"{path} has no int8 export; make one with: imgcls export {path} --quantize int8 "
                "(it is written only when it keeps the model's answers)"
            )
        return _from_export(int8, "auto", saved)
    if not path.exists():
        from imgcls.models.registry import create_model, get_model_info, list_models

        if str(ref) in list_models() and get_model_info(str(ref)).has_weights:
            model = create_model(str(ref), 1000, pretrained=True)
            return predictor_for_module(
                model,
                get_model_info(str(ref)).default_image_size,
                classes=imagenet_categories(),
                name=str(ref),
                engine=engine,
            )
    saved = open_saved_run(path, checkpoint=checkpoint)
    export = _fresh_export(saved) if checkpoint == "best" and engine != "torch" else None
    if export is not None and onnxruntime_available():
        return _from_export(export, engine, saved)
    return _from_checkpoint(saved, engine, checkpoint)


def _from_checkpoint(saved: SavedRun, engine: str | None, checkpoint: str) -> Predictor:
    from imgcls.core.rundir import read_thresholds

    cfg = saved.cfg
    model = load_trained_model(saved, checkpoint=checkpoint)
    ckpt = saved.paths.best if checkpoint == "best" else saved.paths.last
    summary = _summary(saved)
    task = cfg.task if cfg.task != "auto" else "single"
    return Predictor(
        _runner(model, cfg.image_size, engine, str(ckpt)),
        list(saved.classes),
        cfg.image_size,
        cfg.model,
        model,
        saved,
        {"summary": summary},
        task=task,
        thresholds=read_thresholds(saved.paths.thresholds, saved.classes) if task == "multilabel" else [],
        eval_crop=cfg.eval_crop is not False,
        category=summary.get("category", "name"),
    )


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
    from imgcls.core.system import default_workers
    from imgcls.data.dataset import ImageDataset
    from imgcls.data.loader import make_loader

    dataset = ImageDataset(
        samples, transform or predictor.transform, with_index=True, num_classes=len(predictor.classes)
    )
    workers = default_workers() if workers is None else workers
    on_gpu = getattr(getattr(predictor.run, "device", None), "type", "cpu") == "cuda"
    loader = make_loader(
        dataset,
        batch_size=batch_size,
        workers=min(workers, max(0, len(samples) // batch_size)),
        shuffle=False,
        pin_memory=on_gpu,
    )
    outputs, kept = [], []
    for batch in loader:
        check_deadline()  # a search's trial may be out of time in the middle of an extraction
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
