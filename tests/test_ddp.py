"""Two-process DDP on CPU (gloo), launched the way users launch it: torchrun."""

import json
import subprocess
import sys

import pytest

from imgcls.commands.evaluate import evaluate
from imgcls.core.rundir import read_metrics


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


def test_two_process_ddp_compare(demo_data, tmp_path, monkeypatch):
    """One torchrun, three variants: images with augmentation, the feature cache (head only) and the
    tensor pipeline. Validation is exact across the two processes (no padded samples), each epoch is
    written once, the image store is filled once per node, and only rank 0 evaluates and reports."""
    monkeypatch.setenv("IMGCLS_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "cmp"
    variants = {
        "attn_cnn+augment=light": "attn_cnn-augmentlight",
        "efficientnet_lite0+augment=none": "efficientnet_lite0-augmentnone",
        "attn_cnn:num_heads=4+augment=reference+data_pipeline=tensor": "attn_cnn-num_heads4-augmentreference-data_pipelinetensor",
    }
    args = ["--data", str(demo_data), "--models", *variants, "--epochs", "2", "--image-size", "32"]
    args += ["--batch-size", "8", "--devices", "2", "--strategy", "ddp", "--accelerator", "cpu", "--workers", "0"]
    proc = _torchrun("compare", *args, "--no-progress", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("compared 3 variants") == 1  # only rank 0 evaluates and reports
    assert proc.stdout.count("in a browser") == 1
    assert (out / "report.html").is_file()
    # The tensor variant's store: filled once per node, by local rank 0 (the size line of each split, one summary).
    assert proc.stdout.count("decoded images, short side") == 2 and proc.stdout.count("training + ") == 1
    n_val = 33  # odd: a padding sampler would count one image twice
    for spec, folder in variants.items():
        run = out / folder
        rows = read_metrics(run / "metrics.csv")
        assert [r["epoch"] for r in rows] == [1, 2], spec  # one writer: each epoch once
        assert json.loads((run / "summary.json").read_text())["world_size"] == 2
        held_out = json.loads((run / "eval" / "evaluation" / "metrics.json").read_text())
        assert held_out["images"] == 33
        for r in rows:  # validation shards summed without padding: a whole number of the 33 images
            assert round(r["val_acc"] * n_val, 4) == round(r["val_acc"] * n_val), spec
        if "tensor" not in spec:  # the tensor pipeline validates through the device warp, evaluate through PIL
            best = max(rows, key=lambda r: (r["val_acc"], -r["epoch"]))
            single = evaluate(run, split="validation", workers=0, engine="torch")
            assert single["images"] == n_val
            assert single["top1"] == pytest.approx(best["val_acc"], abs=1e-6), spec


def test_two_process_ddp_multilabel_training(demo_data, tmp_path, monkeypatch):
    """Multi-label under torchrun: BCE, mAP gathered from both ranks without padding, the thresholds tuned
    once (rank 0) on all validation images, one 'done' line; evaluate in one process agrees."""
    monkeypatch.setenv("IMGCLS_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "ml"
    args = ["--model", "attn_cnn:num_heads=4", "--task", "multilabel", "--data", str(demo_data), "--epochs", "2"]
    args += ["--image-size", "32", "--batch-size", "8", "--devices", "2", "--strategy", "ddp", "--accelerator", "cpu"]
    proc = _torchrun("train", *args, "--workers", "0", "--no-progress", "--out", str(run))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("done:") == 1 and proc.stdout.count("thresholds tuned") == 1
    rows = read_metrics(run / "metrics.csv")
    assert [r["epoch"] for r in rows] == [1, 2] and "val_mAP" in rows[0]
    assert json.loads((run / "summary.json").read_text())["world_size"] == 2
    thresholds = json.loads((run / "thresholds.json").read_text())
    assert thresholds["images"] == 33 and len(thresholds["thresholds"]) == 11
    best = max(rows, key=lambda r: (r["val_mAP"], -r["epoch"]))
    single = evaluate(run, split="validation", workers=0, engine="torch")
    assert single["task"] == "multilabel" and single["images"] == 33
    assert single["mAP"] == pytest.approx(best["val_mAP"], abs=1e-5)
