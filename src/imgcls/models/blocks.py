"""A model as an ordered list of steps, so it can be cut anywhere: ``--finetune last:N`` freezes the
steps before the last N blocks, and the activation cache stores what the frozen part outputs.

``model_sequence(model)`` returns steps whose composition is exactly ``model.forward`` (a test checks it
for every registered model). Each step shares its weights with the model; the list is a view, never
saved. A step is a *block* (counted by ``last:N``) or glue without weights of its own (pooling,
flattening, token selection). The last step is the head, which always trains.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from imgcls.core.errors import ImgclsError


class Step(nn.Module):
    """``fn(x)`` as a module; ``parts`` are registered so train/eval modes and exports see them."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], **parts: nn.Module):
        super().__init__()
        self.fn = fn
        for name, part in parts.items():
            self.add_module(name, part)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


@dataclass
class Stage:
    name: str
    module: nn.Module
    block: bool  # counted by last:N


def _timm_efficientnet(m) -> list[Stage]:
    stages = [Stage("stem", nn.Sequential(m.conv_stem, m.bn1), True)]
    for i, stage in enumerate(m.blocks):
        stages += [Stage(f"blocks.{i}.{j}", block, True) for j, block in enumerate(stage)]
    stages.append(Stage("conv_head", nn.Sequential(m.conv_head, m.bn2), True))
    stages.append(Stage("pool", m.global_pool, False))
    drop = m.drop_rate
    stages.append(
        Stage(
            "head",
            Step(
                lambda x: m.classifier(nn.functional.dropout(x, drop, m.classifier.training)), classifier=m.classifier
            ),
            True,
        )
    )
    return stages


def _tv_efficientnet(m) -> list[Stage]:
    stages = [Stage("features.0", m.features[0], True)]
    for i in range(1, len(m.features) - 1):
        stages += [Stage(f"features.{i}.{j}", block, True) for j, block in enumerate(m.features[i])]
    last = len(m.features) - 1
    stages.append(Stage(f"features.{last}", m.features[last], True))
    stages.append(Stage("pool", nn.Sequential(m.avgpool, nn.Flatten(1)), False))
    stages.append(Stage("head", m.classifier, True))
    return stages


