"""The hostile catalogue: each way a user can misuse imgcls ends in one line and exit 2, and loses nothing."""

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from imgcls.cli import main
from imgcls.core.errors import ImgclsError
from imgcls.core.rundir import LOCK_NAME

from conftest import train_tiny, wait_until, write_image


def one_line_exit_2(capsys, argv):
    with pytest.raises(SystemExit) as info:
        code = main(argv)
        raise SystemExit(code)
    out, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith(("INFO ", "WARNING ", "note:"))]
    assert info.value.code == 2, (argv, err)
    assert "Traceback" not in err and len(lines) == 1, (argv, err)
    return lines[0]


@pytest.mark.parametrize(
    "extra",
    [
        ["--lr", "-1"],
        ["--lr", "nan"],
        ["--weight-decay", "-0.5"],
        ["--plateau-factor", "1"],
        ["--seed", "1e20"],
        ["--precision", "fp12"],
        ["--accelerator", "tpu"],
        ["--strategy", "fsdp9"],
        ["--num-nodes", "0"],
        ["--workers", "-1"],
        ["--image-size", "100000"],
        ["--epochs", "inf"],
        ["--epochs", "0"],
        ["--batch-size", "x"],
        ["--val-split", "1.5"],
        ["--finetune", "last:0"],
        ["--devices", "many"],
        ["--model", "attn_cnn:num_heads=0"],
        ["--model", "attn_cnn:num_heads=3"],
        ["--model", "nope"],
        ["--freeze", "no_such_module"],
        ["--config", "/nonexistent.yaml"],
        ["--feature-cache", "-2"],
        ["--unknown-flag"],
        ["--pretrained", "--no-pretrained", "--num-classes", "3"],
        ["--data-pipeline", "gpu"],
        ["--decode-size", "4"],
        ["--data-pipeline", "tensor", "--augment", "light"],
        ["--lr-decay", "0"],
        ["--lr-decay", "1.5"],
        ["--model", "efficientnet_lite0", "--cutmix", "1", "--feature-cache", "2"],
    ],
)
def test_bad_training_arguments(capsys, demo_data, tmp_path, extra):
    argv = ["train", "--data", str(demo_data), "--out", str(tmp_path / "r"), "--epochs", "1", "--image-size", "32"]
    if "--model" not in extra:
        argv += ["--model", "attn_cnn"]
    one_line_exit_2(capsys, argv + extra)


@pytest.mark.parametrize(
    "extra",
    [
        ["--only", "nope"],
        ["--accelerator", "tpu"],
        ["--images", "x"],
        ["--images", "-5"],
        ["--batch-size", "0"],
        ["--workers", "-1"],
    ],
)
def test_bad_bench_arguments(capsys, extra):
    one_line_exit_2(capsys, ["bench", "--quick", *extra])


@pytest.mark.parametrize(
    "yaml_text",
    ["1: 2\n", "epochs: .inf\n", "lr: [1, 2]\n", "model: attn_cnn\nepochs: -3\n", "!!python/object:os.system x\n"],
)
def test_bad_yaml_configs(capsys, demo_data, tmp_path, yaml_text):
    path = tmp_path / "c.yaml"
    path.write_text(yaml_text)
    one_line_exit_2(capsys, ["train", "--model", "attn_cnn", "--data", str(demo_data), "--config", str(path)])


def test_a_second_training_into_the_same_folder_is_refused_with_the_pid(demo_data, tmp_path):
    from imgcls.core.lock import RunLock

    with RunLock(tmp_path / "r"):  # this process holds it, as a running training would
        with pytest.raises(ImgclsError, match=r"another imgcls process \(PID \d+\)"):
            train_tiny(demo_data, tmp_path / "r")
    train_tiny(demo_data, tmp_path / "r", epochs=1)  # free again once released


