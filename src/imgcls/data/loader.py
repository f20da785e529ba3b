"""DataLoaders for every pipeline (training, validation, prediction): sharding across processes, the
balanced sampler, and the rule that a training batch never holds a single image. No Lightning here:
evaluate, predict and serve load quickly."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from imgcls.data.dataset import collate_skip_bad
from imgcls.system import cpu_count


def default_workers() -> int:
    """One core stays with the main process (the model); the rest decode. 2 cores -> 1 worker."""
    return max(0, min(8, cpu_count() - 1))


class ShardSampler(torch.utils.data.Sampler):
    """Validation sharding without padding: rank r gets items r, r+W, r+2W... so no sample is counted
    twice (DistributedSampler repeats samples to even out the shards, which skews exact metrics)."""

    def __init__(self, n: int, rank: int, world: int):
        self.indices = list(range(rank, n, world))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


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
) -> DataLoader:
    """``labels`` (training only): draw samples with probability 1 / (their class's size), so every class
    is seen about equally often in an epoch (with replacement; the epoch keeps its length)."""
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    training = shuffle
    sampler = None
    if labels is not None:
        if world > 1:
            from imgcls.errors import ImgclsError

            raise ImgclsError("--sampler balanced runs in one process only (use --class-weights balanced with DDP)")
        counts = torch.bincount(torch.tensor(labels))
        weights = 1.0 / counts[torch.tensor(labels)].double()
        sampler = torch.utils.data.WeightedRandomSampler(weights, len(labels), replacement=True, generator=generator)
        shuffle = False
    elif world > 1:
        from torch.utils.data.distributed import DistributedSampler

        # Training: equal shards (padded) so every process takes the same number of steps.
        sampler = (
            DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed or 0)
            if shuffle
            else ShardSampler(len(dataset), rank, world)
        )
        shuffle = False
    per_process = len(sampler) if sampler is not None else len(dataset)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=shuffle,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=torch.cuda.is_available(),
        collate_fn=collate,
        generator=generator,
        # A last training batch of one image would make BatchNorm raise (no batch statistics): drop it.
        drop_last=training and per_process > batch_size and per_process % batch_size == 1,
    )
