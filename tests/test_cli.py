import subprocess
import sys

import pytest

from imgcls.cli import main

from conftest import write_image


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    "argv,message",
    [
        (["train", "--model", "attn_cnn", "--data", "/nonexistent/folder"], "data folder not found"),
        (["train", "--model", "resnet_42", "--data", "."], "valid models: attn_cnn"),
        (["train", "--model", "attn_cnn:heads", "--data", "."], "not key=value"),
        (["evaluate", "/nonexistent/run"], "run folder not found"),
        (["predict", "/nonexistent/run", "x.jpg"], "run folder not found"),
        (["train", "--data", "."], "--model"),
        (["train", "--resume", "/nonexistent/run"], "not found"),
    ],
)
def test_cli_errors_are_short_with_exit_2(capsys, argv, message):
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    assert message in err and "Traceback" not in err


def test_no_images_and_bad_flat_names(capsys, tmp_path):
    (tmp_path / "empty" / "training").mkdir(parents=True)
    (tmp_path / "empty" / "validation").mkdir(parents=True)
    code, _, err = run_cli(capsys, "train", "--model", "attn_cnn", "--data", str(tmp_path / "empty"))
    assert code == 2 and "no images" in err
    write_image(tmp_path / "bad" / "training" / "cake_1.jpg")
    write_image(tmp_path / "bad" / "validation" / "0_1.jpg")
    code, _, err = run_cli(capsys, "train", "--model", "attn_cnn", "--data", str(tmp_path / "bad"))
    assert code == 2 and "cake_1.jpg" in err


def test_class_missing_from_training(capsys, tmp_path):
    write_image(tmp_path / "training" / "0_1.jpg")
    write_image(tmp_path / "training" / "1_1.jpg")
    write_image(tmp_path / "validation" / "2_1.jpg")
    code, _, err = run_cli(capsys, "train", "--model", "attn_cnn", "--data", str(tmp_path))
    assert code == 2 and "not present" in err


def test_run_folder_without_checkpoint(capsys, tiny_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("checkpoints"))
    code, _, err = run_cli(capsys, "evaluate", str(run))
    assert code == 2 and "no checkpoint" in err


def test_resume_refuses_changed_recipe(capsys, tiny_run):
    code, _, err = run_cli(capsys, "train", "--resume", str(tiny_run), "--lr", "0.1")
    assert code == 2 and "keeps its config" in err


def test_evaluate_and_predict_commands(capsys, tiny_run, demo_data, tmp_path):
    code, out, _ = run_cli(capsys, "evaluate", str(tiny_run), "--workers", "0")
    assert code == 0 and "top-1" in out and "circle" in out
    code, out, _ = run_cli(
        capsys,
        "predict",
        str(tiny_run),
        str(demo_data / "evaluation" / "0_0.jpg"),
        "--out",
        str(tmp_path / "p.csv"),
        "--topk",
        "2",
        "--workers",
        "0",
    )
    assert code == 0 and (tmp_path / "p.csv").read_text().startswith("Id,Category,top1_class")


def test_predict_with_an_imagenet_model_name(capsys, tmp_path):
    skimage_data = pytest.importorskip("skimage.data")
    from PIL import Image

    Image.fromarray(skimage_data.coffee()).save(tmp_path / "coffee.jpg")
    code, out, _ = run_cli(
        capsys,
        "predict",
        "efficientnet_lite0",
        str(tmp_path / "coffee.jpg"),
        "--topk",
        "1",
        "--out",
        str(tmp_path / "p.csv"),
        "--workers",
        "0",
    )
    assert code == 0 and "coffee: espresso" in out


def test_models_command_lists_the_registry(capsys):
    code, out, _ = run_cli(capsys, "models")
    assert code == 0
    assert "721,675" in out and "4,021,639" in out and "85,807,115" in out and "3,385,099" in out
    assert "vit_tiny" in out


def test_demo_data_command(capsys, tmp_path):
    code, out, _ = run_cli(capsys, "demo-data", str(tmp_path / "d"), "--per-class", "2", "--size", "24")
    assert code == 0 and len(list((tmp_path / "d" / "training").glob("*.jpg"))) == 22


def test_real_process_error_has_no_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "imgcls", "train", "--model", "attn_cnn", "--data", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "data folder not found" in proc.stderr and "Traceback" not in proc.stderr
