"""Every kind of image file becomes correct RGB; anything else raises the project's BadImageError."""

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from imgcls.core.errors import BadImageError
from imgcls.data.decode import load_rgb


def roundtrip(img: Image.Image, fmt: str, tmp_path, **save) -> np.ndarray:
    path = tmp_path / f"x.{fmt.lower()}"
    img.save(path, fmt, **save)
    out = load_rgb(str(path))
    assert out.mode == "RGB"
    return np.asarray(out, dtype=int)


def test_grayscale(tmp_path):
    arr = roundtrip(Image.new("L", (8, 6), 77), "PNG", tmp_path)
    assert (arr == 77).all()


def test_cmyk_jpeg(tmp_path):
    arr = roundtrip(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG", tmp_path, quality=100)
    assert np.abs(arr - [255, 0, 0]).max() < 12  # cyan 0, magenta+yellow full: red


def test_palette_without_transparency(tmp_path):
    img = Image.new("P", (4, 4), 1)
    img.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    assert (roundtrip(img, "PNG", tmp_path) == [10, 200, 30]).all()


def test_palette_with_transparency_goes_on_white(tmp_path):
    img = Image.new("P", (4, 4), 0)
    img.putpalette([10, 20, 30, 200, 0, 0] + [0] * 762)
    img.putpixel((0, 0), 1)
    arr = roundtrip(img, "PNG", tmp_path, transparency=0)
    assert (arr[0, 0] == [200, 0, 0]).all() and (arr[1:, 1:] == 255).all()


def test_rgba_composited_on_white(tmp_path):
    img = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    img.putpixel((0, 0), (100, 50, 0, 255))
    img.putpixel((1, 0), (0, 0, 0, 128))
    arr = roundtrip(img, "PNG", tmp_path)
    assert (arr[0, 0] == [100, 50, 0]).all() and (arr[3, 3] == 255).all() and abs(arr[0, 1, 0] - 127) <= 1


def test_16_bit_greyscale_keeps_its_range(tmp_path):
    img = Image.fromarray(np.array([[0, 32768, 65535]], dtype=np.uint16))
    arr = roundtrip(img, "PNG", tmp_path)
    assert arr[0, :, 0].tolist() == [0, 128, 255]


def test_exif_rotation(tmp_path):
    img = Image.new("RGB", (20, 10), (255, 0, 0))
    img.paste((0, 0, 255), (0, 0, 10, 10))  # left half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    arr = roundtrip(img, "JPEG", tmp_path, exif=exif, quality=100)
    assert arr.shape == (20, 10, 3)
    assert arr[2, 5, 2] > 200 and arr[17, 5, 0] > 200  # blue on top, red below


@pytest.mark.parametrize(
    "data,reason", [(b"", "not an image"), (b"GIF89a-junk", "not an image"), (b"plain text", "not an image")]
)
def test_bad_bytes(tmp_path, data, reason):
    (tmp_path / "b.jpg").write_bytes(data)
    with pytest.raises(BadImageError, match=reason):
        load_rgb(str(tmp_path / "b.jpg"))


def test_truncated_jpeg(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    (tmp_path / "t.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(BadImageError, match="truncated"):
        load_rgb(str(tmp_path / "t.jpg"))


def test_decompression_bomb(tmp_path, monkeypatch):
    Image.new("RGB", (100, 100)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5000)
    with pytest.raises(BadImageError, match="decompression bomb"):
        load_rgb(str(tmp_path / "big.png"))


def _seed_files() -> list[bytes]:
    out = []
    for fmt in ("JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF"):
        buf = io.BytesIO()
        Image.fromarray(np.random.default_rng(1).integers(0, 255, (12, 10, 3), dtype=np.uint8)).save(buf, fmt)
        out.append(buf.getvalue())
    return out


SEEDS = _seed_files()


def _check(data: bytes) -> None:
    try:
        img = load_rgb(io.BytesIO(data))
    except BadImageError:
        return
    assert img.mode == "RGB" and img.size[0] > 0


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_fuzz_random_bytes_only_raise_bad_image_error(data):
    _check(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(range(len(SEEDS))),
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=8),
    st.integers(0, 10**6),
)
def test_fuzz_mutated_images_only_raise_bad_image_error(which, flips, cut):
    data = bytearray(SEEDS[which])
    for pos, value in flips:
        data[pos % len(data)] = value
    _check(bytes(data[: max(1, cut % (len(data) + 1))]))
