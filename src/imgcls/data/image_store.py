"""The decoded-image store: every image decoded once, kept as uint8 pixels in one memory-mapped file.

On a GPU, PIL decoding in loader workers (~100 images/s per core) cannot feed the model; reading
pixels that are already decoded costs a memory copy. Each image is stored at a bounded resolution: its
short side at ``short`` px (default: the evaluation resize, 256 at 224 px, so evaluation needs no
resampling), its long side at most twice that, never upscaled. Images are stored back to back
(``pixels.npy``) with an index of (offset, height, width); an entry is keyed like the feature cache
(file list with sizes and mtimes, the stored size), so nothing stale is reused.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, Dataset

from imgcls.core.cache import CacheEntry, file_fingerprint
from imgcls.core.errors import BadImageError
from imgcls.core.system import cpu_count
from imgcls.data.decode import _to_rgb, decoding, orientation_swaps_axes
from imgcls.data.layouts import Sample

log = logging.getLogger(__name__)
FORMAT = 1  # bump when the stored pixels would differ for the same inputs


def stored_size(width: int, height: int, short: int) -> tuple[int, int]:
    """(width, height) kept: short side ``short``, long side at most ``2 * short``, never larger than the file."""
    scale = min(1.0, short / min(width, height), 2 * short / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def upright_size(path: str) -> tuple[int, int]:
    """The image's size after EXIF rotation, from its header (no pixels decoded)."""
    with decoding(path), Image.open(path) as im:
        return (im.height, im.width) if orientation_swaps_axes(im) else im.size


def decode_to(path: str, size: tuple[int, int]) -> np.ndarray:
    """HWC uint8 RGB at exactly ``size`` (width, height); JPEGs decode at the smallest DCT scale that covers it."""
    with decoding(path), Image.open(path) as im:
        if im.format == "JPEG":
            im.draft("RGB", size[::-1] if orientation_swaps_axes(im) else size)
        im.load()
        image = _to_rgb(ImageOps.exif_transpose(im))
        if image.size != size:
            image = image.resize(size, Image.BILINEAR)  # Pillow's resize is antialiased when shrinking
        return np.asarray(image, dtype=np.uint8)


@dataclass
class ImageStore:
    pixels: np.ndarray  # flat uint8, memory-mapped
    index: np.ndarray  # (N, 3) int64: offset, height, width; height 0 = the image failed to decode
    path: Path
    seconds: float  # time filling it took (also when read back: the work was needed once)
    hit: bool = False

    def __len__(self) -> int:
        return len(self.index)

    def image(self, i: int) -> np.ndarray:
        offset, h, w = (int(v) for v in self.index[i])
        return self.pixels[offset : offset + h * w * 3].reshape(h, w, 3)

    @property
    def good(self) -> np.ndarray:
        """Indices of the images that decoded."""
        return np.flatnonzero(self.index[:, 1] > 0)


class _Fill(Dataset):
    """Decodes image i straight into the store's file (opened once per worker), returns (i, error)."""

    def __init__(self, paths: list[str], sizes: list, offsets: np.ndarray, file: Path, errors: dict[int, str]):
        self.paths, self.sizes, self.offsets, self.file, self.errors = paths, sizes, offsets, file, errors
        self._map = None

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        if self.sizes[i] is None:
            return i, self.errors[i]
        if self._map is None:
            self._map = np.lib.format.open_memmap(self.file, mode="r+")
        try:
            pixels = decode_to(self.paths[i], self.sizes[i])
        except BadImageError as exc:
            return i, str(exc)
        self._map[self.offsets[i] : self.offsets[i] + pixels.size] = pixels.reshape(-1)
        return i, None


def _as_is(item):
    return item  # a module-level function: picklable under the spawn and forkserver start methods


def get_store(samples: list[Sample], *, short: int, workers: int | None = None, progress: bool = True) -> ImageStore:
    """The store for ``samples`` at short side ``short``, filled (on all cores) on a miss."""
    entry = CacheEntry("decoded", format=FORMAT, short=short, files=file_fingerprint(samples, labels=False))
    found = entry.load(require=("pixels", "index"))
    if found is not None:
        return _loaded(entry, *found, hit=True)
    t0 = time.perf_counter()
    sizes: list[tuple[int, int] | None] = []
    errors: dict[int, str] = {}
    for k, s in enumerate(samples):
        try:
            sizes.append(stored_size(*upright_size(s.path), short))
        except BadImageError as exc:
            sizes.append(None)
            errors[k] = str(exc)
    nbytes = np.array([0 if sz is None else sz[0] * sz[1] * 3 for sz in sizes], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(nbytes)[:-1]]).astype(np.int64)
    total = int(nbytes.sum())
    entry.check_space(
        total,
        f"{len(samples)} decoded images, short side {short} px, uint8",
        label="image store",
        hint="use --data-pipeline workers",
    )
    bar = None
    try:
        pixels = entry.reserve("pixels.npy", np.uint8, (max(1, total),))
        pixels.flush()
        del pixels
        workers = cpu_count() if workers is None else workers
        fill = _Fill([s.path for s in samples], sizes, offsets, entry.part("pixels.npy"), errors)
        loader = DataLoader(fill, batch_size=None, num_workers=workers, collate_fn=_as_is)
        index = np.stack([offsets, np.zeros_like(offsets), np.zeros_like(offsets)], axis=1)
        if progress and sys.stderr.isatty():
            from tqdm import tqdm

            bar = tqdm(total=len(samples), desc="decoding images", unit="img")
        for i, error in loader:
            if error is None:
                index[i, 2], index[i, 1] = sizes[i]
            else:
                log.warning("skipping bad image %s", error)
            if bar is not None:
                bar.update(1)
        entry.put("index.npy", index)
        seconds = time.perf_counter() - t0
        entry.commit(
            {
                "images": len(samples),
                "bad": int((index[:, 1] == 0).sum()),
                "short": short,
                "bytes": total,
                "seconds": round(seconds, 3),
            }
        )
    except BaseException:
        entry.discard()
        raise
    finally:
        if bar is not None:
            bar.close()
    log.info("image store: %d images decoded in %.1fs (%.0f MB)", len(samples), seconds, total / 2**20)
    return _loaded(entry, *entry.load(), hit=False)


def _loaded(entry: CacheEntry, meta: dict, arrays: dict, hit: bool) -> ImageStore:
    return ImageStore(
        arrays["pixels"],
        np.asarray(arrays["index"]),
        entry.folder,
        float(meta.get("seconds", 0.0)),
        hit,
    )


def pad_batch(images: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 canvas (B, 3, Hmax, Wmax) with each image at the top left and zeros around it, sizes (B, 2)
    as height, width): one tensor the device can warp as a batch."""
    hmax = max(im.shape[0] for im in images)
    wmax = max(im.shape[1] for im in images)
    canvas = np.zeros((len(images), hmax, wmax, 3), dtype=np.uint8)
    for k, im in enumerate(images):
        canvas[k, : im.shape[0], : im.shape[1]] = im
    sizes = torch.tensor([im.shape[:2] for im in images], dtype=torch.int64)
    return torch.from_numpy(canvas).permute(0, 3, 1, 2), sizes
