"""The Python API, tested through the API: what each function returns, that keywords are checked as the
flags are (the same one-line messages), and how the objects show themselves in a notebook."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import imgcls
from imgcls.cli import main


@pytest.fixture(scope="module")
def api_run(demo_data, tmp_path_factory):
    return imgcls.train(
        data=demo_data, model="attn_cnn", epochs=2, image_size=32, augment="light", workers=0, batch_size=16,
        out=tmp_path_factory.mktemp("api") / "run",
    )  # fmt: skip


def test_train_returns_the_run_folder_as_objects(api_run):
    assert isinstance(api_run, imgcls.Run) and (api_run.path / "checkpoints" / "best.ckpt").is_file()
    assert list(api_run.metrics["epoch"]) == [1, 2] and "val_acc" in api_run.metrics
    assert api_run.summary["epochs_completed"] == 2 and api_run.best == api_run.summary["best_val_acc"]
    assert api_run.config.model == "attn_cnn" and api_run.config.epochs == 2
    assert api_run.classes == json.loads((api_run.path / "classes.json").read_text())
    html = api_run._repr_html_()
    assert "<img src='data:image/png;base64," in html and "best val_acc" in html


@pytest.mark.parametrize(
    "keywords, flags",
    [
        ({"lr": -1}, ["--lr", "-1"]),
        ({"epochs": 2.5}, ["--epochs", "2.5"]),
        ({"val_split": 1.0}, ["--val-split", "1.0"]),
        ({"augment": "heavy"}, ["--augment", "heavy"]),
        ({"finetune": "last:0"}, ["--finetune", "last:0"]),
    ],
)
def test_keywords_fail_with_the_flags_message(demo_data, tmp_path, capsys, keywords, flags):
    common = dict(data=str(demo_data), model="attn_cnn", out=str(tmp_path / "r"))
    with pytest.raises(imgcls.ImgclsError) as info:
        imgcls.train(**common, **keywords)
    argv = ["train", "--data", common["data"], "--model", "attn_cnn", "--out", common["out"], *flags]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == f"imgcls: error: {info.value}"
    assert not (tmp_path / "r").exists()


def test_unknown_keywords_are_named():
    with pytest.raises(imgcls.ImgclsError, match=r"imgcls.train: unknown option\(s\) learning_rate; valid: .*lr"):
        imgcls.train(data="x", model="attn_cnn", learning_rate=0.1)
    with pytest.raises(imgcls.ImgclsError, match=r"imgcls.evaluate: unknown option\(s\) splitt"):
        imgcls.evaluate("x", splitt="validation")
    with pytest.raises(imgcls.ImgclsError, match="--batch-size must be at least 1, got 0"):
        imgcls.evaluate("x", batch_size=0)


def test_evaluate_returns_its_numbers_and_tables(tiny_run):
    result = imgcls.evaluate(tiny_run, workers=0)
    written = json.loads((result.path / "metrics.json").read_text())
    assert result["top1"] == written["top1"] and result.metrics["macro_f1"] == written["macro_f1"]
    assert list(result.per_class["class"]) == json.loads((tiny_run / "classes.json").read_text())
    assert len(result.predictions) == written["images"] and result.confusion.values.sum() == written["images"]
    assert "top1" in result._repr_html_()


def test_load_predicts_paths_pil_images_and_arrays(tiny_run, demo_data):
    model = imgcls.load(tiny_run)
    photos = sorted((demo_data / "evaluation").glob("*.jpg"))
    pil = Image.open(photos[1])
    table = model.predict([photos[0], pil, np.asarray(pil), np.asarray(pil) / 255.0], topk=3)
    assert list(table.columns) == [
        "image",
        "class",
        "probability",
        "top2_class",
        "top2_probability",
        "top3_class",
        "top3_probability",
    ]
    assert len(table) == 4 and set(table["class"]) <= set(model.classes)
    assert table["probability"].iloc[1] == pytest.approx(table["probability"].iloc[2])  # PIL and its pixels
    assert table["probability"].iloc[2] == pytest.approx(table["probability"].iloc[3], abs=1e-6)  # uint8 and [0, 1]
    assert table._repr_html_().count("data:image/jpeg;base64,") == 4
    folder = model.predict(demo_data / "evaluation")
    assert len(folder) == len(photos)
    with pytest.raises(imgcls.ImgclsError, match="expected H x W x 3"):
        model.predict(np.zeros((4, 4, 7)))
    with pytest.raises(imgcls.ImgclsError, match="topk must be between 1 and 11"):
        model.predict(photos[0], topk=12)


def test_embed_gives_the_features_the_head_reads(tiny_run, demo_data, tmp_path):
    model = imgcls.load(tiny_run)
    photos = sorted((demo_data / "evaluation").glob("*.jpg"))[:5]
    features = model.embed(photos)
    assert features.shape[0] == 5 and features.ndim == 2 and np.isfinite(features).all()
    again = imgcls.load(tiny_run, engine="torch").embed(photos)
    assert np.allclose(features, again, atol=1e-4)
    r = imgcls.export(tiny_run, out=tmp_path / "e")
    onnx = imgcls.load(r["path"])
    assert len(onnx.predict(photos)) == 5
    with pytest.raises(imgcls.ImgclsError, match="embed needs the PyTorch weights"):
        onnx.embed(photos)


def test_compare_returns_its_summary_and_runs(demo_data, tmp_path):
    result = imgcls.compare(
        demo_data, models=["attn_cnn:num_heads=2", "attn_cnn:num_heads=4"], out=tmp_path / "c", epochs=1,
        image_size=32, augment="light", workers=0,
    )  # fmt: skip
    assert isinstance(result, imgcls.Comparison) and result.report_path.is_file()
    assert list(result.summary["variant"]) == ["attn_cnn-num_heads2", "attn_cnn-num_heads4"]
    assert set(result.runs) == set(result.summary["variant"]) and all(
        isinstance(r, imgcls.Run) for r in result.runs.values()
    )
    assert result.summary["params"].dtype.kind in "if"
    assert "report.html" in result._repr_html_()


def test_check_data_returns_dataframes(demo_data, tmp_path):
    found = imgcls.check_data(demo_data, outliers=True, image_size=32, out=tmp_path / "c", workers=0)
    assert found.bad_files.empty and list(found.bad_files.columns) == ["path", "reason"]
    counts = found.class_counts
    assert len(counts) == 11 and {"class", "train", "val", "test"} <= set(counts.columns)
    assert found.summary["kind"] == "check-data" and found.report_path.is_file() and found.label_issues is None
    assert "bad files" in found._repr_html_()


def test_available_models_lists_the_registry():
    table = imgcls.available_models()
    assert {"efficientnet_lite0", "attn_cnn"} <= set(table["model"]) and (table["params"] > 0).all()


def test_importing_imgcls_loads_no_torch():
    code = "import imgcls, sys; print('torch' in sys.modules, 'pandas' in sys.modules, callable(imgcls.train))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout.split()
    assert out == ["False", "False", "True"]
