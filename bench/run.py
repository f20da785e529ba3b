"""``imgcls bench``: imgcls's fast paths against a reference-style PyTorch loop, side by side in one run.

Each (measure, side) runs in its own subprocess so that its peak resident memory is its own. The
baseline is what the original notebooks did: torchvision ImageFolder, the torchvision reference
transforms, a plain loop, every parameter ``requires_grad=True`` with only the head in the optimizer,
eager NCHW fp32. Both sides get the same images, batch size, sample count and worker count.
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from imgcls.core.malloc import DISABLE_ENV

TARGETS = {
    "head_epoch": 5.0,
    "cached_epoch": 100.0,
    "full_finetune": 1.5,
    "partial": 10.0,
    "inference": 5.0,
    "inference_int8": 5.0,
    "augment": 2.0,
    "malloc_tuning": 1.1,
    "pipeline": 2.0,
}
GPU_MODELS = ("efficientnet_b0", "vit_b_16", "attn_cnn")
# On a GPU: ratios against the reference loop on the same GPU, plus two absolute targets.
GPU_TARGETS = {
    "pipeline": 2.0,
    "head_epoch": 5.0,
    **{f"full_finetune:{m}": 3.0 for m in GPU_MODELS},
    "inference": 5.0,
}
GPU_HEAD_EPOCH_S = 10.0  # s per 10,000 images (a Food-11 epoch), head-only from the decoded store
GPU_BUSY = 0.9  # fraction of full fine-tuning wall time inside training steps
CLASSES = 11


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


def machine() -> dict:
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
    peak = cores * (cpu["mhz"] or 0) / 1000 * flops_per_cycle
    return {
        "cpu": cpu["model"],
        "cores": cores,
        "mhz": cpu["mhz"],
        "fp32_flops_per_cycle_per_core": flops_per_cycle,
        "peak_gflops": round(peak, 1),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def side_environment(measure: str, side: str) -> dict:
    """The baseline runs with the environment of a user's notebook: no malloc tunables, no imgcls tuning."""
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    if side == "baseline":
        env[DISABLE_ENV] = "0"  # only read by imgcls code; the malloc_tuning baseline is imgcls untuned
    return env


# Imported once by the fork server; every measurement is a child forked from it (its own process and
# peak RSS, without paying these imports - seconds each - again).
PRELOAD = ["torch", "torchvision", "lightning", "timm", "torchmetrics", "onnxruntime", "bench.worker"]


def _run_worker(measure: str, side: str, args: dict, env: dict) -> dict:
    import multiprocessing

    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    receive, send = ctx.Pipe(duplex=False)
    from bench.worker import run_job

    proc = ctx.Process(target=run_job, args=(measure, side, args, env, send))
    proc.start()
    send.close()
    try:
        reply = receive.recv()
    except EOFError:
        reply = {"error": f"the worker process died (exit code {proc.join() or proc.exitcode})"}
    proc.join()
    if "ok" not in reply:
        raise RuntimeError(f"bench worker {measure}/{side} failed:\n{reply['error'][-3000:]}")
    return reply["ok"]


def _plan(accelerator: str, only: list[str] | None) -> list[tuple[str, str, dict, float]]:
    """(name, worker measure, extra worker args, target) for each measure to run."""
    if accelerator == "cuda":
        plan = []
        for name, target in GPU_TARGETS.items():
            if name.startswith("full_finetune:"):
                plan.append((name, "gpu_full_finetune", {"model": name.split(":", 1)[1]}, target))
            else:
                plan.append((name, {"head_epoch": "gpu_head_epoch"}.get(name, name), {}, target))
    else:
        plan = [(name, name, {}, target) for name, target in TARGETS.items()]
    if only:
        unknown = sorted(set(only) - {p[0] for p in plan})
        if unknown:
            from imgcls.core.errors import ImgclsError

            raise ImgclsError(
                f"--only {','.join(unknown)}: no such measure for --accelerator {accelerator} "
                f"(choose from {', '.join(p[0] for p in plan)})"
            )
        plan = [p for p in plan if p[0] in only]
    return plan


