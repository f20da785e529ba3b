"""The LightningModule: the model cut at its fine-tune point, the recipe's loss, optimizer, schedule and
warm-up (``recipe.py``), and the validation metrics (accuracy, or mAP for multi-label) best.ckpt is chosen by."""

from __future__ import annotations

from dataclasses import dataclass

import lightning as L
import torch
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from imgcls.engine.recipe import TrainLoss, build_optimizer, build_schedule, warmup_scale, warmup_steps
from imgcls.models.freeze import apply_freeze, freeze_eval_mode


class FrozenPrefix:
    """The frozen front of a model (for head-only training: the backbone), run under no_grad.

    Deliberately not an ``nn.Module``: its weights are the model's own and are saved once, under
    ``model.*``. The engine is chosen on the first call, when the weights are final (after a resume has
    restored them) and the device is known: ONNX Runtime on CPU when installed, else PyTorch.
    """

    def __init__(self, module: nn.Module, image_size: int):
        self.module, self.image_size = module, image_size
        self.predictor = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.predictor is None:
            from imgcls.engine.predictor import predictor_for_module

            engine = None if x.device.type == "cpu" else "torch"
            self.predictor = predictor_for_module(self.module, self.image_size, engine=engine)
        with torch.no_grad():
            return self.predictor.run(x).to(x.device)

    def describe(self) -> dict | None:
        return None if self.predictor is None else self.predictor.describe()


@dataclass
class _Parts:
    suffix: nn.Module | None
    prefix: nn.Module | None = None


