"""``imgcls train``: resolve the config, build data + model, run Lightning, write the run directory."""

from __future__ import annotations

import contextlib
import logging
import platform
import time
import warnings
from dataclasses import replace
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, TQDMProgressBar

from imgcls.config import RESUMABLE, TrainConfig, coerce, dump_config, flag_name, load_run_config, parse_finetune
from imgcls.data.datamodule import ImageDataModule, default_workers
from imgcls.data.layouts import DatasetSplits, discover
from imgcls.data.scan import scan_splits, write_bad_files
from imgcls.engine.callbacks import AtomicCheckpointIO, BestCheckpoint, LastCheckpoint, RunFilesCallback, device_name
from imgcls.engine.module import ClassifierModule, FrozenPrefix
from imgcls.errors import ImgclsError
from imgcls.models.blocks import split
from imgcls.models.freeze import match_frozen
from imgcls.models.profile import count_gflops, count_params
from imgcls.models.registry import create_model, get_model_info, parse_model_spec, spec_to_dirname
from imgcls.rundir import RunLock, RunPaths, clear_run, folder_state, read_json, read_metrics, write_json

log = logging.getLogger(__name__)


def resolve_for_data(cfg: TrainConfig, splits: DatasetSplits) -> TrainConfig:
    """Fill every 'auto' field so config.yaml holds exactly what ran."""
    name, _ = parse_model_spec(cfg.model)
    info = get_model_info(name)
    n = len(splits.classes)
    if cfg.num_classes is not None and cfg.num_classes != n:
        raise ImgclsError(f"--num-classes {cfg.num_classes} does not match the data: {n} classes in {splits.root}")
    pretrained = info.has_weights if cfg.pretrained is None else cfg.pretrained
    finetune = _whole_model_is_full(cfg, cfg.finetune or ("head" if pretrained else "full"), n)
    # The feature cache serves head and last:N training; by default it is on when augmentation is off.
    if parse_finetune(finetune) is None:
        feature_cache = 0
    elif cfg.augment == "none":
        feature_cache = 0 if cfg.feature_cache == 0 else 1
    else:
        feature_cache = cfg.feature_cache or 0
    if cfg.cutmix and cfg.feature_cache:
        raise ImgclsError("--cutmix cuts boxes out of images, not cached features: drop --feature-cache")
    if (cfg.mixup or cfg.cutmix) and not cfg.feature_cache:
        feature_cache = 0  # mix images; with an explicit --feature-cache, --mixup mixes the cached activations
    cuda = torch.cuda.is_available() and cfg.accelerator in ("auto", "gpu", "cuda")
    pipeline = _data_pipeline(cfg, feature_cache, cuda)
    precision = cfg.precision or (
        ("bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed") if cuda else "32-true"
    )
    return replace(
        cfg,
        num_classes=n,
        image_size=cfg.image_size or info.default_image_size,
        pretrained=pretrained,
        finetune=finetune,
        feature_cache=feature_cache,
        data_pipeline=pipeline,
        data=str(Path(cfg.data).resolve()),  # the run folder then works from any directory
        workers=default_workers() if cfg.workers is None else cfg.workers,
        precision=precision,
        out=cfg.out or str(Path("runs") / spec_to_dirname(cfg.model)),
    )


def _whole_model_is_full(cfg: TrainConfig, finetune: str, num_classes: int) -> str:
    """``last:N`` with N = every block of the model trains the whole model: that is ``full`` (its frozen
    prefix would be empty). N above the block count is refused here, before any data is read."""
    keep = parse_finetune(finetune)
    if not keep:
        return finetune
    from imgcls.models.blocks import blocks

    name, kwargs = parse_model_spec(cfg.model)
    count = len(blocks(create_model(name, num_classes, pretrained=False, image_size=cfg.image_size, **kwargs)))
    if keep > count:
        raise ImgclsError(
            f"--finetune {finetune}: {cfg.model} has {count} blocks (use last:1..last:{count - 1}, or full)"
        )
    if keep == count:
        if global_rank() == 0:
            print(f"note: --finetune {finetune} covers every block of {cfg.model}: training it whole (finetune=full)")
        return "full"
    return finetune


