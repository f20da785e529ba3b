"""Nearest neighbours by cosine similarity of backbone features: an exact, blocked matrix product.

Exact and dependency-free: rows are L2-normalised float32 and compared a block at a time against every
row, so memory is the features plus one ``block x N`` similarity slab (at 101k images and a block of 512:
0.5 GB of features and 0.2 GB of slab), and time grows with N² (measured in docs/BENCHMARKS.md).
"""

from __future__ import annotations

import numpy as np
import torch


def normalise(features) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
    return x / x.norm(dim=1, keepdim=True).clamp(min=1e-12)


def search(x: torch.Tensor, *, k: int, threshold: float | None = None, block: int = 512):
    """For each row: the similarities of its ``k`` nearest other rows (N, k); and when ``threshold`` is
    given, every pair (i < j) at or above it, as (i, j, similarity) arrays."""
    n = len(x)
    k = max(1, min(k, n - 1))
    top = torch.empty(n, k)
    pairs: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    with torch.no_grad():
        for start in range(0, n, block):
            rows = slice(start, min(n, start + block))
            sims = x[rows] @ x.T
            local = torch.arange(sims.shape[0])
            sims[local, local + start] = -2.0  # not its own neighbour
            top[rows] = sims.topk(k, dim=1).values
            if threshold is not None:
                i, j = torch.nonzero(sims >= threshold, as_tuple=True)
                i = i + start
                keep = i < j
                pairs.append((i[keep].numpy(), j[keep].numpy(), sims[i[keep] - start, j[keep]].numpy()))
    if threshold is None:
        return top, None
    if pairs:
        found = tuple(np.concatenate(p) for p in zip(*pairs))
    else:
        found = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32))
    return top, found
