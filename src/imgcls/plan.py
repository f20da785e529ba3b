"""The run plan: every decision of a training run, made once.

``make_plan`` turns a ``TrainConfig`` (defaults < YAML < flags) and the data into a frozen ``RunPlan``:
the parsed model spec, the task, the fine-tune cut, where it runs (accelerator, devices, precision, data
pipeline, pinned memory), the data splits (discovered, or read back from a run folder), the bad files, the
run folder and whether training resumes. Everything downstream (the module, the data modules, the Trainer,
the run files) reads the plan and parses nothing.

``resolve`` is the pure part: from the config, the data, the model's facts and the machine's (``Machine``,
gathered once by ``make_plan``) it fills every ``auto`` field, so ``config.yaml`` records exactly what ran;
``compare`` and ``auto`` use it to tell whether a saved run was trained with the requested recipe.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from imgcls.core.config import RESUMABLE, TrainConfig, coerce, load_run_config, parse_finetune
from imgcls.core.errors import ImgclsError
from imgcls.core.files import read_json
from imgcls.core.options import flag_name
from imgcls.core.rundir import RunPaths, folder_state
from imgcls.core.system import global_rank
from imgcls.data.csv_layout import CsvOptions
from imgcls.data.layouts import DatasetSplits, discover
from imgcls.data.scan import BadFile, scan_splits
from imgcls.data.splitfile import read_splits
from imgcls.models.registry import ModelInfo, create_model, get_model_info, parse_model_spec, spec_to_dirname

# Precisions Lightning runs on a CPU (16-true, bf16-true and 64-true fail there in the optimizer or the
# first convolution); every offered precision runs on CUDA.
CPU_PRECISIONS = ("32-true", "32", "bf16-mixed")


@dataclass(frozen=True)
class ModelChoice:
    """A model spec parsed once: ``attn_cnn:num_heads=4`` -> name, keyword arguments and registry entry."""

    spec: str
    name: str
    kwargs: dict
    info: ModelInfo

    @classmethod
    def parse(cls, spec: str | None) -> ModelChoice:
        if not spec:
            raise ImgclsError("choose a model with --model NAME, or model: in the --config file (see: imgcls models)")
        name, kwargs = parse_model_spec(spec)
        return cls(spec, name, kwargs, get_model_info(name))

    def build(self, num_classes: int, *, pretrained: bool = False, image_size: int | None = None):
        return create_model(self.name, num_classes, pretrained=pretrained, image_size=image_size, **self.kwargs)

    @property
    def dirname(self) -> str:
        return spec_to_dirname(self.spec)

    def probe(self, num_classes: int, image_size: int) -> None:
        """timm:/tv: models are any of thousands: run a fresh copy once on a batch of two at the chosen size
        in train mode, and refuse (one line) what fails or does not give one score per class."""
        import torch

        from imgcls.models.hub_models import is_hub_name

        if not is_hub_name(self.name):
            return
        model = self.build(num_classes, image_size=image_size).train()
        try:
            with torch.no_grad():
                out = model(torch.randn(2, 3, image_size, image_size))
        except Exception as exc:  # noqa: BLE001 - whatever a foreign model raises means it cannot run here
            why = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
            size = self.info.default_image_size
            raise ImgclsError(f"{self.spec} does not run at {image_size} px ({why}); try --image-size {size}") from None
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, num_classes):
            got = type(out).__name__ if not isinstance(out, torch.Tensor) else tuple(out.shape)
            raise ImgclsError(f"{self.spec} gives {got} in training, not one score per class; it cannot train here")

    def block_count(self, num_classes: int, image_size: int | None) -> int:
        from imgcls.models.blocks import blocks

        return len(blocks(self.build(num_classes, image_size=image_size)))


@dataclass(frozen=True)
class Machine:
    """What this machine offers a run, asked once (``here``): ``resolve`` reads it and asks nothing."""

    cuda: bool  # a CUDA device PyTorch can use
    gpus: int
    bf16: bool  # CUDA bfloat16
    cores: int  # the cores this process may run on
    workers: int  # default DataLoader workers: one core stays with the model

    @classmethod
    def here(cls) -> Machine:
        import torch

        from imgcls.core.system import cpu_count, default_workers

        cuda = torch.cuda.is_available()
        return cls(
            cuda=cuda,
            gpus=torch.cuda.device_count() if cuda else 0,
            bf16=bool(cuda and torch.cuda.is_bf16_supported()),
            cores=cpu_count(),
            workers=default_workers(),
        )


@dataclass(frozen=True)
class RunPlan:
    cfg: TrainConfig  # every field resolved: what config.yaml records
    model: ModelChoice
    task: str  # "single" (one class per image) or "multilabel" (any number of labels per image)
    keep: int | None  # blocks that train: None = the whole model, 0 = the head only, N = the last N blocks
    cuda: bool
    devices: Any  # Lightning's form: a count, "auto" or a list of indices
    splits: DatasetSplits  # bad files removed
    bad: tuple[BadFile, ...] = ()
    paths: RunPaths | None = None  # None: nothing is written (lr-find)
    resume: bool = False
    start_epoch: int = 0  # the first epoch this fit runs (0-based): a resumed run's next one
    notes: tuple[str, ...] = field(default=())  # said once at the start of training
    edits: tuple[tuple, ...] = ()  # --exclude / --relabel: (path, action, old label, new label)
    accelerator: str = "cpu"  # what Lightning runs on: "cuda", "cpu" or "mps" (never "auto")

    @property
    def classes(self) -> list[str]:
        return self.splits.classes

    @property
    def cut(self) -> bool:
        """A frozen prefix feeds a trainable suffix (head-only or last:N)."""
        return self.keep is not None

    @property
    def monitor(self) -> str:
        """The validation metric best.ckpt is chosen by: accuracy, or mean average precision."""
        return monitor_for(self.task)

    @property
    def feature_identity(self) -> dict:
        """What the frozen prefix's outputs depend on besides the files and transform (the cache key)."""
        from imgcls.models.registry import feature_identity

        cfg = self.cfg
        return feature_identity(cfg.model, self.model.info, pretrained=cfg.pretrained, seed=cfg.seed, cut=cfg.finetune)

    @property
    def pin_memory(self) -> bool:
        """Page-locked batches speed host-to-GPU copies; on the CPU they only cost."""
        return self.cuda


