"""Inference speed of a trained model: images/s of the engine that ``load_predictor`` picked."""

from __future__ import annotations

import statistics
import time

import torch


def inference_images_per_second(
    predictor, *, batch_size: int = 32, min_repeats: int = 5, min_seconds: float = 1.5, budget_s: float = 20.0
) -> dict:
    """Median of timed batches (at least ``min_repeats`` and ``min_seconds``) after a warm-up batch.

    Decoding is excluded: this is the model's own speed, in the engine that evaluate/predict/serve use.
    """
    x = torch.randn(batch_size, 3, predictor.image_size, predictor.image_size)
    cuda = torch.cuda.is_available() and predictor.model is not None and next(predictor.model.parameters()).is_cuda
    predictor.run(x)
    times = []
    start = time.perf_counter()
    while len(times) < min_repeats or time.perf_counter() - start < min_seconds:
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        predictor.run(x)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        if time.perf_counter() - start > budget_s:
            break
    return {
        "images_per_s": round(batch_size / statistics.median(times), 2),
        "batch_size": batch_size,
        "image_size": predictor.image_size,
        "device": "cuda" if cuda else "cpu",
        "threads": torch.get_num_threads(),
        **predictor.describe(),
    }
