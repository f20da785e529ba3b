"""One bench measurement in a fresh process: ``python -m imgcls.bench_worker MEASURE SIDE ARGS_JSON``.

Prints one JSON line: value, unit, peak_rss_mb (this process + its largest child), and extras.
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
        tf = build_train_transform(224, "reference-torchvision")
        fn = lambda p: tf(Image.open(p).convert("RGB"))  # noqa: E731  (ImageFolder's loader)
    else:
        fn = build_train_transform(224, "reference")
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
    from imgcls.models import create_model

    model = create_model("efficientnet_b0", 11).eval()
    x = torch.randn(a["batch_size"], 3, 224, 224)
    if side == "baseline":

        def run(t):
            with torch.no_grad():
                return model(t)

        engine = "pytorch eager NCHW"
    else:
        os.environ["IMGCLS_CACHE"] = str(Path(a["tmp"]) / "cache")
        predictor = predictor_for_module(model, 224)  # the engine evaluate/predict/serve use
        run, engine = predictor.run, predictor.engine
    run(x)
    times = []
    for _ in range(a["repeats"]):
        t0 = time.perf_counter()
        run(x)
        times.append(time.perf_counter() - t0)
    ips = a["batch_size"] / statistics.median(times)
    return {"value": ips, "unit": "img/s", "gflops_per_s": ips * GMACS_EFFNET_B0 * 2, "note": engine}


class _Timer:
    """Lightning callback: per-epoch training throughput, the first batch of the run excluded (warm-up)."""

    def __init__(self):
        from lightning.pytorch.callbacks import Callback

        timer = self

        class CB(Callback):
            def on_train_epoch_start(self, trainer, pl_module):
                timer.epochs.append({"images": 0, "t0": None, "t1": None})

            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                e = timer.epochs[-1]
                if e["t0"] is None and (len(timer.epochs) > 1 or batch_idx >= 1):
                    e["t0"] = time.perf_counter()

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                e = timer.epochs[-1]
                if e["t0"] is not None:
                    e["images"] += len(batch[1])
                    e["t1"] = time.perf_counter()

        self.epochs: list[dict] = []
        self.callback = CB()

    def images_per_s(self, epoch: int) -> float:
        e = self.epochs[epoch]
        return e["images"] / (e["t1"] - e["t0"])


def _imgcls_train(a: dict, data: Path, out: str, **cfg) -> _Timer:
    from imgcls.config import resolve_config
    from imgcls.engine.train import train

    timer = _Timer()
    options = dict(
        model="efficientnet_b0",
        data=str(data),
        out=out,
        image_size=224,
        batch_size=a["batch_size"],
        workers=a["workers"],
        pretrained=False,
        epochs=1,
    )
    options.update(cfg)
    train(resolve_config(None, options), progress=False, extra_callbacks=[timer.callback])
    return timer


def _baseline_loop(a: dict, data: Path, *, head_only: bool) -> float:
    """The reference notebooks' loop; returns training images/s with the first batch excluded."""
    from torchvision import datasets

    from imgcls.data.transforms import build_train_transform
    from imgcls.models import create_model

    torch.manual_seed(0)
    ds = datasets.ImageFolder(str(data / "train"), transform=build_train_transform(224, "reference-torchvision"))
    loader = torch.utils.data.DataLoader(ds, batch_size=a["batch_size"], shuffle=True, num_workers=a["workers"])
    model = create_model("efficientnet_b0", 11)  # every parameter requires_grad=True
    params = model.classifier.parameters() if head_only else model.parameters()
    optimizer = torch.optim.Adam(params, lr=1e-3, weight_decay=1e-4)
    model.train()
    images, t0 = 0, None
    for i, (x, y) in enumerate(loader):
        if i == 1:
            t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if t0 is not None:
            images += len(y)
    return images / (time.perf_counter() - t0)


def measure_head_epoch(side: str, a: dict) -> dict:
    data = Path(a["data"])
    n = len(jpeg_paths(data))
    if side == "baseline":
        ips = _baseline_loop(a, data, head_only=True)
        gflops = ips * GMACS_EFFNET_B0 * 2 * 3  # forward + full backward
    else:
        timer = _imgcls_train(a, data, str(Path(a["tmp"]) / "run-head"), finetune="head", augment="reference")
        ips = timer.images_per_s(0)
        gflops = ips * GMACS_EFFNET_B0 * 2  # forward only: the frozen backbone needs no backward
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
    return {"value": ips, "unit": "img/s", "gflops_per_s": ips * GMACS_EFFNET_B0 * 2 * 3}


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


def measure_malloc_tuning(side: str, a: dict) -> dict:
    """imgcls's full fine-tuning with glibc malloc as it comes ("baseline") and with imgcls's in-process
    tuning: whether the tuning earns its place."""
    return measure_full_finetune("imgcls", a)


def main() -> None:
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.disable(logging.INFO)
    measure, side, args = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    if side == "imgcls":
        from imgcls.malloc import tune_malloc

        tune_malloc()  # as imgcls train/compare do
    result = globals()[f"measure_{measure}"](side, args)
    result["peak_rss_mb"], result["worker_peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
