"""The one place models are registered and built.

Builders are small functions ``fn(num_classes, pretrained, image_size, **kwargs) -> nn.Module``
that pick weights and swap the head; ``create_model`` is the only way commands build a model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import yaml
from torch import nn

from imgcls.core.errors import ImgclsError
from imgcls.models.info import ModelInfo

__all__ = ["ModelInfo", "create_model", "get_model_info", "list_models", "parse_model_spec", "register_model"]


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(
    *,
    default_image_size: int = 224,
    head: str,
    weights: str | None = None,
    min_image_size: int = 32,
    fixed_image_size: bool = False,
    hidden: bool = False,
):
    def decorator(fn: Callable[..., nn.Module]):
        name = fn.__name__
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = ModelInfo(
            name=name,
            builder=fn,
            default_image_size=default_image_size,
            head=head,
            weights=weights,
            min_image_size=min_image_size,
            fixed_image_size=fixed_image_size,
            hidden=hidden,
            description=(fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else "",
        )
        return fn

    return decorator


def _ensure_loaded() -> None:
    # Importing the builder modules fills the registry.
    from imgcls.models import attn_cnn, ensemble, timm_models, torchvision_models  # noqa: F401


def list_models() -> list[str]:
    """The models a user chooses from (hidden ones, like the ensemble, are built from a run's record)."""
    _ensure_loaded()
    return sorted(name for name, info in _REGISTRY.items() if not info.hidden)


def get_model_info(name: str) -> ModelInfo:
    """A registered model, or an entry made on demand for ``timm:<name>`` / ``tv:<name>``."""
    _ensure_loaded()
    from imgcls.models.hub_models import hub_info, is_hub_name

    if is_hub_name(name):
        return hub_info(name)
    if name not in _REGISTRY:
        raise ImgclsError(
            f"unknown model {name!r}; valid models: {', '.join(list_models())}, or any timm:<name> / tv:<name>"
        )
    return _REGISTRY[name]


def parse_model_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"attn_cnn:num_heads=4,dropout=0.3"`` -> ``("attn_cnn", {"num_heads": 4, "dropout": 0.3})``;
    ``"timm:resnet18:drop_rate=0.1"`` -> ``("timm:resnet18", {"drop_rate": 0.1})``."""
    spec = spec.strip()
    hub, _, spec = spec.partition(":") if spec.startswith(("timm:", "tv:")) else ("", "", spec)
    name, _, rest = spec.partition(":")
    name = f"{hub}:{name}" if hub else name
    if not name:
        raise ImgclsError(f"bad model spec {spec!r}: expected name[:key=value,...]")
    get_model_info(name)
    kwargs: dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip() or not value.strip():
            raise ImgclsError(f"bad model spec {spec!r}: {item!r} is not key=value")
        kwargs[key.strip()] = yaml.safe_load(value.strip())
    return name, kwargs


def spec_to_dirname(spec: str) -> str:
    """A filesystem-safe run-directory name for a model spec."""
    name, kwargs = parse_model_spec(spec)
    return (name + "".join(f"-{k}{v}" for k, v in kwargs.items())).replace("/", "_").replace(":", "-")


def create_model(
    name: str,
    num_classes: int,
    pretrained: bool = False,
    image_size: int | None = None,
    **kwargs: Any,
) -> nn.Module:
    info = get_model_info(name)
    if pretrained and not info.has_weights:
        raise ImgclsError(f"model {name!r} has no pretrained weights; use --no-pretrained")
    if num_classes < 2:
        raise ImgclsError(f"num_classes must be at least 2, got {num_classes}")
    size = image_size or info.default_image_size
    if size < info.min_image_size:
        raise ImgclsError(f"model {name!r} needs --image-size >= {info.min_image_size}, got {size}")
    if pretrained and info.fixed_image_size and size != info.default_image_size:
        raise ImgclsError(
            f"pretrained {name!r} works only at {info.default_image_size} px (got {size}); "
            f"use --image-size {info.default_image_size} or --no-pretrained"
        )
    try:
        return info.builder(num_classes=num_classes, pretrained=pretrained, image_size=size, **kwargs)
    except (TypeError, ValueError, ArithmeticError, AssertionError, RuntimeError) as exc:
        raise ImgclsError(
            f"bad arguments for model {name!r}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from None


def get_head(model: nn.Module, name: str) -> nn.Module:
    return model.get_submodule(get_model_info(name).head)


def feature_identity(spec: str, info: ModelInfo, *, pretrained: bool, seed: int, cut: str) -> dict:
    """What a frozen prefix's outputs depend on besides the files and the transform: the feature cache's
    key for training (``plan``) and ``check-data`` alike, so a head-only run and a check share entries."""
    weights = info.weights if pretrained else f"random-init-seed{seed}"
    return {"model": spec, "pretrained": pretrained, "weights": weights, "cut": cut}
