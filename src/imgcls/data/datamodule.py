"""LightningDataModule over discovered splits: streams images from disk, decoding in workers."""

from __future__ import annotations

import lightning as L
from torch.utils.data import DataLoader

from imgcls.data.dataset import ImageDataset
from imgcls.data.layouts import DatasetSplits
from imgcls.data.loader import make_loader
from imgcls.data.transforms import build_eval_transform, build_train_transform


class ImageDataModule(L.LightningDataModule):
    def __init__(
        self,
        splits: DatasetSplits,
        *,
        image_size: int,
        augment: str,
        batch_size: int,
        workers: int,
        seed: int,
        balanced: bool = False,
        start_epoch: int = 0,
        num_classes: int | None = None,
        eval_crop: bool = True,
        pin_memory: bool = False,
    ):
        """``start_epoch``: the first epoch this fit runs (a resumed run's next one); ``num_classes``:
        multi-label targets are multi-hot vectors this long; ``eval_crop``: validation centre-crops."""
        super().__init__()
        self._val: DataLoader | None = None  # validation's loader, made once its workers are started
        self.num_classes = num_classes
        self.eval_crop = eval_crop
        self.pin_memory = pin_memory
        self.balanced = balanced
        self.start_epoch = start_epoch
        self.splits = splits
        self.image_size = image_size
        self.augment = augment
        self.batch_size = batch_size
        self.workers = workers
        self.seed = seed

    def _shard(self) -> dict:
        """Where this process's share of the batches goes: its rank of the world, and pinned memory or not."""
        t = self.trainer
        place = {"pin_memory": self.pin_memory}
        return {"rank": t.global_rank, "world": t.world_size, **place} if t is not None else place

    def train_dataloader(self) -> DataLoader:
        ds = ImageDataset(
            self.splits.train, build_train_transform(self.image_size, self.augment), num_classes=self.num_classes
        )
        labels = [s.label for s in self.splits.train] if self.balanced else None
        return make_loader(
            ds,
            batch_size=self.batch_size,
            workers=self.workers,
            shuffle=True,
            seed=self.seed,
            labels=labels,
            epoch=self.start_epoch,
            **self._shard(),
        )

    def setup(self, stage=None) -> None:
        self.start_validation_workers()

    def start_validation_workers(self) -> None:
        """Validation's loader workers start now, while this process is small (before the model trains):
        started at the first validation they would each hold a snapshot of the grown heap."""
        if self.workers > 0 and self._val is None:
            self._val = self._val_loader()
            iter(self._val)  # persistent workers: they stay for every later validation

    def _val_loader(self) -> DataLoader:
        transform = build_eval_transform(self.image_size, crop=self.eval_crop)
        ds = ImageDataset(self.splits.val, transform, num_classes=self.num_classes)
        return make_loader(
            ds, batch_size=self.batch_size, workers=self.workers, shuffle=False, persistent=True, **self._shard()
        )

    def val_dataloader(self) -> DataLoader:
        return self._val if self._val is not None else self._val_loader()
