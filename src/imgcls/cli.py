"""Command-line entry point: each subcommand is a thin call into a module.

Heavy imports (torch, Lightning) happen inside the handlers so ``--help`` and argument errors are instant.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings

from imgcls.errors import ImgclsError


def _add_train_flags(p: argparse.ArgumentParser, *, exclude: set[str] = frozenset()) -> None:
    from imgcls.config import add_config_flags

    p.add_argument("--config", help="YAML file of options (defaults < YAML < flags)")
    p.add_argument(
        "--force", action="store_true", help="write into a folder that holds other files, or start a finished run over"
    )
    add_config_flags(p, exclude=exclude)
    p.add_argument("--no-progress", action="store_true", help="no progress bar (one line per epoch still)")


def _add_fields(p: argparse.ArgumentParser, fields: set[str]) -> None:
    from imgcls.config import add_config_flags

    add_config_flags(p, only=fields)


def _add_engine(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--engine",
        choices=("auto", "onnx", "torch", "int8"),
        default=None,
        help="what runs the model: auto (ONNX Runtime on CPU), onnx, torch, or int8 (the run's accepted "
        "int8 export; only when asked)",
    )


def _progress(args) -> bool:
    """tqdm's redraws only on a terminal; logs and pipes get the one line per epoch."""
    return not args.no_progress and sys.stdout.isatty() and sys.stderr.isatty()


def cmd_models_all(args) -> int:
    """Every timm and torchvision classifier that --model accepts. Names are filtered first; params are
    counted for short lists by building each model on PyTorch's meta device (shapes only: no memory, no
    weights), so a filter that matches giant models costs seconds, not gigabytes."""
    import torch

    from imgcls.models.hub_models import list_hub_models, weights_cached
    from imgcls.models.registry import create_model, get_model_info

    if args.num_classes < 2:
        raise ImgclsError(f"--num-classes must be at least 2, got {args.num_classes}")
    names = list_hub_models(args.filter)
    count = len(names) <= 40
    print(f"{'model':<50}{'params':>14}{'size':>6}  weights")
    for name in names:
        try:
            info = get_model_info(name)
            params = "-"
            if count:
                with torch.device("meta"):
                    params = f"{sum(p.numel() for p in create_model(name, args.num_classes).parameters()):,}"
        except Exception as exc:  # noqa: BLE001 - one unbuildable entry must not end the listing
            print(f"{name:<50}{'?':>14}{'':>6}  ({str(exc).splitlines()[0][:80] if str(exc) else type(exc).__name__})")
            continue
        state = "none" if not info.has_weights else ("cached" if weights_cached(name) else "downloadable")
        print(f"{name:<50}{params:>14}{info.default_image_size:>6}  {state}")
    note = "" if count else " (narrow it with --filter WORD to count params)"
    print(f"{len(names)} models; params with a {args.num_classes}-class head{note}")
    return 0


def cmd_models(args) -> int:
    if args.all or args.filter:
        return cmd_models_all(args)
    from imgcls.models.profile import count_gflops, count_params
    from imgcls.models.registry import create_model, get_model_info, list_models

    if args.num_classes < 2:
        raise ImgclsError(f"--num-classes must be at least 2, got {args.num_classes}")
    print(f"{'model':<20}{'params':>14}{'GFLOPs':>9}{'size':>6}  weights")
    for name in list_models():
        info = get_model_info(name)
        model = create_model(name, args.num_classes, pretrained=False)
        params, _ = count_params(model)
        gflops = count_gflops(model, info.default_image_size)
        weights = info.weights or "none (trains from scratch)"
        print(f"{name:<20}{params:>14,}{gflops:>9.3f}{info.default_image_size:>6}  {weights}")
    print(f"(params with a {args.num_classes}-class head; GFLOPs per image, multiply-add = 1 FLOP)")
    return 0


def cmd_demo_data(args) -> int:
    from imgcls.data.demo import write_demo_dataset

    out = write_demo_dataset(args.out, per_class=args.per_class, size=args.size, seed=args.seed)
    print(f"wrote the demo dataset to {out}")
    return 0


