"""The reference augmentation as batched tensor operations, on whatever device the batch is on.

Input: a uint8 canvas (B, 3, H, W) with image k at the top left, ``sizes[k]`` = (height, width) (see
``image_store.pad_batch``). Training draws, per image and from the same distributions as the reference
chain, a rotation in [-40, 40] degrees, a RandomResizedCrop box and a flip, and applies all three as one
affine warp (one sampling grid per image + ``grid_sample``; the same sampling as ``fast_augment.FastTrainAugment``, so
corners rotated in from outside the photo are black, as RandomRotation fills them). ColorJitter(0.2,
0.2, 0.2, 0.1) follows with per-image factors and a per-image order, then ImageNet normalisation.
Evaluation is Resize(short side) + CenterCrop as the same kind of warp, exact when the store kept the
short side at the evaluation resize.

Random parameters come from a CPU ``torch.Generator`` (a few numbers per image), so a seed gives the
same augmentations on every device. Bilinear sampling does not low-pass when it shrinks; the store keeps
images near the output size, so a crop is shrunk by at most ~2.3x, usually far less.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from imgcls.data.transforms import IMAGENET_MEAN, IMAGENET_STD, eval_resize

_GRAY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights


def sample_crops(sizes: torch.Tensor, g: torch.Generator, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)) -> torch.Tensor:
    """RandomResizedCrop.get_params for a batch: (B, 4) float as top, left, height, width (10 tries per
    image, then torchvision's central fallback)."""
    h, w = sizes[:, 0].double(), sizes[:, 1].double()
    n = len(sizes)
    target = (h * w)[:, None] * torch.empty(n, 10, dtype=torch.float64).uniform_(*scale, generator=g)
    log_r = torch.empty(n, 10, dtype=torch.float64).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=g)
    aspect = log_r.exp()
    cw = (target * aspect).sqrt().round()
    ch = (target / aspect).sqrt().round()
    ok = (cw > 0) & (cw <= w[:, None]) & (ch > 0) & (ch <= h[:, None])
    first = ok.double().argmax(dim=1)
    rows = torch.arange(n)
    cw, ch, found = cw[rows, first], ch[rows, first], ok.any(dim=1)
    # Fallback: the whole image, clipped to the ratio range.
    in_ratio = w / h
    fw = torch.where(in_ratio < ratio[0], w, torch.where(in_ratio > ratio[1], (h * ratio[1]).round(), w))
    fh = torch.where(in_ratio < ratio[0], (w / ratio[0]).round(), h)
    cw, ch = torch.where(found, cw, fw), torch.where(found, ch, fh)
    u = torch.rand(n, 2, dtype=torch.float64, generator=g)
    top = torch.where(found, (u[:, 0] * (h - ch + 1)).floor(), ((h - ch) / 2).floor())
    left = torch.where(found, (u[:, 1] * (w - cw + 1)).floor(), ((w - cw) / 2).floor())
    return torch.stack([top, left, ch, cw], dim=1)


def warp_theta(sizes, crops, angles, flips, size: int, canvas_hw: tuple[int, int]) -> torch.Tensor:
    """``affine_grid`` matrices (B, 2, 3) for rotate(angle) -> crop -> resize(size) -> flip, the batched
    twin of ``fast_augment.affine_coefficients`` (output pixel centre -> source point, in pixels),
    rewritten for normalised coordinates (align_corners=False) on a canvas of ``canvas_hw``."""
    h, w = sizes[:, 0].double(), sizes[:, 1].double()
    top, left, ch, cw = crops.double().unbind(1)
    sx, sy = cw / size, ch / size
    ax = torch.where(flips, -sx, sx)
    cx = torch.where(flips, left + size * sx, left)
    ey, fy = sy, top
    ox, oy = w * 0.5, h * 0.5
    t = angles.double() * (math.pi / 180)
    cos, sin = t.cos(), t.sin()
    a, b, c = cos * ax, -sin * ey, cos * (cx - ox) - sin * (fy - oy) + ox
    d, e, f = sin * ax, cos * ey, sin * (cx - ox) + cos * (fy - oy) + oy
    H, W = canvas_hw
    row_x = torch.stack([a * size / W, b * size / W, (a * size + b * size + 2 * c) / W - 1], dim=1)
    row_y = torch.stack([d * size / H, e * size / H, (d * size + e * size + 2 * f) / H - 1], dim=1)
    return torch.stack([row_x, row_y], dim=1).float()