def _data_pipeline(cfg: TrainConfig, feature_cache: int, cuda: bool) -> str:
    from imgcls.data.tensor_pipeline import TENSOR_AUGMENTS, check_augment

    if cfg.data_pipeline == "tensor":
        if feature_cache:
            raise ImgclsError(
                "--data-pipeline tensor feeds images to the model; with --feature-cache the cache feeds it "
                "(pass --feature-cache 0 to train from images)"
            )
        check_augment(cfg.augment)
        return "tensor"
    if cfg.data_pipeline == "auto":
        return "tensor" if cuda and not feature_cache and cfg.augment in TENSOR_AUGMENTS else "workers"
    return cfg.data_pipeline


def make_loggers(names: list[str] | None, root: Path) -> list:
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


def parse_devices(devices: str | int):
    """'2' -> 2, 'auto' -> 'auto', '0,1' -> [0, 1] (Lightning's forms)."""
    text = str(devices).strip()
    if text == "auto" or text == "-1":
        return text if text == "auto" else -1
    if "," in text:
        return [int(d) for d in text.split(",") if d.strip()]
    try:
        return int(text)
    except ValueError:
        raise ImgclsError(f"--devices must be a count, 'auto' or a list like 0,1; got {devices!r}") from None


def global_rank() -> int:
    """This process's rank, known from the launcher's environment before any process group exists."""
    from lightning.pytorch.utilities import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) or 0


def build_module(cfg: TrainConfig, train_labels: list[int] | None = None) -> ClassifierModule:
    """head / last:N: the suffix (head, or last N blocks + head) trains, fed by the frozen prefix (or,
    with the feature cache, by batches of its cached output); full: the whole model trains."""
    name, kwargs = parse_model_spec(cfg.model)
    model = create_model(name, cfg.num_classes, pretrained=cfg.pretrained, image_size=cfg.image_size, **kwargs)
    keep = parse_finetune(cfg.finetune)
    prefix, suffix = split(model, keep) if keep is not None else (None, None)
    frozen = match_frozen(model, cfg.freeze)
    class_weights = None
    if cfg.class_weights == "balanced":
        from imgcls.engine.recipe import balanced_class_weights

        class_weights = balanced_class_weights(train_labels or [], cfg.num_classes)
    return ClassifierModule(
        model,
        num_classes=cfg.num_classes,
        recipe=cfg,
        class_weights=class_weights,
        suffix=suffix,
        prefix=FrozenPrefix(prefix, cfg.image_size) if prefix is not None and not cfg.feature_cache else None,
        frozen=frozen,
    )


