"""The command line: a thin shell over the Python API (``imgcls.api``).

Each subcommand's arguments come from its options dataclass (``commands/options.py``; training's from
``TrainConfig``), so flags, keywords, checks and ``--help`` share one definition. A handler calls one API
function and prints what it returns; an ``ImgclsError`` becomes one line on stderr and exit 2. Heavy
imports (torch, Lightning) happen inside the handlers, so ``--help`` and argument errors are instant.
"""

from __future__ import annotations

import argparse
import sys
import time

from imgcls.commands import options as cmd
from imgcls.core import options
from imgcls.core.config import TrainConfig
from imgcls.core.errors import ImgclsError


def _values(args, *classes, drop: tuple[str, ...] = ()) -> dict:
    out = {}
    for cls in classes:
        out.update(options.given(cls, args))
    return {k: v for k, v in out.items() if k not in drop}


def _recipe(args) -> dict:
    """The TrainConfig flags the command takes (compare's --out is its own folder, not a run's)."""
    return {k: v for k, v in options.given(TrainConfig, args).items() if k not in RECIPE[args.command]}


def cmd_models(args) -> int:
    import imgcls.api as api

    table = api.available_models(**_values(args, cmd.ModelsOptions))
    n = args.num_classes or 11
    if args.all or args.filter:
        print(f"{'model':<50}{'params':>14}{'size':>6}  weights")
        for r in table.to_dict("records"):
            params = "-" if r["params"] is None or r["params"] != r["params"] else f"{int(r['params']):,}"
            size = "" if r["size"] is None or r["size"] != r["size"] else int(r["size"])
            print(f"{r['model']:<50}{params:>14}{size:>6}  {r['weights']}")
        note = "" if len(table) <= 40 else " (narrow it with --filter WORD to count params)"
        print(f"{len(table)} models; params with a {n}-class head{note}")
        return 0
    print(f"{'model':<20}{'params':>14}{'GFLOPs':>9}{'size':>6}  weights")
    for r in table.to_dict("records"):
        print(f"{r['model']:<20}{r['params']:>14,}{r['gflops']:>9.3f}{r['size']:>6}  {r['weights']}")
    print(f"(params with a {n}-class head; GFLOPs per image, multiply-add = 1 FLOP)")
    return 0


def cmd_demo_data(args) -> int:
    import imgcls.api as api

    print(f"wrote the demo dataset to {api.demo_data(**_values(args, cmd.DemoDataOptions))}")
    return 0


def cmd_train(args) -> int:
    import imgcls.api as api
    from imgcls.core.system import global_rank

    run = api.train(**_values(args, cmd.RunOptions), resume=args.resume, **_recipe(args))
    if global_rank() != 0:  # under torchrun every process returns here; one line is enough
        return 0
    summary = run.summary
    metric = summary.get("metric", "val_acc")
    print(
        f"done: best {metric} {summary.get('best_' + metric, float('nan')):.4f} at epoch {summary.get('best_epoch')}, "
        f"{summary.get('train_seconds', 0):.1f}s -> {run.path}"
    )
    return 0


def cmd_lr_find(args) -> int:
    import imgcls.api as api

    r = api.lr_find(**_values(args, cmd.LrFindOptions), **_recipe(args))
    text = f"suggested learning rate {r['suggestion']:.3g}" if r["suggestion"] else "no clear learning-rate suggestion"
    print(f"{text} ({r['points']} steps); plot: {r['plot']}")
    return 0


def cmd_compare(args) -> int:
    import imgcls.api as api
    from imgcls.core.system import global_rank

    recipe = _recipe(args)
    result = api.compare(recipe.pop("data", None), **_values(args, cmd.CompareOptions), **recipe)
    if global_rank() == 0:  # under torchrun only rank 0 writes the report
        print(f"open {result.report_path} in a browser (or read {result.path / 'report.md'})")
    return 0


