"""Inference speed of a trained model: images/s of the eval forward pass on this machine."""
from __future__ import annotations

import statistics
import time

import torch
from torch import nn


@torch.no_grad()
def inference_images_per_second(model: nn.Module, image_size: int, *, batch_size: int = 32, min_repeats: int = 5,
                                min_seconds: float = 1.5, budget_s: float = 20.0) -> dict:  # fmt: skip
    """Median of timed batches (at least ``min_repeats`` and ``min_seconds``) after a warm-up batch.

    Decoding is excluded: this is the model's own speed.
    """
    model = model.eval().to(memory_format=torch.channels_last)
    device = next(model.parameters()).device
    x = torch.randn(batch_size, 3, image_size, image_size, device=device).contiguous(memory_format=torch.channels_last)
    model(x)
    times = []
    start = time.perf_counter()
    while len(times) < min_repeats or time.perf_counter() - start < min_seconds:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        model(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        if time.perf_counter() - start > budget_s:
            break
    return {
        "images_per_s": round(batch_size / statistics.median(times), 2),
        "batch_size": batch_size,
        "image_size": image_size,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "engine": "pytorch-eager-channels_last",
    }
