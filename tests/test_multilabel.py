"""Multi-label through every command: train (feature cache, last:N, tensor pipeline) -> thresholds ->
evaluate -> predict (and --submission) -> export (+ int8) -> serve, on generated 2x2 collages."""

import csv
import json

import pytest
import torch
import yaml
from test_csv_layout import make_food, variants

from imgcls.cli import main
from imgcls.commands.evaluate import evaluate
from imgcls.commands.export import export
from imgcls.commands.predict import predict
from imgcls.engine.predictor import load_predictor

from conftest import train_tiny


@pytest.fixture(scope="module")
def collages(tmp_path_factory):
    root = tmp_path_factory.mktemp("ml")
    return variants(make_food(root / "food", per_class=(16, 6)), root / "v", "multilabel,csv") / "multilabel"


@pytest.fixture(scope="module")
def ml_run(collages, tmp_path_factory):
    return train_tiny(
        collages,
        tmp_path_factory.mktemp("mlrun") / "r",
        model="efficientnet_lite0",
        val_split=0.25,
        epochs=3,
        augment="none",
        lr=0.01,
    ).root


def test_training_records_the_task_metrics_and_thresholds(ml_run, capsys):
    cfg = yaml.safe_load((ml_run / "config.yaml").read_text())
    assert cfg["task"] == "multilabel" and cfg["eval_crop"] is False and cfg["feature_cache"] == 1
    header = (ml_run / "metrics.csv").read_text().splitlines()[0]
    assert header == "epoch,train_loss,train_f1,val_loss,val_mAP,val_f1,lr,epoch_seconds"
    summary = json.loads((ml_run / "summary.json").read_text())
    assert summary["metric"] == "val_mAP" and summary["task"] == "multilabel" and 0 < summary["best_val_mAP"] <= 1
    th = json.loads((ml_run / "thresholds.json").read_text())
    assert th["classes"] == ["apple_pie", "baklava", "beef_tartare"] and len(th["thresholds"]) == 3
    assert all(0 < t < 1 for t in th["thresholds"])
    assert "labels" in (ml_run / "splits.csv").read_text().splitlines()[0]


def test_thresholds_are_the_ones_every_command_uses(ml_run, tmp_path):
    th = json.loads((ml_run / "thresholds.json").read_text())["thresholds"]
    assert load_predictor(ml_run).thresholds == th
    out = tmp_path / "exp"
    export(ml_run, "onnx", out=out)
    sidecar = json.loads((out / "model.json").read_text())
    assert sidecar["task"] == "multilabel" and sidecar["thresholds"] == th and sidecar["eval_crop"] is False
    onnx = load_predictor(out / "model.onnx")
    assert onnx.multilabel and onnx.thresholds == th and not onnx.eval_crop
    # The whole image is resized for multi-label evaluation: no centre crop.
    assert "CenterCrop" not in repr(onnx.transform) and "Resize(size=(32, 32)" in repr(onnx.transform)


def test_evaluate_writes_multilabel_metrics(ml_run, collages, capsys):
    r = evaluate(ml_run, workers=0)
    assert r["images"] == len((collages / "test.csv").read_text().splitlines()) - 1
    out = ml_run / "eval" / "evaluation"
    m = json.loads((out / "metrics.json").read_text())
    assert m["task"] == "multilabel" and m["split"] == "evaluation"
    for key in ("mAP", "f1_macro", "f1_micro", "exact_match"):
        assert 0 <= m[key] <= 1
    assert r["mAP"] > 0.5  # it learned something: colours of 3 classes
    rows = list(csv.DictReader(open(out / "per_label.csv")))
    assert [r["class"] for r in rows] == ["apple_pie", "baklava", "beef_tartare"]
    assert {"ap", "precision", "recall", "f1", "support", "threshold"} <= set(rows[0])
    for name in ("pr_curves.png", "errors.png", "errors.csv", "predictions.csv"):
        assert (out / name).is_file()
    preds = list(csv.DictReader(open(out / "predictions.csv")))
    assert {"true", "predicted", "missed", "wrong"} <= set(preds[0])
    probs = [float(p) for p in preds[0]["probabilities"].split()]
    th = load_predictor(ml_run).thresholds
    assert preds[0]["predicted"].split() == [
        c for c, p, t in zip(["apple_pie", "baklava", "beef_tartare"], probs, th) if p >= t
    ]
    assert main(["evaluate", str(ml_run), "--workers", "0"]) == 0
    assert "mAP" in capsys.readouterr().out


def test_predict_writes_labels_and_probabilities(ml_run, collages, tmp_path):
    r = predict(str(ml_run), [str(collages / "test-jpg")], out=tmp_path / "p.csv", workers=0)
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert r["predicted"] == len(rows) == len(list((collages / "test-jpg").iterdir()))
    assert list(rows[0]) == ["Id", "Labels", "apple_pie", "baklava", "beef_tartare"]
    th = load_predictor(ml_run).thresholds
    for row in rows:
        expected = [c for c, t in zip(["apple_pie", "baklava", "beef_tartare"], th) if float(row[c]) >= t]
        assert row["Labels"].split() == expected
    # A submission in the sample's columns and row order.
    sample = collages / "test.csv"
    predict(str(ml_run), [str(collages / "test-jpg")], out=tmp_path / "s.csv", workers=0, submission=str(sample))
    got = list(csv.reader(open(tmp_path / "s.csv")))
    want = list(csv.reader(open(sample)))
    assert got[0] == want[0] == ["image_name", "tags"] and [g[0] for g in got] == [w[0] for w in want]
    by_id = {row["Id"]: row["Labels"] for row in rows}
    assert all(g[1] == by_id[g[0]] for g in got[1:])


