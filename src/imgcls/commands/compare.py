"""``imgcls compare``: train several model variants with one recipe into sibling run folders, then report.

A variant whose run already finished is skipped; one that was interrupted resumes from its last
checkpoint. The report is built from the run folders alone (``imgcls report`` rebuilds it).
"""

from __future__ import annotations

import time
from pathlib import Path

from imgcls.core.config import TrainConfig
from imgcls.core.errors import ImgclsError
from imgcls.core.files import read_json, write_json
from imgcls.core.rundir import RunPaths, clear_run, folder_state, read_metrics
from imgcls.plan import variant_config, variant_dirname

REFERENCE_MODELS = ["efficientnet_b0", "vit_b_16", "attn_cnn:num_heads=8", "attn_cnn:num_heads=4"]
DEMO_MODELS = ["efficientnet_lite0", "vit_tiny", "attn_cnn:num_heads=8", "attn_cnn:num_heads=4"]
# The embedded default: sized so the whole comparison takes a few minutes on 2 CPU cores.
DEMO_DATA = {"per_class": 80, "size": 48, "seed": 0}
DEMO_TRAIN = {"epochs": 6, "image_size": 48, "augment": "light"}


def demo_data_dir(cache: Path | None = None) -> Path:
    from imgcls.core.system import global_rank
    from imgcls.data.demo import write_demo_dataset

    cache = cache or Path(".cache")
    folder = cache / "demo-data-{per_class}x{size}-seed{seed}".format(**DEMO_DATA)
    done = folder / "classes.txt"  # written last, so its presence means complete
    if not done.is_file() and global_rank() == 0:
        import shutil

        print(f"generating the demo dataset in {folder}")
        shutil.rmtree(folder, ignore_errors=True)  # imgcls's own cache: an incomplete copy from an older version
        write_demo_dataset(folder, **DEMO_DATA)
    deadline = time.time() + 600
    while not done.is_file():  # other processes of a multi-process run wait for rank 0's copy
        if time.time() > deadline:
            raise ImgclsError(f"timed out waiting for the demo dataset in {folder}")
        time.sleep(1)
    return folder


def run_state(paths: RunPaths, epochs: int) -> str:
    """'done', 'interrupted' (it resumes from its last checkpoint) or 'new'."""
    if paths.summary.is_file() and paths.last.is_file():
        summary = read_json(paths.summary)
        if summary.get("complete") and (summary.get("epochs_completed") == epochs or summary.get("early_stopped")):
            return "done"
    return "interrupted" if paths.last.is_file() else "new"


class EtaPrinter:
    """Whole-comparison ETA from measured epoch times (unstarted variants assumed to cost the mean)."""

    def __init__(self, specs: list[str], epochs: int):
        self.specs, self.epochs = specs, epochs
        self.seconds: dict[str, list[float]] = {s: [] for s in specs}

    def record(self, spec: str, rows: list[dict]) -> None:
        self.seconds[spec] = [r["epoch_seconds"] for r in rows]

    def eta(self) -> float | None:
        measured = [t for ts in self.seconds.values() for t in ts]
        if not measured:
            return None
        mean_all = sum(measured) / len(measured)
        left = 0.0
        for ts in self.seconds.values():
            per_epoch = sum(ts) / len(ts) if ts else mean_all
            left += per_epoch * max(0, self.epochs - len(ts))
        return left


def _fmt_seconds(s: float) -> str:
    return f"{int(s // 60)}m{int(s % 60):02d}s"