def monitor_for(task: str) -> str:
    return "val_mAP" if task == "multilabel" else "val_acc"


def default_out(cfg: TrainConfig, model: ModelChoice | None = None) -> str:
    return cfg.out or str(Path("runs") / (model or ModelChoice.parse(cfg.model)).dirname)


def csv_options(cfg: TrainConfig) -> CsvOptions:
    return CsvOptions(
        labels=cfg.labels,
        images=cfg.images,
        image_col=cfg.image_col,
        label_col=cfg.label_col,
        label_sep=cfg.label_sep,
        task=cfg.task,
        skip_missing=cfg.skip_missing,
        allow_outside=cfg.allow_outside_data,
    )


def discover_data(cfg: TrainConfig) -> DatasetSplits:
    if not cfg.data:
        raise ImgclsError("no data folder given: pass --data DIR")
    return discover(cfg.data, val_split=cfg.val_split, seed=cfg.seed, csv=csv_options(cfg))


def asked_finetune(cfg: TrainConfig, info: ModelInfo) -> str:
    """--finetune as given, or its default: the head of a pretrained model, else the whole model."""
    pretrained = info.has_weights if cfg.pretrained is None else cfg.pretrained
    return cfg.finetune or ("head" if pretrained else "full")


def resolve(
    cfg: TrainConfig, splits: DatasetSplits, model: ModelChoice, machine: Machine, blocks: int | None = None
) -> TrainConfig:
    """Every ``auto`` or unset field filled from the model, the data and the machine; nothing is asked or
    built here. ``blocks``: the model's block count (needed for ``--finetune last:N`` only)."""
    info = model.info
    n = len(splits.classes)
    if cfg.num_classes is not None and cfg.num_classes != n:
        raise ImgclsError(f"--num-classes {cfg.num_classes} does not match the data: {n} classes in {splits.root}")
    pretrained = info.has_weights if cfg.pretrained is None else cfg.pretrained
    image_size = cfg.image_size or info.default_image_size
    finetune = _finetune(cfg, asked_finetune(cfg, info), blocks)
    # The feature cache serves head and last:N training; by default it is on when augmentation is off.
    if parse_finetune(finetune) is None:
        feature_cache = 0
    elif cfg.augment == "none":
        feature_cache = 0 if cfg.feature_cache == 0 else 1
    else:
        feature_cache = cfg.feature_cache or 0
    if cfg.cutmix and cfg.feature_cache:
        raise ImgclsError("--cutmix cuts boxes out of images, not cached features: drop --feature-cache")
    if cfg.feature_cache and parse_finetune(finetune) is None:
        why = "" if finetune == cfg.finetune else f" (--finetune {cfg.finetune} covers every block of {cfg.model})"
        raise ImgclsError(
            f"--feature-cache stores what a frozen part computes; the whole model trains{why}, so nothing "
            "is frozen (drop --feature-cache, or use --finetune head / last:N)"
        )
    if cfg.warmup_epochs > cfg.epochs:
        raise ImgclsError(f"--warmup-epochs {cfg.warmup_epochs:g} is longer than --epochs {cfg.epochs}")
    if cfg.nesterov and cfg.optimizer != "sgd":
        raise ImgclsError(f"--nesterov is a momentum option of --optimizer sgd, not of {cfg.optimizer}")
    if (cfg.mixup or cfg.cutmix) and not cfg.feature_cache:
        feature_cache = 0  # mix images; with an explicit --feature-cache, --mixup mixes the cached activations
    cuda = uses_cuda(cfg, machine)
    task = resolve_task(cfg, splits)
    return replace(
        cfg,
        task=task,
        eval_crop=(task == "single") if cfg.eval_crop is None else cfg.eval_crop,
        num_classes=n,
        image_size=image_size,
        pretrained=pretrained,
        finetune=finetune,
        feature_cache=feature_cache,
        data_pipeline=_data_pipeline(cfg, feature_cache, cuda),
        data=str(Path(cfg.data).resolve()),  # the run folder then works from any directory
        workers=machine.workers if cfg.workers is None else cfg.workers,
        precision=_precision(cfg, cuda, machine),
        out=default_out(cfg, model),
    )