def run_bench(
    *,
    quick: bool = False,
    images: int | None = None,
    batch_size: int | None = None,
    workers: int | None = None,
    json_path: str | None = None,
    accelerator: str = "cpu",
    only: list[str] | None = None,
    image_size: int = 224,
) -> dict:
    """``image_size``: 224 px is the reference; smaller sizes make tiny runs (the test suite's) whose
    numbers say nothing about the recipe."""
    from imgcls.core.system import default_workers
    from imgcls.engine.onnx_engine import onnxruntime_available

    if accelerator == "cuda":
        import torch

        if not torch.cuda.is_available():
            from imgcls.core.errors import ImgclsError

            raise ImgclsError("--accelerator cuda: PyTorch sees no CUDA device on this machine")
    plan = _plan(accelerator, only)
    for flag, value, low in (
        ("--images", images, 2 * CLASSES),
        ("--batch-size", batch_size, 2),
        ("--workers", workers, 0),
        ("--image-size", image_size, 32),
    ):
        if value is not None and not low <= value <= 1_000_000:
            from imgcls.core.errors import ImgclsError

            raise ImgclsError(f"bench {flag} {value}: use {low} or more")
    gpu = accelerator == "cuda"
    n = images or ((1024 if quick else 4096) if gpu else (64 if quick else 512))
    bs = batch_size or (64 if gpu or not quick else 32)
    args = {
        "batch_size": bs,
        "workers": default_workers() if workers is None else workers,
        "repeats": 2 if quick else 3,
        # The pipeline measure's shortest timing: a quick run checks that it works, a full one measures.
        "min_seconds": 0.5 if quick else 2.0,
        "min_batches": 4 if quick else 16,
        "full_images": n // 2 if gpu else (2 * bs if quick else 4 * bs),
        "device": "cuda" if gpu else "cpu",
        "image_size": image_size,
    }
    info = machine()
    results = {
        "machine": info,
        "settings": {
            "images": n,
            **args,
            "model": "efficientnet_b0",
            "weights": "random init (speed does not depend on weight values)",
            "onnxruntime": onnxruntime_available(),
        },
        "measures": [],
    }
    with tempfile.TemporaryDirectory(prefix="imgcls-bench-") as tmp:
        root = Path(tmp)
        print(
            f"bench: {n} synthetic 512x384 JPEGs, EfficientNet-B0 at {image_size} px, batch {bs}, "
            f"{args['workers']} loader worker(s), {info['cores']} cores"
        )
        make_photos(root / "data", n)
        args = {**args, "data": str(root / "data"), "tmp": str(root)}
        raw = {}
        environments = {}
        # These imgcls measures have no baseline of their own: they compare against another measure's
        # baseline (the reference loop has no cache; int8 is compared with the same eager fp32 run), which
        # runs for them when it is not in the plan already.
        borrowed = {"cached_epoch": "head_epoch", "partial": "full_finetune", "inference_int8": "inference"}
        needed = {borrowed[p[0]] for p in plan if p[0] in borrowed} - {p[0] for p in plan}
        jobs = [(m, m, {}, "baseline") for m in sorted(needed)]
        for name, measure, extra, _ in plan:
            sides = ("imgcls",) if name in borrowed else ("baseline", "imgcls")
            jobs += [(name, measure, extra, side) for side in sides]
        for name, measure, extra, side in jobs:
            t0 = time.perf_counter()
            env = side_environment(measure, side)
            environments[side] = {k: env.get(k) for k in ("GLIBC_TUNABLES", DISABLE_ENV, "OMP_NUM_THREADS")}
            raw[(name, side)] = r = _run_worker(measure, side, {**args, **extra}, env)
            print(
                f"  {name:<16}{side:<9} {r['value']:>10.3f} {r['unit']:<9} peak RSS {r['peak_rss_mb']:>7.0f} MB"
                f"  ({time.perf_counter() - t0:.0f}s)"
            )
        for name, source in borrowed.items():
            if (source, "baseline") in raw:
                raw[(name, "baseline")] = raw[(source, "baseline")]
        if ("partial", "baseline") in raw:  # img/s -> s/epoch over the same images as the partial run
            full = raw[("partial", "baseline")]
            raw[("partial", "baseline")] = {**full, "value": n / full["value"], "unit": "s/epoch"}
    results["environments"] = {**environments, "imgcls_in_process": "imgcls.core.malloc.tune_malloc() (mallopt)"}
    results["accelerator"] = accelerator
    for measure, _, _, target in plan:
        b, m = raw[(measure, "baseline")], raw[(measure, "imgcls")]
        higher_is_better = b["unit"].endswith("/s")
        ratio = (m["value"] / b["value"]) if higher_is_better else (b["value"] / m["value"])
        entry = {
            "name": measure,
            "unit": b["unit"],
            "baseline": round(b["value"], 4),
            "imgcls": round(m["value"], 4),
            "ratio": round(ratio, 2),
            "target": target,
            "met": ratio >= target,
            "baseline_peak_rss_mb": round(b["peak_rss_mb"]),
            "imgcls_peak_rss_mb": round(m["peak_rss_mb"]),
            "baseline_worker_peak_rss_mb": round(b["worker_peak_rss_mb"]),
            "imgcls_worker_peak_rss_mb": round(m["worker_peak_rss_mb"]),
        }
        for side, r in (("baseline", b), ("imgcls", m)):
            if r.get("gflops_per_s") is not None:
                entry[f"{side}_gflops_per_s"] = round(r["gflops_per_s"], 1)
            if r.get("note"):
                entry[f"{side}_note"] = r["note"]
        if accelerator == "cuda" and measure == "head_epoch":
            entry["absolute_target"] = f"imgcls < {GPU_HEAD_EPOCH_S:g} s per 10k images"
            entry["met"] = entry["met"] and m["value"] < GPU_HEAD_EPOCH_S
        if m.get("gpu_busy") is not None:
            entry["imgcls_gpu_busy"] = round(m["gpu_busy"], 3)
            entry["absolute_target"] = f"GPU busy >= {GPU_BUSY:.0%} of the training time"
            entry["met"] = entry["met"] and m["gpu_busy"] >= GPU_BUSY
        results["measures"].append(entry)
    print_table(results)
    if json_path:
        from imgcls.core.files import write_json

        write_json(Path(json_path), results)
        print(f"wrote {json_path}")
    return results


def print_table(results: dict) -> None:
    peak = results["machine"]["peak_gflops"]
    print(
        f"\n{'measure':<15}{'unit':<10}{'baseline':>11}{'imgcls':>11}{'ratio':>8}{'target':>8}  met  "
        f"{'main RSS MB (base/imgcls)':>26}  GFLOP/s (peak {peak})"
    )
    for m in results["measures"]:
        gf = "/".join(str(m.get(f"{s}_gflops_per_s", "-")) for s in ("baseline", "imgcls"))
        print(
            f"{m['name']:<15}{m['unit']:<10}{m['baseline']:>11.3f}{m['imgcls']:>11.3f}{m['ratio']:>7.1f}x"
            f"{m['target']:>7g}x  {'yes' if m['met'] else 'NO ':<4} {m['baseline_peak_rss_mb']:>15}/"
            f"{m['imgcls_peak_rss_mb']:<10} {gf}"
        )