def compare(
    base: TrainConfig,
    specs: list[str],
    out: str | Path,
    *,
    progress: bool = True,
    evaluate_split: bool = True,
    retrain: bool = False,
    force: bool = False,
) -> Path:
    from imgcls.commands.evaluate import evaluate
    from imgcls.core.system import global_rank
    from imgcls.engine.train import train
    from imgcls.plan import discover_data, resolve_task, resume_config
    from imgcls.report.build import build_report

    if not specs:
        raise ImgclsError("no models to compare: pass --models SPEC [SPEC ...]")
    dirnames = [variant_dirname(s) for s in specs]  # validates every spec before anything trains
    if len(set(dirnames)) != len(dirnames):
        raise ImgclsError(f"the same variant appears twice in --models: {' '.join(specs)}")
    out = Path(out)
    foreign = out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "compare.json").is_file()))
    if foreign and global_rank() == 0:  # other processes of a DDP run see rank 0's first writes
        if not force:
            raise ImgclsError(
                f"{out} holds files that are not an imgcls comparison; choose another --out "
                "(or pass --force to write into it anyway)"
            )
    out.mkdir(parents=True, exist_ok=True)
    splits = discover_data(base)  # once for every variant
    has_heldout = bool(splits.test) and splits.test_labeled
    eta = EtaPrinter(specs, base.epochs)
    started = time.perf_counter()
    leader = global_rank() == 0  # in a multi-process run every process trains; only rank 0 evaluates and reports
    runs = [RunPaths(out / d) for d in dirnames]
    tasks = {spec: resolve_task(variant_config(base, spec, out), splits) for spec in specs}
    if len(set(tasks.values())) > 1:
        listing = ", ".join(f"{spec} ({task})" for spec, task in tasks.items())
        raise ImgclsError(f"the variants train different tasks: {listing}; compare them in separate comparisons")
    stale = _stale_variants(base, specs, runs, splits)
    if stale and not retrain:
        listing = "; ".join(f"{spec}: {', '.join(fields)}" for spec, (_, fields) in stale.items())
        raise ImgclsError(
            f"{out} holds variants trained with another recipe ({listing}); choose a new --out, or "
            f"pass --retrain to train those variants again from scratch"
        )
    for spec, (paths, _) in stale.items():
        if leader:
            print(f"{spec}: the saved config differs; training it again from scratch")
            if folder_state(paths.root) == "run":  # only imgcls's own files go
                clear_run(paths.root)
    if leader:
        meta = {"models": specs, "dirs": dirnames, "data": base.data, "epochs": base.epochs}
        write_json(out / "compare.json", meta)

    for i, (spec, paths) in enumerate(zip(specs, runs), 1):
        wanted = variant_config(base, spec, paths.root)
        state = run_state(paths, wanted.epochs)
        eta.record(spec, read_metrics(paths.metrics))
        left = eta.eta()
        when = f", comparison ETA ~{_fmt_seconds(left)}" if left is not None else ""
        if state == "done":
            print(f"[{i}/{len(specs)}] {spec}: already finished, not retrained ({paths.root})")
        else:
            verb = "resuming" if state == "interrupted" else "training"
            print(f"[{i}/{len(specs)}] {verb} {spec}{when}")
            if state == "interrupted":
                cfg = resume_config(paths.root, {"epochs": wanted.epochs, "workers": wanted.workers})
            else:
                cfg = wanted
            same_data = (cfg.val_split, cfg.seed) == (base.val_split, base.seed)
            train(
                cfg,
                resume=state == "interrupted",
                progress=progress,
                on_epoch=lambda rows, spec=spec: _print_eta(eta, spec, rows),
                splits=splits if state == "new" and same_data else None,
            )
        if not leader:
            continue
        if has_heldout and evaluate_split and not _eval_is_fresh(paths):
            r = evaluate(paths.root, data=base.data, split="evaluation", workers=base.workers)
            if r["task"] == "multilabel":
                print(f"[{i}/{len(specs)}] {spec}: held-out mAP {r['mAP']:.4f}, macro-F1 {r['f1_macro']:.4f}")
            else:
                print(f"[{i}/{len(specs)}] {spec}: held-out top-1 {r['top1']:.4f}, macro-F1 {r['macro_f1']:.4f}")
        elif not has_heldout and not _eval_is_fresh(paths, "validation"):
            evaluate(paths.root, data=base.data, split="validation", workers=base.workers)
        _ensure_throughput(paths)
        _ensure_explain(paths, splits.test if has_heldout else splits.val)
        eta.record(spec, read_metrics(paths.metrics))

    if not leader:
        return out / "report.html"
    report = build_report(out)
    print(f"compared {len(specs)} variants in {_fmt_seconds(time.perf_counter() - started)}; report: {report}")
    return report


def _stale_variants(base: TrainConfig, specs: list[str], runs: list[RunPaths], splits) -> dict:
    """{spec: (paths, differing fields)} for variants whose saved config is not the requested one
    (fields a resume may change, like --epochs, do not count)."""
    from imgcls.core.config import differing_fields, load_run_config
    from imgcls.plan import Machine, planned_config

    stale = {}
    machine = Machine.here()
    for spec, paths in zip(specs, runs):
        if not paths.config.is_file():
            continue
        wanted = planned_config(variant_config(base, spec, paths.root), splits, machine)
        saved = load_run_config(paths.config)
        fields = [
            f"--{f.replace('_', '-')} {getattr(saved, f)!r} -> {getattr(wanted, f)!r}"
            for f in differing_fields(saved, wanted)
        ]
        if fields:
            stale[spec] = (paths, fields)
    return stale


def _print_eta(eta: EtaPrinter, spec: str, rows: list[dict]) -> None:
    eta.record(spec, rows)
    left = eta.eta()
    if left is not None:
        print(f"    comparison ETA ~{_fmt_seconds(left)}")


def _eval_is_fresh(paths: RunPaths, split: str = "evaluation") -> bool:
    result = paths.eval_dir / split / "metrics.json"
    return result.is_file() and paths.best.is_file() and result.stat().st_mtime >= paths.best.stat().st_mtime


def _ensure_explain(paths: RunPaths, samples: list, count: int = 2) -> None:
    """A sample of where the model looks, for the report (the same two images for every variant)."""
    from imgcls.commands.explain import explain

    folder = paths.root / "explain"
    if folder.is_dir() and all(p.stat().st_mtime >= paths.best.stat().st_mtime for p in folder.glob("*.png")):
        if any(folder.glob("*.png")):
            return
    picks = [s.path for s in samples[:: max(1, len(samples) // count)][:count]]
    try:
        explain(paths.root, picks, out=folder)
    except ImgclsError as exc:  # a picture that cannot be made must not cost the comparison
        print(f"    (no explanation pictures for {paths.root.name}: {exc})")


def _ensure_throughput(paths: RunPaths) -> None:
    from imgcls.engine.predictor import load_predictor
    from imgcls.engine.timing import inference_images_per_second

    if paths.inference.is_file() and paths.inference.stat().st_mtime >= paths.best.stat().st_mtime:
        return
    write_json(paths.inference, inference_images_per_second(load_predictor(paths.root)))
