"""The feature cache: backbone features computed once, stored on disk, memory-mapped for head training.

An entry is keyed by everything that changes the features: model spec and weights, image size, the
transform (its full repr), the number of augmented views, the seed, and the file list with each file's
size and mtime. A changed file list or transform therefore gets a new entry; nothing stale is reused.
"""

from __future__ import annotations

import logging
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from imgcls.core.cache import CacheEntry, file_fingerprint
from imgcls.data.layouts import Sample
from imgcls.data.loader import make_loader

log = logging.getLogger(__name__)


@dataclass
class CachedFeatures:
    features: np.ndarray  # (N, views, *activation shape) float16, memory-mapped
    labels: np.ndarray  # (N,) class indices, or (N, classes) multi-hot
    path: Path
    seconds: float  # time computing them took, also when they were read back from the cache (the work was needed)
    hit: bool = False  # read from the cache
    engine: dict | None = None  # what computed them (from meta.json)


@contextmanager
def isolated_rng(seed: int):
    """Seeded Python, NumPy and torch RNGs inside; the callers' RNG states untouched afterwards, so a
    run that computed its features (cold cache) continues exactly like one that read them (warm)."""
    py, npy = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(npy)


def targets_array(samples: list[Sample], num_classes: int | None) -> np.ndarray | None:
    """What a cache entry stores beside the features: None for class indices (the default), or multi-hot
    rows of ``num_classes`` for multi-label samples (an unlabelled one: all zeros)."""
    if num_classes is None:
        return None
    hot = np.zeros((len(samples), num_classes), dtype=np.uint8)
    for row, s in enumerate(samples):
        if isinstance(s.label, tuple):
            hot[row, list(s.label)] = 1
    return hot


def _loaded(entry: CacheEntry, meta: dict, arrays: dict, hit: bool) -> CachedFeatures:
    return CachedFeatures(
        arrays["features"],
        np.asarray(arrays["labels"]),
        entry.folder,
        float(meta.get("seconds", 0.0)),
        hit,
        meta.get("engine"),
    )


def get_features(
    backbone: torch.nn.Module,
    samples: list[Sample],
    *,
    transform,
    image_size: int,
    views: int,
    seed: int,
    identity: dict,
    batch_size: int = 64,
    workers: int = 0,
    labels: np.ndarray | None = None,
) -> CachedFeatures:
    """Cached features for ``samples``, computing (and storing) them on a miss. ``labels``: the targets
    stored beside them (default: each sample's class index)."""
    entry = CacheEntry(
        "features",
        identity=identity,
        image_size=image_size,
        transform=repr(transform),
        views=views,
        seed=seed,
        files=file_fingerprint(samples),
    )
    found = entry.load(require=("features", "labels"))
    if found is not None:
        return _loaded(entry, *found, hit=True)
    from imgcls.engine.predictor import predict_samples, predictor_for_module

    t0 = time.perf_counter()
    predictor = predictor_for_module(backbone, image_size)  # one engine for all views
    with torch.no_grad():
        shape = tuple(predictor.run(torch.zeros(1, 3, image_size, image_size)).shape[1:])
    size = len(samples) * views * int(np.prod(shape)) * 2
    entry.check_space(
        size,
        f"{len(samples)} images x {views} view(s) x {shape} fp16",
        label="feature cache",
        hint="use fewer views (--feature-cache K)",
    )
    try:
        out = entry.reserve("features.npy", np.float16, (len(samples), views, *shape))
        keep = np.ones(len(samples), dtype=bool)
        for view in range(views):
            seen = np.zeros(len(samples), dtype=bool)

            def store(batch: torch.Tensor, idx: list[int], view=view, seen=seen, out=out) -> None:
                out[idx, view] = batch.numpy().astype(np.float16)
                seen[idx] = True

            with isolated_rng(seed + view):
                predict_samples(
                    predictor,
                    samples,
                    transform=transform,
                    batch_size=batch_size,
                    workers=workers,
                    probabilities=False,
                    on_batch=store,
                )
            keep &= seen
            log.info("features: view %d/%d of %d images", view + 1, views, len(samples))
        # Images that failed to decode in any view are dropped (each was logged by the loader).
        targets = np.array([s.label for s in samples], dtype=np.int64) if labels is None else labels
        out.flush()
        if not keep.all():
            entry.put("features.npy", np.ascontiguousarray(out[keep]))
            targets = targets[keep]
        del out
        entry.put("labels.npy", targets)
        seconds = time.perf_counter() - t0
        entry.commit(
            {
                "images": int(keep.sum()),
                "views": views,
                "seconds": round(seconds, 3),
                "image_size": image_size,
                "identity": identity,
                "transform": repr(transform),
                "engine": predictor.describe(),
            }
        )
    except BaseException:
        entry.discard()
        raise
    return _loaded(entry, *entry.load(), hit=False)


