"""Decode any image file Pillow reads into an 8-bit RGB image, or raise BadImageError."""

from __future__ import annotations

import warnings
from contextlib import contextmanager

import numpy as np
from PIL import Image, ImageOps

from imgcls.core.errors import BadImageError

_WHITE = (255, 255, 255)
NOT_AN_IMAGE = "not an image Pillow can identify"
TOO_MANY_PIXELS = "too many pixels"


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode == "RGB":
        return im
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit greyscale: keep the top 8 bits instead of clipping everything above 255 to white.
        arr = np.asarray(im, dtype=np.float64)
        peak = 65535.0 if arr.max(initial=0) > 255 or im.mode != "I" else 255.0
        im = Image.fromarray(np.clip(arr * (255.0 / peak), 0, 255).round().astype(np.uint8), "L")
    if im.mode == "F":
        im = Image.fromarray(np.clip(np.asarray(im), 0, 255).astype(np.uint8), "L")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")


SWAPS_AXES = {5, 6, 7, 8}  # EXIF orientations that transpose width and height


def orientation_swaps_axes(im: Image.Image) -> bool:
    """Whether the file's EXIF orientation displays it rotated by 90 degrees (read from the header)."""
    if im.format not in ("JPEG", "TIFF", "PNG", "WEBP"):
        return False
    return im.getexif().get(0x0112, 1) in SWAPS_AXES


@contextmanager
def decoding(path):
    """Turns every way Pillow fails on a file into BadImageError; bombs (over Pillow's limit) included."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except BadImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BadImageError(path, f"decompression bomb ({exc})") from None
    except FileNotFoundError:
        raise BadImageError(path, "file not found") from None
    except Image.UnidentifiedImageError:
        raise BadImageError(path, NOT_AN_IMAGE) from None
    except Exception as exc:
        # Pillow's plugins raise many types for corrupt files (OSError, SyntaxError, ValueError, struct.error,
        # IndexError, ZeroDivisionError...): whatever a file makes the decoder raise, the file is bad.
        raise BadImageError(path, f"unreadable ({type(exc).__name__}: {exc})") from None


def load_rgb(path, *, draft_size: int | None = None, max_pixels: int | None = None) -> Image.Image:
    """EXIF-rotated RGB; transparency composited on white. ``path`` may be a file object (uploads).

    ``draft_size`` lets JPEG decode at reduced scale; ``max_pixels`` refuses larger images from their
    header, before any pixel is decoded.
    """
    with decoding(path), Image.open(path) as im:
        if max_pixels is not None and im.width * im.height > max_pixels:
            raise BadImageError(path, f"{TOO_MANY_PIXELS}: {im.width}x{im.height} is over the {max_pixels:,} limit")
        if draft_size and im.format == "JPEG":
            im.draft("RGB", (draft_size, draft_size))
        im.load()
        return _to_rgb(ImageOps.exif_transpose(im))
