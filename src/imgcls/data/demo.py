"""The embedded demo dataset: 11 synthetic pattern classes, deterministic, in the Food-11 flat layout.

Each image is a shape/texture (the class) in a random colour, at a random position, scale and
rotation, over a random gradient background with clutter lines, blobs and sensor noise. Colour and
position carry no class information, so a linear model on raw pixels does poorly while a small CNN
learns it quickly.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

DEMO_CLASSES = [
    "circle",
    "square",
    "triangle",
    "star",
    "ring",
    "cross",
    "stripes",
    "checker",
    "dots",
    "crescent",
    "waves",
]
SPLITS = {"training": 1.0, "validation": 0.3, "evaluation": 0.3}


def _shape_mask(cls: int, x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask in shape coordinates: (x, y) are rotated and divided by the shape radius."""
    rho = np.hypot(x, y)
    phi = np.arctan2(y, x)
    box = np.maximum(np.abs(x), np.abs(y))
    name = DEMO_CLASSES[cls]
    if name == "circle":
        return rho < 1.0
    if name == "square":
        return box < 0.8
    if name == "triangle":
        angles = np.pi / 2 + np.arange(3) * 2 * np.pi / 3
        return np.all([x * math.cos(a) + y * math.sin(a) < 0.5 for a in angles], axis=0)
    if name == "star":
        return rho < 0.35 + 0.65 * ((1 + np.cos(5 * phi)) / 2) ** 2
    if name == "ring":
        return (rho < 1.0) & (rho > 0.62)
    if name == "cross":
        return ((np.abs(x) < 0.28) & (np.abs(y) < 1.0)) | ((np.abs(y) < 0.28) & (np.abs(x) < 1.0))
    if name == "stripes":
        return (box < 0.9) & (np.sin(x * 3.2 * np.pi) > 0)
    if name == "checker":
        return (box < 0.9) & ((np.floor(x * 2.2) + np.floor(y * 2.2)) % 2 == 0)
    if name == "dots":
        mask = np.zeros_like(x, dtype=bool)
        for _ in range(int(rng.integers(6, 10))):
            r, a = 0.8 * math.sqrt(rng.uniform()), rng.uniform(0, 2 * np.pi)
            mask |= np.hypot(x - r * math.cos(a), y - r * math.sin(a)) < 0.17
        return mask
    if name == "crescent":
        return (rho < 1.0) & (np.hypot(x - 0.5, y) > 0.8)
    if name == "waves":
        return (rho < 1.0) & (((y + 0.18 * np.sin(x * 3 * np.pi)) * 2.5) % 1.0 < 0.4)
    raise ValueError(cls)


def _random_colour(rng: np.random.Generator, light: bool) -> np.ndarray:
    base = rng.uniform(150, 255, 3) if light else rng.uniform(0, 110, 3)
    base[rng.integers(3)] = rng.uniform(0, 255)  # any hue, lightness kept on one side
    return base


def render(cls: int, size: int, rng: np.random.Generator) -> Image.Image:
    s = size * 2  # drawn at 2x, then downsampled for anti-aliasing
    light_bg = bool(rng.integers(2))
    c0, c1 = _random_colour(rng, light_bg), _random_colour(rng, light_bg)
    g = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) + 0.5
    t = ((xx * math.cos(g) + yy * math.sin(g)) / s * 0.7 + 0.5).clip(0, 1)[..., None]
    img = Image.fromarray((c0 * (1 - t) + c1 * t).astype(np.uint8), "RGB")

    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(3, 8))):
        pts = [tuple(rng.uniform(0, s, 2)) for _ in range(2)]
        draw.line(pts, fill=tuple(int(v) for v in rng.uniform(0, 255, 3)), width=int(rng.integers(1, 4)))
    for _ in range(int(rng.integers(1, 4))):
        cx, cy, rr = *rng.uniform(0, s, 2), rng.uniform(0.02, 0.06) * s
        draw.ellipse([cx - rr, cy - rr, cx + rr, cy + rr], fill=tuple(int(v) for v in rng.uniform(0, 255, 3)))

    radius = rng.uniform(0.2, 0.4) * s
    cx, cy = rng.uniform(radius, s - radius, 2)
    theta = rng.uniform(0, 2 * np.pi)
    dx, dy = xx - cx, yy - cy
    u = (dx * math.cos(theta) + dy * math.sin(theta)) / radius
    v = (-dx * math.sin(theta) + dy * math.cos(theta)) / radius
    mask = _shape_mask(cls, u, v, rng)[..., None]
    pixels = np.where(mask, _random_colour(rng, not light_bg), np.asarray(img, dtype=np.float64))

    small = Image.fromarray(pixels.astype(np.uint8), "RGB").resize((size, size), Image.BILINEAR)
    noisy = np.asarray(small, dtype=np.float64) + rng.normal(0, rng.uniform(3, 12), (size, size, 3))
    return Image.fromarray(noisy.clip(0, 255).astype(np.uint8), "RGB")


def write_demo_dataset(out: str | Path, *, per_class: int = 60, size: int = 64, seed: int = 0) -> Path:
    """Writes training/validation/evaluation (``<class>_<n>.jpg``) and classes.txt; returns ``out``.

    ``out`` must be missing or empty: a user's dataset is never overwritten. The files are written into a
    sibling folder that is renamed into place at the end, so a killed run leaves no half dataset.
    """
    import os
    import shutil

    from imgcls.core.errors import ImgclsError
    from imgcls.core.files import temporary_name

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ImgclsError(f"{out} is a file; give demo-data a folder that does not exist yet")
    if out.is_dir() and any(out.iterdir()):
        raise ImgclsError(f"{out} is not empty; demo-data writes only into a new or empty folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    part = temporary_name(out, "partial")
    try:
        for split_id, (split, fraction) in enumerate(SPLITS.items()):
            folder = part / split
            folder.mkdir(parents=True, exist_ok=True)
            count = max(2, math.ceil(per_class * fraction))
            for cls in range(len(DEMO_CLASSES)):
                for n in range(count):
                    rng = np.random.default_rng([seed, split_id, cls, n])
                    render(cls, size, rng).save(folder / f"{cls}_{n}.jpg", quality=92)
        (part / "classes.txt").write_text("\n".join(DEMO_CLASSES) + "\n")
        if out.is_dir():
            out.rmdir()  # empty (checked above); a folder that filled meanwhile makes this fail, untouched
        os.replace(part, out)
    except OSError as exc:
        raise ImgclsError(f"cannot write the demo dataset to {out}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(part, ignore_errors=True)
    return out