def test_single_label_submission_fills_the_sample(tmp_path, collages):
    kaggle = collages.parent / "csv"
    run = train_tiny(kaggle, tmp_path / "r", model="attn_cnn", val_split=0.25, epochs=1, batch_size=8)
    out = tmp_path / "sub.csv"
    predict(
        str(run.root),
        [str(kaggle / "test_images")],
        out=out,
        workers=0,
        submission=str(kaggle / "sample_submission.csv"),
    )
    got = list(csv.reader(open(out)))
    want = list(csv.reader(open(kaggle / "sample_submission.csv")))
    assert got[0] == ["id", "label"] and [g[0] for g in got] == [w[0] for w in want]
    assert {g[1] for g in got[1:]} <= {"apple_pie", "baklava", "beef_tartare"}


def test_serve_shows_every_label_with_its_threshold(ml_run, collages):
    from fastapi.testclient import TestClient

    from imgcls.commands.serve.app import create_app

    predictor = load_predictor(ml_run)
    client = TestClient(create_app(predictor))
    info = client.get("/model").json()
    assert info["task"] == "multilabel" and info["thresholds"] == predictor.thresholds
    image = next((collages / "test-jpg").iterdir())
    r = client.post("/predict", files={"file": (image.name, image.read_bytes(), "image/jpeg")}).json()
    assert {s["class"] for s in r["scores"]} == {"apple_pie", "baklava", "beef_tartare"}
    for s in r["scores"]:
        assert s["predicted"] == (s["probability"] >= s["threshold"])
    assert r["labels"] == [s["class"] for s in r["scores"] if s["predicted"]]
    assert "showLabels" in client.get("/").text


def test_last_n_tensor_pipeline_mixup_and_int8(collages, tmp_path, monkeypatch):
    """The other fast paths: cached activations with last:N, the tensor pipeline (device augmentation,
    whole-image validation warp), soft multi-hot targets under mixup, and the int8 export."""
    import imgcls.commands.quantize as q

    partial = train_tiny(
        collages,
        tmp_path / "p",
        model="efficientnet_lite0",
        val_split=0.25,
        epochs=1,
        finetune="last:2",
        feature_cache=1,
    )
    assert json.loads(partial.summary.read_text())["finetune"] == "last:2"
    tensor = train_tiny(
        collages, tmp_path / "t", val_split=0.25, epochs=1, data_pipeline="tensor", augment="reference", mixup=0.4
    )
    summary = json.loads(tensor.summary.read_text())
    assert summary["task"] == "multilabel" and summary["image_store_seconds"] > 0
    monkeypatch.setattr(q, "MIN_AGREEMENT", 0.0)
    monkeypatch.setattr(q, "MAX_DROP", 1.0)
    r = export(partial.root, "onnx", out=tmp_path / "e", quantize="int8")["int8"]
    assert 0 <= r["int8_top1_agreement"] <= 1 and r["agreement_images"] > 0


def test_multilabel_loss_knobs():
    from imgcls.core.config import resolve_config
    from imgcls.engine.recipe import TrainLoss, balanced_pos_weight

    cfg = resolve_config(None, {"task": "multilabel", "label_smoothing": 0.2, "mixup": 0.5})
    loss = TrainLoss(cfg, 3, pos_weight=balanced_pos_weight([(0,), (0, 1), (0,), (2,)], 3))
    assert loss.pos_weight.tolist() == pytest.approx([1 / 3, 3.0, 3.0])  # negatives / positives per label
    y = torch.tensor([[1.0, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 1]])
    torch.manual_seed(0)
    x, mixed = loss.mix(torch.rand(4, 3, 8, 8), y)
    assert mixed.shape == y.shape and ((mixed > 0) & (mixed < 1)).any()  # soft multi-hot targets
    # Smoothing 0.2: targets 1 -> 0.9, 0 -> 0.1. At logit 0, BCE = log 2 * (w * t + 1 - t) per label.
    w, t = torch.tensor([1 / 3, 3.0, 3.0]), torch.tensor([0.9, 0.1, 0.1])
    expected = float((torch.log(torch.tensor(2.0)) * (w * t + 1 - t)).mean())
    assert float(loss(torch.zeros(1, 3), torch.tensor([[1.0, 0, 0]]))) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--task", "single"], "several labels per image"),
        (["--sampler", "balanced"], "--pos-weight balanced"),
        (["--class-weights", "balanced"], "--pos-weight balanced"),
    ],
)
def test_multilabel_refusals(collages, tmp_path, capsys, extra, message):
    argv = [
        "train",
        "--model",
        "attn_cnn",
        "--data",
        str(collages),
        "--val-split",
        "0.25",
        "--out",
        str(tmp_path / "r"),
    ]
    assert main(argv + extra) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_pos_weight_needs_a_multilabel_task(demo_data, tmp_path, capsys):
    argv = ["train", "--model", "attn_cnn", "--data", str(demo_data), "--pos-weight", "balanced"]
    assert main(argv + ["--out", str(tmp_path / "r")]) == 2
    assert "multi-label" in capsys.readouterr().err
