"""One bench measurement in a process of its own: ``run_job`` in a child forked by ``imgcls bench``'s
fork server (torch, Lightning and timm imported once, not once per measurement), or by hand:
``python -m bench.worker MEASURE SIDE ARGS_JSON``, which prints one JSON line.

A result holds value, unit, peak_rss_mb (this process + its largest child), and extras.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

GMACS_EFFNET_B0 = 0.386  # per 224 px image (registry count, multiply-add = 1)


def _size(a: dict) -> int:
    """The bench's image size: 224 px (the reference); tiny CPU runs (the test suite) use less."""
    return a.get("image_size", 224)


def _gmacs(a: dict) -> float:
    return GMACS_EFFNET_B0 * (_size(a) / 224) ** 2


def peak_rss_mb() -> tuple[float, float]:
    """Peak RSS of this process, and of its largest child (a DataLoader worker; forked, so much of its
    RSS is pages it shares with this process: adding the two would overcount)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return own / 1024, child / 1024


def jpeg_paths(root: Path) -> list[str]:
    return sorted(str(p) for p in (root / "train").rglob("*.jpg"))


def subset_folder(src: Path, dst: Path, count: int) -> Path:
    """An ImageFolder with the first ``count`` training images (symlinks) and the same val split."""
    if not dst.exists():
        ordered = sorted((src / "train").rglob("*.jpg"), key=lambda p: int(p.stem.split("_")[1]))  # classes interleave
        for path in ordered[: max(count, 2 * 11)]:
            target = dst / "train" / path.parent.name / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(path)
        for path in (src / "val").rglob("*.jpg"):
            target = dst / "val" / path.parent.name / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(path)
    return dst


def measure_augment(side: str, a: dict) -> dict:
    from PIL import Image

    from imgcls.data.transforms import build_train_transform

    torch.set_num_threads(1)  # per core
    paths = jpeg_paths(Path(a["data"]))[: 48 if a["repeats"] < 3 else 256]
    if side == "baseline":
        tf = build_train_transform(_size(a), "reference-torchvision")
        fn = lambda p: tf(Image.open(p).convert("RGB"))  # noqa: E731  (ImageFolder's loader)
    else:
        fn = build_train_transform(_size(a), "reference")
    for p in paths[:4]:
        fn(p)
    rates = []
    for _ in range(a["repeats"]):
        t0 = time.perf_counter()
        for p in paths:
            fn(p)
        rates.append(len(paths) / (time.perf_counter() - t0))
    return {"value": statistics.median(rates), "unit": "img/s"}


def measure_inference(side: str, a: dict) -> dict:
    import os

    from imgcls.engine.predictor import predictor_for_module
    from imgcls.engine.timing import images_per_second
    from imgcls.models import create_model

    device = a.get("device", "cpu")
    model = create_model("efficientnet_b0", 11).eval().to(device)
    if side == "baseline":

        def run(t):
            with torch.no_grad():
                out = model(t.to(device))
            return out.cpu()  # a notebook reads the logits back

        engine = "pytorch eager NCHW"
    else:
        os.environ["IMGCLS_CACHE"] = str(Path(a["tmp"]) / "cache")
        predictor = predictor_for_module(model, _size(a))  # the engine evaluate/predict/serve use
        engine = predictor.engine

        def run(t):
            return predictor.run(t).cpu()

    ips = images_per_second(run, _size(a), batch_size=a["batch_size"], min_repeats=a["repeats"], min_seconds=0.0)
    return {"value": ips, "unit": "img/s", "gflops_per_s": ips * _gmacs(a) * 2, "note": engine}


def measure_inference_int8(side: str, a: dict) -> dict:
    """imgcls's opt-in int8 export (``export --quantize int8``: static QDQ, calibrated on 64 training
    photos through the eval transform) in ONNX Runtime; the baseline is the inference measure's."""
    from imgcls.commands.quantize import calibration_batches, quantize_static_int8
    from imgcls.data.layouts import discover
    from imgcls.engine.onnx_engine import export_onnx
    from imgcls.engine.predictor import onnx_predictor
    from imgcls.engine.timing import images_per_second
    from imgcls.models import create_model

    model = create_model("efficientnet_b0", 11).eval()
    folder = Path(a["tmp"]) / f"int8-{os.getpid()}"
    fp32 = export_onnx(model, _size(a), folder / "model.onnx")
    info = {"classes": [f"c{i}" for i in range(11)], "image_size": _size(a), "model": "efficientnet_b0"}
    samples = discover(Path(a["data"])).train[:64]
    quantize_static_int8(
        fp32, folder / "model.int8.onnx", calibration_batches(samples, onnx_predictor(fp32, info).transform)
    )
    int8 = onnx_predictor(folder / "model.int8.onnx", info)  # the predictor predict/serve would use
    return {
        "value": images_per_second(
            int8.run, _size(a), batch_size=a["batch_size"], min_repeats=a["repeats"], min_seconds=0.0
        ),
        "unit": "img/s",
        "note": "onnxruntime int8 (static QDQ); opt-in, and refused by export when top-1 agreement with fp32 "
        "on the validation split is under 99%",
    }