def cmd_train(args) -> int:
    from imgcls.config import RESUMABLE, config_overrides, flag_name, resolve_config
    from imgcls.engine.train import train
    from imgcls.malloc import tune_malloc
    from imgcls.plan import resume_config

    overrides = config_overrides(args)
    if args.resume is not None:
        run_dir = args.out if args.resume is True else args.resume
        if not run_dir:
            raise ImgclsError("--resume needs the run folder: --resume runs/NAME (or --out runs/NAME --resume)")
        if args.config:
            allowed = ", ".join(flag_name(f) for f in sorted(RESUMABLE))
            raise ImgclsError(f"a resumed run keeps its config: drop --config (only {allowed} may change)")
        cfg = resume_config(run_dir, overrides)
    else:
        cfg = resolve_config(args.config, overrides)
    tune_malloc()
    paths = train(cfg, resume=args.resume is not None, progress=_progress(args), force=args.force)
    from imgcls.files import read_json
    from imgcls.system import global_rank

    if global_rank() != 0:  # under torchrun every process returns here; one line is enough
        return 0
    summary = read_json(paths.summary)
    metric = summary.get("metric", "val_acc")
    print(
        f"done: best {metric} {summary.get('best_' + metric, float('nan')):.4f} at epoch {summary.get('best_epoch')}, "
        f"{summary.get('train_seconds', 0):.1f}s -> {paths.root}"
    )
    return 0


def cmd_lr_find(args) -> int:
    from imgcls.config import config_overrides, resolve_config
    from imgcls.engine.lr_find import lr_find

    cfg = resolve_config(args.config, config_overrides(args))
    r = lr_find(cfg, args.plot, steps=args.steps, min_lr=args.min_lr, max_lr=args.max_lr)
    text = f"suggested learning rate {r['suggestion']:.3g}" if r["suggestion"] else "no clear learning-rate suggestion"
    print(f"{text} ({r['points']} steps); plot: {r['plot']}")
    return 0


def cmd_compare(args) -> int:
    from pathlib import Path

    from imgcls.compare import DEMO_MODELS, DEMO_TRAIN, REFERENCE_MODELS, compare, demo_data_dir
    from imgcls.config import config_overrides, resolve_config
    from imgcls.malloc import tune_malloc

    overrides = config_overrides(args)
    if args.data is None:
        overrides = {**DEMO_TRAIN, **overrides, "data": str(demo_data_dir())}
        specs = args.models or DEMO_MODELS
        out = args.out or "runs/compare-demo"
    else:
        specs = args.models or REFERENCE_MODELS
        out = args.out or f"runs/compare-{Path(args.data).resolve().name}"
    cfg = resolve_config(args.config, overrides)
    tune_malloc()
    report = compare(cfg, specs, out, progress=_progress(args), retrain=args.retrain, force=args.force)
    from imgcls.system import global_rank

    if global_rank() == 0:  # under torchrun only rank 0 writes the report
        print(f"open {report} in a browser (or read {Path(report).with_suffix('.md')})")
    return 0


def cmd_report(args) -> int:
    from imgcls.report.build import build_report

    print(f"wrote {build_report(args.dir)}")
    return 0


def cmd_bench(args) -> int:
    from imgcls.bench import run_bench

    results = run_bench(
        quick=args.quick,
        images=args.images,
        batch_size=args.batch_size,
        workers=args.workers,
        json_path=args.json,
        accelerator=args.accelerator,
        only=[m.strip() for m in args.only.split(",") if m.strip()] if args.only else None,
        image_size=args.image_size,
    )
    missed = [m["name"] for m in results["measures"] if not m["met"]]
    if missed:
        print(f"targets not met: {', '.join(missed)}")
    return 0


def cmd_export(args) -> int:
    from imgcls.export import export

    r = export(args.run, args.format, out=args.out, quantize=args.quantize, force=args.force)
    extra = f" (verified: max |Δ probability| vs PyTorch {r['max_prob_diff']:.1e})" if "max_prob_diff" in r else ""
    print(f"wrote {r['path']} and {r['sidecar']}{extra}")
    if "int8" in r:
        q = r["int8"]
        print(
            f"wrote {q['path']}: same answer as fp32 on {q['confident_agreement']:.2%} of the {q['confident_images']} "
            f"validation images fp32 is sure of ({q['int8_top1_agreement']:.2%} of all {q['agreement_images']}), "
            f"accuracy {q['fp32_accuracy']:.4f} -> {q['int8_accuracy']:.4f}; "
            f"{q['int8_images_per_s']} vs {q['fp32_images_per_s']} img/s (fp32)"
        )
    return 0


