"""--finetune last:N: block lists, the frozen prefix, the activation cache, and ordinary checkpoints."""

import json

import pytest
import torch

from imgcls.core.errors import ImgclsError
from imgcls.core.rundir import read_metrics
from imgcls.models import create_model, get_model_info, list_models
from imgcls.models.blocks import blocks, split

from conftest import train_tiny


@pytest.mark.parametrize("name", list_models())
def test_every_cut_composes_to_the_model(name):
    size = 224 if get_model_info(name).fixed_image_size else 64
    torch.manual_seed(0)
    model = create_model(name, 7, image_size=size).eval()
    x = torch.randn(2, 3, size, size)
    names = blocks(model)
    assert len(names) >= 5 and len(set(names)) == len(names)
    with torch.no_grad():
        expected = model(x)
        for n in sorted({0, 1, 2, len(names)}):
            prefix, suffix = split(model, n)
            assert torch.equal(suffix(prefix(x)), expected), f"last:{n}"
    with pytest.raises(ImgclsError, match="blocks"):
        split(model, len(names) + 1)


def _trainable(paths):
    return json.loads(paths.summary.read_text())["trainable_params"]


def test_last_n_trains_only_the_last_blocks(demo_data, tmp_path, monkeypatch):
    from imgcls.engine.predictor import load_predictor

    monkeypatch.setenv("IMGCLS_CACHE", str(tmp_path / "cache"))
    paths = train_tiny(demo_data, tmp_path / "l2", model="efficientnet_lite0", finetune="last:2", epochs=1)
    trained = load_predictor(paths.root, engine="torch").model
    original = create_model("efficientnet_lite0", 11, pretrained=True)
    moved = {
        k for (k, a), b in zip(trained.state_dict().items(), original.state_dict().values()) if not torch.equal(a, b)
    }
    assert moved and all(k.startswith(("blocks.6.", "conv_head.", "bn2.", "classifier.")) for k in moved), moved
    assert any(k.startswith("blocks.6.") for k in moved) and any(k.startswith("bn2.") for k in moved)
    expected = sum(p.numel() for n, p in original.named_parameters() if n.startswith(("blocks.6.", "conv_head", "bn2")))
    assert _trainable(paths) == expected + 1280 * 11 + 11


def test_cached_and_streamed_last_n_agree(tmp_path, monkeypatch):
    from imgcls.data.demo import write_demo_dataset

    monkeypatch.setenv("IMGCLS_CACHE", str(tmp_path / "cache"))
    data = write_demo_dataset(tmp_path / "demo", per_class=30, size=64, seed=5)
    common = dict(model="efficientnet_lite0", finetune="last:1", epochs=2, augment="none", image_size=64, workers=0)
    cached = train_tiny(data, tmp_path / "cached", **common)  # augment none: one cached view by default
    streamed = train_tiny(data, tmp_path / "streamed", **common, feature_cache=0)
    a, b = json.loads(cached.summary.read_text()), json.loads(streamed.summary.read_text())
    assert a["feature_cache_seconds"] > 0 and b["feature_cache_seconds"] == 0 and not a["feature_cache_hit"]
    rows_a, rows_b = read_metrics(cached.metrics), read_metrics(streamed.metrics)
    assert a["best_val_acc"] > 0.3
    for ra, rb in zip(rows_a, rows_b):  # fp16 cache vs fp32 stream: the same run up to rounding
        assert abs(ra["train_loss"] - rb["train_loss"]) < 0.02 and abs(ra["val_acc"] - rb["val_acc"]) <= 0.02
    meta = json.loads(next((tmp_path / "cache" / "features").glob("*/meta.json")).read_text())
    assert meta["identity"]["cut"] == "last:1"


def test_a_last_n_checkpoint_is_a_normal_model(demo_data, tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    from imgcls.commands.evaluate import evaluate
    from imgcls.commands.export import export
    from imgcls.commands.predict import predict
    from imgcls.commands.serve.app import create_app
    from imgcls.engine.predictor import load_predictor

    from test_export_serve import _png

    monkeypatch.setenv("IMGCLS_CACHE", str(tmp_path / "cache"))
    paths = train_tiny(demo_data, tmp_path / "p", finetune="last:2", epochs=1, feature_cache=2)
    assert evaluate(paths.root, workers=0)["images"] == 33
    assert (
        predict(str(paths.root), [str(demo_data / "evaluation")], out=tmp_path / "p.csv", workers=0)["predicted"] == 33
    )
    assert export(paths.root, "onnx")["max_prob_diff"] <= 1e-4
    client = TestClient(create_app(load_predictor(paths.root)))
    assert client.post("/predict", files={"file": ("x.png", _png(), "image/png")}).status_code == 200


def test_cache_size_is_refused_when_the_disk_is_too_small(demo_data, tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    monkeypatch.setenv("IMGCLS_CACHE", str(tmp_path / "cache"))
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage(10**9, 10**9, 1000))
    with pytest.raises(ImgclsError, match="feature cache needs"):
        train_tiny(demo_data, tmp_path / "d", finetune="last:1", feature_cache=2, epochs=1)


def test_bad_finetune_values():
    from imgcls.core.config import resolve_config

    for value in ("last:0", "last:x", "some", "last"):
        with pytest.raises(ImgclsError, match="last:N"):
            resolve_config(None, {"finetune": value})