def planned_config(cfg: TrainConfig, splits: DatasetSplits, machine: Machine | None = None) -> TrainConfig:
    """``resolve`` with the facts gathered here: the model parsed, its blocks counted when ``last:N`` asks,
    the machine asked (``compare`` and ``auto`` compare saved runs with this)."""
    model = ModelChoice.parse(cfg.model)
    return resolve(cfg, splits, model, machine or Machine.here(), blocks_for(cfg, model, len(splits.classes)))


def blocks_for(cfg: TrainConfig, model: ModelChoice, num_classes: int) -> int | None:
    """The model's block count when ``--finetune last:N`` needs it (building the model takes a moment)."""
    if not (asked_finetune(cfg, model.info) or "").startswith("last:"):
        return None
    return model.block_count(num_classes, cfg.image_size or model.info.default_image_size)


# -- variants: one recipe, several models (compare, auto) ------------------------------------------------


def parse_variant(spec: str) -> tuple[str, dict]:
    """``MODEL_SPEC[+field=value]...``: a model spec plus recipe fields for this variant alone, e.g.
    ``attn_cnn:num_heads=8+freeze=attn`` or ``efficientnet_lite0+finetune=full`` (list values: a,b)."""
    from imgcls.core.config import FIELDS

    model, *extras = spec.split("+")
    overrides = {}
    for item in extras:
        key, eq, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not eq or key not in FIELDS or key in ("model", "data", "out"):
            raise ImgclsError(
                f"bad variant {spec!r}: {item!r} is not field=value for a recipe field "
                "(e.g. +freeze=attn, +finetune=full, +lr=3e-4)"
            )
        overrides[key] = coerce(key, value.strip())
    return model.strip(), overrides


