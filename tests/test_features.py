import json

import numpy as np
import pytest

from imgcls.core.rundir import read_metrics
from imgcls.data.layouts import discover
from imgcls.data.transforms import build_eval_transform, build_train_transform
from imgcls.engine.features import get_features
from imgcls.models import create_model
from imgcls.models.blocks import split

from conftest import train_tiny, write_image


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("IMGCLS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "features"


def _get(samples, transform, views=1):
    model = create_model("attn_cnn", 11, image_size=32).eval()
    return get_features(
        split(model, 0)[0],
        samples,
        transform=transform,
        image_size=32,
        views=views,
        seed=0,
        identity={"model": "attn_cnn"},
        workers=0,
    )


def test_second_call_reads_the_memory_mapped_cache(demo_data, cache):
    samples = discover(demo_data).val
    first = _get(samples, build_eval_transform(32))
    second = _get(samples, build_eval_transform(32))
    assert first.features.shape == (len(samples), 1, 256)
    assert second.path == first.path and second.hit and not first.hit and second.seconds == first.seconds > 0
    assert isinstance(second.features, np.memmap)
    assert np.array_equal(np.asarray(first.features), np.asarray(second.features))
    assert json.loads((first.path / "meta.json").read_text())["images"] == len(samples)


def test_changed_file_list_or_transform_or_file_gets_a_new_entry(demo_data, cache, tmp_path):
    samples = discover(demo_data).val
    base = _get(samples, build_eval_transform(32)).path
    assert _get(samples[:-1], build_eval_transform(32)).path != base
    assert _get(samples, build_train_transform(32, "light")).path != base
    copy = tmp_path / "one.jpg"
    write_image(copy)
    from imgcls.data.layouts import Sample

    one = [Sample(str(copy), 0)]
    before = _get(one, build_eval_transform(32)).path
    write_image(copy, colour=(0, 0, 250))  # same path, new content
    assert _get(one, build_eval_transform(32)).path != before
    assert len(list(cache.iterdir())) == 5


def test_augmented_views_differ(demo_data, cache):
    samples = discover(demo_data).train[:8]
    f = _get(samples, build_train_transform(32, "light"), views=3)
    arr = np.asarray(f.features)
    assert arr.shape[:2] == (8, 3) and not np.allclose(arr[:, 0], arr[:, 1])


def test_cached_head_training_matches_the_uncached_path(cache, tmp_path):
    from imgcls.data.demo import write_demo_dataset

    data = write_demo_dataset(tmp_path / "demo", per_class=40, size=64, seed=7)  # 132 validation images
    common = dict(model="efficientnet_lite0", epochs=3, augment="none", image_size=64, batch_size=16, workers=0)
    cached = train_tiny(data, tmp_path / "cached", **common)
    plain = train_tiny(data, tmp_path / "plain", **common, feature_cache=0)  # backbone runs every epoch
    a = json.loads(cached.summary.read_text())
    b = json.loads(plain.summary.read_text())
    assert a["feature_cache_seconds"] > 0 and b["feature_cache_seconds"] == 0
    rows_a, rows_b = read_metrics(cached.metrics), read_metrics(plain.metrics)
    print(
        f"\ncached   {[(r['train_loss'], r['val_acc']) for r in rows_a]}"
        f"\nuncached {[(r['train_loss'], r['val_acc']) for r in rows_b]}"
    )
    assert a["best_val_acc"] > 0.3  # it learned something, so agreement means something
    assert abs(a["best_val_acc"] - b["best_val_acc"]) <= 0.01
    assert abs(rows_a[-1]["val_acc"] - rows_b[-1]["val_acc"]) <= 0.01
