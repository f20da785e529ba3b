"""What a training will cost on this machine, measured before it runs (``imgcls auto``'s budget).

``measure_model`` times one forward pass of each step of a model (``models/blocks.py``) on a batch at
the model's size, and the decoding and augmentation of a few of the data's own images. ``Costs`` turns
those into seconds: the extraction of K cached views through a frozen prefix, an epoch of training (on
cached activations, or end to end), an evaluation. Backward is counted as twice the forward (the usual
ratio for convolutions); once a trial has run, what it measured replaces the estimate.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

# The feature cache and evaluation run frozen parts in ONNX Runtime, timed here in PyTorch eager: on food5
# (2 cores) the eager estimate at this factor was 10% over for Lite0 and 35% under for Lite2 at 260 px, so
# no speed-up is assumed. A backward pass costs about 2.5 forwards here (epochs on cached activations:
# estimates 20-25% under at 2.0). Measured times replace both after an arm's first trial.
ONNX_FACTOR = 1.0
BACKWARD = 2.5


@dataclass(frozen=True)
class ModelCost:
    """Seconds per image of each step's forward pass (eager, eval mode, batch ``batch``), and of decoding
    plus augmenting one of the data's images (one core)."""

    spec: str
    image_size: int
    steps: tuple[float, ...]  # per step of model_sequence, in order
    blocks: tuple[bool, ...]  # whether each step is a block (counted by last:N)
    decode: float

    def forward(self, start: int = 0) -> float:
        return sum(self.steps[start:])

    def cut(self, finetune: str) -> int:
        """The index of the first step that trains (head: the last step; last:N: N blocks before it)."""
        head = len(self.steps) - 1
        if finetune == "full":
            return 0
        if finetune == "head":
            return head
        n = int(finetune.split(":")[1])
        counted = [i for i, b in enumerate(self.blocks[:-1]) if b]
        return counted[-n] if n <= len(counted) else 0


@dataclass(frozen=True)
class Costs:
    """Seconds for the parts of one training of ``model`` on ``train`` + ``val`` images, with ``workers``
    loader processes decoding beside the model (they overlap with it; the slower of the two sets the pace)."""

    model: ModelCost
    train: int
    val: int
    workers: int

    def _images(self, n: int, per_image: float, decode: float) -> float:
        pace = max(per_image, decode / max(1, self.workers)) if self.workers else per_image + decode
        return n * pace

    def extraction(self, finetune: str, views: int) -> float:
        """The feature cache: K augmented views of the training images and one of the validation images
        through the frozen prefix (ONNX Runtime)."""
        prefix = sum(self.model.steps[: self.model.cut(finetune)]) * ONNX_FACTOR
        return self._images(self.train * views + self.val, prefix, self.model.decode)

    def epoch(self, finetune: str, cached: bool) -> float:
        """One epoch: training (forward + backward of what trains; the frozen part forward too, unless its
        outputs come from the cache) and validation."""
        cut = self.model.cut(finetune)
        trains = self.model.forward(cut)
        frozen = 0.0 if cached else sum(self.model.steps[:cut]) * (ONNX_FACTOR if cut else 1.0)
        decode = 0.0 if cached else self.model.decode
        return self._images(self.train, trains * (1 + BACKWARD) + frozen, decode) + self._images(
            self.val, trains + frozen, decode
        )

    def evaluation(self, images: int) -> float:
        """Scoring ``images`` with the trained model in PyTorch (loading it included)."""
        return self._images(images, self.model.forward(), self.model.decode) + 1.0


def measure_model(
    spec: str, num_classes: int, image_size: int, sample_paths: list[str], *, batch: int = 8
) -> ModelCost:
    """Time each step of ``spec`` (random weights: speed does not depend on their values) on a batch, and
    the reference augmentation of up to 8 of the data's images."""
    from imgcls.data.transforms import build_train_transform
    from imgcls.models.blocks import model_sequence
    from imgcls.models.registry import create_model, parse_model_spec

    name, kwargs = parse_model_spec(spec)
    model = create_model(name, num_classes, pretrained=False, image_size=image_size, **kwargs).eval()
    model = model.to(memory_format=torch.channels_last)
    stages = model_sequence(model)
    x = torch.randn(batch, 3, image_size, image_size).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        _through(stages, x)  # warm-up: the first call pays for allocations and kernel choices
        seconds = [min(a, b) for a, b in zip(_through(stages, x), _through(stages, x))]
    augment = build_train_transform(image_size, "reference")
    paths = sample_paths[:8]
    if paths:
        augment(paths[0])  # the decoder's own warm-up
    t0 = time.perf_counter()
    for path in paths:
        augment(path)
    decode = (time.perf_counter() - t0) / max(1, len(paths))
    return ModelCost(spec, image_size, tuple(s / batch for s in seconds), tuple(s.block for s in stages), decode)


def _through(stages, x) -> list[float]:
    out = []
    for stage in stages:
        t0 = time.perf_counter()
        x = stage.module(x)
        out.append(time.perf_counter() - t0)
    return out
