"""The optimisation recipe from the config: optimizer, learning-rate schedule (with warm-up), and the
training loss (label smoothing, class weights, mixup/cutmix through timm's soft targets)."""

from __future__ import annotations

import math

import torch
from torch import nn


def build_optimizer(params, cfg) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay
        )
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def warmup_steps(cfg, steps_per_epoch: int) -> int:
    return int(round(cfg.warmup_epochs * steps_per_epoch))


def warmup_scale(step: int, warmup: int) -> float:
    """The one warm-up, for every schedule: a step's learning rate is the schedule's times this, rising
    linearly from 1% at the first step to 100% when warm-up ends (``ClassifierModule.optimizer_step``)."""
    return 1.0 if step >= warmup else 0.01 + 0.99 * step / warmup


def build_schedule(optimizer, cfg, total_steps: int, warmup: int = 0) -> dict:
    """A Lightning ``lr_scheduler`` entry: the recipe's ReduceLROnPlateau on val_loss, a cosine decay per
    step (starting when warm-up ends, ``warmup`` steps in), or one-cycle. Warm-up itself is not here."""
    if cfg.scheduler == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=[g["lr"] for g in optimizer.param_groups], total_steps=max(1, total_steps)
        )
        return {"scheduler": sched, "interval": "step"}
    if cfg.scheduler == "cosine":

        def factor(step: int) -> float:
            progress = max(0, step - warmup) / max(1, total_steps - warmup)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

        return {"scheduler": torch.optim.lr_scheduler.LambdaLR(optimizer, factor), "interval": "step"}
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=cfg.plateau_factor, patience=cfg.plateau_patience
    )
    return {"scheduler": plateau, "monitor": "val_loss"}


class TrainLoss(nn.Module):
    """Cross-entropy with label smoothing and class weights; with mixup/cutmix, timm's Mixup turns each
    batch into mixed images and soft targets (smoothing folded in) and the loss is soft-target CE.

    Multi-label (``cfg.task``): binary cross-entropy per label with optional ``pos_weight``; label
    smoothing moves the 0/1 targets towards 1/2; mixup/cutmix mix the images with timm and the multi-hot
    targets with the same weight (soft multi-hot targets)."""

    def __init__(self, cfg, num_classes: int, class_weights: torch.Tensor | None = None, pos_weight=None):
        super().__init__()
        self.multilabel = getattr(cfg, "task", "single") == "multilabel"
        self.mixup = None
        if cfg.mixup > 0 or cfg.cutmix > 0:
            from timm.data import Mixup

            self.mixup = Mixup(
                mixup_alpha=cfg.mixup,
                cutmix_alpha=cfg.cutmix,
                label_smoothing=0.0 if self.multilabel else cfg.label_smoothing,
                num_classes=num_classes,
            )
        self.register_buffer("weight", class_weights if class_weights is not None else torch.ones(num_classes))
        self.register_buffer("pos_weight", pos_weight if pos_weight is not None else torch.ones(num_classes))
        self.smoothing = cfg.label_smoothing

    def mix(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(possibly mixed images, targets: class indices or soft distributions; multi-hot, maybe soft)."""
        if self.mixup is None or len(y) % 2:  # timm's Mixup pairs the batch; an odd one trains unmixed
            return x, y
        if self.multilabel:
            lam = self.mixup._mix_batch(x)  # mixes x in place with the reversed batch, as timm's __call__
            return x, y.float() * lam + y.float().flip(0) * (1.0 - lam)
        return self.mixup(x, y)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.multilabel:
            target = target.float()
            if self.smoothing:
                target = target * (1.0 - self.smoothing) + 0.5 * self.smoothing
            return nn.functional.binary_cross_entropy_with_logits(logits.float(), target, pos_weight=self.pos_weight)
        if target.dim() == 2:  # soft targets from mixup/cutmix
            log_p = logits.float().log_softmax(dim=1)
            per_sample = -(target * log_p * self.weight).sum(dim=1)
            return per_sample.mean()
        return nn.functional.cross_entropy(logits.float(), target, weight=self.weight, label_smoothing=self.smoothing)


def balanced_pos_weight(labels: list[tuple[int, ...]], num_classes: int) -> torch.Tensor:
    """Per label: images without it / images with it (BCE's pos_weight), so a rare label's positives
    count as much as its negatives."""
    positives = torch.zeros(num_classes)
    for label in labels:
        positives[list(label)] += 1
    return (len(labels) - positives) / positives.clamp(min=1)


def balanced_class_weights(labels: list[int], num_classes: int) -> torch.Tensor:
    """n / (classes x count): 1 for a class of average size, larger for rare ones (sklearn's 'balanced')."""
    counts = torch.bincount(torch.tensor(labels), minlength=num_classes).float()
    return len(labels) / (num_classes * counts.clamp(min=1))
