import csv
import json

import pytest
import torch
import yaml

from imgcls.commands.evaluate import evaluate
from imgcls.commands.predict import predict
from imgcls.core.config import load_run_config
from imgcls.core.errors import ImgclsError
from imgcls.core.rundir import METRICS_COLUMNS, read_metrics
from imgcls.engine.predictor import load_predictor

from conftest import train_tiny


def test_run_directory_is_complete(tiny_run, demo_data):
    for name in (
        "config.yaml",
        "classes.json",
        "metrics.csv",
        "summary.json",
        "checkpoints/best.ckpt",
        "checkpoints/last.ckpt",
    ):
        assert (tiny_run / name).is_file(), name
    assert not (tiny_run / "bad_files.txt").exists()
    cfg = yaml.safe_load((tiny_run / "config.yaml").read_text())
    assert cfg["model"] == "attn_cnn" and cfg["num_classes"] == 11 and cfg["finetune"] == "full"
    assert cfg["pretrained"] is False and cfg["image_size"] == 32 and cfg["data"] == str(demo_data)
    classes = json.loads((tiny_run / "classes.json").read_text())
    assert classes[0] == "circle" and len(classes) == 11

    with open(tiny_run / "metrics.csv") as fh:
        assert next(csv.reader(fh)) == METRICS_COLUMNS
    rows = read_metrics(tiny_run / "metrics.csv")
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all(0 <= r["val_acc"] <= 1 and r["train_loss"] > 0 and r["epoch_seconds"] > 0 for r in rows)
    assert rows[0]["lr"] == pytest.approx(1e-3)

    summary = json.loads((tiny_run / "summary.json").read_text())
    best = max(rows, key=lambda r: r["val_acc"])
    assert summary["best_val_acc"] == pytest.approx(best["val_acc"], abs=1e-6)
    assert summary["best_epoch"] == best["epoch"]
    assert summary["train_seconds"] == pytest.approx(sum(r["epoch_seconds"] for r in rows), abs=0.01)
    assert summary["params"] == summary["trainable_params"] == 721_675
    assert summary["gflops"] > 0 and summary["complete"] is True


def test_best_checkpoint_reproduces_logged_val_acc(tiny_run):
    """The best checkpoint's validation accuracy, recomputed outside Lightning, equals the logged one."""
    result = evaluate(tiny_run, split="validation", workers=0)
    summary = json.loads((tiny_run / "summary.json").read_text())
    assert result["top1"] == pytest.approx(summary["best_val_acc"], abs=1e-6)


def test_evaluate_writes_reports(tiny_run):
    r = evaluate(tiny_run, workers=0)
    out = tiny_run / "eval" / "evaluation"
    assert r["images"] == 33 and 0 <= r["top1"] <= r["top5"] <= 1
    assert len(r["per_class"]) == 11 and sum(c["support"] for c in r["per_class"]) == 33
    for name in ("metrics.json", "per_class.csv", "confusion_matrix.csv", "confusion_matrix.png"):
        assert (out / name).is_file()
    with open(out / "confusion_matrix.csv") as fh:
        rows = list(csv.reader(fh))
    assert len(rows) == 12 and sum(int(v) for row in rows[1:] for v in row[1:]) == 33
    correct = sum(int(rows[i + 1][i + 1]) for i in range(11))
    assert correct / 33 == pytest.approx(r["top1"], abs=1e-6)
    assert (out / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"


def test_predict_csv_matches_model(tiny_run, demo_data, tmp_path):
    out = tmp_path / "preds.csv"
    r = predict(str(tiny_run), [str(demo_data / "evaluation")], out=out, topk=3, workers=0)
    with open(out) as fh:
        rows = list(csv.DictReader(fh))
    assert r["predicted"] == len(rows) == 33
    assert list(rows[0]) == [
        "Id",
        "Category",
        "top1_class",
        "top1_prob",
        "top2_class",
        "top2_prob",
        "top3_class",
        "top3_prob",
    ]
    loaded = load_predictor(tiny_run)
    assert all(loaded.classes[int(row["Category"])] == row["top1_class"] for row in rows)
    assert all(float(row["top1_prob"]) >= float(row["top2_prob"]) >= float(row["top3_prob"]) for row in rows)
    plain = predict(str(tiny_run), [str(demo_data / "evaluation")], out=tmp_path / "p2.csv", workers=0)
    assert plain["predicted"] == 33
    assert (tmp_path / "p2.csv").read_text().splitlines()[0] == "Id,Category"


def test_existing_run_is_not_overwritten(tiny_run, demo_data):
    with pytest.raises(ImgclsError, match="--resume"):
        train_tiny(demo_data, tiny_run)


def test_resume_continues_to_more_epochs(demo_data, tmp_path):
    from imgcls.engine.train import resume_config, train

    paths = train_tiny(demo_data, tmp_path / "r", epochs=1)
    first = read_metrics(paths.metrics)
    train(resume_config(paths.root, {"epochs": 3}), resume=True, progress=False)
    rows = read_metrics(paths.metrics)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert rows[0] == first[0]
    assert load_run_config(paths.config).epochs == 3
    assert json.loads(paths.summary.read_text())["epochs_completed"] == 3


def test_head_only_training_leaves_the_backbone_untouched(demo_data, tmp_path):
    from imgcls.models import create_model

    paths = train_tiny(demo_data, tmp_path / "lite", model="efficientnet_lite0", epochs=1, image_size=32)
    cfg = load_run_config(paths.config)
    assert cfg.pretrained is True and cfg.finetune == "head"
    summary = json.loads(paths.summary.read_text())
    assert summary["trainable_params"] == 1280 * 11 + 11
    trained = load_predictor(paths.root, engine="torch").model
    original = create_model("efficientnet_lite0", 11, pretrained=True)
    for (name, a), b in zip(trained.state_dict().items(), original.state_dict().values()):
        if not name.startswith("classifier."):
            assert torch.equal(a, b), f"{name} changed (BatchNorm statistics or weights of a frozen backbone)"
    assert not torch.equal(trained.classifier.weight, original.classifier.weight)


def test_num_classes_is_checked_against_the_data(demo_data, tmp_path):
    with pytest.raises(ImgclsError, match="does not match"):
        train_tiny(demo_data, tmp_path / "n", num_classes=10)