class _Timer:
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


def _imgcls_train(a: dict, data: Path, out: str, **cfg) -> _Timer:
    from imgcls.core.config import resolve_config
    from imgcls.engine.train import train

    timer = _Timer()
    options = dict(
        model=a.get("model", "efficientnet_b0"),
        data=str(data),
        out=out,
        image_size=_size(a),
        batch_size=a["batch_size"],
        workers=a["workers"],
        pretrained=False,
        epochs=1,
        accelerator="cpu" if a.get("device", "cpu") == "cpu" else "gpu",
    )
    options.update(cfg)
    train(resolve_config(None, options), progress=False, extra_callbacks=[timer.callback])
    return timer


def _baseline_loop(a: dict, data: Path, *, head_only: bool) -> float:
    """The reference notebooks' loop (fp32, NCHW, PIL + torchvision transforms in workers, on the bench's
    device); returns training images/s with the first batch excluded."""
    from torchvision import datasets

    from imgcls.data.transforms import build_train_transform
    from imgcls.models import create_model
    from imgcls.models.registry import get_head

    torch.manual_seed(0)
    device = a.get("device", "cpu")
    size = _size(a)
    ds = datasets.ImageFolder(str(data / "train"), transform=build_train_transform(size, "reference-torchvision"))
    loader = torch.utils.data.DataLoader(
        ds, batch_size=a["batch_size"], shuffle=True, num_workers=a["workers"], pin_memory=device != "cpu"
    )
    name = a.get("model", "efficientnet_b0")
    model = create_model(name, 11).to(device)  # every parameter requires_grad=True
    params = get_head(model, name).parameters() if head_only else model.parameters()
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


def measure_head_epoch(side: str, a: dict) -> dict:
    data = Path(a["data"])
    n = len(jpeg_paths(data))
    if side == "baseline":
        ips = _baseline_loop(a, data, head_only=True)
        gflops = ips * _gmacs(a) * 2 * 3  # forward + full backward
    else:
        timer = _imgcls_train(a, data, str(Path(a["tmp"]) / "run-head"), finetune="head", augment="reference")
        ips = timer.images_per_s(0)
        gflops = ips * _gmacs(a) * 2  # forward only: the frozen backbone needs no backward
    return {"value": n / ips, "unit": "s/epoch", "gflops_per_s": gflops, "images_per_s": ips}


def measure_cached_epoch(side: str, a: dict) -> dict:
    import os

    data = Path(a["data"])
    os.environ["IMGCLS_CACHE"] = str(Path(a["tmp"]) / "cache")
    t0 = time.perf_counter()
    timer = _imgcls_train(a, data, str(Path(a["tmp"]) / "run-cached"), finetune="head", augment="none", epochs=3)
    total = time.perf_counter() - t0
    n = len(jpeg_paths(data))
    epoch_s = statistics.median(n / timer.images_per_s(e) for e in (1, 2))
    cache_mb = sum(p.stat().st_size for p in (Path(a["tmp"]) / "cache").rglob("*.npy")) / 2**20
    return {
        "value": epoch_s,
        "unit": "s/epoch",
        "note": f"epochs 2-3 from the memory-mapped cache; whole 3-epoch run incl. feature extraction {total:.1f}s; "
        f"cache {cache_mb:.1f} MB for {n + 11} images (1280 fp16 each)",
    }


