import random

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as F

from imgcls.core.errors import BadImageError
from imgcls.data.demo import render
from imgcls.data.fast_augment import FastTrainAugment, affine_coefficients, sample_crop
from imgcls.data.transforms import build_train_transform


@pytest.fixture(scope="module")
def photo():
    return render(3, 200, np.random.default_rng(0)).resize((400, 300))


@pytest.mark.parametrize(
    "angle,crop,flip", [(0, (0, 0, 300, 400), False), (25, (40, 60, 200, 180), False), (-33, (10, 100, 150, 250), True)]
)
def test_one_warp_equals_rotate_crop_resize_flip(photo, angle, crop, flip):
    ref = F.rotate(photo, angle, interpolation=InterpolationMode.BILINEAR)
    ref = F.resized_crop(ref, *crop, [112, 112])
    if flip:
        ref = F.hflip(ref)
    out = photo.transform(
        (112, 112), Image.AFFINE, affine_coefficients(400, 300, angle, crop, 112, flip), resample=Image.BILINEAR
    )
    diff = np.abs(np.asarray(ref, float) - np.asarray(out, float)).mean()
    assert diff < 6, diff
    if angle:  # the opposite rotation is far off: the test can tell
        wrong = photo.transform(
            (112, 112), Image.AFFINE, affine_coefficients(400, 300, -angle, crop, 112, flip), resample=Image.BILINEAR
        )
        assert np.abs(np.asarray(ref, float) - np.asarray(wrong, float)).mean() > 3 * diff


def test_crop_sampling_matches_torchvision_ranges():
    random.seed(0)
    areas, ratios = [], []
    for _ in range(2000):
        top, left, h, w = sample_crop(400, 300)
        assert 0 <= top and top + h <= 300 and 0 <= left and left + w <= 400
        areas.append(h * w / (400 * 300))
        ratios.append(w / h)
    assert 0.07 < min(areas) and max(areas) <= 1.0 and 0.4 < np.mean(areas) < 0.6
    assert np.percentile(ratios, 5) > 0.7 and np.percentile(ratios, 95) < 1.4


def test_output_distribution_close_to_the_torchvision_chain(tmp_path, photo):
    path = tmp_path / "p.jpg"
    photo.save(path, quality=95)
    torch.manual_seed(0)
    random.seed(0)
    fast = build_train_transform(64, "reference")
    slow = build_train_transform(64, "reference-torchvision")
    a = torch.stack([fast(str(path)) for _ in range(300)])
    b = torch.stack([slow(Image.open(path).convert("RGB")) for _ in range(300)])
    assert a.shape == b.shape == (300, 3, 64, 64)
    assert torch.allclose(a.mean(dim=(0, 2, 3)), b.mean(dim=(0, 2, 3)), atol=0.08)
    assert torch.allclose(a.std(dim=(0, 2, 3)), b.std(dim=(0, 2, 3)), rtol=0.15)


def test_large_jpeg_is_decoded_at_reduced_scale(tmp_path):
    big = render(1, 128, np.random.default_rng(1)).resize((2400, 1800))
    big.save(tmp_path / "big.jpg", quality=90)
    aug = FastTrainAugment(64)
    opened = []
    original_warp = aug._warp

    def spy(im):
        out = original_warp(im)
        opened.append(im.size)
        return out

    aug._warp = spy
    random.seed(3)
    for _ in range(10):
        assert aug(str(tmp_path / "big.jpg")).shape == (3, 64, 64)
    assert min(w for w, _ in opened) < 2400  # draft mode took effect for at least the smaller crops


def test_exif_rotation_is_applied(tmp_path):
    img = Image.new("RGB", (80, 40), (255, 0, 0))
    img.paste((0, 0, 255), (0, 0, 40, 40))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    img.save(tmp_path / "r.jpg", exif=exif)
    aug = FastTrainAugment(32, degrees=0, jitter=(0, 0, 0, 0))
    aug_out = [aug(str(tmp_path / "r.jpg")) for _ in range(20)]
    assert all(x.shape == (3, 32, 32) for x in aug_out)


def test_bad_file_raises_the_project_error(tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(BadImageError):
        FastTrainAugment(32)(str(tmp_path / "bad.jpg"))
