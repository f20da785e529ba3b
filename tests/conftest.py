"""Shared fixtures: small synthetic datasets and one tiny trained run, made once per session."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("IMGCLS_OFFLINE", "1")  # tests never download


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
    from imgcls.config import resolve_config
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