def measure_full_finetune(side: str, a: dict) -> dict:
    data = subset_folder(Path(a["data"]), Path(a["tmp"]) / "subset-full", a["full_images"])
    if side == "baseline":
        ips = _baseline_loop(a, data, head_only=False)
    else:
        timer = _imgcls_train(
            a, data, str(Path(a["tmp"]) / f"run-full-{os.getpid()}"), finetune="full", augment="reference"
        )
        ips = timer.images_per_s(0)
    return {"value": ips, "unit": "img/s", "gflops_per_s": ips * _gmacs(a) * 2 * 3}


def measure_partial(side: str, a: dict) -> dict:
    """imgcls --finetune last:3 from cached activations (epochs after the first); the baseline is the
    reference loop's full fine-tuning epoch (bench.py reuses that measurement)."""
    data = Path(a["data"])
    os.environ["IMGCLS_CACHE"] = str(Path(a["tmp"]) / "cache")
    t0 = time.perf_counter()
    timer = _imgcls_train(
        a, data, str(Path(a["tmp"]) / "run-partial"), finetune="last:3", augment="reference", feature_cache=1, epochs=3
    )
    total = time.perf_counter() - t0
    n = len(jpeg_paths(data))
    epoch_s = statistics.median(n / timer.images_per_s(e) for e in (1, 2))
    return {
        "value": epoch_s,
        "unit": "s/epoch",
        "note": f"last:3 (features.6.3, 7.0, 8 + head) from 1 cached view; whole 3-epoch run incl. activation "
        f"extraction {total:.1f}s",
    }


def measure_pipeline(side: str, a: dict) -> dict:
    """Images/s delivered to the model, no model: the notebook's PIL + torchvision chain in loader workers
    ("baseline") against the decoded store + batched augmentation on the bench's device ("imgcls"); the
    imgcls side also times its own PIL worker pipeline (--data-pipeline workers) for the note."""
    from torchvision import datasets

    from imgcls.data.dataset import ImageDataset
    from imgcls.data.image_store import get_store
    from imgcls.data.layouts import discover
    from imgcls.data.loader import make_loader
    from imgcls.data.tensor_augment import train_batch
    from imgcls.data.tensor_pipeline import StoreDataset, collate_canvas
    from imgcls.data.transforms import build_train_transform, eval_resize

    data, device, bs, workers = Path(a["data"]), a.get("device", "cpu"), a["batch_size"], a["workers"]

    def rate(loader, to_input) -> float:
        """Images/s after the first batch, over as many passes as it takes to time ``min_batches``
        batches and ``min_seconds`` (a quick run's 64 images would otherwise time one batch)."""
        min_batches, min_seconds = a.get("min_batches", 16), a.get("min_seconds", 2.0)
        images, batches, t0 = 0, 0, None
        while t0 is None or batches < min_batches or time.perf_counter() - t0 < min_seconds:
            for batch in loader:
                x = to_input(batch)
                if t0 is None:
                    t0 = time.perf_counter()  # after the first batch: workers started, caches warm
                    continue
                images += len(x)
                batches += 1
        if device != "cpu":
            torch.cuda.synchronize()
        return images / (time.perf_counter() - t0)

    if side == "baseline":
        ds = datasets.ImageFolder(
            str(data / "train"), transform=build_train_transform(_size(a), "reference-torchvision")
        )
        # Persistent workers on both sides: the measure loops over the data several times.
        loader = torch.utils.data.DataLoader(
            ds, batch_size=bs, shuffle=True, num_workers=workers, persistent_workers=workers > 0
        )
        return {"value": rate(loader, lambda b: b[0].to(device)), "unit": "img/s"}
    os.environ["IMGCLS_CACHE"] = str(Path(a["tmp"]) / "cache")
    samples = discover(data).train
    t0 = time.perf_counter()
    store = get_store(samples, short=eval_resize(_size(a)), progress=False)
    fill = time.perf_counter() - t0
    g = torch.Generator().manual_seed(0)
    loader = make_loader(
        StoreDataset(store, samples), batch_size=bs, workers=workers, shuffle=True, seed=0, collate=collate_canvas
    )

    def augment(batch):
        canvas, sizes, _ = batch
        return train_batch(canvas.to(device, non_blocking=True), sizes, _size(a), g)

    tensor_rate = rate(loader, augment)
    fast = ImageDataset(samples, build_train_transform(_size(a), "reference"))
    workers_rate = rate(make_loader(fast, batch_size=bs, workers=workers, shuffle=True, seed=0), lambda b: b[0])
    return {
        "value": tensor_rate,
        "unit": "img/s",
        "note": f"tensor pipeline on {device}; store filled once in {fill:.1f}s ({store.pixels.nbytes / 2**20:.0f} MB "
        f"for {len(store)} images); imgcls's PIL workers (--data-pipeline workers) {workers_rate:.0f} img/s",
    }


