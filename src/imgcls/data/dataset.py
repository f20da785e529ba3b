"""A map-style dataset over Samples that skips (and logs) files that fail to decode mid-run."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch
from torch.utils.data import Dataset, default_collate

from imgcls.core.errors import BadImageError
from imgcls.data.decode import load_rgb
from imgcls.data.layouts import Sample

log = logging.getLogger(__name__)


def target(label, num_classes: int | None):
    """A class index as it is; a multi-label tuple of indices as a multi-hot float vector (-1 where the
    caller has no use for targets and gave no ``num_classes``: prediction, feature extraction)."""
    if isinstance(label, tuple):
        if not num_classes:
            return -1
        hot = torch.zeros(num_classes)
        hot[list(label)] = 1.0
        return hot
    return label


class ImageDataset(Dataset):
    """(image, target) per sample; ``num_classes`` is needed for multi-label samples (multi-hot targets)."""

    def __init__(
        self,
        samples: Sequence[Sample],
        transform: Callable,
        *,
        with_index: bool = False,
        num_classes: int | None = None,
    ):
        self.samples = list(samples)
        self.transform = transform
        self.with_index = with_index
        self.num_classes = num_classes

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        sample = self.samples[i]
        try:
            if getattr(self.transform, "from_path", False):
                image = self.transform(sample.path)  # decodes itself (e.g. at reduced JPEG scale)
            else:
                image = self.transform(load_rgb(sample.path))
        except BadImageError as exc:
            log.warning("skipping bad image %s", exc)
            return None
        y = target(sample.label, self.num_classes)
        return (image, y, i) if self.with_index else (image, y)


def collate_skip_bad(batch: list):
    """default_collate without the items that failed to decode; None when none are left."""
    batch = [item for item in batch if item is not None]
    return default_collate(batch) if batch else None
