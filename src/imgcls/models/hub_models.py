"""Any timm or torchvision classifier by name: ``timm:<name>[.<pretrained tag>]`` and ``tv:<name>``.

The registry answers these names with an entry made on demand (``hub_info``), so ``create_model`` stays
the only way a model is built. Pretrained weights come through each library's own cache: the Hugging
Face hub cache for timm, ``$TORCH_HOME/hub/checkpoints`` for torchvision. When they are missing and
cannot be fetched, the error names the file or repository and the folder to put it in; random weights
are never substituted.
"""

from __future__ import annotations

import functools
import os

from torch import nn

from imgcls.core.errors import ImgclsError

PREFIXES = ("timm:", "tv:")


def is_hub_name(name: str) -> bool:
    return name.startswith(PREFIXES)


def last_linear(model: nn.Module) -> str:
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ImgclsError(f"{type(model).__name__} has no linear classifier layer to replace")
    return linears[-1]


def _set_submodule(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, leaf = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


def _timm_cached(cfg) -> bool:
    repo = getattr(cfg, "hf_hub_id", None)
    if not repo:
        return False
    from huggingface_hub import try_to_load_from_cache

    return any(isinstance(try_to_load_from_cache(repo, f), str) for f in ("model.safetensors", "pytorch_model.bin"))


def _timm_info(name: str):
    import timm

    from imgcls.models.info import ModelInfo

    arch = name.removeprefix("timm:")
    base = arch.split(".")[0]
    if not timm.is_model(base):
        close = timm.list_models(f"*{base}*")[:8]
        hint = f"; similar: {', '.join(close)}" if close else "; see: imgcls models --all --filter WORD"
        raise ImgclsError(f"unknown timm model {base!r}{hint}")
    try:
        cfg = timm.models.get_pretrained_cfg(arch)
    except Exception:  # an unknown pretrained tag
        cfg = None
    size = int(cfg.input_size[-1]) if cfg is not None and getattr(cfg, "input_size", None) else 224
    has_weights = cfg is not None and bool(getattr(cfg, "hf_hub_id", None) or getattr(cfg, "url", None))

    def build(*, num_classes: int, pretrained: bool = False, image_size: int = size, **kwargs) -> nn.Module:
        if pretrained and os.environ.get("IMGCLS_OFFLINE", "") not in ("", "0") and not _timm_cached(cfg):
            raise _missing_timm(arch, cfg, "IMGCLS_OFFLINE is set, so no download was tried")
        if image_size != size:  # ViT-style models take their input size (position embeddings follow it)
            try:
                return timm.create_model(
                    arch, pretrained=pretrained, num_classes=num_classes, img_size=image_size, **kwargs
                )
            except TypeError as exc:
                if "img_size" not in str(exc):
                    raise
        try:
            return timm.create_model(arch, pretrained=pretrained, num_classes=num_classes, **kwargs)
        except (TypeError, ValueError):
            raise
        except Exception as exc:  # network and hub failures come in many types
            if pretrained:
                raise _missing_timm(arch, cfg, f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}") from None
            raise

    weights = f"timm via the Hugging Face hub ({getattr(cfg, 'hf_hub_id', None) or 'url'})" if has_weights else None
    return ModelInfo(name=name, builder=build, default_image_size=size, head="", weights=weights)


def _missing_timm(arch: str, cfg, why: str) -> ImgclsError:
    from huggingface_hub.constants import HF_HUB_CACHE

    repo = getattr(cfg, "hf_hub_id", None) or "?"
    return ImgclsError(
        f"pretrained weights for timm:{arch} are not cached and could not be downloaded ({why}).\n"
        f"  repository: {repo}\n  folder:     {HF_HUB_CACHE}\n"
        "Download them where there is internet (huggingface-cli download REPO) and copy the cache folder, "
        "or train from scratch with --no-pretrained."
    )


def _tv_info(name: str):
    import torchvision.models as tvm

    from imgcls.models.info import ModelInfo
    from imgcls.models.weights import load_hub_state_dict

    arch = name.removeprefix("tv:")
    classifiers = set(tvm.list_models(module=tvm))
    if arch not in classifiers:
        close = sorted(n for n in classifiers if arch[:4] in n)[:8]
        raise ImgclsError(
            f"unknown torchvision classifier {arch!r}" + (f"; similar: {', '.join(close)}" if close else "")
        )
    try:
        weights = tvm.get_model_weights(arch).DEFAULT
    except (ValueError, AttributeError):
        weights = None
    size = int(weights.transforms().crop_size[0]) if weights is not None else 224

    def build(*, num_classes: int, pretrained: bool = False, image_size: int = size, **kwargs) -> nn.Module:
        if arch.startswith("vit_") and image_size != size:
            if pretrained:
                raise ValueError(
                    f"pretrained {name} works only at {size} px (got {image_size}); use --image-size {size}"
                )
            kwargs.setdefault("image_size", image_size)
        if arch in ("googlenet", "inception_v3"):
            kwargs.setdefault("init_weights", False)  # torchvision's new default (its old one is slow)
        model = tvm.get_model(arch, weights=None, **kwargs)
        if pretrained:
            model.load_state_dict(load_hub_state_dict(weights.url, name))
        if getattr(model, "aux_logits", False):
            # GoogLeNet / Inception v3: train on the main logits only (the auxiliary heads return a tuple
            # in training, and their loss is a recipe of its own).
            model.aux_logits = False
            for attr in ("aux1", "aux2", "AuxLogits"):
                if hasattr(model, attr):
                    setattr(model, attr, None)
        if num_classes != 1000 or not pretrained:
            path = last_linear(model)
            _set_submodule(model, path, nn.Linear(model.get_submodule(path).in_features, num_classes))
        return model

    source = f"torchvision {weights.name} (hub cache)" if weights is not None else None
    return ModelInfo(name=name, builder=build, default_image_size=size, head="", weights=source)


@functools.lru_cache(maxsize=64)
def hub_info(name: str):
    return _timm_info(name) if name.startswith("timm:") else _tv_info(name)


def list_hub_models(pattern: str | None = None) -> list[str]:
    import timm
    import torchvision.models as tvm

    timm_names = [f"timm:{n}" for n in timm.list_models(f"*{pattern}*" if pattern else "")]
    tv_names = [f"tv:{n}" for n in sorted(tvm.list_models(module=tvm)) if not pattern or pattern in n]
    return tv_names + timm_names


def weights_cached(name: str) -> bool:
    """Whether ``name``'s pretrained weights are already on this machine (no download needed)."""
    if name.startswith("timm:"):
        import timm

        try:
            return _timm_cached(timm.models.get_pretrained_cfg(name.removeprefix("timm:")))
        except Exception:
            return False
    import os.path

    import torchvision.models as tvm

    from imgcls.models.weights import hub_checkpoint_dir

    try:
        url = tvm.get_model_weights(name.removeprefix("tv:")).DEFAULT.url
    except (ValueError, AttributeError):
        return False
    return (hub_checkpoint_dir() / os.path.basename(url)).is_file()
