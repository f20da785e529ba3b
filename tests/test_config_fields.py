"""The config dataclass is the single source: flags, coercion, ranges and resume rules come from it."""

import argparse
import subprocess
import sys

import pytest

from imgcls.core.config import FIELDS, RESUMABLE, TrainConfig, add_config_flags, resolve_config
from imgcls.core.errors import ImgclsError


def test_every_field_has_a_flag_with_its_help():
    parser = argparse.ArgumentParser()
    add_config_flags(parser)
    text = parser.format_help()
    for name, f in FIELDS.items():
        assert "--" + name.replace("_", "-") in text
        assert f.metadata["help"].split("(")[0].strip()[:25] in text.replace("\n", " ").replace("  ", " ")


def test_flags_are_coerced_by_the_field_types():
    parser = argparse.ArgumentParser()
    add_config_flags(parser)
    args = parser.parse_args(["--lr", "3e-4", "--epochs", "7", "--no-pretrained", "--image-size", "64"])
    from imgcls.core.config import config_overrides

    cfg = resolve_config(None, config_overrides(args))
    assert (cfg.lr, cfg.epochs, cfg.pretrained, cfg.image_size) == (3e-4, 7, False, 64)


def test_resumable_fields_are_one_list():
    assert RESUMABLE == {
        "data",
        "data_pipeline",  # how pixels reach the model, not what the model learns: a CPU run may resume on a GPU
        "decode_size",
        "logger",
        "epochs",
        "strict",
        "workers",
        "early_stop",
        "accelerator",
        "devices",
        "num_nodes",
        "strategy",
    }


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("lr", -1, "--lr must be > 0 and <= 10, got -1"),
        ("lr", "nan", "finite"),
        ("lr", 0, "must be > 0"),
        ("weight_decay", -0.1, "must be between 0 and 10"),
        ("plateau_factor", 1.0, "between 0 and 1, both excluded"),
        ("seed", 1e20, "must be between 0 and 4,294,967,295"),
        ("precision", "fp7", "not one of"),
        ("accelerator", "tpu9", "not one of"),
        ("strategy", "magic", "not one of"),
        ("num_nodes", 0, "must be between 1 and 4096"),
        ("workers", -1, "must be between 0 and 256"),
        ("image_size", 100000, "must be between 16 and 2048"),
        ("epochs", float("inf"), "finite"),
        ("epochs", 2.5, "whole number"),
        ("epochs", "many", "bad value"),
        ("batch_size", True, "expected int"),
        ("devices", "two", "count"),
        ("finetune", "some", "head, full or last:N"),
        ("augment", "heavy", "not one of"),
        ("val_split", 1.0, "must be between 0 and 1, both excluded"),
        ("pretrained", "maybe", "true or false"),
        ("model", ["a"], "expected str"),
    ],
)
def test_bad_values_are_one_line_errors(field, value, match):
    with pytest.raises(ImgclsError, match=match) as info:
        resolve_config(None, {field: value})
    assert "\n" not in str(info.value) and "--" + field.replace("_", "-") in str(info.value)


def test_yaml_with_integer_keys_is_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("1: 2\nepochs: 3\n")
    with pytest.raises(ImgclsError, match="option names"):
        resolve_config(str(path))


def test_a_config_without_a_model_does_not_train(tmp_path, demo_data):
    from imgcls.engine.train import train

    assert TrainConfig().model is None
    with pytest.raises(ImgclsError, match="choose a model"):
        train(resolve_config(None, {"data": str(demo_data), "out": str(tmp_path / "r")}), progress=False)


def test_the_cli_never_restarts_the_interpreter():
    code = (
        "import os, runpy, sys\n"
        "def refuse(*a, **k): raise SystemExit('re-executed')\n"
        "os.execve = os.execv = refuse\n"
        "sys.argv = ['imgcls', 'train', '--model', 'attn_cnn', '--data', '/nonexistent/imgcls-data']\n"
        "runpy.run_module('imgcls', run_name='__main__')\n"
    )
    # train tunes malloc in-process (it once re-executed itself with GLIBC_TUNABLES), then stops at the data.
    proc = subprocess.run([sys.executable, "-X", "dev", "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "re-executed" not in proc.stderr, proc.stderr[-2000:]
    assert "data folder not found: /nonexistent/imgcls-data" in proc.stderr


def test_malloc_tuning_is_in_process_and_can_be_turned_off(monkeypatch):
    from imgcls.core.malloc import DISABLE_ENV, tune_malloc

    if sys.platform == "linux":
        assert set(tune_malloc()) == {"mmap_threshold", "trim_threshold"}
    monkeypatch.setenv(DISABLE_ENV, "0")
    assert tune_malloc() == {}


def test_pillow_exif_chatter_is_silenced():
    import warnings

    from imgcls.api.common import quiet_libraries

    with warnings.catch_warnings(record=True) as seen:
        quiet_libraries()
        warnings.warn_explicit(
            "Tag data larger than file. Skipping tag 1",
            UserWarning,
            "TiffImagePlugin.py",
            1,
            module="PIL.TiffImagePlugin",
        )
        warnings.warn_explicit("something else", UserWarning, "x.py", 1, module="imgcls.x")
    assert [str(w.message) for w in seen] == ["something else"]


def test_no_progress_bar_when_output_is_not_a_terminal():
    from imgcls.api.common import progress_bars

    assert progress_bars(None) is False  # pytest captures stdout
