"""What the registry knows of a model: how to build it, its input size, its head and its weights."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class ModelInfo:
    name: str
    builder: Callable[..., nn.Module]
    default_image_size: int
    head: str  # attribute path of the classifier head (what --finetune head trains)
    weights: str | None  # where ImageNet weights come from; None = trains from scratch only
    min_image_size: int = 32
    fixed_image_size: bool = False  # pretrained weights only work at default_image_size
    description: str = ""
    hidden: bool = False  # built from a run's record, never chosen by a user (the ensemble)

    @property
    def has_weights(self) -> bool:
        return self.weights is not None