def cmd_auto(args) -> int:
    import imgcls.api as api

    recipe = _recipe(args)
    result = api.auto(recipe.pop("data", None), started=args.started, **_values(args, cmd.AutoOptions), **recipe).result
    b, h = result["best"], result["held_out"]
    metric = next(k for k in b if k.startswith("val_"))
    if result["ensemble"]:
        members = ", ".join(f"{t} (x{w})" if w > 1 else str(t) for t, w in result["ensemble"]["members"])
        what = f"an ensemble of trials {members}: validation {metric} {result['ensemble']['value']:.4f}"
    else:
        views = f" from {b['views']} cached view(s)" if b["views"] else ""
        what = f"trial {b['trial']}, {b['model']} {b['finetune']}{views}, lr {b['lr']:.1e}: validation {metric} {b[metric]:.4f}"
    print(
        f"winner: {what}; {h['split']} {h['metric']} {h['value']:.4f} on {h['images']} images (scored once) -> "
        f"{result['best_run']}"
    )
    print(
        f"{len(result['leaderboard'])} trials in the study; {result['seconds']:.0f}s of the {result['time_limit']:.0f}s "
        f"limit; report: {result['report']}"
    )
    return 0


def cmd_report(args) -> int:
    import imgcls.api as api

    print(f"wrote {api.rebuild_report(args.dir)}")
    return 0


def cmd_export(args) -> int:
    import imgcls.api as api

    values = _values(args, cmd.ExportOptions)
    r = api.export(values.pop("run"), **values)
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
    import imgcls.api as api

    values = _values(args, cmd.ServeOptions)
    api.serve(values.pop("run"), **values)
    return 0


def cmd_loadtest(args) -> int:
    import imgcls.api as api

    values = _values(args, cmd.LoadtestOptions)
    r = api.loadtest(values.pop("url"), values.pop("image"), **values)
    print(
        f"{r['ok']}/{r['requests']} ok, {r['errors']} errors, concurrency {r['concurrency']}: p50 {r['p50_ms']} ms, "
        f"p99 {r['p99_ms']} ms, {r['requests_per_s']} requests/s ({r['wall_s']} s)"
    )
    return 0 if r["errors"] == 0 else 1


def cmd_check_data(args) -> int:
    import imgcls.api as api
    from imgcls.data.scan import summarize

    values = _values(args, cmd.CheckDataOptions, drop=("strict",))
    found = api.check_data(values.pop("data"), **values)
    s = found.splits
    kind = "multi-label" if s.task == "multilabel" else "single-label"
    print(
        f"{s.root}: {s.layout} layout, {kind}, {len(s.classes)} classes, {len(s.train)} training, "
        f"{len(s.val)} validation, {len(s.test)} evaluation images"
    )
    if found.bad:
        print(f"{len(found.bad)} bad file(s): {summarize(found.bad)}")
        for b in found.bad:
            print(f"  {b.path}\t{b.reason}")
    else:
        print(f"all {len(s.train) + len(s.val) + len(s.test)} images decode")
    r = found.summary
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
    if r:
        print(f"wrote {r['out']}/ (report.html, summary.json and the CSVs); {r['seconds']}s")
    return 2 if args.strict and found.bad else 0


def cmd_evaluate(args) -> int:
    import imgcls.api as api

    values = _values(args, cmd.EvaluateOptions)
    r = api.evaluate(values.pop("run"), **values).result
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
    import imgcls.api as api

    values = _values(args, cmd.ExplainOptions)
    for path in api.explain(values.pop("run"), values.pop("images"), **values):
        print(f"wrote {path}")
    return 0


def cmd_predict(args) -> int:
    import imgcls.api as api

    values = _values(args, cmd.PredictOptions)
    r = api.predict(values.pop("run"), values.pop("inputs"), **values).attrs["result"]
    for name, cls, prob in r["first"]:
        print(f"  {name}: {cls} ({prob:.3f})")
    more = f" ({len(r['skipped'])} unreadable, skipped: {', '.join(r['skipped'][:5])})" if r["skipped"] else ""
    print(f"wrote {r['predicted']} predictions to {r['out']}{more} [{r['engine']['engine']}: {r['engine']['file']}]")
    return 0