def test_two_real_processes_one_folder_and_ctrl_c(demo_data, tmp_path):
    import signal

    argv = [
        sys.executable,
        "-m",
        "imgcls",
        "train",
        "--model",
        "attn_cnn",
        "--data",
        str(demo_data),
        "--epochs",
        "500",
        "--image-size",
        "32",
        "--workers",
        "0",
        "--out",
        str(tmp_path / "r"),
    ]
    # A shell without job control starts background jobs with SIGINT ignored (`make test &`, nohup
    # CI runs), and the child would inherit that: give it the default disposition, as a terminal would.
    first = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )

    def wait_for(path: Path, text: str = "") -> None:
        def seen() -> bool:
            return (path.is_file() and text in path.read_text()) or first.poll() is not None

        wait_until(seen, timeout=120, what=f"{text!r} in {path.name}")

    wait_for(tmp_path / "r" / LOCK_NAME, str(first.pid))  # the first holds the lock
    second = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert second.returncode == 2 and f"PID {first.pid}" in second.stderr and "Traceback" not in second.stderr
    wait_for(tmp_path / "r" / "metrics.csv", "\n1,")  # Ctrl-C after the first epoch is recorded
    first.send_signal(signal.SIGINT)
    _, err = first.communicate(timeout=300)
    assert first.returncode == 130 and "imgcls: interrupted" in err and "Traceback" not in err, err[-2000:]
    rows = __import__("imgcls.core.rundir").core.rundir.read_metrics(tmp_path / "r" / "metrics.csv")
    assert rows and json.loads((tmp_path / "r" / "summary.json").read_text())["epochs_completed"] == rows[-1]["epoch"]


def test_a_folder_of_user_files_is_not_adopted(capsys, demo_data, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.yaml").write_text("my own notes\n")
    (mine / "bad_files.txt").write_text("keep me\n")
    line = one_line_exit_2(capsys, ["train", "--model", "attn_cnn", "--data", str(demo_data), "--out", str(mine)])
    assert "--force" in line
    assert (mine / "config.yaml").read_text() == "my own notes\n" and (mine / "bad_files.txt").is_file()


def test_interrupted_before_the_first_checkpoint_starts_over(demo_data, tmp_path):
    run = tmp_path / "r"
    paths = train_tiny(demo_data, run, epochs=1)
    shutil.rmtree(paths.checkpoints)  # as if killed while writing the first checkpoint
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / ".last.ckpt.123.abcd.tmp").write_bytes(b"half")
    train_tiny(demo_data, run, epochs=1)  # a new run: no completed epoch to keep
    shutil.rmtree(paths.checkpoints)
    from imgcls.engine.train import resume_config, train

    train(resume_config(run, {"epochs": 1}), resume=True, progress=False)  # --resume: starts over too
    assert paths.last.is_file()


LAST_BATCH_CASES = [
    (model, n) for model in ("attn_cnn", "efficientnet_lite0", "efficientnet_b0", "vit_tiny") for n in (17, 33)
] + [("vit_b_16", 17)]  # no BatchNorm in a ViT, and 86M parameters to checkpoint: one size is enough


@pytest.mark.parametrize("model, n", LAST_BATCH_CASES)
def test_a_last_batch_of_one_image_trains(tmp_path, model, n):
    """N mod batch = 1 for every registered model (BatchNorm cannot take one image)."""
    from imgcls.data.layouts import FOOD11_CLASSES

    data = tmp_path / "d"
    for i in range(n):
        write_image(data / "training" / f"{i % 2}_{i}.png", colour=(200 * (i % 2), 90, 40), size=(32, 32), seed=i)
    for i in range(2):
        write_image(data / "validation" / f"{i}_{i}.png", size=(32, 32), seed=i)
    assert FOOD11_CLASSES
    options = dict(
        model=model, epochs=1, image_size=32, batch_size=16, augment="none", pretrained=False, finetune="full"
    )
    # ViT-B/16's checkpoints are 1.4 GB: on a slow disk their fsync was most of this test, which is about
    # the last batch, so its run folder goes to memory when there is room there.
    shm = Path("/dev/shm")
    in_memory = model == "vit_b_16" and shm.is_dir() and shutil.disk_usage(shm).free > 4 * 2**30
    out = Path(tempfile.mkdtemp(dir=shm)) if in_memory else tmp_path
    try:
        paths = train_tiny(data, out / "r", **options)
        assert json.loads(paths.summary.read_text())["epochs_completed"] == 1
    finally:
        if in_memory:
            shutil.rmtree(out)


