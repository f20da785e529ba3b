"""Typed training configuration: defaults < YAML file < command-line flags."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from imgcls.errors import ImgclsError


@dataclass(kw_only=True)
class TrainConfig:
    model: str = "attn_cnn"  # a model spec: name[:key=value,...]
    data: str | None = None
    out: str | None = None
    # The reference recipe.
    epochs: int = 100
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    plateau_factor: float = 0.5
    plateau_patience: int = 3
    image_size: int | None = None  # None: the model's default (224 for the reference models)
    augment: str = "reference"
    # Head-only training: cache K augmented views of backbone features. None: automatic (one view when
    # --augment none, else off); 0: never cache.
    feature_cache: int | None = None
    pretrained: bool | None = None  # None: yes when the model has weights
    finetune: str | None = None  # head | full; None: head when pretrained, else full
    # Data and machinery.
    val_split: float | None = None
    strict: bool = False  # any unreadable image is an error instead of a logged skip
    num_classes: int | None = None  # when set, must match the data
    workers: int | None = None  # None: picked for the machine
    seed: int = 42
    early_stop: int | None = None  # patience in epochs on val_loss
    accelerator: str = "auto"
    devices: str = "1"  # per node: a count, "auto", or a list like "0,1"
    num_nodes: int = 1
    strategy: str = "auto"  # auto | ddp
    sync_bn: bool = False  # synchronise BatchNorm statistics across processes (DDP)
    precision: str | None = None  # None: bf16/16-mixed on CUDA, 32-true on CPU
    compile: bool = False  # torch.compile the model (pays a one-off compile time; for long runs)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELD_NAMES = {f.name for f in fields(TrainConfig)}


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ImgclsError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ImgclsError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ImgclsError(f"{path}: expected a mapping of option: value")
    data = {k.replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(set(data) - FIELD_NAMES)
    if unknown:
        raise ImgclsError(f"{path}: unknown option(s) {', '.join(unknown)}; valid: {', '.join(sorted(FIELD_NAMES))}")
    return data


def _coerce(name: str, value: Any) -> Any:
    """YAML gives strings like '1e-3' for floats; check types against the dataclass defaults."""
    if value is None:
        return None
    default = TrainConfig.__dataclass_fields__[name].default
    kind = type(default) if default is not None else None
    try:
        if kind is bool or name in ("pretrained", "strict", "sync_bn", "compile"):
            if not isinstance(value, bool):
                raise ValueError
            return value
        if kind is int or name in ("image_size", "num_classes", "workers", "early_stop", "feature_cache"):
            if isinstance(value, bool) or float(value) != int(float(value)):
                raise ValueError
            return int(float(value))
        if kind is float or name == "val_split":
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise ImgclsError(f"option {name}: bad value {value!r}") from None


def resolve_config(yaml_path: str | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    values: dict[str, Any] = {}
    if yaml_path:
        values.update(load_yaml(yaml_path))
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return TrainConfig(**{k: _coerce(k, v) for k, v in values.items()})


def dump_config(cfg: TrainConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def load_run_config(path: str | Path) -> TrainConfig:
    data = load_yaml(path)
    return TrainConfig(**{k: _coerce(k, v) for k, v in data.items()})