class FeatureDataset(Dataset):
    """(features of one view, label) per image from the memory-mapped cache; training draws a random
    view per image each time, validation always view 0."""

    def __init__(self, cached: CachedFeatures, *, random_view: bool):
        self.cached, self.random_view = cached, random_view
        self.views = cached.features.shape[1]

    def __len__(self) -> int:
        return len(self.cached.labels)

    def __getitem__(self, i: int):
        # Training: a random view, drawn from the generator the loader seeded for this item (epoch, position).
        view = int(np.random.randint(self.views)) if self.random_view and self.views > 1 else 0
        x = torch.from_numpy(np.array(self.cached.features[i, view], dtype=np.float32))
        label = self.cached.labels[i]
        return x, (torch.from_numpy(label.astype(np.float32)) if label.ndim else int(label))


class FeatureDataModule(L.LightningDataModule):
    """Computes the cache once per node (``prepare_data``), then every process memory-maps it."""

    def __init__(
        self,
        backbone,
        splits,
        *,
        train_transform,
        eval_transform,
        views,
        image_size,
        seed,
        identity,
        batch_size,
        workers,
        balanced=False,
        start_epoch=0,
        num_classes=None,
        pin_memory=False,
    ):
        """``num_classes``: multi-label targets, stored as multi-hot rows this long."""
        super().__init__()
        self.start_epoch = start_epoch
        self.num_classes = num_classes
        self.pin_memory = pin_memory
        self.backbone, self.splits = backbone, splits
        self.train_transform, self.eval_transform = train_transform, eval_transform
        self.views, self.batch_size, self.seed = views, batch_size, seed
        self.common = dict(image_size=image_size, seed=seed, identity=identity, batch_size=batch_size, workers=workers)
        self.feature_seconds = 0.0
        self.feature_hit = False
        self.balanced = balanced
        self.engine = None
        self.loaded: tuple[CachedFeatures, CachedFeatures] | None = None

    def _targets(self, samples) -> np.ndarray | None:
        return targets_array(samples, self.num_classes)

    def _load(self) -> tuple[CachedFeatures, CachedFeatures]:
        train = get_features(
            self.backbone,
            self.splits.train,
            transform=self.train_transform,
            views=self.views,
            labels=self._targets(self.splits.train),
            **self.common,
        )
        val = get_features(
            self.backbone,
            self.splits.val,
            transform=self.eval_transform,
            views=1,
            labels=self._targets(self.splits.val),
            **self.common,
        )
        return train, val

    def prepare_data(self) -> None:
        train, val = self.loaded = self._load()
        self.feature_seconds = train.seconds + val.seconds
        self.feature_hit = train.hit and val.hit
        print(
            f"feature cache: {len(train.labels)} training x {self.views} view(s), {len(val.labels)} validation "
            f"({self.feature_seconds:.1f}s to compute{', read back from the cache' if self.feature_hit else ''}; "
            f"{train.path.parent})"
        )

    def setup(self, stage=None) -> None:
        if self.loaded is None:  # another process of a DDP run: rank 0's entries, memory-mapped
            self.loaded = self._load()
        self.train_feats, self.val_feats = self.loaded
        self.engine = self.train_feats.engine

    def _loader(self, cached: CachedFeatures, train: bool) -> DataLoader:
        # workers=0: the memory map is read in place, in the main process.
        t = self.trainer
        labels = cached.labels.tolist() if train and self.balanced else None
        return make_loader(
            FeatureDataset(cached, random_view=train),
            batch_size=self.batch_size,
            workers=0,
            shuffle=train,
            seed=self.seed if train else None,
            epoch=self.start_epoch,
            rank=t.global_rank,
            world=t.world_size,
            labels=labels,
            pin_memory=self.pin_memory,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_feats, True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_feats, False)
