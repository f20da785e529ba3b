"""Load a trained model from a run directory (or an ImageNet model by name) and run batched inference."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from imgcls.config import load_run_config
from imgcls.data.dataset import ImageDataset
from imgcls.data.datamodule import default_workers, make_loader
from imgcls.data.layouts import Sample
from imgcls.data.transforms import build_eval_transform
from imgcls.errors import ImgclsError
from imgcls.models.registry import create_model, get_model_info, list_models, parse_model_spec
from imgcls.models.weights import load_state_dict_file
from imgcls.rundir import RunPaths, open_run, read_json

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    model: nn.Module
    classes: list[str]
    image_size: int
    name: str
    paths: RunPaths | None  # None for a stock ImageNet model


def load_run(run_dir: str | Path, *, checkpoint: str = "best") -> LoadedModel:
    paths = open_run(run_dir, checkpoint=checkpoint)
    cfg = load_run_config(paths.config)
    classes = read_json(paths.classes)
    name, kwargs = parse_model_spec(cfg.model)
    # Weights come from the checkpoint; pretrained=False so nothing is downloaded here.
    model = create_model(name, len(classes), pretrained=False, image_size=cfg.image_size, **kwargs)
    ckpt = paths.best if checkpoint == "best" else paths.last
    state = load_state_dict_file(ckpt)
    weights = {k.removeprefix("model."): v for k, v in state.get("state_dict", {}).items() if k.startswith("model.")}
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise ImgclsError(f"{ckpt} does not fit model {cfg.model!r}: {str(exc).splitlines()[0]}") from None
    return LoadedModel(model.eval(), classes, cfg.image_size, cfg.model, paths)


def imagenet_categories() -> list[str]:
    from torchvision.models import EfficientNet_B0_Weights

    return list(EfficientNet_B0_Weights.IMAGENET1K_V1.meta["categories"])


def load_model_or_run(ref: str | Path) -> LoadedModel:
    """A run folder, or (when no such folder exists) a registry model name with its ImageNet head."""
    ref_s = str(ref)
    if not Path(ref_s).exists() and ref_s in list_models() and get_model_info(ref_s).has_weights:
        model = create_model(ref_s, 1000, pretrained=True)
        return LoadedModel(model.eval(), imagenet_categories(), get_model_info(ref_s).default_image_size, ref_s, None)
    return load_run(ref)


@torch.no_grad()
def run_batches(
    model: nn.Module, samples: list[Sample], image_size: int, *, transform=None, batch_size: int = 64,
    workers: int | None = None, engine: str | None = None, runner=None,
) -> tuple[torch.Tensor, list[int]]:  # fmt: skip
    """Model outputs for the samples that decoded (eval transform unless given), and their indices.

    ``runner``: a batch function from ``make_runner`` to reuse (saves re-hashing the weights per call).
    """
    from imgcls.engine.onnx_engine import make_runner

    dataset = ImageDataset(samples, transform or build_eval_transform(image_size), with_index=True)
    workers = default_workers() if workers is None else workers
    loader = make_loader(dataset, batch_size=batch_size, workers=min(workers, max(0, len(samples) // batch_size)),
                         shuffle=False)  # fmt: skip
    if runner is None:
        runner, _ = make_runner(model.eval(), image_size, engine=engine)
    outputs, kept = [], []
    for batch in loader:
        if batch is None:
            continue
        x, _, idx = batch
        outputs.append(runner(x))
        kept += idx.tolist()
    skipped = len(samples) - len(kept)
    if skipped:
        log.warning("%d of %d images could not be decoded and were skipped", skipped, len(samples))
    return (torch.cat(outputs) if outputs else torch.zeros(0, 0)), kept


def predict_probs(
    model: nn.Module, samples: list[Sample], image_size: int, *, batch_size: int = 64, workers: int | None = None,
    engine: str | None = None,
) -> tuple[torch.Tensor, list[int]]:  # fmt: skip
    """Softmax probabilities for the samples that decoded, and their indices into ``samples``."""
    logits, kept = run_batches(model, samples, image_size, batch_size=batch_size, workers=workers, engine=engine)
    probs = [logits.float().softmax(dim=1)] if kept else []
    n_classes = probs[0].shape[1] if probs else 0
    return (torch.cat(probs) if probs else torch.zeros(0, n_classes)), kept