def _tv_vit(m) -> list[Stage]:
    enc = m.encoder

    def embed(x):
        tokens = m._process_input(x)
        tokens = torch.cat([m.class_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        return enc.dropout(tokens + enc.pos_embedding)

    stages = [Stage("embed", Step(embed, conv_proj=m.conv_proj, dropout=enc.dropout), True)]
    stages += [Stage(f"encoder.layers.{i}", layer, True) for i, layer in enumerate(enc.layers)]
    stages.append(Stage("encoder.ln", enc.ln, True))
    stages.append(Stage("class_token", Step(lambda x: x[:, 0]), False))
    stages.append(Stage("head", m.heads, True))
    return stages


def _timm_vit(m) -> list[Stage]:
    def embed(x):
        return m.norm_pre(m.patch_drop(m._pos_embed(m.patch_embed(x))))

    parts = dict(patch_embed=m.patch_embed, pos_drop=m.pos_drop, patch_drop=m.patch_drop, norm_pre=m.norm_pre)
    stages = [Stage("embed", Step(embed, **parts), True)]
    stages += [Stage(f"blocks.{i}", block, True) for i, block in enumerate(m.blocks)]
    stages.append(Stage("norm", m.norm, True))
    stages.append(Stage("pool", Step(lambda x: m.fc_norm(m.pool(x)), fc_norm=m.fc_norm), False))
    stages.append(Stage("head", nn.Sequential(m.head_drop, m.head), True))
    return stages


def _attn_cnn(m) -> list[Stage]:
    def attend(fmap):
        tokens = fmap.flatten(2).transpose(1, 2)
        return m.attn(tokens, tokens, tokens, need_weights=False)[0].mean(dim=1)

    stages = [Stage(f"features.{i}", stage, True) for i, stage in enumerate(m.features)]
    stages.append(Stage("attn", Step(attend, attn=m.attn), True))
    stages.append(Stage("head", m.classifier, True))
    return stages


def _resnet(m, stem: list[nn.Module], pool: nn.Module) -> list[Stage]:
    stages = [Stage("stem", nn.Sequential(*stem), True)]
    for layer in ("layer1", "layer2", "layer3", "layer4"):
        stages += [Stage(f"{layer}.{i}", block, True) for i, block in enumerate(getattr(m, layer))]
    return stages + [Stage("pool", pool, False), Stage("head", m.fc, True)]


def _tv_resnet(m) -> list[Stage]:
    return _resnet(m, [m.conv1, m.bn1, m.relu, m.maxpool], nn.Sequential(m.avgpool, nn.Flatten(1)))


def _timm_resnet(m) -> list[Stage]:
    def pool(x):
        x = m.global_pool(x)
        return nn.functional.dropout(x, float(m.drop_rate), m.fc.training) if m.drop_rate else x

    return _resnet(m, [m.conv1, m.bn1, m.act1, m.maxpool], Step(pool, global_pool=m.global_pool))


def _generic(m) -> list[Stage]:
    """Any other model: one body block and its classifier, enough for head-only training. timm models
    split at ``forward_head(pre_logits=True)``; others at their last linear layer."""
    if hasattr(m, "forward_features") and hasattr(m, "forward_head") and hasattr(m, "get_classifier"):
        head = m.get_classifier()
        if isinstance(head, nn.Module) and not isinstance(head, nn.Identity):
            body = Step(lambda x: m.forward_head(m.forward_features(x), pre_logits=True))
            return [Stage("body", body, True), Stage("head", head, True)]
    from imgcls.models.hub_models import last_linear

    path = last_linear(m)
    return [Stage("body", _without(m, path), True), Stage("head", m.get_submodule(path), True)]


def _without(model: nn.Module, path: str) -> nn.Module:
    """``model`` with the module at ``path`` replaced by Identity, sharing every weight (only the
    modules on the path are shallow-copied, so ``model`` itself is untouched)."""
    import copy

    parts = path.split(".")
    root = copy.copy(model)
    root._modules = dict(model._modules)
    parent = root
    for part in parts[:-1]:
        child = copy.copy(parent._modules[part])
        child._modules = dict(child._modules)
        parent._modules[part] = child
        parent = child
    parent._modules[parts[-1]] = nn.Identity()
    return root


def _families() -> list[tuple[type, Callable]]:
    import timm.models.efficientnet as timm_eff
    import timm.models.resnet as timm_resnet
    import timm.models.vision_transformer as timm_vit
    import torchvision.models as tvm

    from imgcls.models.attn_cnn import AttnCNN

    return [
        (AttnCNN, _attn_cnn),
        (timm_eff.EfficientNet, _timm_efficientnet),
        (timm_vit.VisionTransformer, _timm_vit),
        (tvm.EfficientNet, _tv_efficientnet),
        (tvm.VisionTransformer, _tv_vit),
        (tvm.ResNet, _tv_resnet),
        (timm_resnet.ResNet, _timm_resnet),
    ]


def model_sequence(model: nn.Module) -> list[Stage]:
    for cls, build in _families():
        if type(model) is cls:
            return build(model)
    return _generic(model)


def blocks(model: nn.Module) -> list[str]:
    """The names of the blocks ``last:N`` counts, in forward order (the head excluded)."""
    return [s.name for s in model_sequence(model)[:-1] if s.block]


def split(model: nn.Module, n: int) -> tuple[nn.Sequential, nn.Sequential]:
    """(frozen prefix, trainable suffix) for ``last:n``; n = 0 is head-only (the prefix then ends with
    the pooled features the head reads)."""
    stages = model_sequence(model)
    counted = [i for i, s in enumerate(stages[:-1]) if s.block]
    if not 0 <= n <= len(counted):
        raise ImgclsError(f"--finetune last:{n}: this model has {len(counted)} blocks (use 1..{len(counted)})")
    cut = counted[-n] if n else len(stages) - 1
    # Glue right before the cut (pooling) goes with the prefix, so the cache stores the smallest tensor.
    return nn.Sequential(*(s.module for s in stages[:cut])), nn.Sequential(*(s.module for s in stages[cut:]))
