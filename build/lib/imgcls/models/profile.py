"""Model size and cost: parameter counts and GFLOPs of one forward pass."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable


@torch.no_grad()
def count_gflops(model: nn.Module, image_size: int) -> float:
    """GFLOPs of one image, counting a multiply-add as one FLOP (the torchvision/timm table convention)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    counter = FlopCounterMode(display=False)
    # The fused MultiheadAttention fast path is invisible to the counter; count the plain ops instead.
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with counter:
            model(torch.zeros(1, 3, image_size, image_size, device=device))
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        model.train(was_training)
    return counter.get_total_flops() / 2 / 1e9
