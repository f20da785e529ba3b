"""torchvision architectures with IMAGENET1K_V1 weights through torchvision's own cache."""

from __future__ import annotations

from torch import nn
from torchvision import models as tvm

from imgcls.models.registry import register_model
from imgcls.models.weights import load_hub_state_dict

IMAGENET_CLASSES = 1000


@register_model(default_image_size=224, head="classifier", weights="torchvision IMAGENET1K_V1 (hub cache)")
def efficientnet_b0(*, num_classes: int, pretrained: bool = False, image_size: int = 224) -> nn.Module:
    """torchvision EfficientNet-B0 (ImageNet acc@1 77.7)."""
    model = tvm.efficientnet_b0(weights=None)
    if pretrained:
        weights = tvm.EfficientNet_B0_Weights.IMAGENET1K_V1
        model.load_state_dict(load_hub_state_dict(weights.url, "efficientnet_b0"))
    if num_classes != IMAGENET_CLASSES or not pretrained:
        model.classifier[1] = nn.Linear(model.classifier[1].in_features, num_classes)
    return model


@register_model(
    default_image_size=224, head="heads", weights="torchvision IMAGENET1K_V1 (hub cache)", fixed_image_size=True
)
def vit_b_16(*, num_classes: int, pretrained: bool = False, image_size: int = 224) -> nn.Module:
    """torchvision ViT-B/16 (ImageNet acc@1 81.1); pretrained only at 224 px."""
    if image_size % 16:
        raise ValueError(f"image size {image_size} is not a multiple of the patch size 16")
    model = tvm.vit_b_16(weights=None, image_size=image_size)
    if pretrained:
        weights = tvm.ViT_B_16_Weights.IMAGENET1K_V1
        model.load_state_dict(load_hub_state_dict(weights.url, "vit_b_16"))
    if num_classes != IMAGENET_CLASSES or not pretrained:
        model.heads.head = nn.Linear(model.heads.head.in_features, num_classes)
    return model
