"""The API's remaining commands: the learning-rate range test and the serve load test."""

from __future__ import annotations

from typing import Any

from imgcls.api.common import checked, quiet_libraries
from imgcls.commands.options import LoadtestOptions, LrFindOptions
from imgcls.core.config import TrainConfig
from imgcls.core.errors import ImgclsError
from imgcls.core.options import check_names


def lr_find(
    *,
    config: str | None = None,
    plot: str = "lr_find.png",
    steps: int = 100,
    min_lr: float = 1e-6,
    max_lr: float = 1.0,
    **fields: Any,
) -> dict:
    """Lightning's learning-rate range test on the real data and model: ``suggestion``, ``plot``, ``points``."""
    from imgcls.core.config import resolve_config
    from imgcls.engine.lr_find import lr_find as run_lr_find

    quiet_libraries()
    opts = checked(
        LrFindOptions, dict(config=config, plot=plot, steps=steps, min_lr=min_lr, max_lr=max_lr), "imgcls.lr_find"
    )
    check_names(TrainConfig, fields, where="imgcls.lr_find")
    if not opts.min_lr < opts.max_lr:
        raise ImgclsError(f"need --min-lr < --max-lr (got {opts.min_lr}, {opts.max_lr})")
    cfg = resolve_config(opts.config, {k: v for k, v in fields.items() if v is not None})
    return run_lr_find(cfg, opts.plot, steps=opts.steps, min_lr=opts.min_lr, max_lr=opts.max_lr)


def loadtest(url: str, image: str, **options: Any) -> dict:
    """A bounded load test of a running ``imgcls serve`` on loopback: latencies and throughput."""
    from imgcls.commands.serve.loadtest import load_test

    opts = checked(LoadtestOptions, dict(url=url, image=str(image), **options), "imgcls.loadtest")
    return load_test(opts.url, opts.image, requests=opts.requests, concurrency=opts.concurrency)
