"""Two-process DDP on CPU (gloo), launched the way users launch it: torchrun."""

import json
import subprocess
import sys

import pytest

from imgcls.evaluate import evaluate
from imgcls.rundir import read_metrics


def _torchrun(*args, timeout=600):
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "imgcls",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("augment", ["light", "none"])  # images, and the feature cache path (head only)
def test_two_process_ddp_validation_is_exact(demo_data, tmp_path, augment, monkeypatch):
    monkeypatch.setenv("IMGCLS_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    model = "attn_cnn" if augment == "light" else "efficientnet_lite0"
    proc = _torchrun(
        "train",
        "--model",
        model,
        "--data",
        str(demo_data),
        "--epochs",
        "2",
        "--image-size",
        "32",
        "--batch-size",
        "8",
        "--devices",
        "2",
        "--strategy",
        "ddp",
        "--accelerator",
        "cpu",
        "--workers",
        "0",
        "--augment",
        augment,
        "--no-progress",
        "--out",
        str(run),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_metrics(run / "metrics.csv")
    assert [r["epoch"] for r in rows] == [1, 2]  # one writer: each epoch once
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2
    n_val = 33  # odd: a padding sampler would count one image twice
    best = max(rows, key=lambda r: (r["val_acc"], -r["epoch"]))
    assert round(best["val_acc"] * n_val, 4) == round(best["val_acc"] * n_val)  # a whole number of 33 images
    single = evaluate(run, split="validation", workers=0, engine="torch")
    assert single["images"] == n_val
    assert single["top1"] == pytest.approx(best["val_acc"], abs=1e-6)


def test_two_process_ddp_with_the_tensor_pipeline(demo_data, tmp_path, monkeypatch):
    monkeypatch.setenv("IMGCLS_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    args = ["--model", "attn_cnn", "--data", str(demo_data), "--epochs", "2", "--image-size", "32"]
    args += ["--batch-size", "8", "--devices", "2", "--strategy", "ddp", "--accelerator", "cpu", "--workers", "0"]
    args += ["--augment", "reference", "--data-pipeline", "tensor", "--no-progress", "--out", str(run)]
    proc = _torchrun("train", *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Filled once per node, by local rank 0: the size line of each split and one summary line.
    assert proc.stdout.count("decoded images, short side") == 2 and proc.stdout.count("training + ") == 1
    rows = read_metrics(run / "metrics.csv")
    assert [r["epoch"] for r in rows] == [1, 2]
    assert json.loads((run / "summary.json").read_text())["world_size"] == 2
    for r in rows:  # validation shards summed without padding: a whole number of the 33 images
        assert round(r["val_acc"] * 33, 4) == round(r["val_acc"] * 33)


def test_two_process_compare_reports_once(demo_data, tmp_path, monkeypatch):
    monkeypatch.setenv("IMGCLS_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "cmp"
    proc = _torchrun(
        "compare",
        "--data",
        str(demo_data),
        "--models",
        "attn_cnn:num_heads=4",
        "--epochs",
        "1",
        "--image-size",
        "32",
        "--batch-size",
        "8",
        "--devices",
        "2",
        "--strategy",
        "ddp",
        "--accelerator",
        "cpu",
        "--workers",
        "0",
        "--augment",
        "light",
        "--no-progress",
        "--out",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("compared 1 variants") == 1  # only rank 0 evaluates and reports
    assert (out / "report.html").is_file()
    assert [r["epoch"] for r in read_metrics(out / "attn_cnn-num_heads4" / "metrics.csv")] == [1]
    held_out = json.loads((out / "attn_cnn-num_heads4" / "eval" / "evaluation" / "metrics.json").read_text())
    assert held_out["images"] == 33
