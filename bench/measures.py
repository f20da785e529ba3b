"""The measures: one small function per side, ``(Settings) -> Result``, and the table that names them.

The baseline is what the original notebooks did: torchvision ImageFolder, the torchvision reference
transforms, a plain loop, every parameter ``requires_grad=True`` with only the head in the optimizer,
eager NCHW fp32. A measure with no baseline of its own borrows another's (the reference loop has no feature
cache; int8 is compared with the same eager fp32 inference).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from bench.settings import Result, Settings, jpeg_paths, subset_folder
from bench.training import baseline_loop, imgcls_train

Side = Callable[[Settings], Result]


# -- augmentation: images/s through each train transform, one core -------------------------------------


def augment_baseline(s: Settings) -> Result:
    from PIL import Image

    from imgcls.data.transforms import build_train_transform

    tf = build_train_transform(s.image_size, "reference-torchvision")
    return _augment_rate(s, lambda p: tf(Image.open(p).convert("RGB")))  # ImageFolder's loader


def augment_imgcls(s: Settings) -> Result:
    from imgcls.data.transforms import build_train_transform

    return _augment_rate(s, build_train_transform(s.image_size, "reference"))


def _augment_rate(s: Settings, fn) -> Result:
    torch.set_num_threads(1)  # per core
    paths = jpeg_paths(Path(s.data))[: 48 if s.repeats < 3 else 256]
    for p in paths[:4]:
        fn(p)
    rates = []
    for _ in range(s.repeats):
        t0 = time.perf_counter()
        for p in paths:
            fn(p)
        rates.append(len(paths) / (time.perf_counter() - t0))
    return Result(statistics.median(rates), "img/s")


# -- inference ----------------------------------------------------------------------------------------


def inference_baseline(s: Settings) -> Result:
    from imgcls.engine.timing import images_per_second
    from imgcls.models import create_model

    model = create_model("efficientnet_b0", 11).eval().to(s.device)

    def run(t):
        with torch.no_grad():
            return model(t.to(s.device)).cpu()  # a notebook reads the logits back

    ips = images_per_second(run, s.image_size, batch_size=s.batch_size, min_repeats=s.repeats, min_seconds=0.0)
    return Result(ips, "img/s", gflops_per_s=ips * s.gmacs * 2, note="pytorch eager NCHW")


def inference_imgcls(s: Settings) -> Result:
    from imgcls.engine.predictor import predictor_for_module
    from imgcls.engine.timing import images_per_second
    from imgcls.models import create_model

    os.environ["IMGCLS_CACHE"] = s.cache
    predictor = predictor_for_module(create_model("efficientnet_b0", 11).eval().to(s.device), s.image_size)
    ips = images_per_second(
        lambda t: predictor.run(t).cpu(), s.image_size, batch_size=s.batch_size, min_repeats=s.repeats, min_seconds=0.0
    )
    return Result(ips, "img/s", gflops_per_s=ips * s.gmacs * 2, note=predictor.engine)


def inference_int8(s: Settings) -> Result:
    """imgcls's opt-in int8 export (``export --quantize int8``: static QDQ, calibrated on 64 training
    photos through the eval transform) in ONNX Runtime."""
    from imgcls.commands.quantize import calibration_batches, quantize_static_int8
    from imgcls.data.layouts import discover
    from imgcls.engine.onnx_engine import export_onnx
    from imgcls.engine.predictor import onnx_predictor
    from imgcls.engine.timing import images_per_second
    from imgcls.models import create_model

    folder = Path(s.tmp) / f"int8-{os.getpid()}"
    fp32 = export_onnx(create_model("efficientnet_b0", 11).eval(), s.image_size, folder / "model.onnx")
    info = {"classes": [f"c{i}" for i in range(11)], "image_size": s.image_size, "model": "efficientnet_b0"}
    samples = discover(Path(s.data)).train[:64]
    batches = calibration_batches(samples, onnx_predictor(fp32, info).transform)
    quantize_static_int8(fp32, folder / "model.int8.onnx", batches)
    int8 = onnx_predictor(folder / "model.int8.onnx", info)  # the predictor predict/serve would use
    ips = images_per_second(int8.run, s.image_size, batch_size=s.batch_size, min_repeats=s.repeats, min_seconds=0.0)
    note = "onnxruntime int8 (static QDQ); opt-in, and refused by export when top-1 agreement with fp32 on the validation split is under 99%"
    return Result(ips, "img/s", note=note)


# -- training -----------------------------------------------------------------------------------------


def head_epoch_baseline(s: Settings) -> Result:
    n = len(jpeg_paths(Path(s.data)))
    ips = baseline_loop(s, Path(s.data), head_only=True)
    return Result(n / ips, "s/epoch", gflops_per_s=ips * s.gmacs * 2 * 3, images_per_s=ips)  # forward + backward


def head_epoch_imgcls(s: Settings) -> Result:
    n = len(jpeg_paths(Path(s.data)))
    timer = imgcls_train(s, Path(s.data), str(Path(s.tmp) / "run-head"), finetune="head", augment="reference")
    ips = timer.images_per_s(0)
    return Result(n / ips, "s/epoch", gflops_per_s=ips * s.gmacs * 2, images_per_s=ips)  # the backbone: forward only


def cached_epoch_imgcls(s: Settings) -> Result:
    os.environ["IMGCLS_CACHE"] = s.cache
    t0 = time.perf_counter()
    timer = imgcls_train(s, Path(s.data), str(Path(s.tmp) / "run-cached"), finetune="head", augment="none", epochs=3)
    total = time.perf_counter() - t0
    n = len(jpeg_paths(Path(s.data)))
    cache_mb = sum(p.stat().st_size for p in Path(s.cache).rglob("*.npy")) / 2**20
    note = (
        f"epochs 2-3 from the memory-mapped cache; whole 3-epoch run incl. feature extraction {total:.1f}s; "
        f"cache {cache_mb:.1f} MB for {n + 11} images (1280 fp16 each)"
    )
    return Result(statistics.median(n / timer.images_per_s(e) for e in (1, 2)), "s/epoch", note=note)


def full_finetune_baseline(s: Settings) -> Result:
    ips = baseline_loop(s, subset_folder(Path(s.data), Path(s.tmp) / "subset-full", s.full_images), head_only=False)
    return Result(ips, "img/s", gflops_per_s=ips * s.gmacs * 2 * 3)


def full_finetune_imgcls(s: Settings) -> Result:
    data = subset_folder(Path(s.data), Path(s.tmp) / "subset-full", s.full_images)
    timer = imgcls_train(s, data, str(Path(s.tmp) / f"run-full-{os.getpid()}"), finetune="full", augment="reference")
    ips = timer.images_per_s(0)
    return Result(ips, "img/s", gflops_per_s=ips * s.gmacs * 2 * 3)


def partial_imgcls(s: Settings) -> Result:
    """--finetune last:3 from cached activations (the epochs after the first)."""
    os.environ["IMGCLS_CACHE"] = s.cache
    t0 = time.perf_counter()
    timer = imgcls_train(
        s,
        Path(s.data),
        str(Path(s.tmp) / "run-partial"),
        finetune="last:3",
        augment="reference",
        feature_cache=1,
        epochs=3,
    )
    total = time.perf_counter() - t0
    n = len(jpeg_paths(Path(s.data)))
    note = f"last:3 (features.6.3, 7.0, 8 + head) from 1 cached view; whole 3-epoch run incl. activation extraction {total:.1f}s"
    return Result(statistics.median(n / timer.images_per_s(e) for e in (1, 2)), "s/epoch", note=note)


def per_epoch(borrowed: Result, s: Settings) -> Result:
    """A borrowed img/s baseline as seconds per epoch over the bench's training images."""
    return replace(borrowed, value=s.images / borrowed.value, unit="s/epoch")