def _static_summary(cfg: TrainConfig, module: ClassifierModule, splits: DatasetSplits) -> dict:
    params, trainable = count_params(module.model)
    return {
        "model": cfg.model,
        "num_classes": cfg.num_classes,
        "image_size": cfg.image_size,
        "default_image_size": get_model_info(parse_model_spec(cfg.model)[0]).default_image_size,
        "pretrained": cfg.pretrained,
        "finetune": cfg.finetune,
        "frozen": module.frozen,
        "params": params,
        "trainable_params": trainable,
        "gflops": round(count_gflops(module.model, cfg.image_size), 4),
        "train_images": len(splits.train),
        "val_images": len(splits.val),
        "epochs_requested": cfg.epochs,
        "device": device_name(),
        "precision": cfg.precision,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def prepare_run(
    cfg: TrainConfig, *, resume: bool, force: bool = False
) -> tuple[TrainConfig, DatasetSplits, RunPaths, bool]:
    """The resolved config, the data and the run folder, checked; the last value says whether training
    resumes (a --resume of a folder with no completed epoch starts over instead)."""
    parse_model_spec(cfg.model)  # an unknown model is reported before the data is scanned
    if not cfg.data:
        raise ImgclsError("no data folder given: pass --data DIR")
    if resume and not Path(cfg.data).is_dir():
        raise ImgclsError(f"data folder not found: {cfg.data} (has the data moved? resume with --data NEW_PATH)")
    splits = discover(cfg.data, val_split=cfg.val_split, seed=cfg.seed)
    cfg = resolve_for_data(cfg, splits)
    splits, bad = scan_splits(splits, strict=cfg.strict)
    paths = RunPaths(Path(cfg.out))
    state = folder_state(paths.root)
    if resume and not paths.last.is_file():
        if state == "foreign":
            raise ImgclsError(f"cannot resume: {paths.root} is not an imgcls run folder")
        print(f"note: {paths.root} has no completed epoch to resume from: starting it over")
        resume = False
    if resume:
        saved = read_json(paths.classes) if paths.classes.is_file() else None
        if saved is not None and saved != splits.classes:
            raise ImgclsError(f"cannot resume: the classes in {cfg.data} differ from {paths.classes}")
    elif global_rank() == 0:
        if state == "foreign" and not force:
            raise ImgclsError(
                f"{paths.root} holds files that are not an imgcls run; choose another --out "
                "(or pass --force to write into it anyway)"
            )
        if state == "run" and paths.last.is_file() and not force:
            raise ImgclsError(
                f"{paths.root} already holds a run; resume it with --resume {paths.root}, choose "
                "another --out, or pass --force to start it over"
            )
        if state == "run":  # --force, or an interrupted run without a completed epoch: start over
            clear_run(paths.root)
    if global_rank() == 0:  # one writer; other processes of a DDP run read the same files
        paths.root.mkdir(parents=True, exist_ok=True)
        if bad:
            write_bad_files(paths.bad_files, bad)
        elif paths.bad_files.exists():
            paths.bad_files.unlink()
        dump_config(cfg, paths.config)
        write_json(paths.classes, splits.classes)
    return cfg, splits, paths, resume


def train(
    cfg: TrainConfig,
    *,
    resume: bool = False,
    progress: bool = True,
    on_epoch=None,
    extra_callbacks: list | None = None,
    force: bool = False,
) -> RunPaths:
    """Train one model with one config into ``cfg.out``; returns the run directory.

    The run folder is locked for the whole run: a second process writing it stops with the holder's
    PID. ``on_epoch(rows)`` is called after each epoch's metrics.csv row is written (compare's ETA uses it).
    """
    if not cfg.model:
        raise ImgclsError("choose a model with --model NAME, or model: in the --config file (see: imgcls models)")
    cfg = replace(cfg, out=cfg.out or str(Path("runs") / spec_to_dirname(cfg.model)))
    with RunLock(Path(cfg.out)) if global_rank() == 0 else contextlib.nullcontext():
        return _train(cfg, resume=resume, progress=progress, on_epoch=on_epoch, extra=extra_callbacks, force=force)


def _train(cfg: TrainConfig, *, resume: bool, progress: bool, on_epoch, extra, force: bool) -> RunPaths:
    cfg, splits, paths, resume = prepare_run(cfg, resume=resume, force=force)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    module = build_module(cfg, [s.label for s in splits.train])
    if cfg.feature_cache:
        datamodule = _feature_datamodule(cfg, module, splits)
    else:
        datamodule = image_datamodule(cfg, splits, progress)
    module.train()
    if cfg.batch_size == 1 and module.has_batchnorm:
        raise ImgclsError(
            f"--batch-size 1 cannot train {cfg.model}: its BatchNorm layers need at least 2 images a batch"
        )
    static = _static_summary(cfg, module, splits)
    if cfg.compile:
        module.model.compile()  # in place: the state_dict keys, and so the checkpoints, stay the same
    callbacks = [
        RunFilesCallback(paths, static, on_epoch=on_epoch, classes=splits.classes),
        BestCheckpoint(paths.checkpoints, monitor="val_acc"),
        LastCheckpoint(paths.checkpoints),  # after best: a kill between the two redoes the epoch on resume
    ]
    callbacks += extra or []
    if cfg.early_stop:
        callbacks.append(EarlyStopping(monitor="val_loss", mode="min", patience=cfg.early_stop))
    if cfg.ema:
        from lightning.pytorch.callbacks import EMAWeightAveraging

        callbacks.append(EMAWeightAveraging(decay=cfg.ema))
    if progress:
        callbacks.append(TQDMProgressBar())
    on_cpu = not (torch.cuda.is_available() and cfg.accelerator in ("auto", "gpu", "cuda"))
    if not on_cpu:
        torch.set_float32_matmul_precision("high")  # TF32 matmuls for whatever runs outside autocast
    trainer = L.Trainer(
        max_epochs=cfg.epochs,
        accelerator=cfg.accelerator,
        devices=parse_devices(cfg.devices),
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
        deterministic=on_cpu,  # free on CPU; on GPU it would cost speed
        benchmark=not on_cpu,  # cuDNN picks the fastest convolution algorithms for the fixed input size
        log_every_n_steps=1,
    )
    rank_print = print if global_rank() == 0 else (lambda *a, **k: None)
    rank_print(
        f"training {cfg.model} on {len(splits.train)} images ({len(splits.classes)} classes, "
        f"{len(splits.val)} for validation), {cfg.image_size}px, finetune={cfg.finetune}, "
        f"{static['trainable_params']:,}/{static['params']:,} trainable params -> {paths.root}"
    )
    if module.partial:
        rank_print("the frozen part stays in eval mode on purpose: its BatchNorm keeps the pretrained statistics")
    with warnings.catch_warnings():
        # Lightning's hint to raise num_workers does not fit small CPU machines; we pick them ourselves.
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*exists and is not empty.*")  # expected when resuming
        # Lightning flags modules left in eval mode; for a frozen part that is the point (said below instead).
        warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode.*")
        t0 = time.perf_counter()
        try:
            trainer.fit(module, datamodule=datamodule, ckpt_path=str(paths.last) if resume else None)
        except SystemExit:
            # Lightning turns Ctrl+C into a graceful stop and exit(1); the CLI says "interrupted" (130).
            if trainer.interrupted:
                raise KeyboardInterrupt from None
            raise
    if trainer.interrupted:
        raise KeyboardInterrupt
    if not read_metrics(paths.metrics):
        raise ImgclsError(f"training of {cfg.model} completed no epoch; {paths.root} holds no trained model")
    log.info("fit took %.1fs", time.perf_counter() - t0)
    return paths


def image_datamodule(cfg: TrainConfig, splits: DatasetSplits, progress: bool = True):
    """Images streamed from disk and augmented in loader workers, or (``--data-pipeline tensor``) read
    decoded from the image store and augmented on the device."""
    common = dict(
        image_size=cfg.image_size,
        augment=cfg.augment,
        batch_size=cfg.batch_size,
        workers=cfg.workers,
        seed=cfg.seed,
        balanced=cfg.sampler == "balanced",
    )
    if cfg.data_pipeline == "tensor":
        from imgcls.data.tensor_pipeline import TensorDataModule

        return TensorDataModule(splits, **common, short=cfg.decode_size, progress=progress)
    return ImageDataModule(splits, **common)


def _feature_datamodule(cfg: TrainConfig, module: ClassifierModule, splits: DatasetSplits):
    """Loaders over the frozen prefix's cached outputs (pooled features for head, activations for
    last:N); the cache is filled once per node before training."""
    from imgcls.data.transforms import build_eval_transform, build_train_transform
    from imgcls.engine.features import FeatureDataModule

    name, _ = parse_model_spec(cfg.model)
    identity = {
        "model": cfg.model,
        "pretrained": cfg.pretrained,
        "weights": get_model_info(name).weights if cfg.pretrained else f"random-init-seed{cfg.seed}",
        "cut": cfg.finetune,
    }
    eval_tf = build_eval_transform(cfg.image_size)
    train_tf = eval_tf if cfg.augment == "none" else build_train_transform(cfg.image_size, cfg.augment)
    prefix, _ = split(module.model, parse_finetune(cfg.finetune))
    return FeatureDataModule(
        prefix,
        splits,
        train_transform=train_tf,
        eval_transform=eval_tf,
        views=cfg.feature_cache,
        image_size=cfg.image_size,
        seed=cfg.seed,
        identity=identity,
        batch_size=cfg.batch_size,
        workers=cfg.workers,
        balanced=cfg.sampler == "balanced",
    )


def resume_config(run_dir: str | Path, overrides: dict) -> TrainConfig:
    """The saved config of a run, with flags (e.g. a larger --epochs) applied on top."""
    paths = RunPaths(Path(run_dir))
    if not paths.config.is_file():
        raise ImgclsError(f"cannot resume: {paths.config} not found")
    cfg = load_run_config(paths.config)
    fixed = sorted(k for k, v in overrides.items() if v is not None and k not in RESUMABLE | {"out"})
    if fixed:
        raise ImgclsError(
            f"a resumed run keeps its config; {', '.join(flag_name(k) for k in fixed)} cannot change "
            f"(only {', '.join(flag_name(k) for k in sorted(RESUMABLE))} may)"
        )
    changed = {k: coerce(k, v) for k, v in overrides.items() if v is not None}
    return replace(cfg, **changed, out=str(paths.root))
