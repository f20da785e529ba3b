"""The reference custom model: a 4-stage CNN whose feature map is read by one self-attention layer."""

from __future__ import annotations

import torch
from torch import nn

from imgcls.models.registry import register_model


def _stage(c_in: int, c_out: int, *, padding: int, pool: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, padding=padding), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class AttnCNN(nn.Module):
    """At 224 px the last stage is 256x26x26, i.e. 676 tokens of width 256 for the attention layer."""

    def __init__(self, *, num_classes: int, num_heads: int = 8, width: int = 256, dropout: float = 0.5):
        super().__init__()
        if not isinstance(num_heads, int) or num_heads < 1:
            raise ValueError(f"num_heads must be a whole number >= 1, got {num_heads!r}")
        if width % num_heads:
            raise ValueError(f"width {width} is not divisible by num_heads {num_heads}")
        self.features = nn.Sequential(
            _stage(3, 32, padding=1, pool=False),
            _stage(32, 64, padding=0, pool=True),
            _stage(64, 128, padding=0, pool=True),
            _stage(128, width, padding=0, pool=True),
        )
        self.attn = nn.MultiheadAttention(width, num_heads, batch_first=True)
        self.classifier = nn.Sequential(
            nn.Linear(width, width),
            nn.ReLU(inplace=True),
            nn.BatchNorm1d(width),
            nn.Dropout(dropout),
            nn.Linear(width, num_classes),
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.features(x).flatten(2).transpose(1, 2)  # (B, H*W, C)
        attended, _ = self.attn(tokens, tokens, tokens, need_weights=False)
        return attended.mean(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.forward_features(x))

    @torch.no_grad()
    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W): how much attention each feature-map position receives, averaged over heads and queries."""
        fmap = self.features(x)
        tokens = fmap.flatten(2).transpose(1, 2)
        _, weights = self.attn(tokens, tokens, tokens, need_weights=True, average_attn_weights=True)
        return weights.mean(dim=1).reshape(fmap.shape[0], *fmap.shape[2:])


@register_model(default_image_size=224, head="classifier")
def attn_cnn(
    *, num_classes: int, pretrained: bool = False, image_size: int = 224, num_heads: int = 8, **kw
) -> nn.Module:
    """Custom 4-stage CNN + multi-head self-attention over the feature map (trains from scratch)."""
    return AttnCNN(num_classes=num_classes, num_heads=num_heads, **kw)
