"""Training history is never lost: last.ckpt is always the last completed epoch (also when the best epoch
came earlier, after a kill -9, and in a moved folder), a run that trained nothing is never complete, and
demo-data never writes over a user's folder."""

import json
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

from imgcls.cli import main
from imgcls.core.errors import ImgclsError
from imgcls.core.rundir import read_metrics
from imgcls.engine.train import resume_config, train

from conftest import train_tiny

# lr so small that the weights do not move: validation accuracy is the same every epoch, so the best
# epoch is the first (ties keep the earlier one) and every later epoch is "worse or equal".
FLAT = dict(model="efficientnet_lite0", image_size=32, augment="none", lr=1e-12)


def _ckpt_epoch(path) -> int:
    return torch.load(path, map_location="cpu", weights_only=True)["epoch"]


@pytest.fixture(scope="module")
def flat_run(demo_data, tmp_path_factory):
    """3 epochs whose best is epoch 1."""
    paths = train_tiny(demo_data, tmp_path_factory.mktemp("flat") / "r", epochs=3, **FLAT)
    summary = json.loads(paths.summary.read_text())
    assert summary["best_epoch"] == 1 and summary["epochs_completed"] == 3
    return paths


def test_last_checkpoint_is_the_last_epoch_even_when_the_best_came_earlier(flat_run):
    assert _ckpt_epoch(flat_run.best) == 0  # Lightning counts epochs from 0
    assert _ckpt_epoch(flat_run.last) == 2


def test_resume_after_an_earlier_best_keeps_every_row(flat_run, tmp_path):
    run = tmp_path / "copy"
    shutil.copytree(flat_run.root, run)
    before = read_metrics(run / "metrics.csv")
    best_bytes = (run / "checkpoints" / "best.ckpt").read_bytes()
    train(resume_config(run, {"epochs": 4}), resume=True, progress=False)
    rows = read_metrics(run / "metrics.csv")
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert rows[:3] == before  # not retrained: epoch_seconds would differ
    # The folder was copied (Lightning's saved dirpath differs): best.ckpt still holds epoch 1, not epoch 4.
    assert (run / "checkpoints" / "best.ckpt").read_bytes() == best_bytes
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best_epoch"] == 1 and summary["epochs_completed"] == 4 and summary["complete"]


def test_resuming_a_finished_run_with_the_same_epochs_trains_nothing(flat_run, tmp_path):
    run = tmp_path / "same"
    shutil.copytree(flat_run.root, run)
    before = read_metrics(run / "metrics.csv")
    train(resume_config(run, {"epochs": 3}), resume=True, progress=False)
    assert read_metrics(run / "metrics.csv") == before


