"""``imgcls lr-find``: Lightning's learning-rate range test on the real data and model, as a plot and a
suggestion. Nothing is written to a run folder; the model is thrown away afterwards."""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path

import lightning as L

from imgcls.core.config import TrainConfig
from imgcls.core.errors import ImgclsError


def lr_find(cfg: TrainConfig, plot: str | Path, *, steps: int = 100, min_lr: float = 1e-6, max_lr: float = 1.0) -> dict:
    from lightning.pytorch.tuner import Tuner

    from imgcls.engine.build import build_module, image_datamodule
    from imgcls.plan import make_plan

    if not cfg.model or not cfg.data:
        raise ImgclsError("lr-find needs --model and --data")
    if not 0 < min_lr < max_lr:
        raise ImgclsError(f"need 0 < --min-lr < --max-lr (got {min_lr}, {max_lr})")
    # The search trains from images with a constant learning rate between its own steps: planned so.
    plan = make_plan(replace(cfg, feature_cache=0, scheduler="plateau", warmup_epochs=0.0), write=False)
    cfg = plan.cfg
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    module = build_module(plan)
    data = image_datamodule(plan)
    trainer = L.Trainer(
        max_epochs=10_000,
        accelerator=plan.accelerator,
        devices=1,
        logger=False,
        precision=cfg.precision,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
        default_root_dir=str(Path(plot).resolve().parent),
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode.*")
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        result = Tuner(trainer).lr_find(
            module, datamodule=data, min_lr=min_lr, max_lr=max_lr, num_training=steps, update_attr=False
        )
    if result is None:
        raise ImgclsError("the learning-rate search stopped before it had enough points (a larger dataset or --steps)")
    suggestion = result.suggestion()
    import matplotlib

    matplotlib.use("Agg")
    fig = result.plot(suggest=suggestion is not None, show=False)
    fig.axes[0].set_title(
        f"{cfg.model}: loss against learning rate (suggested {suggestion:.2g})"
        if suggestion
        else f"{cfg.model}: loss against learning rate"
    )
    Path(plot).parent.mkdir(parents=True, exist_ok=True)
    from imgcls.core.files import save_figure

    save_figure(fig, Path(plot))
    return {"suggestion": suggestion, "plot": str(plot), "points": len(result.results.get("lr", []))}
