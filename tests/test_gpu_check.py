"""scripts/gpu-check.sh: its CPU half passes here (no GPU), and a broken environment fails it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu-check.sh"


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU machine the script runs its GPU half (minutes)")
def test_cpu_half_passes_and_writes_its_logs(tmp_path):
    # One of the three reference models (the script's loop is the same for each): EfficientNet-B0 and
    # ViT-B/16 train at 32 px in test_hostile's last-batch test, and the tensor pipeline does not depend on
    # the model (test_tensor_pipeline trains through it).
    env = {**os.environ, "PYTHON": sys.executable, "GPU_CHECK_MODELS": "attn_cnn"}
    proc = subprocess.run(["bash", str(SCRIPT), str(tmp_path)], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no CUDA GPU" in proc.stdout and "0 failed step(s)" in proc.stdout
    for model in ("attn_cnn",):
        assert len((tmp_path / f"metrics-{model}.csv").read_text().splitlines()) == 2  # header + 1 epoch
        assert "top-1" in (tmp_path / f"evaluate-{model}.log").read_text()
    assert not list(tmp_path.glob("bench-*.json"))  # no GPU, no GPU numbers


def test_a_python_without_torch_fails_the_script(tmp_path):
    env = {**os.environ, "PYTHON": "/bin/false"}
    proc = subprocess.run(["bash", str(SCRIPT), str(tmp_path)], capture_output=True, text=True, env=env)
    assert proc.returncode == 1 and "cannot import torch" in proc.stdout
