"""``imgcls explain``: where a model looks. Models that expose ``attention_map`` (attn_cnn) show their
own attention; every other model gets Grad-CAM on its last spatial activation (a CNN's last feature map,
a ViT's last token grid), computed with plain autograd hooks."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import torch
from torch import nn

from imgcls.core.errors import BadImageError, ImgclsError
from imgcls.core.files import save_figure
from imgcls.data.decode import load_rgb
from imgcls.engine.predictor import load_predictor


def _token_grid(t: torch.Tensor) -> torch.Tensor | None:
    """(B, N, D) tokens -> (B, D, h, w), dropping leading class/register tokens; None if N is no grid."""
    n = t.shape[1]
    for extra in range(0, 9):
        side = math.isqrt(n - extra) if n > extra else 0
        if side > 1 and side * side == n - extra:
            return t[:, extra:].transpose(1, 2).reshape(t.shape[0], t.shape[2], side, side)
    return None


def grad_cam(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(heat maps (B, h, w) in [0, 1], logits) for each image's predicted class."""
    outputs: list[torch.Tensor] = []

    def keep(_module, _inputs, output):
        if isinstance(output, torch.Tensor) and output.requires_grad and output.dim() in (3, 4):
            output.retain_grad()
            outputs.append(output)

    handles = [m.register_forward_hook(keep) for m in model.modules() if not list(m.children())]
    handles += [m.register_forward_hook(keep) for m in model.modules() if list(m.children())]
    try:
        with torch.enable_grad():
            x = x.clone().requires_grad_(True)
            logits = model(x)
            logits.gather(1, logits.argmax(1, keepdim=True)).sum().backward()
    finally:
        for h in handles:
            h.remove()
    grid = None
    for out in reversed(outputs):  # the last activation (in execution order) that is a spatial grid
        if out.grad is None:
            continue
        if out.dim() == 4 and min(out.shape[2:]) > 1:
            grid, grad = out, out.grad
            break
        tokens, grads = _token_grid(out), _token_grid(out.grad)
        if tokens is not None:
            grid, grad = tokens, grads
            break
    if grid is None:
        raise ImgclsError("no spatial activation found for Grad-CAM in this model")
    cam = torch.relu((grad.mean(dim=(2, 3), keepdim=True) * grid).sum(1)).detach()
    return cam, logits.detach()


def _normalise(maps: torch.Tensor) -> torch.Tensor:
    flat = maps.flatten(1)
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    return ((flat - lo) / (hi - lo).clamp(min=1e-12)).reshape(maps.shape)


def _names(images: list[str]) -> dict[str, str]:
    """A PNG name per image: its stem, or (when two stems collide, cat/n0.jpg and dog/n0.jpg) its
    parent folder and stem, so no picture is written over another."""

    def clean(text: str) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "_", text)

    stems = [Path(p).stem for p in images]
    out = {}
    for p, stem in zip(images, stems):
        name = clean(stem) if stems.count(stem) == 1 else clean(f"{Path(p).parent.name}_{stem}")
        while name + ".png" in out.values():
            name += "_"
        out[p] = name + ".png"
    return out


def explain(run: str | Path, images: list[str], *, out: str | Path | None = None) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    predictor = load_predictor(run, engine="torch")
    model = predictor.model.eval().to(memory_format=torch.contiguous_format)
    folder = Path(out) if out else predictor.paths.root / "explain" if predictor.paths else Path("explain")
    if folder.exists() and not folder.is_dir():
        raise ImgclsError(f"--out {folder} is a file; explain writes one PNG per image into a folder")
    folder.mkdir(parents=True, exist_ok=True)
    names = _names(images)
    written = []
    for image_path in images:
        try:
            image = load_rgb(image_path)
        except BadImageError as exc:
            raise ImgclsError(str(exc)) from None
        x = predictor.transform(image).unsqueeze(0)
        if hasattr(model, "attention_map"):
            heat, method = model.attention_map(x), "attention received"
            with torch.no_grad():
                logits = model(x)
        else:
            heat, logits = grad_cam(model, x)
            method = "Grad-CAM"
        heat = _normalise(heat)
        heat = torch.nn.functional.interpolate(heat[:, None], size=x.shape[2:], mode="bilinear", align_corners=False)
        probs = logits.float().softmax(1)[0]
        top = int(probs.argmax())
        shown = np.clip(x[0].permute(1, 2, 0).numpy() * np.array([0.229, 0.224, 0.225]) + [0.485, 0.456, 0.406], 0, 1)
        fig, axes = plt.subplots(1, 2, figsize=(6.4, 3.5))
        axes[0].imshow(shown)
        axes[1].imshow(shown)
        axes[1].imshow(heat[0, 0].numpy(), cmap="jet", alpha=0.45)
        for ax in axes:
            ax.axis("off")
        fig.suptitle(
            f"{Path(image_path).name}: {predictor.classes[top]} ({float(probs[top]):.2f}) · {method}", fontsize=9
        )
        fig.tight_layout()
        target = folder / names[image_path]
        save_figure(fig, target, dpi=90)
        plt.close(fig)
        written.append(target)
    return written
