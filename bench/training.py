"""Training both ways, timed alike: the reference notebooks' loop (``baseline_loop``) and imgcls's engine
(``imgcls_train``), each training image counted after the first batch (warm-up left out)."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from bench.settings import Settings


class Timer:
    """Lightning callback: per-epoch training throughput, the first batch of the run excluded (warm-up)."""

    def __init__(self):
        from lightning.pytorch.callbacks import Callback

        timer = self

        class CB(Callback):
            def on_fit_start(self, trainer, pl_module):
                dm = trainer.datamodule
                if timer.cuda and dm is not None and "on_after_batch_transfer" in type(dm).__dict__:
                    # The tensor pipeline augments on the GPU before on_train_batch_start: count that as busy.
                    augment = dm.on_after_batch_transfer

                    def timed_augment(batch, dataloader_idx):
                        if trainer.training:
                            timer.pending = torch.cuda.Event(enable_timing=True)
                            timer.pending.record()
                        return augment(batch, dataloader_idx)

                    dm.on_after_batch_transfer = timed_augment

            def on_train_epoch_start(self, trainer, pl_module):
                timer.epochs.append({"images": 0, "t0": None, "t1": None})
                timer.events = []

            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                e = timer.epochs[-1]
                pending, timer.pending = timer.pending, None
                if e["t0"] is None and (len(timer.epochs) > 1 or batch_idx >= 1):
                    timer.sync()
                    e["t0"] = time.perf_counter()
                    pending = None  # recorded before t0
                if e["t0"] is not None and timer.cuda:
                    start = pending or torch.cuda.Event(enable_timing=True)
                    if pending is None:
                        start.record()
                    timer.events.append([start, None])

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                e = timer.epochs[-1]
                if e["t0"] is not None:
                    e["images"] += len(batch[-1])
                    if timer.cuda:
                        end = torch.cuda.Event(enable_timing=True)
                        end.record()
                        timer.events[-1][1] = end
                    e["t1"] = time.perf_counter()

            def on_train_epoch_end(self, trainer, pl_module):
                e = timer.epochs[-1]
                if e["t0"] is not None and timer.sync():
                    e["t1"] = time.perf_counter()  # the GPU's queue included

        self.epochs: list[dict] = []
        self.events: list = []  # CUDA (start, end) per timed training step (device augmentation included)
        self.pending = None
        self.cuda = torch.cuda.is_available()
        self.callback = CB()

    def sync(self) -> bool:
        if self.cuda:
            torch.cuda.synchronize()
        return self.cuda

    def gpu_busy(self) -> float | None:
        """Fraction of the last epoch's wall time the GPU spent on training steps and their device
        augmentation, from CUDA events (time waiting for the loader is what is left out)."""
        if not self.cuda or not self.events:
            return None
        torch.cuda.synchronize()
        e = self.epochs[-1]
        busy = sum(a.elapsed_time(b) for a, b in self.events if b is not None) / 1000
        return min(1.0, busy / (e["t1"] - e["t0"]))

    def images_per_s(self, epoch: int) -> float:
        e = self.epochs[epoch]
        return e["images"] / (e["t1"] - e["t0"])


def imgcls_train(s: Settings, data: Path, out: str, **cfg) -> Timer:
    """imgcls's own training (the engine ``imgcls train`` runs), timed per epoch."""
    from imgcls.core.config import resolve_config
    from imgcls.engine.train import train

    timer = Timer()
    options = dict(
        model=s.model,
        data=str(data),
        out=out,
        image_size=s.image_size,
        batch_size=s.batch_size,
        workers=s.workers,
        pretrained=False,
        epochs=1,
        accelerator="cpu" if s.device == "cpu" else "gpu",
    )
    options.update(cfg)
    train(resolve_config(None, options), progress=False, extra_callbacks=[timer.callback])
    return timer


def baseline_loop(s: Settings, data: Path, *, head_only: bool) -> float:
    """The reference notebooks' loop (fp32, NCHW, PIL + torchvision transforms in workers, on the bench's
    device); returns training images/s with the first batch excluded."""
    from torchvision import datasets

    from imgcls.data.transforms import build_train_transform
    from imgcls.models import create_model
    from imgcls.models.registry import get_head

    torch.manual_seed(0)
    device = s.device
    ds = datasets.ImageFolder(
        str(data / "train"), transform=build_train_transform(s.image_size, "reference-torchvision")
    )
    loader = torch.utils.data.DataLoader(
        ds, batch_size=s.batch_size, shuffle=True, num_workers=s.workers, pin_memory=device != "cpu"
    )
    model = create_model(s.model, 11).to(device)  # every parameter requires_grad=True
    params = get_head(model, s.model).parameters() if head_only else model.parameters()
    optimizer = torch.optim.Adam(params, lr=1e-3, weight_decay=1e-4)
    model.train()
    images, t0 = 0, None
    for i, (x, y) in enumerate(loader):
        if i == 1:
            if device != "cpu":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        x, y = x.to(device), y.to(device)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if t0 is not None:
            images += len(y)
    if device != "cpu":
        torch.cuda.synchronize()
    return images / (time.perf_counter() - t0)
