"""The Lightning Trainer a plan runs in: callbacks (run files, best/last checkpoints, early stopping,
EMA, progress), loggers, devices and precision."""

from __future__ import annotations

import platform

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, TQDMProgressBar

from imgcls.core.errors import ImgclsError
from imgcls.engine.callbacks import (
    AtomicCheckpointIO,
    BestCheckpoint,
    EpochSeed,
    LastCheckpoint,
    RunFilesCallback,
    device_name,
)
from imgcls.models.profile import count_gflops, count_params
from imgcls.plan import RunPlan


def make_loggers(names: list[str] | None, root) -> list:
    """Lightning's loggers, writing into the run folder (metrics.csv, our own, is written regardless)."""
    loggers = []
    for name in names or []:
        try:
            if name == "csv":
                from lightning.pytorch.loggers import CSVLogger

                loggers.append(CSVLogger(root, name="logs", version="csv"))
            elif name == "tensorboard":
                from lightning.pytorch.loggers import TensorBoardLogger

                loggers.append(TensorBoardLogger(root, name="logs", version="tensorboard", default_hp_metric=False))
            elif name == "mlflow":
                from lightning.pytorch.loggers import MLFlowLogger

                loggers.append(
                    MLFlowLogger(
                        experiment_name="imgcls",
                        run_name=root.name,
                        tracking_uri=(root / "logs" / "mlruns").resolve().as_uri(),
                    )
                )
        except (ImportError, ModuleNotFoundError) as exc:
            raise ImgclsError(f"--logger {name} needs an extra package: pip install 'imgcls[{name}]' ({exc})") from None
    return loggers


def static_summary(plan: RunPlan, module) -> dict:
    """summary.json's fields that do not change during training."""
    cfg = plan.cfg
    params, trainable = count_params(module.model)
    category = plan.splits.category
    if plan.splits.layout == "saved" and plan.paths is not None and plan.paths.summary.is_file():
        from imgcls.core.files import read_json

        previous = read_json(plan.paths.summary)  # a resume reads its splits back: the layout said it
        category = previous.get("category", category) if isinstance(previous, dict) else category
    return {
        "model": cfg.model,
        "task": plan.task,
        "num_classes": cfg.num_classes,
        "category": category,
        "image_size": cfg.image_size,
        "default_image_size": plan.model.info.default_image_size,
        "pretrained": cfg.pretrained,
        "finetune": cfg.finetune,
        "frozen": module.frozen,
        "params": params,
        "trainable_params": trainable,
        "gflops": round(count_gflops(module.model, cfg.image_size), 4),
        "train_images": len(plan.splits.train),
        "excluded_images": sum(e[1] == "exclude" for e in plan.edits),
        "relabelled_images": sum(e[1] == "relabel" for e in plan.edits),
        "val_images": len(plan.splits.val),
        "epochs_requested": cfg.epochs,
        "device": device_name(),
        "precision": cfg.precision,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def make_trainer(
    plan: RunPlan, static: dict, *, progress: bool, on_epoch=None, extra_callbacks: list | None = None
) -> L.Trainer:
    cfg, paths = plan.cfg, plan.paths
    callbacks = [
        RunFilesCallback(paths, static, on_epoch=on_epoch, classes=plan.classes),
        EpochSeed(cfg.seed),
        BestCheckpoint(paths.checkpoints, monitor=plan.monitor),
        LastCheckpoint(paths.checkpoints),  # after best: a kill between the two redoes the epoch on resume
    ]
    callbacks += extra_callbacks or []
    if cfg.early_stop:
        callbacks.append(EarlyStopping(monitor="val_loss", mode="min", patience=cfg.early_stop))
    if cfg.ema:
        from lightning.pytorch.callbacks import EMAWeightAveraging

        callbacks.append(EMAWeightAveraging(decay=cfg.ema))
    if progress:
        callbacks.append(TQDMProgressBar())
    if plan.cuda:
        torch.set_float32_matmul_precision("high")  # TF32 matmuls for whatever runs outside autocast
    return L.Trainer(
        max_epochs=cfg.epochs,
        accelerator=plan.accelerator,
        devices=plan.devices,
        num_nodes=cfg.num_nodes,
        strategy=cfg.strategy,
        sync_batchnorm=cfg.sync_bn,
        use_distributed_sampler=False,  # our samplers: padded train shards, unpadded validation shards
        precision=cfg.precision,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        logger=make_loggers(cfg.logger, paths.root) or False,
        default_root_dir=str(paths.root),
        enable_progress_bar=progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        deterministic=not plan.cuda,  # free on CPU; on GPU it would cost speed
        benchmark=plan.cuda,  # cuDNN picks the fastest convolution algorithms for the fixed input size
        log_every_n_steps=1,
    )
