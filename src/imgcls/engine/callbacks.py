"""Callbacks that write the run directory's metrics.csv and summary.json as training goes."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from imgcls.core.errors import ImgclsError
from imgcls.core.files import atomic_write, write_json
from imgcls.core.rundir import RunPaths, metrics_columns, read_metrics, write_metrics


def summarize(rows: list[dict[str, Any]], static: dict[str, Any]) -> dict[str, Any]:
    """summary.json from the per-epoch rows: every number in it can be traced back to metrics.csv.

    The best epoch is the one with the highest validation accuracy (multi-label: mAP), as best.ckpt."""
    summary = dict(static)
    if rows and static.get("task") == "multilabel":
        best = max(rows, key=lambda r: (r["val_mAP"], -r["epoch"]))
        summary.update(metric="val_mAP", best_val_mAP=best["val_mAP"], best_val_f1=best.get("val_f1"))
        summary.update(final_val_mAP=rows[-1]["val_mAP"])
    elif rows:
        best = max(rows, key=lambda r: (r["val_acc"], -r["epoch"]))
        summary.update(metric="val_acc", best_val_acc=best["val_acc"], best_val_acc5=best.get("val_acc5"))
        summary.update(final_val_acc=rows[-1]["val_acc"])
    if rows:
        # Training time includes computing cached features and decoding the image store, when that was needed.
        seconds = (
            sum(r["epoch_seconds"] for r in rows)
            + summary.get("feature_cache_seconds", 0.0)
            + summary.get("image_store_seconds", 0.0)
        )
        summary.update(
            best_epoch=best["epoch"],
            final_val_loss=rows[-1]["val_loss"],
            epochs_completed=rows[-1]["epoch"],
            train_seconds=round(seconds, 3),
            seconds_per_epoch=round(sum(r["epoch_seconds"] for r in rows) / len(rows), 3),
        )
    return summary


class RunFilesCallback(Callback):
    """Appends one metrics.csv row per epoch (before checkpoints are saved) and refreshes summary.json.

    The row is written in ``on_validation_end``, which Lightning runs before ModelCheckpoint's: if a
    kill lands between the two, the resumed run redoes that epoch and its row is replaced, so every
    epoch appears exactly once.
    """

    def __init__(self, paths: RunPaths, static_summary: dict[str, Any], on_epoch=None, classes=None):
        self.paths = paths
        self.classes = classes
        self.on_epoch = on_epoch
        self.static = dict(static_summary)
        self.rows: list[dict[str, Any]] = []
        self._t0 = 0.0
        self._lr = 0.0

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.world_size > 1 and self.classes is not None:
            # Every process discovered the data itself; they must agree on the class list.
            reference = trainer.strategy.broadcast(self.classes, src=0)
            if reference != self.classes:
                raise ImgclsError(
                    f"process {trainer.global_rank} sees different classes than process 0 "
                    "(is the data folder the same on every node?)"
                )
        seconds = getattr(trainer.datamodule, "feature_seconds", 0.0) if trainer.datamodule is not None else 0.0
        self.static["feature_cache_seconds"] = round(trainer.strategy.broadcast(seconds, src=0), 3)
        self.static["feature_cache_hit"] = bool(getattr(trainer.datamodule, "feature_hit", False))
        if hasattr(trainer.datamodule, "store_seconds"):  # --data-pipeline tensor
            store = trainer.strategy.broadcast(trainer.datamodule.store_seconds, src=0)
            self.static["image_store_seconds"] = round(store, 3)
        self.static["world_size"] = trainer.world_size

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        # The recipe the weights were trained with: a resume compares it with config.yaml.
        checkpoint["imgcls_config"] = dict(pl_module.recipe.to_dict())

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Runs after a checkpoint is restored. On resume, current_epoch is the first epoch still to run; rows from an unfinished epoch go.
        self.rows = [r for r in read_metrics(self.paths.metrics) if r["epoch"] <= trainer.current_epoch]
        if trainer.is_global_zero:
            write_metrics(self.paths.metrics, self.rows, metrics_columns(self.static.get("task", "single")))

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0 = time.perf_counter()
        self._lr = pl_module.effective_lr()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self._record_engine(trainer, pl_module)
        m = trainer.callback_metrics
        value = lambda k: float(m[k]) if k in m else None  # noqa: E731
        if not math.isfinite(value("val_loss") or 0.0):
            # Raised before ModelCheckpoint runs, so neither best.ckpt nor last.ckpt gets this model.
            raise ImgclsError(
                f"non-finite validation loss at epoch {trainer.current_epoch + 1}; the checkpoints keep "
                "the last finite model (try a lower --lr)"
            )
        train_name, main, second = pl_module.metric_names
        row = {
            "epoch": trainer.current_epoch + 1,
            **pl_module.epoch_train_metrics(),
            "val_loss": value("val_loss"),
            main: value(main),
            second: value(second),
            "lr": self._lr,
            "epoch_seconds": time.perf_counter() - self._t0,
        }
        self.rows = [r for r in self.rows if r["epoch"] < row["epoch"]] + [row]
        if trainer.is_global_zero:
            write_metrics(self.paths.metrics, self.rows, metrics_columns(self.static.get("task", "single")))
            write_json(self.paths.summary, summarize(self.rows, {**self.static, "complete": False}))
            pl_module.print(
                f"epoch {row['epoch']}/{trainer.max_epochs}  train_loss {row['train_loss']:.4f}  "
                f"{train_name} {row[train_name]:.4f}  val_loss {row['val_loss']:.4f}  {main} {row[main]:.4f}  "
                f"lr {row['lr']:.2g}  {row['epoch_seconds']:.1f}s"
            )
            if self.on_epoch is not None:
                self.on_epoch(list(self.rows))

    def _record_engine(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Which engine ran the frozen backbone (streamed, or when the feature cache was filled)."""
        prefix = getattr(pl_module, "prefix", None)
        record = prefix.describe() if prefix is not None else getattr(trainer.datamodule, "engine", None)
        if record is not None:
            self.static["backbone_engine"] = record

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and self.rows:  # a fit that completed no epoch is never "complete"
            stopped = trainer.early_stopping_callback is not None and trainer.early_stopping_callback.stopped_epoch > 0
            summary = summarize(self.rows, {**self.static, "complete": True, "early_stopped": bool(stopped)})
            write_json(self.paths.summary, summary)


