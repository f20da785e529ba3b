"""``--data-pipeline tensor``: batches of decoded uint8 pixels from the image store, augmented on the device.

Loader workers only copy stored pixels into a padded uint8 canvas (no decoding, no per-image float
work); the batch is pinned and copied to the device as uint8 (4x less than float), and Lightning's
``on_after_batch_transfer`` hook turns it into the model's input there: the reference augmentation for
training, resize + centre crop for validation (``tensor_augment``). Sharding, the balanced sampler and
the 1-image last batch rule are ``make_loader``'s, as for every other pipeline.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from imgcls.core.errors import ImgclsError
from imgcls.data import tensor_augment
from imgcls.data.datamodule import ImageDataModule
from imgcls.data.dataset import target
from imgcls.data.image_store import ImageStore, get_store, pad_batch
from imgcls.data.layouts import DatasetSplits
from imgcls.data.loader import make_loader
from imgcls.data.transforms import eval_resize

TENSOR_AUGMENTS = ("reference", "none")


def check_augment(augment: str) -> None:
    if augment not in TENSOR_AUGMENTS:
        raise ImgclsError(
            f"--data-pipeline tensor implements --augment {' and '.join(TENSOR_AUGMENTS)}, not {augment!r}; "
            "use --data-pipeline workers for it"
        )


class StoreDataset(Dataset):
    """(HWC uint8 pixels, target) for the images of ``store`` that decoded; ``samples`` are the store's
    (same order), their labels the targets (class indices, or multi-hot vectors of ``num_classes``)."""

    def __init__(self, store: ImageStore, samples: list, num_classes: int | None = None):
        self.store = store
        self.indices = store.good
        self.labels = [samples[i].label for i in self.indices]
        self.num_classes = num_classes

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int):
        return self.store.image(int(self.indices[k])), target(self.labels[k], self.num_classes)


def collate_canvas(items: list) -> tuple[torch.Tensor, np.ndarray, torch.Tensor]:
    """(uint8 canvas, sizes, targets); the sizes stay a NumPy array so Lightning leaves them on the host
    (the warp parameters are drawn there: no device-to-host sync per batch)."""
    canvas, sizes = pad_batch([np.asarray(im) for im, _ in items])
    return canvas, sizes.numpy(), default_collate([y for _, y in items])


class TensorDataModule(ImageDataModule):
    """ImageDataModule's settings and sharding; batches from the image store, augmented on the device."""

    def __init__(self, splits: DatasetSplits, *, short: int | None = None, progress: bool = True, **settings):
        super().__init__(splits, **settings)
        check_augment(self.augment)
        self.short = short or eval_resize(self.image_size)
        self.progress = progress
        self.store_seconds = 0.0
        self.generator: torch.Generator | None = None  # seeded per epoch and rank when training starts
        self.generator_epoch: int | None = None

    def _stores(self) -> tuple[ImageStore, ImageStore]:
        kw = dict(short=self.short, progress=self.progress)
        return get_store(self.splits.train, **kw), get_store(self.splits.val, **kw)

    def prepare_data(self) -> None:
        train, val = self._stores()
        self.store_seconds = train.seconds + val.seconds
        hit = train.hit and val.hit
        print(
            f"image store: {len(train)} training + {len(val)} validation images decoded at short side "
            f"{self.short} px ({self.store_seconds:.1f}s{', read back' if hit else ''}; {train.path.parent})"
        )

    def setup(self, stage=None) -> None:
        self.train_store, self.val_store = self._stores()
        self.start_validation_workers()

    def _val_loader(self) -> DataLoader:
        return self._loader(self.val_store, False)

    def _loader(self, store: ImageStore, train: bool) -> DataLoader:
        ds = StoreDataset(store, self.splits.train if train else self.splits.val, self.num_classes)
        return make_loader(
            ds,
            batch_size=self.batch_size,
            workers=self.workers,
            shuffle=train,
            seed=self.seed if train else None,
            epoch=self.start_epoch,
            labels=ds.labels if train and self.balanced else None,
            collate=collate_canvas,
            persistent=True,
            **self._shard(),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_store, True)

    def to_model_input(self, batch, training: bool):
        """(canvas, sizes, labels) on the device -> (normalised images, labels)."""
        canvas, sizes, y = batch
        epoch = getattr(self.trainer, "current_epoch", 0)
        if training and epoch != self.generator_epoch:
            # Augmentation parameters from (seed, epoch, rank): a resumed run draws what it would have drawn.
            rank = getattr(self.trainer, "global_rank", 0)
            self.generator = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) * 1_009 + rank)
            self.generator_epoch = epoch
        if training and self.augment == "reference":
            x = tensor_augment.train_batch(canvas, sizes, self.image_size, self.generator)
        else:
            x = tensor_augment.eval_batch(canvas, sizes, self.image_size, crop=self.eval_crop)
        return x, y

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        if batch is None:
            return None
        training = self.trainer is not None and self.trainer.training
        return self.to_model_input(batch, training)