def malloc_untuned(s: Settings) -> Result:
    """imgcls's full fine-tuning with glibc malloc as it comes (the side's environment says so)."""
    return full_finetune_imgcls(s)


# -- the data pipeline: images/s delivered to the model, no model ------------------------------------


def pipeline_baseline(s: Settings) -> Result:
    from torchvision import datasets

    from imgcls.data.transforms import build_train_transform

    ds = datasets.ImageFolder(
        str(Path(s.data) / "train"), transform=build_train_transform(s.image_size, "reference-torchvision")
    )
    # Persistent workers on both sides: the measure loops over the data several times.
    loader = torch.utils.data.DataLoader(
        ds, batch_size=s.batch_size, shuffle=True, num_workers=s.workers, persistent_workers=s.workers > 0
    )
    return Result(_pipeline_rate(s, loader, lambda b: b[0].to(s.device)), "img/s")


def pipeline_imgcls(s: Settings) -> Result:
    """The decoded store + batched augmentation on the bench's device; imgcls's own PIL worker pipeline
    (--data-pipeline workers) is timed too, for the note."""
    from imgcls.data.dataset import ImageDataset
    from imgcls.data.image_store import get_store
    from imgcls.data.layouts import discover
    from imgcls.data.loader import make_loader
    from imgcls.data.tensor_augment import train_batch
    from imgcls.data.tensor_pipeline import StoreDataset, collate_canvas
    from imgcls.data.transforms import build_train_transform, eval_resize

    os.environ["IMGCLS_CACHE"] = s.cache
    samples = discover(Path(s.data)).train
    t0 = time.perf_counter()
    store = get_store(samples, short=eval_resize(s.image_size), progress=False)
    fill = time.perf_counter() - t0
    g = torch.Generator().manual_seed(0)
    loader = make_loader(
        StoreDataset(store, samples),
        batch_size=s.batch_size,
        workers=s.workers,
        shuffle=True,
        seed=0,
        collate=collate_canvas,
    )

    def augment(batch):
        canvas, sizes, _ = batch
        return train_batch(canvas.to(s.device, non_blocking=True), sizes, s.image_size, g)

    tensor_rate = _pipeline_rate(s, loader, augment)
    fast = ImageDataset(samples, build_train_transform(s.image_size, "reference"))
    loader = make_loader(fast, batch_size=s.batch_size, workers=s.workers, shuffle=True, seed=0)
    workers_rate = _pipeline_rate(s, loader, lambda b: b[0])
    note = (
        f"tensor pipeline on {s.device}; store filled once in {fill:.1f}s ({store.pixels.nbytes / 2**20:.0f} MB for "
        f"{len(store)} images); imgcls's PIL workers (--data-pipeline workers) {workers_rate:.0f} img/s"
    )
    return Result(tensor_rate, "img/s", note=note)