def test_damaged_metrics_or_checkpoint_on_resume(capsys, demo_data, tmp_path):
    paths = train_tiny(demo_data, tmp_path / "r", epochs=1)
    paths.metrics.write_text("epoch,garbage\nx,1\n")
    one_line_exit_2(capsys, ["train", "--resume", str(paths.root), "--epochs", "2"])
    paths.metrics.unlink()
    import torch

    torch.save([1, 2, 3], paths.last)
    line = one_line_exit_2(capsys, ["train", "--resume", str(paths.root), "--epochs", "2"])
    assert "checkpoint" in line


def test_predict_edge_cases(capsys, caplog, tiny_run, demo_data, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.jpg").write_bytes(b"no")
    (broken / "b.png").write_bytes(b"")
    one_line_exit_2(capsys, ["predict", str(tiny_run), str(broken), "--out", str(tmp_path / "p.csv"), "--workers", "0"])
    nested = tmp_path / "nested"
    for sub in ("a", "b"):
        (nested / sub).mkdir(parents=True)
        shutil.copy(demo_data / "evaluation" / "0_0.jpg", nested / sub / "0.jpg")
    (nested / "a" / "dangling.jpg").symlink_to(tmp_path / "gone.jpg")
    assert main(["predict", str(tiny_run), str(nested), "--out", str(tmp_path / "n.csv"), "--workers", "0"]) == 0
    ids = [line.split(",")[0] for line in (tmp_path / "n.csv").read_text().splitlines()[1:]]
    assert ids == ["a/0.jpg", "b/0.jpg"]
    assert "broken symbolic link" in caplog.text


def test_model_json_that_was_edited(capsys, tiny_run, tmp_path):
    from imgcls.commands.export import export

    out = tmp_path / "e"
    export(tiny_run, "onnx", out=out)
    info = json.loads((out / "model.json").read_text())
    for broken in ({**info, "classes": "cat"}, {**info, "image_size": -4}, [1, 2], {**info, "image_size": True}):
        (out / "model.json").write_text(json.dumps(broken))
        one_line_exit_2(capsys, ["predict", str(out / "model.onnx"), str(tmp_path), "--out", str(tmp_path / "p.csv")])
    (out / "model.json").write_text("{not json")
    one_line_exit_2(capsys, ["serve", str(out / "model.onnx"), "--port", "1"])


def test_many_classes_evaluate_and_report_stay_small(tmp_path):
    """1,000 classes: evaluate and the report (in a fresh process, after training) under 2 GB RSS, with
    bounded figures."""
    import os

    data = tmp_path / "d"
    for c in range(1000):
        for split in ("train", "val"):
            write_image(data / split / f"c{c:04d}" / "a.png", colour=(c % 255, (7 * c) % 255, 90), size=(8, 8), seed=c)
    # Training is not what is measured: it runs here; evaluate + report run in a fresh process.
    train_tiny(data, tmp_path / "c" / "r", model="attn_cnn:num_heads=4", batch_size=256, augment="none", epochs=1)
    # A child forked from a large pytest process inherits its peak-RSS mark: reset it first (Linux).
    measure = f"""
import resource
open("/proc/self/clear_refs", "w").write("5")
from imgcls.commands.evaluate import evaluate
from imgcls.report.build import build_report
evaluate({str(tmp_path / "c" / "r")!r}, workers=0)
build_report({str(tmp_path / "c")!r})
print("RSS_MB", [int(ln.split()[1]) / 1024 for ln in open("/proc/self/status") if ln.startswith("VmHWM")][0])
"""
    env = {**os.environ, "IMGCLS_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-c", measure], capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rss = float(proc.stdout.split("RSS_MB")[1])
    print(f"1,000-class evaluate + report peak RSS {rss:.0f} MB")
    assert rss < 2048, rss
    from PIL import Image

    run = tmp_path / "c" / "r"
    with Image.open(run / "eval" / "validation" / "confusion_matrix.png") as im:
        assert im.width * im.height < 2000 * 1200
    assert (tmp_path / "c" / "report.html").stat().st_size < 10 * 2**20


def test_output_into_a_closed_pipe_is_no_traceback(tiny_run):
    proc = subprocess.run(
        f"{sys.executable} -m imgcls evaluate {tiny_run} --workers 0 | head -c 1",
        shell=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr
