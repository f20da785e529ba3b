"""``python -m bench``: imgcls's fast paths against a reference-style PyTorch loop, side by side in one run.

Each (measure, side) runs in its own subprocess, so that its peak resident memory is its own. Both sides
get the same images, batch size, sample count and worker count (``Settings``); the measures and their
targets are the table in ``measures.py``.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from bench.measures import Measure, table
from bench.settings import CLASSES, Result, Settings, machine, make_photos
from imgcls.core.errors import ImgclsError
from imgcls.core.malloc import DISABLE_ENV

TARGETS = {m.name: m.target for m in table("cpu")}
# Imported once by the fork server; every side is a child forked from it (its own process and peak RSS,
# without paying these imports, seconds each, again).
PRELOAD = ["torch", "torchvision", "lightning", "timm", "torchmetrics", "onnxruntime", "bench.worker"]


def side_environment(m: Measure, side: str) -> dict:
    """The baseline runs with the environment of a user's notebook: no malloc tunables, no imgcls tuning
    (for the malloc measure, that untuned environment is the point)."""
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    if side == "baseline":
        env[DISABLE_ENV] = "0"  # only read by imgcls code
    return env


def run_side(m: Measure, side: str, settings: Settings, env: dict) -> Result:
    import multiprocessing

    from bench.worker import run_job

    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=run_job, args=(m.name, m.accelerator, side, settings, env, send))
    proc.start()
    send.close()
    try:
        reply = receive.recv()
    except EOFError:
        reply = {"error": f"the worker process died (exit code {proc.join() or proc.exitcode})"}
    proc.join()
    if "ok" not in reply:
        raise RuntimeError(f"bench {m.name}/{side} failed:\n{reply['error'][-3000:]}")
    return reply["ok"]


def plan(accelerator: str, only: list[str] | None) -> list[Measure]:
    measures = table(accelerator)
    if only:
        unknown = sorted(set(only) - {m.name for m in measures})
        if unknown:
            raise ImgclsError(
                f"--only {','.join(unknown)}: no such measure for --accelerator {accelerator} "
                f"(choose from {', '.join(m.name for m in measures)})"
            )
        measures = [m for m in measures if m.name in only]
    return measures


def settings_for(tmp: Path, *, accelerator, quick, images, batch_size, workers, image_size) -> Settings:
    from imgcls.core.system import default_workers

    gpu = accelerator == "cuda"
    n = images or ((1024 if quick else 4096) if gpu else (64 if quick else 512))
    bs = batch_size or (64 if gpu or not quick else 32)
    return Settings(
        data=str(tmp / "data"),
        tmp=str(tmp),
        images=n,
        batch_size=bs,
        workers=default_workers() if workers is None else workers,
        repeats=2 if quick else 3,
        # The pipeline measure's shortest timing: a quick run checks that it works, a full one measures.
        min_seconds=0.5 if quick else 2.0,
        min_batches=4 if quick else 16,
        full_images=n // 2 if gpu else (2 * bs if quick else 4 * bs),
        device="cuda" if gpu else "cpu",
        image_size=image_size,
    )


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
    run=run_side,
) -> dict:
    """``image_size``: 224 px is the reference; smaller sizes make tiny runs (the test suite's) whose
    numbers say nothing about the recipe. ``run``: how one side is run (its own process by default)."""
    from imgcls.engine.onnx_engine import onnxruntime_available

    if accelerator == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ImgclsError("--accelerator cuda: PyTorch sees no CUDA device on this machine")
    measures = plan(accelerator, only)
    for flag, value, low in (
        ("--images", images, 2 * CLASSES),
        ("--batch-size", batch_size, 2),
        ("--workers", workers, 0),
        ("--image-size", image_size, 32),
    ):
        if value is not None and not low <= value <= 1_000_000:
            raise ImgclsError(f"bench {flag} {value}: use {low} or more")
    info = machine()
    with tempfile.TemporaryDirectory(prefix="imgcls-bench-") as tmp:
        s = settings_for(
            Path(tmp),
            accelerator=accelerator,
            quick=quick,
            images=images,
            batch_size=batch_size,
            workers=workers,
            image_size=image_size,
        )
        print(
            f"bench: {s.images} synthetic 512x384 JPEGs, EfficientNet-B0 at {s.image_size} px, batch {s.batch_size}, "
            f"{s.workers} loader worker(s), {info.cores} cores"
        )
        make_photos(Path(s.data), s.images)
        raw, environments = _run_all(measures, accelerator, s, run)
    results = {
        "machine": asdict(info),
        "settings": {
            **{k: v for k, v in asdict(s).items() if k not in ("data", "tmp")},
            "model": "efficientnet_b0",
            "weights": "random init (speed does not depend on weight values)",
            "onnxruntime": onnxruntime_available(),
        },
        "environments": {**environments, "imgcls_in_process": "imgcls.core.malloc.tune_malloc() (mallopt)"},
        "accelerator": accelerator,
        "measures": [_entry(m, raw[(m.name, "baseline")], raw[(m.name, "imgcls")]) for m in measures],
    }
    print_table(results)
    if json_path:
        from imgcls.core.files import write_json

        write_json(Path(json_path), results)
        print(f"wrote {json_path}")
    return results


def _run_all(measures: list[Measure], accelerator: str, s: Settings, run) -> tuple[dict, dict]:
    """Every side the plan needs, once: a borrowed baseline runs for its borrower when its own measure is
    not in the plan."""
    by_name = {m.name: m for m in table(accelerator)}
    planned = {m.name for m in measures}
    jobs = [(by_name[m.borrow], "baseline") for m in measures if m.borrow and m.borrow not in planned]
    for m in measures:
        jobs += [(m, side) for side in (("imgcls",) if m.borrow else ("baseline", "imgcls"))]
    raw, environments = {}, {}
    seen = set()
    for m, side in jobs:
        if (m.name, side) in seen:
            continue
        seen.add((m.name, side))
        t0 = time.perf_counter()
        env = side_environment(m, side)
        environments[side] = {k: env.get(k) for k in ("GLIBC_TUNABLES", DISABLE_ENV, "OMP_NUM_THREADS")}
        raw[(m.name, side)] = r = run(m, side, s, env)
        print(
            f"  {m.name:<16}{side:<9} {r.value:>10.3f} {r.unit:<9} peak RSS {r.peak_rss_mb:>7.0f} MB"
            f"  ({time.perf_counter() - t0:.0f}s)"
        )
    for m in measures:
        if m.borrow:
            borrowed = raw[(m.borrow, "baseline")]
            raw[(m.name, "baseline")] = m.convert(borrowed, s) if m.convert else borrowed
    return raw, environments


def _entry(m: Measure, b: Result, i: Result) -> dict:
    ratio = (i.value / b.value) if b.higher_is_better else (b.value / i.value)
    entry = {
        "name": m.name,
        "unit": b.unit,
        "baseline": round(b.value, 4),
        "imgcls": round(i.value, 4),
        "ratio": round(ratio, 2),
        "target": m.target,
        "met": ratio >= m.target,
        "baseline_peak_rss_mb": round(b.peak_rss_mb),
        "imgcls_peak_rss_mb": round(i.peak_rss_mb),
        "baseline_worker_peak_rss_mb": round(b.worker_peak_rss_mb),
        "imgcls_worker_peak_rss_mb": round(i.worker_peak_rss_mb),
    }
    for side, r in (("baseline", b), ("imgcls", i)):
        if r.gflops_per_s is not None:
            entry[f"{side}_gflops_per_s"] = round(r.gflops_per_s, 1)
        if r.note:
            entry[f"{side}_note"] = r.note
    if i.gpu_busy is not None:
        entry["imgcls_gpu_busy"] = round(i.gpu_busy, 3)
    if m.absolute is not None:
        met, rule = m.absolute(i)
        entry["absolute_target"] = rule
        entry["met"] = entry["met"] and met
    return entry


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