def _pipeline_rate(s: Settings, loader, to_input) -> float:
    """Images/s after the first batch, over as many passes as it takes to time ``min_batches`` batches
    and ``min_seconds`` (a quick run's 64 images would otherwise time one batch)."""
    images, batches, t0 = 0, 0, None
    while t0 is None or batches < s.min_batches or time.perf_counter() - t0 < s.min_seconds:
        for batch in loader:
            x = to_input(batch)
            if t0 is None:
                t0 = time.perf_counter()  # after the first batch: workers started, caches warm
                continue
            images += len(x)
            batches += 1
    if s.device != "cpu":
        torch.cuda.synchronize()
    return images / (time.perf_counter() - t0)


# -- on a GPU -----------------------------------------------------------------------------------------


def gpu_full_finetune_imgcls(s: Settings) -> Result:
    """imgcls on the GPU: bf16 autocast, channels_last, the tensor pipeline; how busy the GPU was."""
    data = subset_folder(Path(s.data), Path(s.tmp) / "subset-full", s.full_images)
    os.environ["IMGCLS_CACHE"] = s.cache
    out = str(Path(s.tmp) / f"run-gpu-{s.model}-{os.getpid()}")
    timer = imgcls_train(s, data, out, finetune="full", augment="reference", epochs=2)
    return Result(timer.images_per_s(1), "img/s", gpu_busy=timer.gpu_busy(), note="epoch 2 (epoch 1 fills the store)")


def gpu_full_finetune_baseline(s: Settings) -> Result:
    data = subset_folder(Path(s.data), Path(s.tmp) / "subset-full", s.full_images)
    return Result(baseline_loop(s, data, head_only=False), "img/s")