class ClassifierModule(L.LightningModule):
    def __init__(
        self,
        model: nn.Module,
        *,
        num_classes: int,
        recipe,
        class_weights: torch.Tensor | None = None,
        pos_weight: torch.Tensor | None = None,
        suffix: nn.Module | None = None,
        prefix: nn.Module | None = None,
        cached: bool = False,
        frozen: list[str] | None = None,
    ):
        """``suffix``: the part that trains (a view sharing the model's weights: the head, or the last N
        blocks + head); None: the whole model trains.

        ``prefix``: the frozen part that feeds it (None when nothing is frozen); ``cached``: batches
        already hold its output (the feature/activation cache), so training runs the suffix alone.
        ``forward`` is always ``suffix(prefix(x))``.
        ``frozen``: module/parameter names (``--freeze``) that stay fixed inside what trains.
        ``recipe``: the TrainConfig (optimizer, schedule, loss knobs).
        """
        super().__init__()
        self.model = model
        self.parts = _Parts(suffix, prefix)  # not registered: the weights are saved once, under model.*
        self.prefix = FrozenPrefix(prefix, recipe.image_size) if prefix is not None and not cached else None
        self.recipe = recipe
        self.multilabel = getattr(recipe, "task", "single") == "multilabel"
        self.train_loss_fn = TrainLoss(recipe, num_classes, class_weights, pos_weight=pos_weight)
        self.train_loss = MeanMetric()
        self.val_loss = MeanMetric()  # weighted by batch size and synced as sums: exact across processes
        # Validation loss without the recipe's knobs (plain cross-entropy / binary cross-entropy), so it
        # compares across recipes. The epoch's metrics: accuracy (top-1, top-5), or for multi-label the
        # macro mean average precision (what best.ckpt is chosen by) and macro-F1 at 0.5.
        if self.multilabel:
            from torchmetrics.classification import MultilabelF1Score

            from imgcls.engine.label_metrics import PresentLabelsAP

            self.loss_fn = nn.BCEWithLogitsLoss()
            self.metric_names = ("train_f1", "val_mAP", "val_f1")
            self.train_score = MultilabelF1Score(num_classes, average="micro")
            self.val_score = PresentLabelsAP(num_classes)
            self.val_score2 = MultilabelF1Score(num_classes, average="macro")
        else:
            self.loss_fn = nn.CrossEntropyLoss()
            self.metric_names = ("train_acc", "val_acc", "val_acc5")
            self.train_score = MulticlassAccuracy(num_classes, average="micro")
            self.val_score = MulticlassAccuracy(num_classes, average="micro")
            self.val_score2 = MulticlassAccuracy(num_classes, top_k=5, average="micro") if num_classes >= 6 else None
        self.frozen = list(frozen or [])
        if self.cut:
            self.model.requires_grad_(False)
            self.suffix.requires_grad_(True)
        apply_freeze(self.model, self.frozen)

    @property
    def has_batchnorm(self) -> bool:
        return any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training for m in self.suffix.modules())

    @property
    def cut(self) -> bool:
        """The model is cut: a frozen prefix feeds the part that trains (head-only or last:N)."""
        return self.parts.suffix is not None

    @property
    def frozen_part(self) -> nn.Module | None:
        """The frozen prefix as a module (what the feature cache stores the outputs of)."""
        return self.parts.prefix

    @property
    def suffix(self) -> nn.Module:
        return self.model if self.parts.suffix is None else self.parts.suffix

    def train(self, mode: bool = True):
        super().train(mode)
        if self.cut:
            # Frozen part: BatchNorm keeps its ImageNet statistics and Dropout stays off.
            self.model.eval()
            self.suffix.train(mode)
        freeze_eval_mode(self.model, self.frozen)
        return self

    def on_train_epoch_start(self):
        # Lightning leaves modules in the mode they were built in; apply the frozen-part modes.
        self.train()

    def on_fit_start(self):
        # NHWC convolutions: attn_cnn trains 1.8x faster on CPU (oneDNN), EfficientNet-B0 ~1.8x without
        # the malloc tuning; tensor-core GPUs prefer it too.
        self.model.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.suffix(self.prefix(x) if self.prefix is not None else x)

    def training_step(self, batch, batch_idx):
        if batch is None:  # every image of this batch failed to decode (already logged)
            return None
        x, y = batch
        if len(y) == 1 and self.has_batchnorm:  # only when bad images left one: BatchNorm cannot use it
            return None
        x, target = self.train_loss_fn.mix(x, y)
        logits = self(x)
        loss = self.train_loss_fn(logits, target)
        if not torch.isfinite(loss):
            from imgcls.core.errors import ImgclsError

            # Stop before the optimizer step: no checkpoint ever holds a model trained on this loss.
            raise ImgclsError(
                f"non-finite training loss ({float(loss.detach())}) at epoch {self.current_epoch + 1}, step "
                f"{batch_idx + 1} of the epoch (global step {self.global_step + 1}); the checkpoints "
                "keep the last finite model (try a lower --lr)"
            )
        self.train_loss.update(loss.detach(), weight=len(y))
        self.train_score.update(logits.detach(), y.round().long() if self.multilabel else y)
        self.log("loss", loss.detach(), on_step=True, on_epoch=False, prog_bar=True, batch_size=len(y))
        return loss

    def on_train_epoch_end(self):
        self.train_loss.reset()
        self.train_score.reset()

    def validation_step(self, batch, batch_idx):
        if batch is None:
            return None
        x, y = batch
        logits = self(x)
        n = len(y)
        self.val_loss.update(self.loss_fn(logits.float(), y.float() if self.multilabel else y), weight=n)
        self.log("val_loss", self.val_loss, on_epoch=True, prog_bar=True, batch_size=n)
        target = y.long()
        _, main, second = self.metric_names
        self.val_score.update(logits, target)
        self.log(main, self.val_score, on_epoch=True, prog_bar=True, batch_size=n)
        if self.val_score2 is not None:
            self.val_score2.update(logits, target)
            self.log(second, self.val_score2, on_epoch=True, batch_size=n)
        return logits.detach()  # for callbacks that keep the validation outputs (ValidationProbabilities)

    def epoch_train_metrics(self) -> dict[str, float]:
        """Train loss and accuracy (multi-label: micro-F1) of the epoch so far (synced across processes)."""
        return {"train_loss": float(self.train_loss.compute()), self.metric_names[0]: float(self.train_score.compute())}

    def param_groups(self) -> list[dict]:
        """One group per block depth with ``--lr-decay`` < 1 (the head at ``lr``, the block before it at
        ``lr * decay``, ...), else one group; ``base_lr`` is what warm-up scales."""
        params = [p for p in self.parameters() if p.requires_grad]
        decay, lr = self.recipe.lr_decay, self.recipe.lr
        if decay >= 1:
            return [{"params": params, "lr": lr, "base_lr": lr}]
        from imgcls.models.blocks import model_sequence

        counted = [s.module for s in model_sequence(self.model) if s.block]
        depth: dict[int, int] = {}
        for k, module in enumerate(reversed(counted)):
            for p in module.parameters():
                depth.setdefault(id(p), k)
        by_depth: dict[int, list] = {}
        for p in params:  # a parameter outside every block (none in the registered families) trains slowest
            by_depth.setdefault(depth.get(id(p), len(counted)), []).append(p)
        return [{"params": ps, "lr": lr * decay**k, "base_lr": lr * decay**k} for k, ps in sorted(by_depth.items())]

    def configure_optimizers(self):
        optimizer = build_optimizer(self.param_groups(), self.recipe)
        total = int(self.trainer.estimated_stepping_batches)
        self.warmup = warmup_steps(self.recipe, max(1, total // max(1, self.trainer.max_epochs)))
        return {"optimizer": optimizer, "lr_scheduler": build_schedule(optimizer, self.recipe, total, self.warmup)}

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None):
        # Warm-up, whatever the schedule: this step runs at the schedule's rate times the warm-up scale, and
        # the schedule's own rate is put back after it (the schedule never sees the scaling).
        scale = warmup_scale(self.trainer.global_step, getattr(self, "warmup", 0))
        if scale == 1.0:
            return super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        scheduled = [group["lr"] for group in optimizer.param_groups]
        for group in optimizer.param_groups:
            group["lr"] *= scale
        try:
            super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        finally:
            for group, lr in zip(optimizer.param_groups, scheduled):
                group["lr"] = lr

    def effective_lr(self) -> float:
        """The learning rate the next step runs at (the head's group): the schedule's, warmed up."""
        lr = self.trainer.optimizers[0].param_groups[0]["lr"]
        return lr * warmup_scale(self.trainer.global_step, getattr(self, "warmup", 0))
