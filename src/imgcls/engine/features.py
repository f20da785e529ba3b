"""The feature cache: backbone features computed once, stored on disk, memory-mapped for head training.

An entry is keyed by everything that changes the features: model spec and weights, image size, the
transform (its full repr), the number of augmented views, the seed, and the file list with each file's
size and mtime. A changed file list or transform therefore gets a new entry; nothing stale is reused.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from imgcls.data.layouts import Sample
from imgcls.rundir import write_json

log = logging.getLogger(__name__)


def cache_root() -> Path:
    return Path(os.environ.get("IMGCLS_CACHE") or Path.home() / ".cache" / "imgcls") / "features"


def file_fingerprint(samples: list[Sample]) -> list:
    out = []
    for s in samples:
        try:
            st = os.stat(s.path)
            out.append([s.path, s.label, st.st_size, st.st_mtime_ns])
        except OSError:
            out.append([s.path, s.label, -1, -1])
    return out


def cache_key(**parts) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


@dataclass
class CachedFeatures:
    features: np.ndarray  # (N, views, D) float32, memory-mapped
    labels: np.ndarray  # (N,)
    path: Path
    seconds: float  # time spent computing (0 when read from the cache)


def get_features(backbone: torch.nn.Module, samples: list[Sample], *, transform, image_size: int, views: int,
                 seed: int, identity: dict, batch_size: int = 64, workers: int = 0) -> CachedFeatures:  # fmt: skip
    """Cached features for ``samples``, computing (and storing) them on a miss."""
    key = cache_key(identity=identity, image_size=image_size, transform=repr(transform), views=views, seed=seed,
                    files=file_fingerprint(samples))  # fmt: skip
    folder = cache_root() / key
    if (folder / "meta.json").is_file():  # written last: its presence means the entry is complete
        log.info("feature cache hit: %s", folder)
        return CachedFeatures(np.load(folder / "features.npy", mmap_mode="r"), np.load(folder / "labels.npy"),
                              folder, 0.0)  # fmt: skip
    from imgcls.engine.infer import run_batches
    from imgcls.engine.onnx_engine import make_runner

    t0 = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    tmp_name = folder / f".features.{os.getpid()}.npy"
    runner, _ = make_runner(backbone.eval(), image_size)  # once for all views
    out = None
    keep = np.ones(len(samples), dtype=bool)
    for view in range(views):
        random.seed(seed + view)
        torch.manual_seed(seed + view)
        feats, kept = run_batches(backbone, samples, image_size, transform=transform, batch_size=batch_size,
                                  workers=workers, runner=runner)  # fmt: skip
        if out is None:
            dim = feats.shape[1] if len(kept) else 0
            out = np.lib.format.open_memmap(tmp_name, mode="w+", dtype=np.float32,
                                            shape=(len(samples), views, dim))  # fmt: skip
        mask = np.zeros(len(samples), dtype=bool)
        mask[kept] = True
        keep &= mask
        out[kept, view] = feats.numpy()
        log.info("features: view %d/%d of %d images", view + 1, views, len(samples))
    # Images that failed to decode in any view are dropped (each was logged by the loader).
    labels = np.array([s.label for s in samples], dtype=np.int64)
    if not keep.all():
        out = np.ascontiguousarray(out[keep])
        labels = labels[keep]
        np.save(tmp_name, out)
    else:
        out.flush()
        del out
    os.replace(tmp_name, folder / "features.npy")
    np.save(folder / f".labels.{os.getpid()}.npy", labels)
    os.replace(folder / f".labels.{os.getpid()}.npy", folder / "labels.npy")
    seconds = time.perf_counter() - t0
    write_json(folder / "meta.json", {"images": int(keep.sum()), "views": views, "seconds": round(seconds, 3),
                                      "image_size": image_size, "identity": identity, "transform": repr(transform)})  # fmt: skip
    return CachedFeatures(np.load(folder / "features.npy", mmap_mode="r"), labels, folder, seconds)


class FeatureBatches(Dataset):
    """Whole batches from the memory-mapped features; each item picks one of its augmented views."""

    def __init__(self, cached: CachedFeatures, batch_size: int, *, shuffle: bool, seed: int, rank: int = 0,
                 world: int = 1):  # fmt: skip
        self.cached, self.batch_size, self.shuffle = cached, batch_size, shuffle
        self.rank, self.world = rank, world
        self.rng = np.random.default_rng(seed)
        # The same draws as a DataLoader(shuffle=True, generator=manual_seed(seed), num_workers=0) makes each
        # epoch (a worker base seed, then a permutation), so cached and uncached runs see the same batches.
        self.generator = torch.Generator().manual_seed(seed)
        self.order = np.arange(len(cached.labels))

        self._shard()

    def epoch_order(self) -> None:
        torch.empty((), dtype=torch.int64).random_(generator=self.generator)
        self.order = torch.randperm(len(self.cached.labels), generator=self.generator).numpy()
        self._shard()

    def _shard(self) -> None:
        if self.world == 1:
            return
        n = len(self.cached.labels)
        if self.shuffle:  # training: equal shards, padded by wrapping, so all processes step together
            per = -(-n // self.world)
            padded = np.resize(self.order, per * self.world)
            self.order = padded[self.rank :: self.world]
        else:  # validation: unpadded, every sample counted once
            self.order = np.arange(n)[self.rank :: self.world]

    def __len__(self) -> int:
        return (len(self.order) + self.batch_size - 1) // self.batch_size

    def __getitem__(self, i: int):
        if i == 0 and self.shuffle:
            self.epoch_order()
        idx = np.sort(self.order[i * self.batch_size : (i + 1) * self.batch_size])  # sorted: sequential reads
        views = self.cached.features.shape[1]
        pick = self.rng.integers(0, views, len(idx)) if (self.shuffle and views > 1) else np.zeros(len(idx), int)
        x = torch.from_numpy(np.asarray(self.cached.features[idx, pick], dtype=np.float32))
        return x, torch.from_numpy(self.cached.labels[idx])


def feature_loader(cached: CachedFeatures, batch_size: int, *, shuffle: bool, seed: int, rank: int = 0,
                   world: int = 1) -> DataLoader:  # fmt: skip
    # batch_size=None: the dataset yields whole batches; workers=0: the memory map is read in place.
    ds = FeatureBatches(cached, batch_size, shuffle=shuffle, seed=seed, rank=rank, world=world)
    return DataLoader(ds, batch_size=None, shuffle=False)


class FeatureDataModule(L.LightningDataModule):
    """Computes the cache once per node (``prepare_data``), then every process memory-maps it."""

    def __init__(self, backbone, splits, *, train_transform, eval_transform, views, image_size, seed, identity,
                 batch_size, workers):  # fmt: skip
        super().__init__()
        self.backbone, self.splits = backbone, splits
        self.train_transform, self.eval_transform = train_transform, eval_transform
        self.views, self.batch_size, self.seed = views, batch_size, seed
        self.common = dict(image_size=image_size, seed=seed, identity=identity, batch_size=batch_size,
                           workers=workers)  # fmt: skip
        self.feature_seconds = 0.0

    def _load(self) -> tuple[CachedFeatures, CachedFeatures]:
        train = get_features(self.backbone, self.splits.train, transform=self.train_transform, views=self.views,
                             **self.common)  # fmt: skip
        val = get_features(self.backbone, self.splits.val, transform=self.eval_transform, views=1, **self.common)
        return train, val

    def prepare_data(self) -> None:
        train, val = self._load()
        self.feature_seconds = train.seconds + val.seconds
        print(f"feature cache: {len(train.labels)} training x {self.views} view(s), {len(val.labels)} validation "
              f"({self.feature_seconds:.1f}s to compute; {train.path.parent})")  # fmt: skip

    def setup(self, stage=None) -> None:
        self.train_feats, self.val_feats = self._load()  # cache hits now: memory maps

    def _shard(self) -> dict:
        return {"rank": self.trainer.global_rank, "world": self.trainer.world_size}

    def train_dataloader(self) -> DataLoader:
        return feature_loader(self.train_feats, self.batch_size, shuffle=True, seed=self.seed, **self._shard())

    def val_dataloader(self) -> DataLoader:
        return feature_loader(self.val_feats, self.batch_size, shuffle=False, seed=self.seed, **self._shard())