def cmd_serve(args) -> int:
    from imgcls.serve.app import serve

    serve(
        args.run,
        host=args.host,
        port=args.port,
        max_upload_mb=args.max_upload_mb,
        max_pixels=args.max_pixels,
        upload_timeout=args.upload_timeout,
        engine=args.engine,
    )
    return 0


def cmd_loadtest(args) -> int:
    from imgcls.serve.loadtest import load_test

    r = load_test(args.url, args.image, requests=args.requests, concurrency=args.concurrency)
    print(
        f"{r['ok']}/{r['requests']} ok, {r['errors']} errors, concurrency {r['concurrency']}: p50 {r['p50_ms']} ms, "
        f"p99 {r['p99_ms']} ms, {r['requests_per_s']} requests/s ({r['wall_s']} s)"
    )
    return 0 if r["errors"] == 0 else 1


CSV_FIELDS = {"labels", "images", "image_col", "label_col", "label_sep", "task", "skip_missing", "allow_outside_data"}


def cmd_check_data(args) -> int:
    from dataclasses import replace
    from pathlib import Path

    from imgcls.config import config_overrides, resolve_config
    from imgcls.data.scan import scan_samples, summarize
    from imgcls.plan import csv_options
    from imgcls.rundir import RunPaths

    run = RunPaths(Path(args.data))
    if run.config.is_file() and run.classes.is_file() and run.splits.is_file():
        from imgcls.plan import open_saved_run

        splits = open_saved_run(run.root, checkpoint="last").splits()  # the run's recorded splits
    else:
        from imgcls.data.layouts import discover

        fields = {k: v for k, v in config_overrides(args).items() if k in CSV_FIELDS}
        cfg = resolve_config(None, {**fields, "val_split": args.val_split})
        # Nothing is trained here: data without a validation split is checked as it is, unless asked.
        splits = discover(args.data, val_split=cfg.val_split, csv=csv_options(cfg), for_eval=cfg.val_split is None)
        if not splits.train and not splits.val and splits.test_labeled:
            # One folder of class folders (or one label CSV) read as it is: its images are what a
            # training would learn from, so --label-issues scores them (it leaves a held-out test/ alone).
            splits = replace(splits, train=splits.test, test=[], test_labeled=False)
    every = splits.train + splits.val + splits.test
    bad = scan_samples(every, root=splits.root)
    kind = "multi-label" if splits.task == "multilabel" else "single-label"
    print(
        f"{splits.root}: {splits.layout} layout, {kind}, {len(splits.classes)} classes, {len(splits.train)} training, "
        f"{len(splits.val)} validation, {len(splits.test)} evaluation images"
    )
    if bad:
        print(f"{len(bad)} bad file(s): {summarize(bad)}")
        for b in bad:
            print(f"  {b.path}\t{b.reason}")
        if len(bad) == len(every):
            raise ImgclsError(f"none of the {len(every)} images in {splits.root} decodes")
    else:
        print(f"all {len(every)} images decode")
    if args.label_issues or args.duplicates or args.outliers:
        from imgcls.check_data import check_data
        from imgcls.data.scan import without_bad

        r = check_data(
            without_bad(splits, bad),
            out=args.out,
            label=args.label_issues,
            dupes=args.duplicates,
            odd=args.outliers,
            model=args.model,
            image_size=args.image_size,
            folds=args.folds,
            views=args.views,
            near=args.near,
            workers=args.workers,
            force=args.force,
        )
        if "label_issues" in r:
            li = r["label_issues"]
            name, quality = next((k.removeprefix("probe_"), v) for k, v in li.items() if k.startswith("probe_"))
            print(
                f"label issues: {li['flagged']} of {li['checked']} labelled images flagged ({li['seconds']}s) -> "
                f"label_issues.csv (probe out-of-fold {name} {quality:.3f}: the lower it is, the more flags are "
                "the probe's own mistakes)"
            )
        if "duplicates" in r:
            d = r["duplicates"]
            print(
                f"duplicates: {d['exact']} exact, {d['near']} near pairs; {d['leaks']} across training and held-out ({d['seconds']}s)"
            )
        if "outliers" in r:
            o = r["outliers"]
            print(f"outliers: {o['flagged']} images; class imbalance {o['imbalance']} ({o['seconds']}s)")
        print(f"wrote {r['out']}/ (report.html, summary.json and the CSVs); {r['seconds']}s")
    return 2 if args.strict and bad else 0


