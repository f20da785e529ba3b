"""``imgcls train``: plan the run, prepare its folder, fit with Lightning, leave a complete run folder."""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from dataclasses import replace
from pathlib import Path

from imgcls.core.config import TrainConfig, dump_config
from imgcls.core.errors import ImgclsError
from imgcls.core.files import write_json
from imgcls.core.lock import RunLock
from imgcls.core.malloc import release_memory
from imgcls.core.rundir import RunPaths, clear_run, folder_state, read_metrics
from imgcls.core.system import global_rank
from imgcls.core.tables import write_csv
from imgcls.data.scan import write_bad_files
from imgcls.data.splitfile import write_splits
from imgcls.plan import RunPlan, check_data_folder, default_out, make_plan, resume_config

log = logging.getLogger(__name__)
__all__ = ["train", "resume_config"]


def train(
    cfg: TrainConfig,
    *,
    resume: bool = False,
    progress: bool = True,
    on_epoch=None,
    extra_callbacks: list | None = None,
    force: bool = False,
    splits=None,
) -> RunPaths:
    """Train one model with one config into ``cfg.out``; returns the run directory.

    The run folder is locked for the whole run: a second process writing it stops with the holder's
    PID. ``on_epoch(rows)`` is called after each epoch's metrics.csv row is written (compare's ETA uses
    it); ``splits``: data already discovered (compare discovers once for all its variants).
    """
    if splits is None:
        check_data_folder(cfg, resume=resume)
    cfg = replace(cfg, out=default_out(cfg))
    with RunLock(Path(cfg.out)) if global_rank() == 0 else contextlib.nullcontext():
        plan = make_plan(cfg, resume=resume, force=force, splits=splits)  # a bad argument stops here, fast
        import lightning as L

        from imgcls.engine.build import build_module

        if plan.cfg.workers > 0:  # before any loader worker is forked (see malloc.release_memory)
            release_memory()
        L.seed_everything(plan.cfg.seed, workers=True, verbose=False)
        module = build_module(plan)  # what cannot train is refused before anything is written
        if global_rank() == 0:  # one writer; other processes of a DDP run read the same files
            prepare_folder(plan)
        return fit(plan, module, progress=progress, on_epoch=on_epoch, extra_callbacks=extra_callbacks)


def prepare_folder(plan: RunPlan) -> None:
    """A new run starts in a clean folder; config.yaml, classes.json and splits.csv record what runs."""
    paths = plan.paths
    if not plan.resume and folder_state(paths.root) == "run":  # --force, or no completed epoch: start over
        clear_run(paths.root)
    paths.root.mkdir(parents=True, exist_ok=True)
    if plan.bad:
        write_bad_files(paths.bad_files, list(plan.bad))
    elif paths.bad_files.exists():
        paths.bad_files.unlink()
    dump_config(plan.cfg, paths.config)
    write_json(paths.classes, plan.classes)
    if not plan.resume or not paths.splits.is_file():
        write_splits(paths, plan.splits)
    if plan.edits:
        write_csv(paths.edits, ["path", "action", "old", "new"], [list(e) for e in plan.edits])


def fit(
    plan: RunPlan, module, *, progress: bool = True, on_epoch=None, extra_callbacks: list | None = None
) -> RunPaths:
    from imgcls.engine.build import build_datamodule
    from imgcls.engine.trainer import make_trainer, static_summary

    cfg, paths = plan.cfg, plan.paths
    datamodule = build_datamodule(plan, module, progress=progress)
    module.train()
    static = static_summary(plan, module)
    if cfg.compile:
        module.model.compile()  # in place: the state_dict keys, and so the checkpoints, stay the same
    trainer = make_trainer(plan, static, progress=progress, on_epoch=on_epoch, extra_callbacks=extra_callbacks)
    say = print if global_rank() == 0 else (lambda *a, **k: None)
    for note in plan.notes:
        say(f"note: {note}")
    say(
        f"training {cfg.model} ({'multi-label' if plan.task == 'multilabel' else 'single-label'}) on "
        f"{len(plan.splits.train)} images ({len(plan.classes)} {'labels' if plan.task == 'multilabel' else 'classes'}, "
        f"{len(plan.splits.val)} for validation), {cfg.image_size}px, finetune={cfg.finetune}, "
        f"{static['trainable_params']:,}/{static['params']:,} trainable params -> {paths.root}"
    )
    if module.cut:
        say("the frozen part stays in eval mode on purpose: its BatchNorm keeps the pretrained statistics")
    with warnings.catch_warnings():
        # Lightning's hint to raise num_workers does not fit small CPU machines; we pick them ourselves.
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*exists and is not empty.*")  # expected when resuming
        # Lightning flags modules left in eval mode; for a frozen part that is the point (said below instead).
        warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode.*")
        t0 = time.perf_counter()
        try:
            trainer.fit(module, datamodule=datamodule, ckpt_path=str(paths.last) if plan.resume else None)
        except SystemExit:
            # Lightning turns Ctrl+C into a graceful stop and exit(1); the CLI says "interrupted" (130).
            if trainer.interrupted:
                raise KeyboardInterrupt from None
            raise
    if trainer.interrupted:
        raise KeyboardInterrupt
    if not read_metrics(paths.metrics):
        raise ImgclsError(f"training of {cfg.model} completed no epoch; {paths.root} holds no trained model")
    if plan.task == "multilabel" and global_rank() == 0:
        from imgcls.engine.thresholds import write_thresholds

        record = write_thresholds(paths, workers=0)
        say(f"per-label thresholds tuned on {record['images']} validation images -> {paths.thresholds}")
    log.info("fit took %.1fs", time.perf_counter() - t0)
    return paths