def variant_dirname(spec: str) -> str:
    model, overrides = parse_variant(spec)
    extra = "".join(f"-{k}{','.join(v) if isinstance(v, list) else v}" for k, v in overrides.items())
    return spec_to_dirname(model) + re.sub(r"[^A-Za-z0-9,._=-]+", "_", extra)


def variant_config(base: TrainConfig, spec: str, out: Path) -> TrainConfig:
    """The base recipe for one variant of a comparison (or a trial of ``auto``). A comparison-wide
    --feature-cache does not apply to variants that train whole (nothing frozen to cache): they train from
    images."""
    model, overrides = parse_variant(spec)
    cfg = replace(base, model=model, out=str(out), **overrides)
    if cfg.feature_cache and "feature_cache" not in overrides:
        if asked_finetune(cfg, ModelChoice.parse(model).info) == "full":
            cfg = replace(cfg, feature_cache=None)
    return cfg


def resolve_task(cfg: TrainConfig, splits: DatasetSplits) -> str:
    """The data decides (one label per image, or several); --task single refuses multi-label data, and
    --task multilabel trains single-label data with one positive label per image."""
    task = splits.task
    if cfg.task == "single" and task == "multilabel":
        raise ImgclsError(f"{splits.root} has several labels per image; --task single cannot train it (drop --task)")
    if cfg.task == "multilabel":
        task = "multilabel"
    if task == "multilabel":
        if cfg.sampler == "balanced":
            raise ImgclsError("--sampler balanced draws by class; for multi-label data use --pos-weight balanced")
        if cfg.class_weights == "balanced":
            raise ImgclsError(
                "--class-weights balanced weighs one class per image; for multi-label data use --pos-weight balanced"
            )
    elif cfg.pos_weight != "none":
        raise ImgclsError(
            "--pos-weight weighs the labels of a multi-label task; for one class per image use --class-weights"
        )
    return task


def as_multilabel(splits: DatasetSplits) -> DatasetSplits:
    """Single-label splits as multi-label ones: each label a one-element tuple."""

    def lift(samples):
        return [type(s)(s.path, (s.label,)) if isinstance(s.label, int) and s.label >= 0 else s for s in samples]

    return replace(splits, train=lift(splits.train), val=lift(splits.val), test=lift(splits.test), task="multilabel")


def uses_cuda(cfg: TrainConfig, machine: Machine) -> bool:
    return cfg.accelerator in ("auto", "gpu", "cuda") and machine.cuda


def lightning_accelerator(cfg: TrainConfig, cuda: bool) -> str:
    """The accelerator Lightning gets: the one the plan chose, never "auto"."""
    return "cuda" if cuda else ("mps" if cfg.accelerator == "mps" else "cpu")


def _finetune(cfg: TrainConfig, finetune: str, count: int | None) -> str:
    """``last:N`` with N = every block trains the whole model: that is ``full`` (its frozen prefix would be
    empty). N above the block count is refused here, before any image is read."""
    keep = parse_finetune(finetune)
    if not keep:
        return finetune
    if count is None:
        raise ValueError("resolve needs the block count for --finetune last:N")
    if keep > count:
        raise ImgclsError(
            f"--finetune {finetune}: {cfg.model} has {count} blocks (use last:1..last:{count - 1}, or full)"
        )
    return "full" if keep == count else finetune


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


def _precision(cfg: TrainConfig, cuda: bool, machine: Machine) -> str:
    if cfg.precision is None:
        if not cuda:
            return "32-true"
        return "bf16-mixed" if machine.bf16 else "16-mixed"
    if not cuda and cfg.precision not in CPU_PRECISIONS:
        raise ImgclsError(
            f"--precision {cfg.precision} does not run on the CPU; use one of {', '.join(CPU_PRECISIONS)} "
            "(or train on a GPU)"
        )
    return cfg.precision


