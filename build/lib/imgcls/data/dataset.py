"""A map-style dataset over Samples that skips (and logs) files that fail to decode mid-run."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from torch.utils.data import Dataset, default_collate

from imgcls.data.decode import load_rgb
from imgcls.data.layouts import Sample
from imgcls.errors import BadImageError

log = logging.getLogger(__name__)


class ImageDataset(Dataset):
    def __init__(self, samples: Sequence[Sample], transform: Callable, *, with_index: bool = False):
        self.samples = list(samples)
        self.transform = transform
        self.with_index = with_index

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
        return (image, sample.label, i) if self.with_index else (image, sample.label)


def collate_skip_bad(batch: list):
    """default_collate without the items that failed to decode; None when none are left."""
    batch = [item for item in batch if item is not None]
    return default_collate(batch) if batch else None
