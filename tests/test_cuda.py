"""The CUDA path. Skipped without a GPU; ``scripts/gpu-check.sh`` runs these on a GPU machine."""

import numpy as np
import pytest
import torch
import yaml

from imgcls.data import tensor_augment as ta
from imgcls.data.demo import render
from imgcls.data.image_store import pad_batch

from conftest import train_tiny

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
]


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("IMGCLS_CACHE", str(tmp_path / "cache"))


def test_device_augmentation_matches_the_cpu_one():
    rng = np.random.default_rng(0)
    images = [np.asarray(render(k % 11, 96, rng).resize((120 + 8 * k, 100))) for k in range(16)]
    canvas, sizes = pad_batch(images)
    cpu = ta.train_batch(canvas, sizes, 64, torch.Generator().manual_seed(3))
    gpu = ta.train_batch(canvas.cuda(), sizes.cuda(), 64, torch.Generator().manual_seed(3))
    assert gpu.device.type == "cuda"
    assert (gpu.cpu() - cpu).abs().mean() < 1e-3  # same draws, same float32 sampling
    ev_cpu, ev_gpu = ta.eval_batch(canvas, sizes, 64), ta.eval_batch(canvas.cuda(), sizes.cuda(), 64)
    assert (ev_gpu.cpu() - ev_cpu).abs().mean() < 1e-3


@pytest.mark.parametrize("model", ["efficientnet_b0", "attn_cnn", "vit_tiny"])
def test_training_on_the_gpu_uses_the_tensor_pipeline_and_mixed_precision(demo_data, tmp_path, model):
    from imgcls.commands.evaluate import evaluate

    paths = train_tiny(
        demo_data, tmp_path / model, model=model, augment="reference", pretrained=False, epochs=2, image_size=64
    )
    cfg = yaml.safe_load(paths.config.read_text())
    assert cfg["data_pipeline"] == "tensor"
    assert cfg["precision"] in ("bf16-mixed", "16-mixed")
    r = evaluate(paths.root, split="validation", workers=0)
    assert 0 <= r["top1"] <= 1


def test_feature_cache_and_partial_training_on_the_gpu(demo_data, tmp_path):
    paths = train_tiny(
        demo_data,
        tmp_path / "l3",
        model="efficientnet_lite0",
        pretrained=False,  # the offline weights package may be missing on a GPU machine
        finetune="last:3",
        feature_cache=2,
        epochs=2,
    )
    assert yaml.safe_load(paths.config.read_text())["data_pipeline"] == "workers"  # the cache feeds it
    assert len(paths.metrics.read_text().splitlines()) == 3
