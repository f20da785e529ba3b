"""An ensemble of trained classifiers as one model (``imgcls auto``'s winner when averaging its best trials
measurably beats the best one on validation).

``ensemble:members=efficientnet_lite2|efficientnet_lite1,sizes=260|240,weights=2|1`` builds each member
at its own input size; the input is the largest size's eval crop, resized to each smaller member's (the
same field of view: every eval crop keeps 224/256 of the short side). The output is what a single
classifier gives, so everything downstream (evaluate, predict, export, serve) takes it unchanged: the log
of the weighted mean of the members' softmax probabilities (softmax of it is that mean), or for
multi-label the logit of the mean of their sigmoids.
"""

from __future__ import annotations

import torch
from torch import nn

from imgcls.models.registry import create_model, parse_model_spec, register_model

SEPARATOR = "|"
EPS = 1e-7


class Ensemble(nn.Module):
    def __init__(self, members: list[nn.Module], sizes: list[int], weights: list[float], multilabel: bool):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.sizes = list(sizes)
        total = float(sum(weights))
        self.register_buffer("weights", torch.tensor([w / total for w in weights]), persistent=False)
        self.multilabel = multilabel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = 0.0
        for member, size, weight in zip(self.members, self.sizes, self.weights):
            view = x if x.shape[-1] == size else nn.functional.interpolate(x, size=(size, size), mode="bilinear")
            logits = member(view).float()
            mean = mean + weight * (logits.sigmoid() if self.multilabel else logits.softmax(1))
        mean = mean.clamp(EPS, 1 - EPS) if self.multilabel else mean.clamp_min(EPS)
        return torch.logit(mean) if self.multilabel else mean.log()


def _items(text, kind=str) -> list:
    return [kind(v) for v in str(text).split(SEPARATOR) if str(v).strip()]


@register_model(default_image_size=224, head="members", hidden=True)
def ensemble(
    num_classes: int,
    pretrained: bool = False,
    image_size: int = 224,
    members: str = "",
    sizes: str = "",
    weights: str = "",
    multilabel: bool = False,
) -> nn.Module:
    """Members' weights come from the run's checkpoint (never pretrained here)."""
    specs = _items(members)
    if len(specs) < 2:
        raise ValueError("an ensemble needs two or more members: members=a|b")
    sizes_ = _items(sizes, int) or [image_size] * len(specs)
    weights_ = _items(weights, float) or [1.0] * len(specs)
    if len(sizes_) != len(specs) or len(weights_) != len(specs) or min(weights_) <= 0:
        raise ValueError("members, sizes and weights must list one value per member (weights > 0)")
    if max(sizes_) != image_size:
        raise ValueError(f"the ensemble's input is its largest member's size ({max(sizes_)}), not {image_size}")
    built = []
    for spec, size in zip(specs, sizes_):
        name, kwargs = parse_model_spec(spec)
        built.append(create_model(name, num_classes, pretrained=False, image_size=size, **kwargs))
    return Ensemble(built, sizes_, weights_, bool(multilabel))


def ensemble_spec(members: list[str], sizes: list[int], weights: list[float], multilabel: bool) -> str:
    """The model spec of an ensemble (members must not contain ',' or '|', which the spec uses)."""
    for spec in members:
        if "," in spec or SEPARATOR in spec:
            raise ValueError(f"{spec!r} cannot be an ensemble member (its spec holds ',' or '|')")
    return (
        f"ensemble:members={SEPARATOR.join(members)},sizes={SEPARATOR.join(map(str, sizes))},"
        f"weights={SEPARATOR.join(f'{w:g}' for w in weights)},multilabel={str(multilabel).lower()}"
    )