def measure_gpu_full_finetune(side: str, a: dict) -> dict:
    """Full fine-tuning of ``a["model"]`` on the GPU: the reference loop (fp32, PIL workers) against imgcls
    (bf16 autocast, channels_last, tensor pipeline); imgcls also reports how busy the GPU was."""
    data = subset_folder(Path(a["data"]), Path(a["tmp"]) / "subset-full", a["full_images"])
    if side == "baseline":
        return {"value": _baseline_loop(a, data, head_only=False), "unit": "img/s"}
    os.environ["IMGCLS_CACHE"] = str(Path(a["tmp"]) / "cache")
    out = str(Path(a["tmp"]) / f"run-gpu-{a['model']}-{os.getpid()}")
    timer = _imgcls_train(a, data, out, finetune="full", augment="reference", epochs=2)
    busy = timer.gpu_busy()
    return {
        "value": timer.images_per_s(1),
        "unit": "img/s",
        "gpu_busy": busy,
        "note": "epoch 2 (epoch 1 fills the store)",
    }


def measure_gpu_head_epoch(side: str, a: dict) -> dict:
    """Head-only EfficientNet-B0 on the GPU, in seconds per 10,000 images (Food-11's training set)."""
    data = Path(a["data"])
    if side == "baseline":
        ips = _baseline_loop(a, data, head_only=True)
    else:
        os.environ["IMGCLS_CACHE"] = str(Path(a["tmp"]) / "cache")
        timer = _imgcls_train(
            a,
            data,
            str(Path(a["tmp"]) / "run-gpu-head"),
            finetune="head",
            augment="reference",
            feature_cache=0,
            epochs=2,
        )
        ips = timer.images_per_s(1)
    return {"value": 10_000 / ips, "unit": "s/10k img", "images_per_s": ips}


def measure_malloc_tuning(side: str, a: dict) -> dict:
    """imgcls's full fine-tuning with glibc malloc as it comes ("baseline") and with imgcls's in-process
    tuning: whether the tuning earns its place."""
    return measure_full_finetune("imgcls", a)


def run_job(measure: str, side: str, args: dict, env: dict, conn) -> None:
    """The fork server's entry: ``env`` replaces the process environment, the result (or the error's
    traceback) goes back through ``conn``."""
    import multiprocessing
    import traceback

    # A fork server's child inherits "forkserver" as its start method; a user's process (and so the
    # DataLoader workers being measured) starts with the platform's default.
    multiprocessing.set_start_method(None, force=True)
    os.environ.clear()
    os.environ.update(env)
    quiet = os.open(os.devnull, os.O_WRONLY)  # the training's own lines: the bench prints its table
    os.dup2(quiet, 1)
    try:
        conn.send({"ok": measure_one(measure, side, args)})
    except BaseException:
        conn.send({"error": traceback.format_exc()})
    finally:
        conn.close()


def measure_one(measure: str, side: str, args: dict) -> dict:
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.disable(logging.INFO)
    if side == "imgcls":
        from imgcls.core.malloc import tune_malloc

        tune_malloc()  # as imgcls train/compare do
    result = globals()[f"measure_{measure}"](side, args)
    result["peak_rss_mb"], result["worker_peak_rss_mb"] = peak_rss_mb()
    return result


def main() -> None:
    measure, side, args = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    print(json.dumps(measure_one(measure, side, args)))


if __name__ == "__main__":
    main()
