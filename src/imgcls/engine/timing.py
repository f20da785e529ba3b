"""The one timer of model speed: images/s of a runner on a random batch, decoding excluded."""

from __future__ import annotations

import statistics
import time

import torch


def images_per_second(
    run,
    image_size: int,
    *,
    batch_size: int = 32,
    min_repeats: int = 5,
    min_seconds: float = 0.5,
    budget_s: float = 20.0,
    cuda: bool = False,
) -> float:
    """Median of timed batches (at least ``min_repeats``, and ``min_seconds`` in all unless the
    ``budget_s`` runs out) after one warm-up batch. ``run``: a normalised NCHW batch -> outputs."""
    x = torch.randn(batch_size, 3, image_size, image_size)
    run(x)
    times = []
    start = time.perf_counter()
    while len(times) < min_repeats or time.perf_counter() - start < min_seconds:
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        run(x)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        if time.perf_counter() - start > budget_s and len(times) >= min(min_repeats, 2):
            break
    return batch_size / statistics.median(times)


def inference_images_per_second(predictor, *, batch_size: int = 32, **timing) -> dict:
    """The model's own speed in the engine that evaluate/predict/serve use (``load_predictor``'s)."""
    cuda = torch.cuda.is_available() and predictor.model is not None and next(predictor.model.parameters()).is_cuda
    ips = images_per_second(predictor.run, predictor.image_size, batch_size=batch_size, cuda=cuda, **timing)
    return {
        "images_per_s": round(ips, 2),
        "batch_size": batch_size,
        "image_size": predictor.image_size,
        "device": "cuda" if cuda else "cpu",
        "threads": torch.get_num_threads(),
        **predictor.describe(),
    }
