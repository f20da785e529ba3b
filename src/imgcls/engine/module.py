"""The LightningModule: cross-entropy, torchmetrics accuracy, Adam + ReduceLROnPlateau on val_loss."""
from __future__ import annotations

import lightning as L
import torch
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy


class ClassifierModule(L.LightningModule):
    def __init__(
        self,
        model: nn.Module,
        *,
        num_classes: int,
        lr: float,
        weight_decay: float,
        plateau_factor: float,
        plateau_patience: int,
        head: str | None = None,
        backbone: nn.Module | None = None,
        from_features: bool = False,
        image_size: int | None = None,
    ):
        """``head``: attribute path of the classifier; when given only it trains (frozen backbone).

        ``backbone``: the model with its head replaced by Identity (``headless_view``), sharing weights;
        head-only training runs it under no_grad. ``from_features``: batches are cached backbone
        features, so only the head runs.
        """
        super().__init__()
        self.model = model
        self.head = head
        self.from_features = from_features
        # Kept out of the module tree (a plain attribute) so its shared weights are not saved twice.
        self.__dict__["_backbone"] = backbone
        self.__dict__["_backbone_runner"] = None
        self.image_size = image_size
        self.lr, self.weight_decay = lr, weight_decay
        self.plateau_factor, self.plateau_patience = plateau_factor, plateau_patience
        self.loss_fn = nn.CrossEntropyLoss()
        self.train_loss = MeanMetric()
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_loss = MeanMetric()  # weighted by batch size and synced as sums: exact across processes
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc5 = MulticlassAccuracy(num_classes, top_k=5, average="micro") if num_classes >= 6 else None
        if head is not None:
            for p in self.model.parameters():
                p.requires_grad_(False)
            for p in self.model.get_submodule(head).parameters():
                p.requires_grad_(True)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.head is not None:
            # Frozen backbone: BatchNorm keeps its ImageNet statistics and Dropout stays off.
            self.model.eval()
            self.model.get_submodule(self.head).train(mode)
        return self

    def on_train_epoch_start(self):
        # Lightning leaves modules in the mode they were built in; apply the frozen-backbone modes.
        self.train()

    def on_fit_start(self):
        # NHWC convolutions: attn_cnn trains 1.8x faster on CPU (oneDNN), EfficientNet-B0 ~1.8x without
        # the malloc tunables; tensor-core GPUs prefer it too.
        self.model.to(memory_format=torch.channels_last)
        if self._backbone is not None and not self.from_features and self.device.type == "cpu" and self.image_size:
            # The frozen backbone never changes: run it in the fastest CPU engine (ONNX Runtime when installed).
            from imgcls.engine.onnx_engine import make_runner

            runner, engine = make_runner(self._backbone, self.image_size)
            self.__dict__["_backbone_runner"] = runner if engine == "onnxruntime" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.from_features:
            return self.model.get_submodule(self.head)(x)
        x = x.contiguous(memory_format=torch.channels_last)
        if self.head is None or self._backbone is None:
            return self.model(x)
        with torch.no_grad():  # a frozen backbone: no graph, no saved activations
            features = self._backbone_runner(x) if self._backbone_runner is not None else self._backbone(x)
        return self.model.get_submodule(self.head)(features)

    def training_step(self, batch, batch_idx):
        if batch is None:  # every image of this batch failed to decode (already logged)
            return None
        x, y = batch
        logits = self(x)
        loss = self.loss_fn(logits, y)
        if not torch.isfinite(loss):
            from imgcls.errors import ImgclsError

            # Stop before the optimizer step: no checkpoint ever holds a model trained on this loss.
            raise ImgclsError(f"non-finite training loss ({float(loss.detach())}) at epoch {self.current_epoch + 1}, step "
                              f"{batch_idx + 1} of the epoch (global step {self.global_step + 1}); the checkpoints "
                              "keep the last finite model (try a lower --lr)")  # fmt: skip
        self.train_loss.update(loss.detach(), weight=len(y))
        self.train_acc.update(logits.detach(), y)
        self.log("loss", loss.detach(), on_step=True, on_epoch=False, prog_bar=True, batch_size=len(y))
        return loss

    def on_train_epoch_end(self):
        self.train_loss.reset()
        self.train_acc.reset()

    def validation_step(self, batch, batch_idx):
        if batch is None:
            return None
        x, y = batch
        logits = self(x)
        n = len(y)
        self.val_loss.update(self.loss_fn(logits, y), weight=n)
        self.log("val_loss", self.val_loss, on_epoch=True, prog_bar=True, batch_size=n)
        self.val_acc.update(logits, y)
        self.log("val_acc", self.val_acc, on_epoch=True, prog_bar=True, batch_size=n)
        if self.val_acc5 is not None:
            self.val_acc5.update(logits, y)
            self.log("val_acc5", self.val_acc5, on_epoch=True, batch_size=n)

    def epoch_train_metrics(self) -> dict[str, float]:
        """Train loss/accuracy of the epoch so far (synced across processes by torchmetrics)."""
        return {"train_loss": float(self.train_loss.compute()), "train_acc": float(self.train_acc.compute())}

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=self.plateau_factor, patience=self.plateau_patience
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": "val_loss"}}
