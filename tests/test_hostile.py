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
    "extra, message",
    [
        (["--lr", "-1"], "--lr must be > 0 and <= 10, got -1"),
        (["--lr", "nan"], "--lr: bad value nan (must be a finite number)"),
        (["--weight-decay", "-0.5"], "--weight-decay must be between 0 and 10, got -0.5"),
        (["--plateau-factor", "1"], "--plateau-factor must be between 0 and 1, both excluded, got 1"),
        (["--seed", "1e20"], "--seed must be between 0 and 4,294,967,295, got 1e20"),
        (["--precision", "fp12"], "--precision: fp12 is not one of 32-true"),
        (["--accelerator", "tpu"], "--accelerator: tpu is not one of auto, cpu"),
        (["--strategy", "fsdp9"], "--strategy: fsdp9 is not one of auto, ddp"),
        (["--num-nodes", "0"], "--num-nodes must be between 1 and 4096, got 0"),
        (["--workers", "-1"], "--workers must be between 0 and 256, got -1"),
        (["--image-size", "100000"], "--image-size must be between 16 and 2048, got 100000"),
        (["--epochs", "inf"], "--epochs: bad value inf (must be a finite number)"),
        (["--epochs", "0"], "--epochs must be between 1 and 100000, got 0"),
        (["--batch-size", "x"], "--batch-size: bad value x (expected a whole number)"),
        (["--val-split", "1.5"], "--val-split must be between 0 and 1, both excluded, got 1.5"),
        (["--finetune", "last:0"], "--finetune: bad value last:0 (expected head, full or last:N"),
        (["--devices", "many"], "--devices: bad value many (expected a count"),
        (["--model", "attn_cnn:num_heads=0"], "num_heads must be a whole number >= 1, got 0"),
        (["--model", "attn_cnn:num_heads=3"], "width 256 is not divisible by num_heads 3"),
        (["--model", "nope"], "unknown model 'nope'; valid models: attn_cnn"),
        (["--freeze", "no_such_module"], "--freeze 'no_such_module' matches no module or parameter"),
        (["--config", "/nonexistent.yaml"], "config file not found: /nonexistent.yaml"),
        (["--feature-cache", "-2"], "--feature-cache must be between 0 and 256, got -2"),
        (["--unknown-flag"], "unrecognized arguments: --unknown-flag"),
        (
            ["--pretrained", "--no-pretrained", "--num-classes", "3"],
            "--num-classes 3 does not match the data: 11 classes",
        ),
        (["--data-pipeline", "gpu"], "--data-pipeline: gpu is not one of auto, workers, tensor"),
        (["--decode-size", "4"], "--decode-size must be between 16 and 8192, got 4"),
        (["--data-pipeline", "tensor", "--augment", "light"], "--data-pipeline tensor implements --augment reference"),
        (["--lr-decay", "0"], "--lr-decay must be > 0 and <= 1, got 0"),
        (["--lr-decay", "1.5"], "--lr-decay must be > 0 and <= 1, got 1.5"),
        (
            ["--model", "efficientnet_lite0", "--cutmix", "1", "--feature-cache", "2"],
            "--cutmix cuts boxes out of images",
        ),
    ],
)
def test_bad_training_arguments(capsys, demo_data, tmp_path, extra, message):
    argv = ["train", "--data", str(demo_data), "--out", str(tmp_path / "r"), "--epochs", "1", "--image-size", "32"]
    if "--model" not in extra:
        argv += ["--model", "attn_cnn"]
    assert message in one_line_exit_2(capsys, argv + extra)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--only", "nope"], "--only nope: no such measure for --accelerator cpu"),
        (["--accelerator", "tpu"], "argument --accelerator: invalid choice: 'tpu'"),
        (["--images", "x"], "argument --images: invalid int value: 'x'"),
        (["--images", "-5"], "--images -5: use 22 or more"),
        (["--batch-size", "0"], "--batch-size 0: use 2 or more"),
        (["--workers", "-1"], "--workers -1: use 0 or more"),
    ],
)
def test_bad_bench_arguments(capsys, extra, message):
    from bench.__main__ import main as bench

    assert bench(["--quick", *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


@pytest.mark.parametrize(
    "yaml_text, message",
    [
        ("1: 2\n", "option names must be words, got 1"),
        ("epochs: .inf\n", "--epochs: bad value inf (must be a finite number)"),
        ("lr: [1, 2]\n", "--lr: bad value [1, 2] (expected float)"),
        ("model: attn_cnn\nepochs: -3\n", "--epochs must be between 1 and 100000, got -3"),
        ("!!python/object:os.system x\n", "not valid YAML"),
    ],
)
def test_bad_yaml_configs(capsys, demo_data, tmp_path, yaml_text, message):
    path = tmp_path / "c.yaml"
    path.write_text(yaml_text)
    argv = ["train", "--model", "attn_cnn", "--data", str(demo_data), "--config", str(path)]
    assert message in one_line_exit_2(capsys, argv)


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
    line = one_line_exit_2(capsys, ["train", "--resume", str(paths.root), "--epochs", "2"])
    assert "metrics.csv is damaged" in line and "delete it to go on" in line
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
    argv = ["predict", str(tiny_run), str(broken), "--out", str(tmp_path / "p.csv"), "--workers", "0"]
    assert "none of the 2 input file(s) could be decoded" in one_line_exit_2(capsys, argv)
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
    for broken, message in (
        ({**info, "classes": "cat"}, "'classes' must be a list of at least two names"),
        ({**info, "image_size": -4}, "'image_size' must be a whole number of pixels"),
        ([1, 2], "expected a JSON object (made by imgcls export), found list"),
        ({**info, "image_size": True}, "'image_size' must be a whole number of pixels"),
    ):
        (out / "model.json").write_text(json.dumps(broken))
        argv = ["predict", str(out / "model.onnx"), str(tmp_path), "--out", str(tmp_path / "p.csv")]
        assert message in one_line_exit_2(capsys, argv)
    (out / "model.json").write_text("{not json")
    assert "model.json: not valid JSON" in one_line_exit_2(capsys, ["serve", str(out / "model.onnx"), "--port", "1"])


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