def _warp(canvas: torch.Tensor, theta: torch.Tensor, size: int) -> torch.Tensor:
    # The grid is built elementwise in float32 (what affine_grid computes with a batched matmul, which
    # TF32 or half precision would round to ~0.25 px on a 512 px canvas).
    t = theta.to(canvas.device, torch.float32).view(-1, 6, 1, 1).unbind(1)
    axis = (torch.arange(size, device=canvas.device, dtype=torch.float32) * 2 + 1) / size - 1
    xs, ys = axis.view(1, 1, -1), axis.view(1, -1, 1)
    grid = torch.stack([t[0] * xs + t[1] * ys + t[2], t[3] * xs + t[4] * ys + t[5]], dim=-1)
    out = F.grid_sample(canvas.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.div_(255.0)


def _gray(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    return (_GRAY[0] * r + _GRAY[1] * g + _GRAY[2] * b).unsqueeze(1)


def _shift_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """torchvision's adjust_hue (RGB -> HSV, rotate H, back) with one shift per image, in fewer passes:
    the hue sector from the arg-max channel, and HSV -> RGB as v - v*s*clamp(min(k, 4 - k), 0, 1) with
    k = (n + 6h) mod 6 for n = 5, 3, 1 (the same values as the six-sector table)."""
    r, g, b = x.unbind(1)
    v, top = x.max(dim=1)  # ties go to the first channel, as torchvision's r-then-g-then-b tests
    chroma = v - x.amin(dim=1)
    s = chroma / torch.where(v == 0, torch.ones_like(v), v)
    cd = torch.where(chroma == 0, torch.ones_like(chroma), chroma)
    hue = torch.where(top == 0, (g - b) / cd, torch.where(top == 1, 2.0 + (b - r) / cd, 4.0 + (r - g) / cd))
    h6 = torch.remainder(hue + 6.0 * (1.0 + shift.view(-1, 1, 1)), 6.0)
    vs = v * s
    out = []
    for n in (5.0, 3.0, 1.0):
        k = torch.remainder(h6 + n, 6.0)
        out.append(v - vs * torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0))
    return torch.stack(out, dim=1)


def color_jitter(x: torch.Tensor, g: torch.Generator, b=0.2, c=0.2, s=0.2, h=0.1) -> torch.Tensor:
    """ColorJitter(b, c, s, h) on a (B, 3, H, W) batch in [0, 1]: per-image factors and per-image order."""
    n = len(x)
    factors = torch.empty(n, 4).uniform_(-1, 1, generator=g) * torch.tensor([b, c, s, h])
    factors[:, :3] += 1
    order = torch.rand(n, 4, generator=g).argsort(dim=1)  # a random permutation of the 4 ops per image
    factors = factors.to(x.device)
    for step in range(4):
        for op in range(4):
            idx = (order[:, step] == op).nonzero().flatten().to(x.device)
            if len(idx) == 0:
                continue
            part, k = x[idx], factors[idx, op].view(-1, 1, 1, 1)
            if op == 0:
                part = (part * k).clamp(0, 1)
            elif op == 1:
                mean = _gray(part).mean(dim=(1, 2, 3), keepdim=True)
                part = (k * part + (1 - k) * mean).clamp(0, 1)
            elif op == 2:
                part = (k * part + (1 - k) * _gray(part)).clamp(0, 1)
            else:
                part = _shift_hue(part, k.flatten())
            x[idx] = part
    return x


def normalize(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def train_batch(canvas, sizes, size: int, g: torch.Generator, *, degrees: float = 40.0, jitter: bool = True):
    """The reference train chain for a batch: (B, 3, size, size) float, normalised."""
    n = len(sizes)
    sizes = torch.as_tensor(sizes).cpu()
    angles = torch.empty(n, dtype=torch.float64).uniform_(-degrees, degrees, generator=g)
    crops = sample_crops(sizes, g)
    flips = torch.rand(n, generator=g) < 0.5
    theta = warp_theta(sizes, crops, angles, flips, size, tuple(canvas.shape[-2:]))
    x = _warp(canvas, theta, size)
    return normalize(color_jitter(x, g) if jitter else x)


def eval_batch(canvas, sizes, size: int, crop: bool = True) -> torch.Tensor:
    """Resize(short side to the evaluation resize) + CenterCrop(size) for a batch, normalised; without
    ``crop``, the whole image resized to size x size (the multi-label evaluation transform)."""
    sizes = torch.as_tensor(sizes).cpu().double()
    h, w = sizes[:, 0], sizes[:, 1]
    if not crop:
        zeros = torch.zeros(len(sizes), dtype=torch.float64)
        crops = torch.stack([zeros, zeros, h, w], dim=1)
        flips = torch.zeros(len(sizes), dtype=torch.bool)
        theta = warp_theta(sizes, crops, zeros, flips, size, tuple(canvas.shape[-2:]))
        return normalize(_warp(canvas, theta, size))
    scale = eval_resize(size) / torch.minimum(h, w)
    rh, rw = (h * scale).round(), (w * scale).round()
    # CenterCrop's integer offsets in the resized image, mapped back into the stored image.
    top = ((rh - size) / 2).round() / scale
    left = ((rw - size) / 2).round() / scale
    side = size / scale
    crops = torch.stack([top, left, side, side], dim=1)
    zeros = torch.zeros(len(sizes), dtype=torch.float64)
    theta = warp_theta(sizes, crops, zeros, torch.zeros(len(sizes), dtype=torch.bool), size, tuple(canvas.shape[-2:]))
    return normalize(_warp(canvas, theta, size))