def test_kill_9_after_the_best_epoch_resumes_after_the_last_completed_one(demo_data, tmp_path):
    run = tmp_path / "killed"
    script = textwrap.dedent(
        f"""
        import os, signal
        from lightning.pytorch.callbacks import Callback
        from imgcls.core.config import resolve_config
        from imgcls.engine.train import train

        class KillAt(Callback):
            def on_train_epoch_start(self, trainer, module):
                if trainer.current_epoch == 3:  # epochs 1-3 are saved; the best is epoch 1
                    os.kill(os.getpid(), signal.SIGKILL)

        cfg = resolve_config(None, dict(data={str(demo_data)!r}, out={str(run)!r}, epochs=6, workers=0,
                                        batch_size=16, **{FLAT!r}))
        train(cfg, progress=False, extra_callbacks=[KillAt()])
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    before = read_metrics(run / "metrics.csv")
    assert [r["epoch"] for r in before] == [1, 2, 3]
    assert _ckpt_epoch(run / "checkpoints" / "last.ckpt") == 2
    half = run / "checkpoints" / ".last.ckpt.99999.0badf00d.tmp"  # what a kill inside the write leaves
    half.write_bytes(b"PK\x03\x04" + b"\0" * 1000)
    train(resume_config(run, {}), resume=True, progress=False)
    assert not half.exists()
    rows = read_metrics(run / "metrics.csv")
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5, 6] and rows[:3] == before


def test_last_n_over_every_block_trains_the_whole_model(demo_data, tmp_path, capsys):
    paths = train_tiny(demo_data, tmp_path / "all", epochs=1, finetune="last:5")  # attn_cnn: 5 blocks
    summary = json.loads(paths.summary.read_text())
    assert summary["finetune"] == "full" and summary["complete"] and paths.best.is_file()
    assert summary["trainable_params"] == summary["params"]
    assert "training it whole" in capsys.readouterr().out
    with pytest.raises(ImgclsError, match="has 5 blocks"):
        train_tiny(demo_data, tmp_path / "more", epochs=1, finetune="last:6")


def test_last_n_over_every_block_with_the_feature_cache(demo_data, tmp_path):
    # Refused in one line (it was a StopIteration traceback): nothing is frozen, so nothing to cache.
    with pytest.raises(ImgclsError, match="covers every block of efficientnet_lite0"):
        train_tiny(
            demo_data, tmp_path / "lite", epochs=1, model="efficientnet_lite0", finetune="last:18", feature_cache=2
        )
    paths = train_tiny(demo_data, tmp_path / "lite", epochs=1, model="efficientnet_lite0", finetune="last:18")
    summary = json.loads(paths.summary.read_text())
    assert summary["finetune"] == "full" and summary["complete"] and paths.best.is_file()


def test_a_fit_that_completes_no_epoch_is_never_complete(demo_data, tmp_path):
    from lightning.pytorch.callbacks import Callback

    class StopAtOnce(Callback):
        def on_train_start(self, trainer, module):
            trainer.should_stop = True

    with pytest.raises(ImgclsError, match="completed no epoch"):
        train_tiny(demo_data, tmp_path / "none", extra_callbacks=[StopAtOnce()])
    summary = tmp_path / "none" / "summary.json"
    assert not summary.exists() or not json.loads(summary.read_text()).get("complete")


@pytest.mark.parametrize("layout", ["flat", "train_test", "file"])
def test_demo_data_never_writes_over_a_users_folder(tmp_path, capsys, layout):
    target = tmp_path / "mine"
    if layout == "flat":
        (target / "training").mkdir(parents=True)
        (target / "training" / "0_0.jpg").write_bytes(b"my photo")
        (target / "classes.txt").write_text("mine\n")
    elif layout == "train_test":
        (target / "train" / "cat").mkdir(parents=True)
        (target / "train" / "cat" / "1.jpg").write_bytes(b"my photo")
    else:
        target.write_text("a file")
    before = {p: p.read_bytes() for p in [target, *target.rglob("*")] if p.is_file()}
    assert main(["demo-data", str(target)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert ("not empty" in err) if layout != "file" else ("is a file" in err)
    assert {p: p.read_bytes() for p in [target, *target.rglob("*")] if p.is_file()} == before
    assert not list(tmp_path.glob(".*partial*"))


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--per-class", "0"], "--per-class must be between 2 and 100000, got 0"),
        (["--size", "1"], "--size must be between 16 and 1024, got 1"),
        (["--size", "99999"], "--size must be between 16 and 1024, got 99999"),
    ],
)
def test_demo_data_bad_sizes(tmp_path, capsys, extra, message):
    assert main(["demo-data", str(tmp_path / "d"), *extra]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and message in err
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize(
    "options",
    [
        dict(workers=1),
        dict(model="efficientnet_lite0", feature_cache=2, workers=0),
        dict(data_pipeline="tensor", augment="reference", workers=0),
    ],
)
def test_a_resumed_run_draws_what_an_uninterrupted_one_draws(demo_data, tmp_path, monkeypatch, options):
    """Data order, augmentation (in loader workers or the cached views) and dropout depend on the epoch:
    stopping after epoch 1 and resuming gives the numbers of a run that never stopped, not a replay of
    epoch 1's draws."""
    monkeypatch.setenv("IMGCLS_CACHE", str(tmp_path / "cache"))
    whole = read_metrics(train_tiny(demo_data, tmp_path / "whole", epochs=3, **options).metrics)
    paths = train_tiny(demo_data, tmp_path / "split", epochs=1, **options)
    train(resume_config(paths.root, {"epochs": 3}), resume=True, progress=False)
    resumed = read_metrics(paths.metrics)
    keys = ("train_loss", "train_acc", "val_loss", "val_acc")
    assert [[r[k] for k in keys] for r in resumed] == [[r[k] for k in keys] for r in whole]
    assert resumed[1]["train_loss"] != resumed[0]["train_loss"]