def parse_devices(cfg: TrainConfig, cuda: bool, machine: Machine):
    """Lightning's devices value, checked against what this machine has: a count of processes up to the
    GPUs (CUDA) or the cores (CPU), 'auto', or a list of distinct GPU indices."""
    import os

    if cfg.num_nodes > 1 and not (os.environ.get("WORLD_SIZE") or os.environ.get("SLURM_NTASKS")):
        raise ImgclsError(
            f"--num-nodes {cfg.num_nodes}: a multi-machine run is started on every machine by a launcher "
            "(torchrun --nnodes, or SLURM's srun); run imgcls under it"
        )
    text = str(cfg.devices).strip()
    if text == "auto":
        return "auto"
    have, what = (machine.gpus, "GPU(s)") if cuda else (machine.cores, "CPU cores")
    if "," in text:
        picked = [int(d) for d in text.split(",") if d.strip()]
        if not cuda:
            raise ImgclsError(f"--devices {text}: a list of device indices needs GPUs; on the CPU give a count")
        if len(set(picked)) != len(picked) or any(d >= have for d in picked):
            raise ImgclsError(f"--devices {text}: indices must be distinct and below {have} ({have} {what} here)")
        return picked
    count = int(text)
    if count < 1:
        raise ImgclsError(f"--devices {text}: give a count of at least 1, 'auto', or a list like 0,1")
    if count > have:
        raise ImgclsError(f"--devices {count}: this machine has {have} {what}; use at most {have}")
    return count


def check_data_folder(cfg: TrainConfig, *, resume: bool = False) -> None:
    """The data folder is there: said before the model's imports (seconds) and any scan."""
    if not cfg.data:
        raise ImgclsError("no data folder given: pass --data DIR")
    if not Path(cfg.data).is_dir():
        moved = " (has the data moved? resume with --data NEW_PATH)" if resume else ""
        raise ImgclsError(f"data folder not found: {cfg.data}{moved}")


def make_plan(
    cfg: TrainConfig,
    *,
    resume: bool = False,
    force: bool = False,
    splits: DatasetSplits | None = None,
    write: bool = True,
) -> RunPlan:
    """The plan of one training run. ``splits``: data already discovered (compare shares one discovery
    between its variants); ``write=False``: no run folder (lr-find)."""
    if splits is None:
        check_data_folder(cfg, resume=resume)
    model = ModelChoice.parse(cfg.model)  # an unknown model is reported before the data is scanned
    paths = RunPaths(Path(default_out(cfg, model))) if write else None
    if splits is None and resume and paths is not None:
        # The exact splits the run started with.
        splits = read_splits(paths, cfg.data, allow_outside=cfg.allow_outside_data)
    splits = splits or discover_data(cfg)
    edits: list[list] = []
    if (cfg.exclude or cfg.relabel) and splits.layout != "saved":
        from imgcls.data.edits import apply_edits

        splits, edits = apply_edits(splits, exclude=cfg.exclude, relabel=cfg.relabel)
    elif resume and paths is not None and paths.edits.is_file():  # splits.csv has them applied already
        from imgcls.core.tables import read_table

        edits = [list(row.values()) for row in read_table(paths.edits, ours=True, empty_ok=True).rows]
    asked = cfg.finetune
    machine = Machine.here()
    cfg = resolve(cfg, splits, model, machine, blocks_for(cfg, model, len(splits.classes)))
    model.probe(cfg.num_classes, cfg.image_size)
    cuda = uses_cuda(cfg, machine)
    devices = parse_devices(cfg, cuda, machine)
    world = cfg.num_nodes * (
        len(devices)
        if isinstance(devices, list)
        else machine.gpus
        if devices == "auto" and cuda
        else 1
        if devices == "auto"
        else devices
    )
    if cfg.sampler == "balanced" and world > 1:
        raise ImgclsError("--sampler balanced runs in one process only (use --class-weights balanced with DDP)")
    if cfg.task == "multilabel" and splits.task == "single":
        splits = as_multilabel(splits)
    splits, bad = scan_splits(splits, strict=cfg.strict)
    if paths is not None:
        resume = _check_folder(paths, splits, resume=resume, force=force, leader=global_rank() == 0)
    notes = []
    if (asked or "").startswith("last:") and cfg.finetune == "full":
        notes.append(f"--finetune {asked} covers every block of {cfg.model}: training it whole (finetune=full)")
    return RunPlan(
        cfg=cfg,
        model=model,
        task=cfg.task,
        keep=parse_finetune(cfg.finetune),
        cuda=cuda,
        accelerator=lightning_accelerator(cfg, cuda),
        devices=devices,
        splits=splits,
        bad=tuple(bad),
        paths=paths,
        resume=resume,
        start_epoch=_next_epoch(paths.last, cfg) if resume else 0,
        notes=tuple(notes),
        edits=tuple(tuple(e) for e in edits),
    )


