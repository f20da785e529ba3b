"""Run folders that work from anywhere, evaluate's split fallback, and reports that count every second."""

import json
import shutil

import pytest

from imgcls.cli import main

from conftest import train_tiny


def test_a_moved_run_folder_evaluates_predicts_exports_and_resumes(demo_data, tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    shutil.copytree(demo_data, data)
    monkeypatch.chdir(tmp_path)
    train_tiny("data", "runs/r", epochs=1)  # relative paths, as a user types them
    config = (tmp_path / "runs" / "r" / "config.yaml").read_text()
    assert f"data: {data}" in config
    moved = tmp_path / "elsewhere" / "r"
    shutil.move(tmp_path / "runs" / "r", moved)
    monkeypatch.chdir("/")
    assert main(["evaluate", str(moved), "--workers", "0"]) == 0
    assert (
        main(["predict", str(moved), str(data / "evaluation"), "--out", str(tmp_path / "p.csv"), "--workers", "0"]) == 0
    )
    assert main(["export", str(moved)]) == 0
    assert main(["train", "--resume", str(moved), "--epochs", "2", "--workers", "0"]) == 0
    assert json.loads((moved / "summary.json").read_text())["epochs_completed"] == 2
    shutil.move(data, tmp_path / "data-moved")
    assert main(["evaluate", str(moved), "--workers", "0"]) == 2
    assert "--data" in capsys.readouterr().err
    assert main(["evaluate", str(moved), "--data", str(tmp_path / "data-moved"), "--workers", "0"]) == 0


def test_evaluate_falls_back_to_validation_and_says_so(demo_data, tmp_path, capsys):
    data = tmp_path / "d"
    shutil.copytree(demo_data, data, ignore=shutil.ignore_patterns("evaluation"))
    paths = train_tiny(data, tmp_path / "r", epochs=1)
    assert main(["evaluate", str(paths.root), "--workers", "0"]) == 0
    out = capsys.readouterr().out
    assert "evaluated on validation" in out and out.count("validation:") == 1
    metrics = json.loads((paths.root / "eval" / "validation" / "metrics.json").read_text())
    assert metrics["split"] == "validation" and "does not exist" in metrics["fallback"]
    assert main(["evaluate", str(paths.root), "--split", "evaluation", "--workers", "0"]) == 2


def test_report_counts_feature_time_and_flags_variants_that_did_not_learn(demo_data, tmp_path, monkeypatch):
    from imgcls.commands.compare import compare
    from imgcls.core.config import resolve_config
    from imgcls.report.build import build_report, conclusion
    from imgcls.report.collect import collect

    monkeypatch.setenv("IMGCLS_CACHE", str(tmp_path / "cache"))
    cfg = resolve_config(
        None, dict(data=str(demo_data), epochs=2, image_size=32, batch_size=16, workers=0, augment="none", lr=1e-9)
    )
    compare(cfg, ["efficientnet_lite0", "attn_cnn:num_heads=4+lr=0.001"], tmp_path / "c", progress=False)
    variants = {v.name: v for v in collect(tmp_path / "c")}
    lite = variants["efficientnet_lite0"]
    assert lite.summary["feature_cache_seconds"] > 0
    assert lite.summary["train_seconds"] == pytest.approx(
        sum(r["epoch_seconds"] for r in lite.epochs) + lite.summary["feature_cache_seconds"], abs=0.01
    )
    assert any("loss barely moved" in f for f in lite.flags)  # lr 1e-9: nothing learned
    assert any("far below the 224 px" in f for f in lite.flags)
    text = " ".join(conclusion(list(variants.values())))
    assert "Not ranked: **efficientnet_lite0**" in text and "Most accurate: **attn_cnn" in text
    html = build_report(tmp_path / "c").read_text()
    assert "of which feature extraction" in html and "top-1 (evaluation)" in html and "loss barely moved" in html
