"""DataLoaders for every pipeline (training, validation, prediction): sharding across processes, the
balanced sampler, and the rule that a training batch never holds a single image. No Lightning here:
evaluate, predict and serve load quickly."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from imgcls.data.dataset import collate_skip_bad


class ShardSampler(torch.utils.data.Sampler):
    """Validation sharding without padding: rank r gets items r, r+W, r+2W... so no sample is counted
    twice (DistributedSampler repeats samples to even out the shards, which skews exact metrics)."""

    def __init__(self, n: int, rank: int, world: int):
        self.indices = list(range(rank, n, world))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def item_seed(seed: int, epoch: int, rank: int, position: int) -> int:
    """The random seed of the ``position``-th training item of an epoch on one process: augmentation is a
    function of (seed, epoch, rank, position), whatever the worker count, and a resumed run draws
    exactly what it would have drawn had it never stopped."""
    return ((((seed * 1_000_003) + epoch) * 1_009 + rank) * 2_000_003 + position) % 2**63


class EpochSampler(torch.utils.data.Sampler):
    """Training order from the seed and the epoch (Lightning calls ``set_epoch`` before each one):
    a shuffle, equal shards padded like DistributedSampler's when ``world`` > 1, or draws weighted by
    ``weights`` (with replacement). Yields ``(index, item seed)`` pairs for ``SeededItems``."""

    def __init__(
        self,
        n: int,
        *,
        seed: int,
        rank: int = 0,
        world: int = 1,
        weights: torch.Tensor | None = None,
        epoch: int = 0,
    ):
        self.n, self.seed, self.rank, self.world, self.weights = n, seed, rank, world, weights
        self.per_rank = -(-n // world)
        # A resumed run starts at its next epoch: Lightning makes the first iterator (and workers prefetch
        # from it) before it calls set_epoch.
        self.epoch = epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) % 2**63)
        if self.weights is not None:
            order = torch.multinomial(self.weights, self.n, replacement=True, generator=g).tolist()
        else:
            order = torch.randperm(self.n, generator=g).tolist()
            order += order[: self.per_rank * self.world - self.n]  # pad, so every rank takes as many steps
            order = order[self.rank :: self.world]
        for position, index in enumerate(order):
            yield index, item_seed(self.seed, self.epoch, self.rank, position)

    def __len__(self) -> int:
        return self.n if self.weights is not None else self.per_rank


class SeededItems(torch.utils.data.Dataset):
    """``dataset[index]`` with Python's, NumPy's and torch's generators seeded by the item's seed first
    (in whichever loader worker runs it): the augmentation of each item is fixed by the sampler."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        import random

        import numpy as np

        index, seed = key
        random.seed(seed)
        np.random.seed(seed % 2**32)
        # The CPU generator is what the transforms draw from; torch.manual_seed also queues a seed for
        # every lazy accelerator module, recording a Python stack each time (1.4 ms an item).
        torch.default_generator.manual_seed(seed)
        return self.dataset[index]


def make_loader(
    dataset,
    *,
    batch_size: int,
    workers: int,
    shuffle: bool,
    seed: int | None = None,
    rank: int = 0,
    world: int = 1,
    labels: list[int] | None = None,
    collate=collate_skip_bad,
    epoch: int = 0,
    persistent: bool | None = None,
    pin_memory: bool = False,
) -> DataLoader:
    """``shuffle`` (training): an ``EpochSampler`` starting at ``epoch``; else every item once, in order
    (sharded without padding across processes). ``labels`` (training only): draw samples with probability 1 / (their
    class's size), so every class is seen about equally often in an epoch (with replacement; the epoch
    keeps its length)."""
    sampler = None
    if labels is not None:  # one process only: the plan refuses --sampler balanced under DDP
        counts = torch.bincount(torch.tensor(labels))
        weights = 1.0 / counts[torch.tensor(labels)].double()
        sampler = EpochSampler(len(labels), seed=seed or 0, weights=weights, epoch=epoch)
    elif shuffle:
        sampler = EpochSampler(len(dataset), seed=seed or 0, rank=rank, world=world, epoch=epoch)
    elif world > 1:
        sampler = ShardSampler(len(dataset), rank, world)
    per_process = len(sampler) if sampler is not None else len(dataset)
    return DataLoader(
        SeededItems(dataset) if isinstance(sampler, EpochSampler) else dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        # Training (and the data modules' validation) workers persist, started before the model's
        # memory grows; a worker forked from a process that has trained for an epoch would keep a
        # copy-on-write snapshot of its whole heap alive (a Lite1 fine-tune at 240 px: 8-9 GB more per
        # worker, out of memory on a 24 GB machine). One-pass loaders (prediction) do not persist.
        persistent_workers=workers > 0 and (shuffle if persistent is None else persistent),
        pin_memory=pin_memory,  # the plan's (or the predictor's device's) choice: only for a CUDA model
        collate_fn=collate,
        # A last training batch of one image would make BatchNorm raise (no batch statistics): drop it.
        drop_last=shuffle and per_process > batch_size and per_process % batch_size == 1,
    )