def _next_epoch(checkpoint: Path, cfg: TrainConfig) -> int:
    """The epoch after the one ``last.ckpt`` holds (memory-mapped: only the counter and the recipe are
    read); refuses a config.yaml edited since: the run would record a recipe it never trained with."""
    import torch

    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
        epoch = int(state["epoch"]) + 1
    except Exception:  # not ours or damaged: the resume itself reports it in one line
        return 0
    trained = state.get("imgcls_config")
    if isinstance(trained, dict):
        fixed = RESUMABLE | {"out", "data"}
        changed = [
            f"{flag_name(k)} {trained[k]!r} -> {getattr(cfg, k)!r}"
            for k in trained
            if k not in fixed and hasattr(cfg, k) and trained[k] != getattr(cfg, k)
        ]
        if changed:
            raise ImgclsError(
                f"cannot resume: {checkpoint.parent.parent / 'config.yaml'} was edited after training "
                f"started ({'; '.join(changed)}); a resumed run keeps its recipe (start over with --force)"
            )
    return epoch


def _check_folder(paths: RunPaths, splits: DatasetSplits, *, resume: bool, force: bool, leader: bool) -> bool:
    """Whether training resumes (a --resume of a folder with no completed epoch starts over instead);
    the leader (rank 0, which prepares the folder) refuses folders that are not imgcls runs and
    finished runs without --force."""
    state = folder_state(paths.root)
    if resume and not paths.last.is_file():
        if state == "foreign":
            raise ImgclsError(f"cannot resume: {paths.root} is not an imgcls run folder")
        print(f"note: {paths.root} has no completed epoch to resume from: starting it over")
        return False
    if resume:
        saved = read_json(paths.classes) if paths.classes.is_file() else None
        if saved is not None and saved != splits.classes:
            raise ImgclsError(f"cannot resume: the classes in {splits.root} differ from {paths.classes}")
        return True
    if not leader:
        return False
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
    return False


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


@dataclass(frozen=True)
class SavedRun:
    """A run folder as its consumers read it: the config it trained with, its classes, its splits."""

    paths: RunPaths
    cfg: TrainConfig
    classes: list[str]

    def splits(self, data: str | None = None) -> DatasetSplits:
        """The splits the run recorded (splits.csv), under ``data`` when the data folder moved; runs made
        before splits.csv existed get them rediscovered from the folder, fraction and seed."""
        root = data or self.cfg.data
        if not root or not Path(root).is_dir():
            raise ImgclsError(f"the run's data folder {root} is not there (point to it with --data DIR)")
        saved = read_splits(self.paths, root, allow_outside=self.cfg.allow_outside_data)
        if saved is not None:
            return saved
        return discover(
            root, val_split=self.cfg.val_split, seed=self.cfg.seed, for_eval=True, csv=csv_options(self.cfg)
        )


def open_saved_run(run_dir: str | Path, *, checkpoint: str = "best") -> SavedRun:
    from imgcls.core.rundir import open_run

    paths = open_run(run_dir, checkpoint=checkpoint)
    cfg = load_run_config(paths.config)
    classes = read_json(paths.classes)
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise ImgclsError(f"{paths.classes}: expected a list of class names")
    if not cfg.model:
        raise ImgclsError(f"{paths.config}: no model recorded")
    return SavedRun(paths, cfg, classes)