def device_name() -> str:
    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints go to a temporary file that is fsynced and renamed: a kill never leaves half a file.

    ``best.ckpt`` is only ever read for its weights (a resume starts from ``last.ckpt``), so it is written
    without the optimizer and scheduler state and without EMA's raw weights: with Adam that is a third of
    the bytes written each time the best epoch improves (ViT-B/16: 1.03 GB -> 0.35 GB).
    """

    ONLY_FOR_RESUMING = ("optimizer_states", "lr_schedulers", "current_model_state")

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.name == "best.ckpt":
            checkpoint = {k: v for k, v in checkpoint.items() if k not in self.ONLY_FOR_RESUMING}
        atomic_write(path, lambda fh: torch.save(checkpoint, fh), binary=True, unbuffered=True)

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        from imgcls.models.weights import load_state_dict_file

        state = load_state_dict_file(path)  # weights_only=True, with a clear error when refused
        if not isinstance(state, dict) or "state_dict" not in state:
            raise ImgclsError(f"{path}: not a Lightning checkpoint of an imgcls run (start over with --force)")
        return state


class BestCheckpoint(ModelCheckpoint):
    """``best.ckpt``: the epoch with the highest ``monitor`` so far (ties keep the earlier epoch, as
    summary.json does).

    Lightning forgets the best score when a run folder was moved or copied (its saved ``dirpath``
    differs) and would then overwrite ``best.ckpt`` with the next epoch, however bad; here the score
    is always restored and the paths point into the folder as it is now.
    """

    def __init__(self, dirpath: Path, monitor: str):
        super().__init__(
            dirpath=dirpath,
            filename="best",
            monitor=monitor,
            mode="max",
            save_top_k=1,
            save_last=False,
            enable_version_counter=False,
        )

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        here = str(Path(self.dirpath) / "best.ckpt")
        score = state_dict.get("best_model_score")
        moved = {
            **state_dict,
            "dirpath": self.dirpath,
            "best_model_path": here if score is not None else "",
            "kth_best_model_path": here if score is not None else "",
            "best_k_models": {here: score} if score is not None else {},
            "last_model_path": "",
        }
        super().load_state_dict(moved)


class LastCheckpoint(ModelCheckpoint):
    """``last.ckpt``: every completed epoch, always (Lightning's ``save_last`` writes it only when a
    top-k checkpoint is saved, so a resume would go back to the best epoch and redo the rest)."""

    def __init__(self, dirpath: Path):
        super().__init__(dirpath=dirpath, filename="last", monitor=None, save_top_k=1, enable_version_counter=False)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best_model_path = str(Path(self.dirpath) / "last.ckpt")  # nothing else to restore


class EpochSeed(Callback):
    """Main-process randomness (dropout, mixup draws) seeded from (seed, epoch, rank) at the start of
    each epoch, so a resumed run continues as if it had never stopped (Lightning restores the weights
    and optimizer, not the random generators)."""

    def __init__(self, seed: int):
        self.seed = seed

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        import random

        import numpy as np

        s = ((self.seed * 1_000_003 + trainer.current_epoch) * 1_009 + trainer.global_rank) % 2**63
        random.seed(s)
        np.random.seed(s % 2**32)
        torch.manual_seed(s)


class ValidationProbabilities(Callback):
    """``RUN/validation_probs.npz``: the validation split's probabilities at the best epoch so far (the one
    best.ckpt holds; ties keep the earlier epoch), in the split's order. What ``imgcls auto`` builds an
    ensemble of its best trials from, without running them again. One process only (validation is sharded
    under DDP)."""

    def __init__(self, paths: RunPaths, monitor: str, mode: str = "max"):
        self.path = paths.root / "validation_probs.npz"
        self.monitor, self.mode = monitor, mode
        self.best: float | None = None
        self.batches: list[torch.Tensor] = []

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.path.is_file():  # a resumed run: its best so far
            import numpy as np

            with np.load(self.path) as saved:
                self.best = float(saved["value"])

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.batches = []

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if isinstance(outputs, torch.Tensor):
            self.batches.append(outputs.float().cpu())

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.world_size > 1 or not self.batches:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        value = float(value)
        better = self.best is None or (value > self.best if self.mode == "max" else value < self.best)
        if not better:
            return
        import numpy as np

        logits = torch.cat(self.batches)
        probs = logits.sigmoid() if pl_module.multilabel else logits.softmax(1)
        self.best = value
        record = {"probs": probs.numpy(), "epoch": trainer.current_epoch + 1, "value": value}
        atomic_write(self.path, lambda fh: np.savez(fh, **record), binary=True)
