"""Typed training configuration: defaults < YAML file < command-line flags (or Python keywords).

``TrainConfig`` is the single source: each field's type hint decides how values are coerced, its
metadata (help, choices, range, resumable; ``core/options.py``) generates the CLI flag and the keyword
check, validates YAML, flags and keywords alike, and says whether ``--resume`` may change it. One new
option is one new field.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from imgcls.core import options
from imgcls.core.errors import ImgclsError
from imgcls.core.options import opt, option_fields

AUGMENTS = ("reference", "reference-torchvision", "light", "none")
PRECISIONS = ("32-true", "32", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true", "64")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
STRATEGIES = ("auto", "ddp", "ddp_spawn", "ddp_find_unused_parameters_true")
SEED_MAX = 2**32 - 1  # numpy's and Lightning's seed range


def _check_devices(value: str) -> str | None:
    text = value.strip()
    if text in ("auto", "-1") or text.isdigit():
        return None
    parts = [p.strip() for p in text.split(",")]
    if len(parts) > 1 and all(p.isdigit() for p in parts if p):
        return None
    return "expected a count, 'auto' or a list like 0,1"


def parse_finetune(value: str) -> int | None:
    """``last:N`` -> N; ``head`` -> 0 (only the head trains); ``full`` -> None (everything trains)."""
    if value == "full":
        return None
    if value == "head":
        return 0
    prefix, _, number = value.partition(":")
    if prefix != "last" or not number.isdigit() or int(number) < 1:
        raise ImgclsError(f"--finetune {value!r}: expected head, full or last:N with N >= 1")
    return int(number)


def _check_finetune(value: str) -> str | None:
    try:
        parse_finetune(value)
    except ImgclsError:
        return "expected head, full or last:N (N >= 1)"
    return None


@dataclass(kw_only=True)
class TrainConfig:
    model: str | None = opt(None, "model spec name[:key=value,...], e.g. attn_cnn:num_heads=4 (see: imgcls models)")
    data: str | None = opt(None, "dataset folder", resumable=True)
    out: str | None = opt(None, "run folder (default runs/<model>)")
    # The reference recipe.
    epochs: int = opt(100, "number of epochs (recipe: 100)", lo=1, hi=100_000, resumable=True)
    batch_size: int = opt(64, "batch size per device (recipe: 64)", lo=1, hi=65_536)
    lr: float = opt(1e-3, "Adam learning rate (recipe: 1e-3)", lo=0, hi=10, lo_open=True)
    weight_decay: float = opt(1e-4, "Adam weight decay (recipe: 1e-4)", lo=0, hi=10)
    plateau_factor: float = opt(0.5, "ReduceLROnPlateau factor (recipe: 0.5)", lo=0, hi=1, lo_open=True, hi_open=True)
    plateau_patience: int = opt(3, "ReduceLROnPlateau patience in epochs (recipe: 3)", lo=0, hi=100_000)
    image_size: int | None = opt(
        None, "square input size in px (default: the model's, 224 for the reference)", lo=16, hi=2048
    )
    augment: str = opt("reference", "train augmentation", choices=AUGMENTS)
    feature_cache: int | None = opt(
        None,
        "head-only: precompute K augmented views of backbone features (0: never; default: 1 with --augment none)",
        lo=0,
        hi=256,
    )
    pretrained: bool | None = opt(None, "start from ImageNet weights (default: when the model has them)")
    finetune: str | None = opt(
        None, "head (frozen backbone) | full; default head when pretrained", check=_check_finetune
    )
    # Recipe knobs beyond the reference (all off by default: the reference recipe trains exactly as written).
    optimizer: str = opt("adam", "optimizer", choices=("adam", "adamw", "sgd"))
    momentum: float = opt(0.9, "SGD momentum", lo=0, hi=1, hi_open=True)
    nesterov: bool = opt(False, "Nesterov momentum for SGD")
    scheduler: str = opt(
        "plateau",
        "learning-rate schedule: ReduceLROnPlateau on val_loss (recipe), cosine decay per step, or one-cycle",
        choices=("plateau", "cosine", "onecycle"),
    )
    lr_decay: float = opt(
        1.0,
        "discriminative learning rates: each block's lr is this times the next block's, going back from "
        "the head (fastai-style, e.g. 0.5; 1: one lr for all)",
        lo=0,
        hi=1,
        lo_open=True,
    )
    warmup_epochs: float = opt(0.0, "linear learning-rate warm-up from 1% over this many epochs", lo=0, hi=1000)
    label_smoothing: float = opt(0.0, "label smoothing of the cross-entropy targets", lo=0, hi=1, hi_open=True)
    mixup: float = opt(0.0, "mixup alpha (timm Mixup, soft-target loss; 0: off)", lo=0, hi=10)
    cutmix: float = opt(0.0, "cutmix alpha (timm Mixup; 0: off)", lo=0, hi=10)
    ema: float | None = opt(
        None,
        "keep an exponential moving average of the weights with this decay (e.g. 0.999); "
        "validation, best.ckpt and everything after use the averaged weights",
        lo=0,
        hi=1,
        lo_open=True,
        hi_open=True,
    )
    class_weights: str = opt(
        "none", "weight the loss by inverse class frequency (balanced)", choices=("none", "balanced")
    )
    sampler: str = opt(
        "shuffle",
        "training order: shuffle, or balanced (draw every class equally often)",
        choices=("shuffle", "balanced"),
    )
    logger: list[str] | None = opt(
        None,
        "also log to csv | tensorboard | mlflow (into the run folder; metrics.csv is always written)",
        choices=("csv", "tensorboard", "mlflow"),
        resumable=True,
    )
    freeze: list[str] | None = opt(
        None,
        "module-name globs to freeze on top of --finetune (no gradient, left out of the optimizer, "
        "BatchNorm/Dropout in eval mode), e.g. attn or 'features.0*'",
    )
    # Data and machinery.
    val_split: float | None = opt(
        None,
        "hold out this fraction of the training images for validation (stratified)",
        lo=0,
        hi=1,
        lo_open=True,
        hi_open=True,
    )
    task: str = opt(
        "auto",
        "single: one class per image; multilabel: any number of labels per image (auto: from the data)",
        choices=("auto", "single", "multilabel"),
    )
    labels: str | None = opt(None, "CSV of labels (default: train.csv, labels.csv or train_labels.csv in --data)")
    images: str | None = opt(
        None, "folder the label CSV names images in (default: train_images/, train/, images/, train-jpg/ or --data)"
    )
    image_col: str | None = opt(None, "the label CSV's image column (default: the one whose values are image files)")
    label_col: str | None = opt(
        None, "the label CSV's label column, or its one-hot class columns separated by commas (default: detected)"
    )
    label_sep: str | None = opt(None, "separator of the labels in a tags column (default: whitespace)")
    skip_missing: bool = opt(
        False, "train without label-CSV rows whose image file is missing (listed in bad_files.txt)"
    )
    allow_outside_data: bool = opt(
        False,
        "read images that the data names outside its folder (../ or absolute paths in a label CSV or meta list); "
        "off, so a downloaded dataset cannot pull in other files of yours",
    )
    exclude: str | None = opt(
        None, "CSV of images to train without (a path column, e.g. an edited check-data label_issues.csv)"
    )
    relabel: str | None = opt(None, "CSV of label corrections to apply (path,suggested), e.g. from check-data")
    pos_weight: str = opt(
        "none",
        "multi-label: weight each label's positives by its negatives/positives ratio in training (balanced)",
        choices=("none", "balanced"),
    )
    eval_crop: bool | None = opt(
        None,
        "centre-crop at evaluation, as Resize(256)+CenterCrop(224) (default: yes for single-label; multi-label "
        "resizes the whole image, so labels near the border are not cut away)",
    )
    strict: bool = opt(False, "stop on any unreadable image (exit 2) instead of skipping it", resumable=True)
    num_classes: int | None = opt(None, "expected number of classes; checked against the data", lo=2, hi=1_000_000)
    workers: int | None = opt(None, "DataLoader workers (default: cores - 1)", lo=0, hi=256, resumable=True)
    data_pipeline: str = opt(
        "auto",
        "how images reach the model: decoded and augmented in loader workers, or decoded once into a uint8 "
        "store and augmented as batches on the device (auto: tensor on CUDA, workers on CPU)",
        choices=("auto", "workers", "tensor"),
        resumable=True,
    )
    decode_size: int | None = opt(
        None,
        "short side of the images kept by --data-pipeline tensor (default: the eval resize, 256 at 224 px)",
        lo=16,
        hi=8192,
        resumable=True,
    )
    seed: int = opt(42, "random seed", lo=0, hi=SEED_MAX)
    early_stop: int | None = opt(
        None, "stop after this many epochs without a lower val_loss", lo=1, hi=100_000, resumable=True
    )
    accelerator: str = opt("auto", "Lightning accelerator", choices=ACCELERATORS, resumable=True)
    devices: str = opt("1", "devices per node: a count, auto, or a list like 0,1", resumable=True, check=_check_devices)
    num_nodes: int = opt(1, "machines taking part (DDP; launched by torchrun or SLURM)", lo=1, hi=4096, resumable=True)
    strategy: str = opt("auto", "Lightning strategy", choices=STRATEGIES, resumable=True)
    sync_bn: bool = opt(False, "synchronise BatchNorm statistics across DDP processes")
    precision: str | None = opt(
        None, "Lightning precision (default: bf16/16-mixed on CUDA, 32-true on CPU)", choices=PRECISIONS
    )
    compile: bool = opt(False, "torch.compile the model (one-off compile time; pays off on long runs)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELDS = option_fields(TrainConfig)
RESUMABLE = frozenset(name for name, f in FIELDS.items() if f.metadata["resumable"])


def coerce(name: str, value: Any) -> Any:
    """``value`` (from Python, YAML or a flag) as the TrainConfig field's type, checked."""
    return options.coerce(TrainConfig, name, value)


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ImgclsError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ImgclsError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ImgclsError(f"{path}: expected a mapping of option: value")
    bad_keys = [k for k in data if not isinstance(k, str)]
    if bad_keys:
        raise ImgclsError(f"{path}: option names must be words, got {', '.join(map(repr, bad_keys))}")
    data = {k.replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise ImgclsError(f"{path}: unknown option(s) {', '.join(unknown)}; valid: {', '.join(sorted(FIELDS))}")
    return data


def build(values: dict[str, Any]) -> TrainConfig:
    return options.build(TrainConfig, values)


def resolve_config(yaml_path: str | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    values: dict[str, Any] = {}
    if yaml_path:
        values.update(load_yaml(yaml_path))
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return build(values)


def dump_config(cfg: TrainConfig, path: str | Path) -> None:
    from imgcls.core.files import atomic_write_text

    atomic_write_text(Path(path), yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def load_run_config(path: str | Path) -> TrainConfig:
    return build(load_yaml(path))


def differing_fields(saved: TrainConfig, wanted: TrainConfig, *, ignore=RESUMABLE | {"out"}) -> list[str]:
    """Fields (other than those a resume may change) whose values differ between two configs."""
    return [name for name in FIELDS if name not in ignore and getattr(saved, name) != getattr(wanted, name)]


def add_config_flags(parser, *, exclude: set[str] = frozenset(), only: set[str] | None = None) -> None:
    options.add_flags(parser, TrainConfig, exclude=exclude, only=only)


def config_overrides(args) -> dict[str, Any]:
    """The fields set on the command line."""
    return options.given(TrainConfig, args)