def cmd_evaluate(args) -> int:
    from imgcls.config import config_overrides, resolve_config
    from imgcls.evaluate import evaluate
    from imgcls.plan import csv_options

    fields = {k: v for k, v in config_overrides(args).items() if k in CSV_FIELDS}
    r = evaluate(
        args.run,
        data=args.data,
        csv=csv_options(resolve_config(None, fields)) if fields else None,
        split=args.split,
        batch_size=args.batch_size,
        workers=args.workers,
        gallery=args.gallery,
        tta=args.tta,
        engine=args.engine,
    )
    if r["task"] == "multilabel":
        print(
            f"{r['split']}: {r['images']} images  mAP {r['mAP']:.4f}  F1 macro {r['f1_macro']:.4f}  "
            f"micro {r['f1_micro']:.4f}  exact match {r['exact_match']:.4f}"
        )
        rows, head, names = r["per_label"], "label", ("ap", "precision", "recall", "f1", "threshold")
        files = "metrics.json, per_label.csv, predictions.csv, pr_curves.png, errors.csv/.png"
        absent = r["labels_without_positives"]
        if absent:
            shown = ", ".join(absent[:10]) + (f" ... ({len(absent)} in all)" if len(absent) > 10 else "")
            print(
                f"  mAP and F1 macro average the {r['labels_present']} labels with a positive image here; "
                f"{len(absent)} have none: {shown}"
            )
    else:
        top5 = f"  top-5 {r['top5']:.4f}" if r["top5"] is not None else ""
        print(f"{r['split']}: {r['images']} images  top-1 {r['top1']:.4f}{top5}  macro-F1 {r['macro_f1']:.4f}")
        rows, head, names = r["per_class"], "class", ("precision", "recall", "f1")
        files = "metrics.json, per_class.csv, predictions.csv, confusion_matrix.csv/.png, errors.csv/.png"
    width = max(len(head), *(len(row["class"]) for row in rows))
    print(f"  {head:<{width}}  support" + "".join(f"  {n:>9}" for n in names))
    for row in rows:
        cells = ("-" if row[n] is None else f"{row[n]:.3f}" for n in names)
        print(f"  {row['class']:<{width}}  {row['support']:>7}" + "".join(f"  {c:>9}" for c in cells))
    print(f"wrote {r['out']}/ ({files}) [{r['engine']['engine']}: {r['engine']['file']}]")
    return 0


def cmd_explain(args) -> int:
    from imgcls.explain import explain

    for path in explain(args.run, args.images, out=args.out):
        print(f"wrote {path}")
    return 0


def cmd_predict(args) -> int:
    from imgcls.predict import predict

    r = predict(
        args.run,
        args.inputs,
        out=args.out,
        topk=args.topk,
        batch_size=args.batch_size,
        workers=args.workers,
        tta=args.tta,
        submission=args.submission,
        engine=args.engine,
        force=args.force,
    )
    for name, cls, prob in r["first"]:
        print(f"  {name}: {cls} ({prob:.3f})")
    more = f" ({len(r['skipped'])} unreadable, skipped: {', '.join(r['skipped'][:5])})" if r["skipped"] else ""
    print(f"wrote {r['predicted']} predictions to {r['out']}{more} [{r['engine']['engine']}: {r['engine']['file']}]")
    return 0