class OneLineParser(argparse.ArgumentParser):
    """Argument errors in one line (and exit 2), like every other error; --help still shows the usage."""

    def error(self, message: str):
        self.exit(2, f"imgcls: error: {message} (see: {self.prog} --help)\n")


# name, handler, options classes (their flags and arguments), help; recipe: the TrainConfig flags it takes.
COMMANDS = [
    ("models", cmd_models, (cmd.ModelsOptions,), "list the registered models (--all: every timm:/tv: classifier)"),
    ("demo-data", cmd_demo_data, (cmd.DemoDataOptions,), "write the synthetic demo dataset (Food-11 flat layout)"),
    ("train", cmd_train, (cmd.RunOptions,), "train one model into a run folder"),
    ("lr-find", cmd_lr_find, (cmd.LrFindOptions,), "learning-rate range test (Lightning's Tuner): plot and suggestion"),
    ("compare", cmd_compare, (cmd.CompareOptions,), "train several models with one recipe and build a report"),
    (
        "auto",
        cmd_auto,
        (cmd.AutoOptions,),
        "the best model for the data within a time budget: an Optuna search over backbones, fine-tune depth, "
        "cached views and learning rate",
    ),
    ("report", cmd_report, (cmd.ReportOptions,), "rebuild a comparison report from its run folders"),
    (
        "check-data",
        cmd_check_data,
        (cmd.CheckDataOptions,),
        "find unreadable images, and on request label issues, duplicates and outliers (DATA or a run folder)",
    ),
    ("evaluate", cmd_evaluate, (cmd.EvaluateOptions,), "evaluate a run on a labelled split"),
    ("predict", cmd_predict, (cmd.PredictOptions,), "predict files or folders into a CSV"),
    (
        "export",
        cmd_export,
        (cmd.ExportOptions,),
        "export a run's best model (ONNX verified against PyTorch, or safetensors)",
    ),
    ("serve", cmd_serve, (cmd.ServeOptions,), "web page + JSON API for a run (or an exported model.onnx)"),
    (
        "explain",
        cmd_explain,
        (cmd.ExplainOptions,),
        "where the model looks: attention (attn_cnn) or Grad-CAM overlays as PNGs",
    ),
    ("loadtest", cmd_loadtest, (cmd.LoadtestOptions,), "bounded load test of a running imgcls serve on loopback"),
]
# The TrainConfig flags each command takes: compare's and auto's --out are their own; auto searches the rest.
RECIPE = {"train": set(), "lr-find": {"out"}, "compare": {"model", "out"}, "auto": set(cmd.AUTO_SEARCHED)}


def build_parser() -> argparse.ArgumentParser:
    # No abbreviations: `auto --lr 0.1` must not quietly mean --lr-decay (auto has no --lr).
    parser = OneLineParser(
        prog="imgcls", description="Train, evaluate, compare and serve image classifiers.", allow_abbrev=False
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, func, classes, help_ in COMMANDS:
        p = sub.add_parser(name, help=help_, allow_abbrev=False)
        if name == "train":
            p.add_argument(
                "--resume",
                nargs="?",
                const=True,
                default=None,
                metavar="RUN",
                help="continue RUN (or --out) from its last checkpoint",
            )
        for cls in classes:
            options.add_flags(p, cls)
        if name in RECIPE:
            options.add_flags(p, TrainConfig, exclude=RECIPE[name])
        p.set_defaults(func=func)
    return parser


def main(argv: list[str] | None = None) -> int:
    started = time.monotonic()  # auto's budget is the command's whole wall clock, from here
    args = build_parser().parse_args(argv)
    args.started = started
    from imgcls.api.common import quiet_libraries

    quiet_libraries()
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
