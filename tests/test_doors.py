"""One door each: exported models load and evaluate through load_predictor (their sidecars checked against
the graph), runs read their recorded splits back, and a damaged cache entry is rebuilt, not a traceback."""

import json
import shutil

import numpy as np
import pytest
import torch

from imgcls.cli import main
from imgcls.commands.evaluate import evaluate
from imgcls.commands.export import export
from imgcls.core.errors import ImgclsError
from imgcls.engine.predictor import load_predictor

from conftest import train_tiny, write_image


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    run = tmp_path_factory.mktemp("exp") / "run"
    shutil.copytree(tiny_run, run)
    export(run, "onnx")
    export(run, "safetensors")
    return run


def test_an_onnx_export_evaluates_apart_from_the_checkpoint(exported, capsys):
    by_run = evaluate(exported, workers=0, engine="torch")
    assert main(["evaluate", str(exported / "export" / "model.onnx"), "--workers", "0"]) == 0
    assert "Traceback" not in capsys.readouterr().err
    onnx = json.loads((exported / "export" / "eval" / "model" / "evaluation" / "metrics.json").read_text())
    assert onnx["engine"]["engine"] == "onnxruntime" and onnx["images"] == by_run["images"] == 33
    assert onnx["top1"] == pytest.approx(by_run["top1"], abs=1 / 33)  # the same model in another engine


def test_safetensors_export_is_a_loadable_model(exported):
    loaded = load_predictor(exported / "export" / "model.safetensors", engine="torch")
    reference = load_predictor(exported, engine="torch")
    assert loaded.classes == reference.classes and loaded.image_size == reference.image_size == 32
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded.run(x).softmax(1), reference.run(x).softmax(1), atol=1e-5)
    assert loaded.describe()["file"].endswith("model.safetensors") and loaded.engine == "pytorch"


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda info: info.update(classes=info["classes"][:5]), "gives 11 scores, but its sidecar lists 5"),
        (lambda info: info.update(image_size=64), "takes input"),
        (lambda info: info.update(std=[0, 0.2, 0.2]), "'std' values must be positive"),
        (lambda info: info.update(mean="x"), "'mean' must be three numbers"),
    ],
)
def test_an_edited_sidecar_is_refused_when_loaded(exported, tmp_path, capsys, edit, message):
    folder = tmp_path / "copy"
    shutil.copytree(exported / "export", folder)
    info = json.loads((folder / "model.json").read_text())
    edit(info)
    (folder / "model.json").write_text(json.dumps(info))
    image = write_image(tmp_path / "x.png", size=(32, 32))
    assert main(["predict", str(folder / "model.onnx"), str(image), "--out", str(tmp_path / "p.csv")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_evaluate_reads_the_recorded_validation_split(demo_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(demo_data, data)
    shutil.rmtree(data / "validation")
    paths = train_tiny(data, tmp_path / "r", epochs=1, val_split=0.25)
    recorded = [ln.split(",")[1] for ln in paths.splits.read_text().splitlines()[1:] if ln.startswith("val,")]
    assert recorded and all(not p.startswith("/") for p in recorded)  # relative to the data folder
    # New training images after training: a recomputed hold-out would differ; the recorded one does not.
    for i in range(40):
        write_image(data / "training" / f"{i % 11}_new{i}.jpg", size=(32, 32), seed=100 + i)
    r = evaluate(paths.root, split="validation", workers=0)
    rows = (paths.eval_dir / "validation" / "predictions.csv").read_text().splitlines()[1:]
    assert r["images"] == len(recorded)
    assert sorted(row.split(",")[0] for row in rows) == sorted(str(data / p) for p in recorded)


def _entry(kind):
    from imgcls.core.cache import user_cache

    (folder,) = [p for p in user_cache(kind).iterdir() if p.is_dir()]
    return folder


@pytest.mark.parametrize("damage", ["truncate", "garbage", "meta", "other version"])
def test_a_damaged_feature_cache_is_rebuilt_with_a_warning(demo_data, tmp_path, monkeypatch, caplog, damage):
    from imgcls.data.layouts import discover
    from imgcls.data.transforms import build_eval_transform
    from imgcls.engine.features import get_features
    from imgcls.models import create_model
    from imgcls.models.blocks import split

    monkeypatch.setenv("IMGCLS_CACHE", str(tmp_path / "cache"))
    samples = discover(demo_data).val
    backbone = split(create_model("attn_cnn", 11, image_size=32).eval(), 0)[0]
    kw = dict(transform=build_eval_transform(32), image_size=32, views=1, seed=0, identity={"m": 1}, workers=0)
    first = np.asarray(get_features(backbone, samples, **kw).features).copy()
    folder = _entry("features")
    target = folder / "features.npy"
    if damage == "truncate":
        target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    elif damage == "garbage":
        blob = bytearray(target.read_bytes())
        blob[200:] = np.random.default_rng(0).integers(0, 256, len(blob) - 200, dtype=np.uint8).tobytes()
        target.write_bytes(bytes(blob))
    elif damage == "meta":
        (folder / "meta.json").write_text("{not json")
    else:  # whole and consistent, but its parts have other names (a cache written by another version)
        meta = json.loads((folder / "meta.json").read_text())
        meta["files"]["feats.npy"] = meta["files"].pop("features.npy")
        target.rename(folder / "feats.npy")
        (folder / "meta.json").write_text(json.dumps(meta))
    again = get_features(backbone, samples, **kw)
    assert not again.hit and np.array_equal(np.asarray(again.features), first)
    assert "damaged features cache entry" in caplog.text


def test_a_truncated_image_store_is_rebuilt(tmp_path, monkeypatch, caplog):
    from imgcls.data.image_store import get_store
    from imgcls.data.layouts import Sample

    monkeypatch.setenv("IMGCLS_CACHE", str(tmp_path / "cache"))
    samples = [Sample(str(write_image(tmp_path / f"{i}.png", size=(40, 30), seed=i)), 0) for i in range(3)]
    first = get_store(samples, short=32, workers=0, progress=False)
    pixels = first.image(1).copy()
    target = _entry("decoded") / "pixels.npy"
    target.write_bytes(target.read_bytes()[:100])
    again = get_store(samples, short=32, workers=0, progress=False)
    assert not again.hit and np.array_equal(again.image(1), pixels)
    assert "damaged decoded cache entry" in caplog.text


def test_a_scan_cache_from_another_version_is_rebuilt(tmp_path, monkeypatch, caplog):
    # Seen on food5: an entry with verdicts.json (an earlier layout) made check-data a KeyError traceback.
    from imgcls.core.cache import CacheEntry
    from imgcls.data.layouts import Sample
    from imgcls.data.scan import scan_samples

    monkeypatch.setenv("IMGCLS_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "d"
    good = write_image(root / "a.png", size=(20, 20))
    (root / "b.png").write_bytes(b"not an image")
    old = CacheEntry("scan", root=str(root.resolve()))
    old.put("verdicts.json", {str(good): [1, 2, None]})
    old.commit({"root": str(root.resolve())})
    bad = scan_samples([Sample(str(good), 0), Sample(str(root / "b.png"), 0)], root=str(root), workers=0)
    assert [b.path for b in bad] == [str(root / "b.png")]
    assert "written by another version" in caplog.text


def test_a_bad_sidecar_file_on_a_run_export_is_one_line(exported, tmp_path):
    folder = tmp_path / "e"
    shutil.copytree(exported / "export", folder)
    (folder / "model.json").write_text("[1, 2]")
    with pytest.raises(ImgclsError, match="expected a JSON object"):
        load_predictor(folder / "model.onnx")