def gpu_head_epoch_baseline(s: Settings) -> Result:
    """Head-only EfficientNet-B0, in seconds per 10,000 images (Food-11's training set)."""
    ips = baseline_loop(s, Path(s.data), head_only=True)
    return Result(10_000 / ips, "s/10k img", images_per_s=ips)


def gpu_head_epoch_imgcls(s: Settings) -> Result:
    os.environ["IMGCLS_CACHE"] = s.cache
    out = str(Path(s.tmp) / "run-gpu-head")
    timer = imgcls_train(s, Path(s.data), out, finetune="head", augment="reference", feature_cache=0, epochs=2)
    ips = timer.images_per_s(1)
    return Result(10_000 / ips, "s/10k img", images_per_s=ips)


# -- the table ----------------------------------------------------------------------------------------

GPU_MODELS = ("efficientnet_b0", "vit_b_16", "attn_cnn")
GPU_HEAD_EPOCH_S = 10.0  # s per 10,000 images (a Food-11 epoch), head-only from the decoded store
GPU_BUSY = 0.9  # fraction of full fine-tuning wall time inside training steps


@dataclass(frozen=True)
class Measure:
    """One row of the bench: the target ratio imgcls must reach over the baseline (in the unit's better
    direction), the two sides, or a baseline borrowed from another measure (``borrow``: its name;
    ``convert`` turns its result into this measure's unit), and an optional target on imgcls's result
    alone (``absolute(result) -> (met, rule)``)."""

    name: str
    target: float
    imgcls: Side
    baseline: Side | None = None
    borrow: str | None = None
    convert: Callable[[Result, Settings], Result] | None = None
    accelerator: str = "cpu"
    model: str | None = None  # this measure's model, in place of the settings'
    absolute: Callable[[Result], tuple[bool, str]] | None = None

    def settings(self, s: Settings) -> Settings:
        return replace(s, model=self.model) if self.model else s


def _gpu_head(r: Result) -> tuple[bool, str]:
    return r.value < GPU_HEAD_EPOCH_S, f"imgcls < {GPU_HEAD_EPOCH_S:g} s per 10k images"


def _gpu_busy(r: Result) -> tuple[bool, str]:
    return r.gpu_busy is not None and r.gpu_busy >= GPU_BUSY, f"GPU busy >= {GPU_BUSY:.0%} of the training time"


MEASURES = [
    Measure("head_epoch", 5.0, head_epoch_imgcls, head_epoch_baseline),
    Measure("cached_epoch", 100.0, cached_epoch_imgcls, borrow="head_epoch"),
    Measure("full_finetune", 1.5, full_finetune_imgcls, full_finetune_baseline),
    Measure("partial", 10.0, partial_imgcls, borrow="full_finetune", convert=per_epoch),
    Measure("inference", 5.0, inference_imgcls, inference_baseline),
    Measure("inference_int8", 5.0, inference_int8, borrow="inference"),
    Measure("augment", 2.0, augment_imgcls, augment_baseline),
    # Its baseline is imgcls itself, run (like every baseline) without imgcls's malloc tuning.
    Measure("malloc_tuning", 1.1, full_finetune_imgcls, malloc_untuned),
    Measure("pipeline", 2.0, pipeline_imgcls, pipeline_baseline),
    # On a GPU: ratios against the reference loop on the same GPU, plus two absolute targets.
    Measure("pipeline", 2.0, pipeline_imgcls, pipeline_baseline, accelerator="cuda"),
    Measure("head_epoch", 5.0, gpu_head_epoch_imgcls, gpu_head_epoch_baseline, accelerator="cuda", absolute=_gpu_head),
    *(
        Measure(
            f"full_finetune:{m}",
            3.0,
            gpu_full_finetune_imgcls,
            gpu_full_finetune_baseline,
            accelerator="cuda",
            model=m,
            absolute=_gpu_busy,
        )
        for m in GPU_MODELS
    ),
    Measure("inference", 5.0, inference_imgcls, inference_baseline, accelerator="cuda"),
]


def table(accelerator: str) -> list[Measure]:
    return [m for m in MEASURES if m.accelerator == accelerator]


def find(name: str, accelerator: str) -> Measure:
    return next(m for m in table(accelerator) if m.name == name)