class OneLineParser(argparse.ArgumentParser):
    """Argument errors in one line (and exit 2), like every other error; --help still shows the usage."""

    def error(self, message: str):
        self.exit(2, f"imgcls: error: {message} (see: {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="imgcls", description="Train, evaluate, compare and serve image classifiers.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("models", help="list the registered models (--all: every timm:/tv: classifier)")
    p.add_argument("--num-classes", type=int, default=11)
    p.add_argument("--all", action="store_true", help="list every timm:<name> and tv:<name> that --model accepts")
    p.add_argument("--filter", help="only names containing this word (implies --all)")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("demo-data", help="write the synthetic demo dataset (Food-11 flat layout)")
    p.add_argument("out")
    p.add_argument("--per-class", type=int, default=150, help="training images per class (val/eval: 30%%)")
    p.add_argument("--size", type=int, default=64, help="image side in px")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo_data)

    p = sub.add_parser("train", help="train one model into a run folder")
    p.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=None,
        metavar="RUN",
        help="continue RUN (or --out) from its last checkpoint",
    )
    _add_train_flags(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("lr-find", help="learning-rate range test (Lightning's Tuner): plot and suggestion")
    p.add_argument("--plot", default="lr_find.png", help="where to write the loss-against-lr plot")
    p.add_argument("--steps", type=int, default=100, help="training steps of the search")
    p.add_argument("--min-lr", type=float, default=1e-6)
    p.add_argument("--max-lr", type=float, default=1.0)
    _add_train_flags(p, exclude={"out"})
    p.set_defaults(func=cmd_lr_find)

    p = sub.add_parser("compare", help="train several models with one recipe and build a report")
    p.add_argument(
        "--models",
        nargs="+",
        metavar="SPEC",
        help="model specs name[:key=value,...] (default: the reference set; the demo set without --data)",
    )
    p.add_argument("--out", help="comparison folder (default runs/compare-<data folder name>)")
    p.add_argument(
        "--retrain",
        action="store_true",
        help="start over the variants whose saved config differs from the requested one",
    )
    _add_train_flags(p, exclude={"model", "out"})
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("report", help="rebuild a comparison report from its run folders")
    p.add_argument("dir", help="comparison folder")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("bench", help="measure imgcls's fast paths against a reference-style PyTorch loop")
    p.add_argument("--quick", action="store_true", help="a run of about a minute (CI)")
    p.add_argument("--json", help="also write the results as JSON to this file")
    p.add_argument("--images", type=int, help="training images (default 512, quick 64)")
    p.add_argument("--batch-size", type=int, help="batch size for both sides (default 64, quick 32)")
    p.add_argument("--workers", type=int, help="DataLoader workers for both sides (default cores - 1)")
    p.add_argument(
        "--accelerator",
        choices=("cpu", "cuda"),
        default="cpu",
        help="cuda: both sides on the GPU (head-only, full fine-tuning of EfficientNet-B0, ViT-B/16 and "
        "attn_cnn, inference, data pipeline, GPU busy time)",
    )
    p.add_argument("--only", help="comma-separated measures to run (default: all for the accelerator)")
    p.add_argument(
        "--image-size", type=int, default=224, help="image size in px (224: the reference; less only for smoke runs)"
    )
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser(
        "check-data",
        help="find unreadable images, and on request label issues, duplicates and outliers (DATA or a run folder)",
    )
    p.add_argument("data", help="dataset folder, or a run folder (its recorded splits)")
    p.add_argument(
        "--val-split",
        default=None,
        help="carve the validation split train would (default: the data is checked as it is, with or without one)",
    )
    p.add_argument("--strict", action="store_true", help="exit 2 when any file is bad")
    p.add_argument("--label-issues", action="store_true", help="rank likely mislabeled images (confident learning)")
    p.add_argument("--duplicates", action="store_true", help="exact and near duplicates, within and across splits")
    p.add_argument("--outliers", action="store_true", help="images far from every other, and the class counts")
    p.add_argument("--model", default="efficientnet_lite0", help="pretrained backbone whose features are compared")
    p.add_argument("--image-size", type=int, default=None, help="input size (default: the model's)")
    p.add_argument("--folds", type=int, default=5, help="out-of-fold splits for --label-issues")
    p.add_argument("--views", type=int, default=1, help="feature views per image for --label-issues (1 + augmented)")
    p.add_argument(
        "--near",
        type=float,
        default=0.90,
        help="feature cosine similarity at or above which two images are near duplicates (the 64 px pass uses "
        "this + 0.04)",
    )
    p.add_argument("--out", help="folder for the CSVs and report.html (default: check-<data folder name>/ here)")
    p.add_argument("--force", action="store_true", help="write into an --out that holds other files")
    p.add_argument("--workers", type=int, default=None)
    _add_fields(p, CSV_FIELDS)
    p.set_defaults(func=cmd_check_data)

    p = sub.add_parser("export", help="export a run's best model (ONNX verified against PyTorch, or safetensors)")
    p.add_argument("run")
    p.add_argument("--format", default="onnx", help="onnx | safetensors")
    p.add_argument("--out", help="folder (default RUN/export)")
    p.add_argument(
        "--quantize",
        choices=["int8"],
        help="also write model.int8.onnx (static int8, calibrated on "
        "training images; refused if its top-1 agrees with fp32 on < 99%% of the validation split)",
    )
    p.add_argument("--force", action="store_true", help="replace files in --out that imgcls export did not write")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("serve", help="web page + JSON API for a run (or an exported model.onnx)")
    p.add_argument("run")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-upload-mb", type=float, default=10.0)
    p.add_argument(
        "--max-pixels",
        type=int,
        default=24_000_000,
        help="refuse images with more pixels (413), checked from the header before decoding",
    )
    p.add_argument(
        "--upload-timeout",
        type=float,
        default=30.0,
        help="seconds an upload may send nothing before it is answered 408",
    )
    _add_engine(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("explain", help="where the model looks: attention (attn_cnn) or Grad-CAM overlays as PNGs")
    p.add_argument("run", help="run folder")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--out", help="folder for the PNGs (default RUN/explain)")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("loadtest", help="bounded load test of a running imgcls serve on loopback")
    p.add_argument("url", help="e.g. http://127.0.0.1:8000")
    p.add_argument("image", help="image file to upload")
    p.add_argument("--requests", type=int, default=500)
    p.add_argument("--concurrency", type=int, default=8)
    p.set_defaults(func=cmd_loadtest)

    for name, func, help_ in (
        ("evaluate", cmd_evaluate, "evaluate a run on a labelled split"),
        ("predict", cmd_predict, "predict files or folders into a CSV"),
    ):
        p = sub.add_parser(name, help=help_)
        p.add_argument(
            "run",
            help="run folder"
            + (" (or an exported model.onnx, or an ImageNet model name)" if name == "predict" else ""),
        )
        if name == "evaluate":
            p.add_argument("--data", help="dataset folder (default: the one the run trained on)")
            p.add_argument(
                "--split",
                default=None,
                help="evaluation | validation | training (default: evaluation, else validation when "
                "the data has no labelled evaluation split; a single folder of class folders is "
                "evaluated whole)",
            )
            p.add_argument("--gallery", type=int, default=16, help="how many confident errors errors.png shows")
            _add_fields(p, CSV_FIELDS - {"task"})  # --data with a label CSV the run's data did not have
        else:
            p.add_argument("inputs", nargs="+", help="image files or folders")
            p.add_argument("--out", default="preds.csv")
            p.add_argument("--topk", type=int, default=0, help="add the top K class names and probabilities")
            p.add_argument(
                "--submission",
                metavar="CSV",
                help="a sample submission (e.g. sample_submission.csv): write its columns in its row order, "
                "filled in from the images its ids name",
            )
            p.add_argument("--force", action="store_true", help="replace --out even if it is not a predictions CSV")
        p.add_argument("--batch-size", type=int, default=64)
        p.add_argument("--workers", type=int, default=None)
        p.add_argument("--tta", choices=["flip"], help="test-time augmentation: average with the mirror image")
        _add_engine(p)
        p.set_defaults(func=func)
    return parser


def _quiet_libraries() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*litlogger.*")
    # Pillow warns once per file about EXIF quirks ("Tag data larger than file", "Corrupt EXIF data"):
    # the image still decodes, so it is not the user's business. Real decoding failures stay errors.
    warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
    logging.getLogger("PIL").setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_libraries()
    try:
        code = args.func(args)
        sys.stdout.flush()  # inside the try: a closed pipe is reported here, not at interpreter exit
        return code
    except ImgclsError as exc:
        print(f"imgcls: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("imgcls: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `imgcls evaluate RUN | head`: the reader left; say nothing more
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
