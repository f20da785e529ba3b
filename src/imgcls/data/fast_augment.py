"""The reference train augmentation, same kinds and ranges, at a fraction of the cost.

The reference chain rotates and colour-jitters the full decoded photo, then crops and resizes. Here the
crop box and angle are drawn first (from the same distributions as RandomRotation(40) and
RandomResizedCrop), the JPEG is decoded at the smallest DCT scale that still covers the crop at full
output resolution (``Image.draft``), and rotation + crop + resize + flip become one affine warp straight
to the output size. Colour jitter then runs on the small output image.

Differences in distribution, all small: one bilinear resampling instead of nearest (rotation) followed
by bilinear (resize); ColorJitter's contrast uses the mean grey of the crop rather than of the whole
rotated photo; draft decoding low-passes large photos slightly before the warp.
"""

from __future__ import annotations

import math
import random

import torch
from PIL import Image, ImageOps
from torchvision import transforms as T
from torchvision.transforms import functional as F

from imgcls.data.decode import _to_rgb, decoding, orientation_swaps_axes


def sample_crop(width: int, height: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """RandomResizedCrop.get_params without needing the image: (top, left, h, w)."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * random.uniform(*scale)
        aspect = math.exp(random.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return random.randint(0, height - h), random.randint(0, width - w), h, w
    in_ratio = width / height  # fallback: central crop, as torchvision does
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def affine_coefficients(width, height, angle, crop, size, flip) -> tuple[float, ...]:
    """PIL AFFINE data mapping output pixels to source pixels for rotate(angle) -> crop -> resize -> flip."""
    top, left, h, w = crop
    sx, sy = w / size, h / size
    # Output (u, v) -> rotated-image point p = (left + u*sx, top + v*sy), flipped: left + (size - u)*sx.
    ax, cx = (-sx, left + size * sx) if flip else (sx, left)
    ey, fy = sy, top
    # Rotated image R(p) = I(c + Rot(-angle)(p - c)): torchvision rotates counter-clockwise on screen.
    ox, oy = width * 0.5, height * 0.5
    t = math.radians(angle)
    cos, sin = math.cos(t), math.sin(t)
    # q = c + [[cos, -sin], [sin, cos]] (p - c)  with p = (ax*u + cx, ey*v + fy)
    a, b, c = cos * ax, -sin * ey, cos * (cx - ox) - sin * (fy - oy) + ox
    d, e, f = sin * ax, cos * ey, sin * (cx - ox) + cos * (fy - oy) + oy
    return a, b, c, d, e, f


class FastTrainAugment:
    """``path -> normalised tensor``: RandomRotation(40), ColorJitter(0.2,0.2,0.2,0.1), RandomResizedCrop(S), flip."""

    def __init__(self, size: int, *, degrees: float = 40.0, jitter=(0.2, 0.2, 0.2, 0.1), normalize=None):
        self.size = size
        self.degrees = degrees
        self.jitter = T.ColorJitter(*jitter)
        self.normalize = normalize

    from_path = True  # ImageDataset hands this transform the file path, not a decoded image

    def __repr__(self) -> str:
        return (
            f"FastTrainAugment(size={self.size}, degrees={self.degrees}, jitter={self.jitter!r}, "
            f"normalize={self.normalize!r})"
        )

    def __call__(self, path: str) -> torch.Tensor:
        with decoding(path), Image.open(path) as im:
            image = self._warp(im)
        tensor = F.to_tensor(self.jitter(image))
        return self.normalize(tensor) if self.normalize is not None else tensor

    def _warp(self, im: Image.Image) -> Image.Image:
        w0, h0 = im.size
        width, height = (h0, w0) if orientation_swaps_axes(im) else (w0, h0)
        angle = random.uniform(-self.degrees, self.degrees)
        crop = sample_crop(width, height)
        flip = random.random() < 0.5
        if im.format == "JPEG":
            # Largest DCT reduction (1/2, 1/4, 1/8) that keeps the crop at >= output resolution.
            reduce = 1
            while reduce < 8 and min(crop[2], crop[3]) / (reduce * 2) >= self.size:
                reduce *= 2
            if reduce > 1:
                im.draft("RGB", (math.ceil(w0 / reduce), math.ceil(h0 / reduce)))
        im.load()
        image = _to_rgb(ImageOps.exif_transpose(im))
        k = image.size[0] / width  # actual decode scale
        top, left, h, w = crop
        coeffs = affine_coefficients(
            image.size[0], image.size[1], angle, (top * k, left * k, h * k, w * k), self.size, flip
        )
        return image.transform((self.size, self.size), Image.AFFINE, coeffs, resample=Image.BILINEAR)
