"""--data-pipeline tensor on CPU tensors: the decoded store, the batched warp and jitter against the
PIL/torchvision chains, determinism, sharding, and a training run end to end."""

import random

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import functional as F

from imgcls.core.errors import ImgclsError
from imgcls.data import tensor_augment as ta
from imgcls.data.demo import render
from imgcls.data.fast_augment import affine_coefficients
from imgcls.data.image_store import get_store, pad_batch, stored_size
from imgcls.data.layouts import Sample
from imgcls.data.tensor_pipeline import TensorDataModule, collate_canvas
from imgcls.data.transforms import build_eval_transform, build_train_transform

from conftest import train_tiny


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("IMGCLS_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def photo():
    return render(3, 200, np.random.default_rng(0)).resize((400, 300))


def as_canvas(images: list[Image.Image]):
    return pad_batch([np.asarray(im) for im in images])


@pytest.mark.parametrize(
    "angle,crop,flip", [(0, (0, 0, 300, 400), False), (25, (40, 60, 200, 180), False), (-33, (10, 100, 150, 250), True)]
)
def test_batched_warp_equals_the_fast_path_warp(photo, angle, crop, flip):
    # Second image of another size in the same canvas: each image is warped within its own bounds.
    other = photo.resize((220, 330))
    canvas, sizes = as_canvas([photo, other])
    crops = torch.tensor([crop, (5, 5, 200, 150)], dtype=torch.float64)
    theta = ta.warp_theta(
        sizes, crops, torch.tensor([angle, 0.0]), torch.tensor([flip, False]), 112, tuple(canvas.shape[-2:])
    )
    out = (ta._warp(canvas, theta, 112) * 255).round().clamp(0, 255).byte()
    ref = photo.transform(
        (112, 112), Image.AFFINE, affine_coefficients(400, 300, angle, crop, 112, flip), resample=Image.BILINEAR
    )
    diff = np.abs(out[0].permute(1, 2, 0).numpy().astype(float) - np.asarray(ref, float))
    assert diff.mean() < 1.5, diff.mean()
    ref2 = other.transform(
        (112, 112),
        Image.AFFINE,
        affine_coefficients(220, 330, 0, (5, 5, 200, 150), 112, False),
        resample=Image.BILINEAR,
    )
    assert np.abs(out[1].permute(1, 2, 0).numpy().astype(float) - np.asarray(ref2, float)).mean() < 1.5


def test_eval_batch_equals_resize_and_center_crop(photo):
    stored = [photo.resize(stored_size(400, 300, 73)), photo.resize((73, 110))]
    canvas, sizes = as_canvas(stored)
    out = ta.eval_batch(canvas, sizes, 64)
    for k, im in enumerate(stored):
        ref = build_eval_transform(64)(im)
        assert out[k].shape == ref.shape == (3, 64, 64)
        assert (out[k] - ref).abs().mean() < 0.03, k  # normalised units; exact up to bilinear rounding


def test_hue_shift_matches_torchvision(photo):
    x = F.to_tensor(photo.resize((64, 48))).unsqueeze(0).repeat(3, 1, 1, 1)
    shifts = torch.tensor([-0.1, 0.03, 0.1])
    out = ta._shift_hue(x.clone(), shifts)
    for k, s in enumerate(shifts.tolist()):
        assert torch.allclose(out[k], F.adjust_hue(x[k], s), atol=2e-3)


def test_train_batches_are_distributed_like_the_torchvision_chain(tmp_path, photo):
    path = tmp_path / "p.jpg"
    photo.save(path, quality=95)
    torch.manual_seed(0)
    random.seed(0)
    slow = build_train_transform(64, "reference-torchvision")
    b = torch.stack([slow(Image.open(path).convert("RGB")) for _ in range(300)])
    canvas, sizes = as_canvas([photo] * 300)
    a = ta.train_batch(canvas, sizes, 64, torch.Generator().manual_seed(0))
    assert a.shape == b.shape == (300, 3, 64, 64)
    assert torch.allclose(a.mean(dim=(0, 2, 3)), b.mean(dim=(0, 2, 3)), atol=0.08)
    assert torch.allclose(a.std(dim=(0, 2, 3)), b.std(dim=(0, 2, 3)), rtol=0.15)
    # Per-image variety: brightness spread and flips/rotations differ across the batch like the reference.
    assert torch.allclose(a.mean(dim=(1, 2, 3)).std(), b.mean(dim=(1, 2, 3)).std(), rtol=0.35)
    # Without jitter the colours would be far tighter: the check can tell.
    plain = ta.train_batch(canvas, sizes, 64, torch.Generator().manual_seed(0), jitter=False)
    assert plain.mean(dim=(1, 2, 3)).std() < 0.8 * b.mean(dim=(1, 2, 3)).std()


def test_crop_sampler_matches_torchvision_ranges():
    sizes = torch.tensor([[300, 400]] * 4000)
    top, left, h, w = ta.sample_crops(sizes, torch.Generator().manual_seed(1)).unbind(1)
    assert (top >= 0).all() and (top + h <= 300).all() and (left >= 0).all() and (left + w <= 400).all()
    areas, ratios = (h * w / 120000).numpy(), (w / h).numpy()
    assert 0.07 < areas.min() and areas.max() <= 1.0 and 0.4 < areas.mean() < 0.6
    assert np.percentile(ratios, 5) > 0.7 and np.percentile(ratios, 95) < 1.4
    # Odd shapes fall back to torchvision's central crop inside the image.
    thin = ta.sample_crops(torch.tensor([[10, 600]] * 50), torch.Generator().manual_seed(2))
    assert (thin[:, 0] + thin[:, 2] <= 10).all() and (thin[:, 1] + thin[:, 3] <= 600).all()


def test_same_seed_same_batch(photo):
    canvas, sizes = as_canvas([photo] * 8)
    a = ta.train_batch(canvas, sizes, 32, torch.Generator().manual_seed(5))
    b = ta.train_batch(canvas, sizes, 32, torch.Generator().manual_seed(5))
    c = ta.train_batch(canvas, sizes, 32, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_store_decodes_once_and_bounds_the_size(tmp_path, photo):
    root = tmp_path / "imgs"
    root.mkdir()
    photo.resize((1200, 300)).save(root / "wide.jpg")
    photo.resize((40, 30)).save(root / "small.png")
    img = photo.resize((400, 200))
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated by 90 degrees: stored upright, 200 wide
    img.save(root / "rot.jpg", exif=exif)
    (root / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    samples = [Sample(str(root / n), k) for k, n in enumerate(["wide.jpg", "small.png", "rot.jpg", "bad.jpg"])]
    store = get_store(samples, short=64, workers=0, progress=False)
    assert not store.hit
    assert store.image(0).shape == (32, 128, 3)  # long side capped at twice the short side (4:1 photo)
    assert store.image(1).shape == (30, 40, 3)  # never upscaled
    assert store.image(2).shape == (128, 64, 3)  # EXIF orientation applied
    assert list(store.good) == [0, 1, 2]  # the bad file is left out (and logged)
    again = get_store(samples, short=64, workers=0, progress=False)
    assert again.hit and np.array_equal(again.pixels, store.pixels)
    (root / "small.png").touch()  # a changed file gets a new entry
    assert not get_store(samples, short=64, workers=0, progress=False).hit
    assert get_store(samples, short=48, workers=0, progress=False).path != store.path


def test_store_refuses_when_the_disk_is_too_small(tmp_path, photo, monkeypatch):
    import shutil
    from collections import namedtuple

    photo.save(tmp_path / "a.jpg")
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage(10**9, 10**9, 1000))
    with pytest.raises(ImgclsError, match="image store needs .* --data-pipeline workers"):
        get_store([Sample(str(tmp_path / "a.jpg"), 0)], short=64, workers=0, progress=False)


def test_store_fills_with_worker_processes(tmp_path, photo):
    for k in range(6):
        photo.rotate(k * 10).save(tmp_path / f"{k}.jpg")
    samples = [Sample(str(tmp_path / f"{k}.jpg"), k % 2) for k in range(6)]
    parallel = get_store(samples, short=40, workers=2, progress=False)
    serial_pixels = [np.asarray(parallel.image(k)).copy() for k in range(6)]
    import shutil

    shutil.rmtree(parallel.path)
    serial = get_store(samples, short=40, workers=0, progress=False)
    assert all(np.array_equal(serial.image(k), serial_pixels[k]) for k in range(6))


def test_loaders_shard_across_processes(demo_data):
    from types import SimpleNamespace

    from imgcls.data.layouts import discover

    splits = discover(demo_data)
    dm = TensorDataModule(splits, image_size=32, augment="reference", batch_size=4, workers=0, seed=0)
    dm.prepare_data()
    seen = []
    for rank in (0, 1):
        dm.trainer = SimpleNamespace(global_rank=rank, world_size=2, training=False)
        dm.setup()
        labels = [y for _, _, ys in dm.val_dataloader() for y in ys.tolist()]
        seen.append(len(labels))
    assert sum(seen) == len(splits.val) and abs(seen[0] - seen[1]) <= 1
    canvas, sizes, y = next(iter(dm.train_dataloader()))
    assert canvas.dtype == torch.uint8 and canvas.shape[:2] == (4, 3) and sizes.shape == (4, 2)
    assert isinstance(sizes, np.ndarray)  # not a tensor: Lightning keeps it on the host
    x, y2 = dm.to_model_input((canvas, sizes, y), training=True)
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32 and torch.equal(y, y2)


def test_collate_pads_to_the_largest_image():
    items = [(np.full((5, 7, 3), 9, np.uint8), 0), (np.full((8, 3, 3), 4, np.uint8), 1)]
    canvas, sizes, labels = collate_canvas(items)
    assert canvas.shape == (2, 3, 8, 7) and sizes.tolist() == [[5, 7], [8, 3]] and labels.tolist() == [0, 1]
    assert canvas[0, :, 5:].sum() == 0 and canvas[1, :, :, 3:].sum() == 0 and canvas[1, 0, 7, 2] == 4


def test_training_with_the_tensor_pipeline(demo_data, tmp_path):
    import csv
    import json

    import yaml

    from imgcls.commands.evaluate import evaluate

    paths = train_tiny(demo_data, tmp_path / "t", augment="reference", data_pipeline="tensor", epochs=2)
    cfg = yaml.safe_load(paths.config.read_text())
    assert cfg["data_pipeline"] == "tensor"
    rows = list(csv.DictReader(paths.metrics.read_text().splitlines()))
    assert len(rows) == 2
    summary = json.loads(paths.summary.read_text())
    epochs = sum(float(r["epoch_seconds"]) for r in rows)
    assert summary["image_store_seconds"] > 0
    assert summary["train_seconds"] == pytest.approx(epochs + summary["image_store_seconds"], abs=2e-3)
    # Validation during training ran through the device warp; evaluate runs PIL's Resize + CenterCrop.
    # Same pixels here (the store keeps small images as they are): the same accuracy.
    r = evaluate(paths.root, split="validation", workers=0, engine="torch")
    assert r["top1"] == pytest.approx(summary["best_val_acc"], abs=1e-6)


def test_auto_is_workers_on_cpu_and_tensor_refuses_what_it_cannot_do(demo_data, tmp_path):
    import yaml

    paths = train_tiny(demo_data, tmp_path / "a", epochs=1)
    assert yaml.safe_load(paths.config.read_text())["data_pipeline"] == "workers"
    with pytest.raises(ImgclsError, match="implements --augment reference and none"):
        train_tiny(demo_data, tmp_path / "b", data_pipeline="tensor", augment="light")
    with pytest.raises(ImgclsError, match="with --feature-cache the cache feeds it"):
        train_tiny(demo_data, tmp_path / "c", model="efficientnet_lite0", data_pipeline="tensor", feature_cache=1)


def test_a_killed_fill_leaves_nothing_behind_and_a_full_disk_is_a_message(tmp_path, photo, monkeypatch):
    import os

    from imgcls.data import image_store

    photo.save(tmp_path / "a.jpg")
    samples = [Sample(str(tmp_path / "a.jpg"), 0)]
    calls = []

    def killed(*a, **k):
        calls.append(1)
        raise KeyboardInterrupt

    monkeypatch.setattr(image_store, "decode_to", killed)
    with pytest.raises(KeyboardInterrupt):
        get_store(samples, short=32, workers=0, progress=False)
    folder = next((tmp_path / "cache" / "decoded").iterdir())
    assert calls and not list(folder.glob("*.npy")) and not list(folder.glob(".*"))
    # A partial file of a process that no longer exists is removed by the next fill.
    stale = folder / ".pixels.999999999.npy"
    stale.write_bytes(b"partial")
    monkeypatch.undo()
    monkeypatch.setenv("IMGCLS_CACHE", str(tmp_path / "cache"))

    def no_space(fd, offset, length):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", no_space)
    with pytest.raises(ImgclsError, match="cannot reserve .*No space left"):
        get_store(samples, short=32, workers=0, progress=False)
    assert not stale.exists() and not list(folder.glob(".*.npy"))
    monkeypatch.undo()
    monkeypatch.setenv("IMGCLS_CACHE", str(tmp_path / "cache"))
    assert get_store(samples, short=32, workers=0, progress=False).image(0).shape[2] == 3


def test_elementwise_grid_is_affine_grid():
    from torch.nn import functional as F

    theta = torch.randn(5, 2, 3, dtype=torch.float64)
    canvas = torch.randint(0, 256, (5, 3, 40, 50), dtype=torch.uint8)
    ref = (
        F.grid_sample(canvas.double(), F.affine_grid(theta, [5, 3, 16, 16], align_corners=False), align_corners=False)
        / 255
    )
    assert torch.allclose(ta._warp(canvas, theta, 16).double(), ref, atol=1e-5)
