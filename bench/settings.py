"""What every measure takes (``Settings``) and gives (``Result``), the generated photos both sides read,
and the machine the numbers come from."""

from __future__ import annotations

import os
import platform
import resource
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = 11
GMACS_EFFNET_B0 = 0.386  # per 224 px image (registry count, multiply-add = 1)


@dataclass(frozen=True)
class Settings:
    """One bench run's settings; both sides of a measure get the same."""

    data: str  # the generated photos: train/<class>/*.jpg + val/
    tmp: str  # scratch (run folders, caches) for this run
    images: int  # training images
    batch_size: int
    workers: int  # DataLoader workers, both sides
    repeats: int  # timings per measure (the median is kept)
    min_seconds: float  # the pipeline measure's shortest timing
    min_batches: int
    full_images: int  # images of the full fine-tuning measures (a subset: they are slow)
    device: str = "cpu"
    image_size: int = 224  # the reference; less only for smoke runs (the test suite's)
    model: str = "efficientnet_b0"

    @property
    def gmacs(self) -> float:
        """Multiply-adds per image of EfficientNet-B0 at this size."""
        return GMACS_EFFNET_B0 * (self.image_size / 224) ** 2

    @property
    def cache(self) -> str:
        return str(Path(self.tmp) / "cache")


@dataclass
class Result:
    value: float
    unit: str  # "img/s" (higher is better) or seconds per something (lower is better)
    gflops_per_s: float | None = None
    note: str | None = None
    images_per_s: float | None = None
    gpu_busy: float | None = None  # fraction of the epoch the GPU spent in training steps
    peak_rss_mb: float = 0.0  # this process
    worker_peak_rss_mb: float = 0.0  # its largest child (a DataLoader worker)

    @property
    def higher_is_better(self) -> bool:
        return self.unit.endswith("/s")


def peak_rss_mb() -> tuple[float, float]:
    """Peak RSS of this process, and of its largest child (a DataLoader worker; forked, so much of its
    RSS is pages it shares with this process: adding the two would overcount)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return own / 1024, child / 1024


def make_photos(root: Path, n: int, seed: int = 0) -> None:
    """Food-11-like JPEGs (512x384 and 384x512, textured) in train/<class>/ plus a tiny val/ split."""
    from imgcls.data.demo import render

    rng = np.random.default_rng(seed)
    for split, count in (("train", n), ("val", CLASSES)):
        for i in range(count):
            cls = i % CLASSES
            small = render(cls, 128, rng)
            size = (512, 384) if i % 3 else (384, 512)
            photo = np.asarray(small.resize(size, Image.BICUBIC), dtype=np.float32)
            photo += rng.normal(0, 6, photo.shape)  # sensor-like grain, so JPEG sizes look like photos
            folder = root / split / f"c{cls:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(photo.clip(0, 255).astype(np.uint8)).save(folder / f"{cls}_{i}.jpg", quality=90)


def jpeg_paths(root: Path) -> list[str]:
    return sorted(str(p) for p in (root / "train").rglob("*.jpg"))


def subset_folder(src: Path, dst: Path, count: int) -> Path:
    """An ImageFolder with the first ``count`` training images (symlinks) and the same val split."""
    if not dst.exists():
        ordered = sorted((src / "train").rglob("*.jpg"), key=lambda p: int(p.stem.split("_")[1]))  # classes interleave
        for path in ordered[: max(count, 2 * CLASSES)]:
            target = dst / "train" / path.parent.name / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(path)
        for path in (src / "val").rglob("*.jpg"):
            target = dst / "val" / path.parent.name / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(path)
    return dst


@dataclass
class Machine:
    cpu: str
    cores: int
    mhz: float | None
    fp32_flops_per_cycle_per_core: int
    peak_gflops: float
    torch: str
    python: str
    cuda: str | None = field(default=None)


def machine() -> Machine:
    cpu = {"model": platform.processor() or "unknown", "mhz": None, "avx512": False}
    try:
        text = Path("/proc/cpuinfo").read_text()
        for line in text.splitlines():
            if line.startswith("model name") and cpu["model"] in ("unknown", "", "x86_64"):
                cpu["model"] = line.split(":", 1)[1].strip()
            if line.startswith("cpu MHz") and cpu["mhz"] is None:
                cpu["mhz"] = float(line.split(":", 1)[1])
        cpu["avx512"] = " avx512f " in text
    except OSError:
        pass
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    flops_per_cycle = 64 if cpu["avx512"] else 32  # fp32 FMA: 2 units x (16 or 8 lanes) x 2 FLOPs
    return Machine(
        cpu=cpu["model"],
        cores=cores,
        mhz=cpu["mhz"],
        fp32_flops_per_cycle_per_core=flops_per_cycle,
        peak_gflops=round(cores * (cpu["mhz"] or 0) / 1000 * flops_per_cycle, 1),
        torch=torch.__version__,
        python=platform.python_version(),
        cuda=torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    )
