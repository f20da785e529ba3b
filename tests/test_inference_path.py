"""One door for trained models: every consumer records which engine ran, from which file."""

import json
import threading
import time

import pytest
import torch

from imgcls.engine.predictor import Predictor, load_predictor, predict_samples

from conftest import train_tiny

pytest.importorskip("onnxruntime")


def test_evaluate_records_the_engine_and_file(tiny_run):
    from imgcls.commands.evaluate import evaluate

    r = evaluate(tiny_run, workers=0)
    record = json.loads((tiny_run / "eval" / "evaluation" / "metrics.json").read_text())["engine"]
    assert record == r["engine"]
    assert record["engine"] in ("onnxruntime", "pytorch") and record["file"]
    torch_r = evaluate(tiny_run, workers=0, engine="torch")
    assert torch_r["engine"]["engine"] == "pytorch" and torch_r["engine"]["file"].endswith("best.ckpt")
    assert abs(torch_r["top1"] - r["top1"]) <= 1 / 33


def test_a_fresh_export_is_what_runs_and_a_stale_one_is_not(tiny_run, tmp_path):
    import os
    import shutil

    from imgcls.commands.export import export

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("export"))
    export(run, "onnx")
    assert load_predictor(run).describe()["file"] == str(run / "export" / "model.onnx")
    best = run / "checkpoints" / "best.ckpt"
    later = (run / "export" / "model.onnx").stat().st_mtime + 10
    os.utime(best, (later, later))  # a newer date alone changes nothing: the weights are the same
    assert load_predictor(run).describe()["file"] == str(run / "export" / "model.onnx")
    import torch

    state = torch.load(best, weights_only=True)
    key = next(k for k, v in state["state_dict"].items() if v.is_floating_point())
    state["state_dict"][key] = state["state_dict"][key] + 0.01  # a new best epoch: the export is stale
    torch.save(state, best)
    assert load_predictor(run).describe()["file"] != str(run / "export" / "model.onnx")


def test_head_only_summary_names_the_backbone_engine(demo_data, tmp_path, monkeypatch):
    monkeypatch.setenv("IMGCLS_CACHE", str(tmp_path / "cache"))
    for cache in (0, 1):
        paths = train_tiny(
            demo_data, tmp_path / f"h{cache}", model="efficientnet_lite0", epochs=1, augment="none", feature_cache=cache
        )
        record = json.loads(paths.summary.read_text())["backbone_engine"]
        assert record["engine"] == "onnxruntime" and record["file"].endswith(".onnx")
        from imgcls.core.config import load_run_config

        assert load_run_config(paths.config).feature_cache == cache  # what actually ran


def test_cold_and_warm_feature_cache_give_identical_metrics(demo_data, tmp_path, monkeypatch):
    monkeypatch.setenv("IMGCLS_CACHE", str(tmp_path / "cache"))
    common = dict(model="efficientnet_lite0", epochs=2, augment="light", feature_cache=2)
    cold = train_tiny(demo_data, tmp_path / "cold", **common)
    warm = train_tiny(demo_data, tmp_path / "warm", **common)
    a, b = json.loads(cold.summary.read_text()), json.loads(warm.summary.read_text())
    assert a["feature_cache_seconds"] > 0 and not a["feature_cache_hit"]
    assert b["feature_cache_hit"] and b["feature_cache_seconds"] == a["feature_cache_seconds"]  # the work still counts

    def rows(paths):
        lines = paths.metrics.read_text().splitlines()
        return [line.rsplit(",", 1)[0] for line in lines]  # epoch_seconds (wall time) is last

    assert rows(cold) == rows(warm)


class _HeldRunner:
    """A model that runs until the test lets it finish."""

    engine, file = "pytorch", None

    def __init__(self):
        self.started, self.release = threading.Event(), threading.Event()

    def __call__(self, x):
        self.started.set()
        assert self.release.wait(30)
        return torch.zeros(len(x), 3)


def test_health_answers_while_a_prediction_runs():
    from fastapi.testclient import TestClient

    from imgcls.commands.serve.app import create_app

    from test_export_serve import _png

    runner = _HeldRunner()
    client = TestClient(create_app(Predictor(runner, ["a", "b", "c"], 32, "slow")))
    worker = threading.Thread(target=lambda: client.post("/predict", files={"file": ("x.png", _png(), "image/png")}))
    worker.start()
    assert runner.started.wait(30)  # the prediction is running now, and stays running
    t0 = time.perf_counter()
    assert client.get("/health").status_code == 200
    waited = time.perf_counter() - t0
    runner.release.set()
    worker.join()
    assert waited < 0.2, waited


def test_predict_samples_skips_undecodable_files(tiny_run, demo_data, tmp_path):
    from imgcls.data.layouts import Sample

    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    good = sorted((demo_data / "evaluation").glob("*.jpg"))[:3]
    samples = [Sample(str(good[0]), 0), Sample(str(bad), 0), *[Sample(str(p), 0) for p in good[1:]]]
    seen = []
    probs, kept = predict_samples(
        load_predictor(tiny_run, engine="torch"),
        samples,
        workers=0,
        on_batch=lambda out, idx: seen.append(torch.is_grad_enabled()),
    )
    assert seen and not any(seen)  # inference builds no autograd graph
    probs, kept = predict_samples(load_predictor(tiny_run), samples, workers=0)
    assert kept == [0, 2, 3] and probs.shape == (3, 11)
    assert torch.allclose(probs.sum(1), torch.ones(3), atol=1e-5)
