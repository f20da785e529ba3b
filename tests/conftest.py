"""Shared fixtures: small synthetic datasets and one tiny trained run, made once per session."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("IMGCLS_OFFLINE", "1")  # tests never download
if os.environ.get("PYTEST_XDIST_WORKER"):
    # One core per pytest-xdist worker (make test runs two): threads beyond that only fight each other.
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)
# Nothing a test does reaches the user's ~/.cache/imgcls: the session's shared fixtures (made before any
# test's own cache exists) use this folder, and every test gets a cache of its own (below).
SESSION_CACHE = Path(tempfile.mkdtemp(prefix="imgcls-test-cache-"))
os.environ["IMGCLS_CACHE"] = str(SESSION_CACHE)


@pytest.fixture(autouse=True)
def own_cache(tmp_path_factory, monkeypatch):
    """Each test starts from an IMGCLS_CACHE of its own, so its results never depend on what ran before it
    (features, decoded images, scan verdicts). The one shared part is ``onnx/``: exports named by the SHA of
    the weights they hold, which cannot differ between tests (making them again cost the suite ~40 s)."""
    cache = tmp_path_factory.mktemp("cache")
    (SESSION_CACHE / "onnx").mkdir(exist_ok=True)
    (cache / "onnx").symlink_to(SESSION_CACHE / "onnx", target_is_directory=True)
    monkeypatch.setenv("IMGCLS_CACHE", str(cache))


def wait_until(condition, *, timeout: float, what: str, every: float = 0.05) -> None:
    """Poll ``condition()`` until it holds, failing after ``timeout`` seconds: for a process or server that
    runs on its own and can only be observed (no event to wait on)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)


def write_image(path: Path, colour=(200, 30, 30), size=(40, 32), seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    arr = np.clip(np.array(colour) + rng.normal(0, 20, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory) -> Path:
    from imgcls.data.demo import write_demo_dataset

    return write_demo_dataset(tmp_path_factory.mktemp("demo") / "data", per_class=8, size=32, seed=3)


def train_tiny(data: Path, out: Path, extra_callbacks=None, **overrides):
    from imgcls.core.config import resolve_config
    from imgcls.engine.train import train

    options = dict(
        model="attn_cnn",
        data=str(data),
        out=str(out),
        epochs=2,
        image_size=32,
        batch_size=16,
        workers=0,
        augment="light",
    )
    options.update(overrides)
    return train(resolve_config(None, options), progress=False, extra_callbacks=extra_callbacks)


@pytest.fixture(scope="session")
def tiny_run(demo_data, tmp_path_factory) -> Path:
    return train_tiny(demo_data, tmp_path_factory.mktemp("runs") / "attn").root
