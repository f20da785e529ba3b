"""The data side of the API: ``check_data`` (is the data the problem?) and its ``DataCheck``, ``demo_data``,
and ``available_models`` (what can be trained)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from imgcls.api import display
from imgcls.api.common import checked, quiet_libraries
from imgcls.commands.options import CheckDataOptions, DemoDataOptions, ModelsOptions
from imgcls.core.errors import ImgclsError


def check_data(data: str | Path, **options: Any) -> DataCheck:
    """Decode every image and list those that will not load; on request (``label_issues``, ``duplicates``,
    ``outliers``) compare backbone features and write the findings to ``out`` (default ``check-<name>/``).
    ``data`` may be a run folder: its recorded splits are checked. ``strict=True`` raises when a file is bad."""
    from imgcls.core.config import resolve_config
    from imgcls.core.rundir import folder_state
    from imgcls.data.scan import scan_samples, without_bad
    from imgcls.plan import csv_options

    quiet_libraries()
    opts = checked(CheckDataOptions, dict(data=str(data), **options), "imgcls.check_data")
    if folder_state(Path(opts.data)) == "run" and (Path(opts.data) / "splits.csv").is_file():
        from imgcls.plan import open_saved_run

        splits = open_saved_run(opts.data, checkpoint="last").splits()  # the run's recorded splits
    else:
        from imgcls.data.layouts import discover

        values = {k: v for k, v in opts.csv_values().items() if v not in (None, False)}
        cfg = resolve_config(None, {**values, "task": opts.task, "val_split": opts.val_split})
        # Nothing is trained here: data without a validation split is checked as it is, unless asked.
        splits = discover(opts.data, val_split=cfg.val_split, csv=csv_options(cfg), for_eval=cfg.val_split is None)
        if not splits.train and not splits.val and splits.test_labeled:
            # One folder of class folders (or one label CSV) read as it is: its images are what a training
            # would learn from, so --label-issues scores them (it leaves a held-out test/ alone).
            splits = replace(splits, train=splits.test, test=[], test_labeled=False)
    every = splits.train + splits.val + splits.test
    bad = scan_samples(every, root=splits.root)
    if bad and len(bad) == len(every):
        raise ImgclsError(f"none of the {len(every)} images in {splits.root} decodes")
    if bad and opts.strict:
        raise ImgclsError(f"{len(bad)} of {len(every)} images in {splits.root} do not decode (strict)")
    found = None
    if opts.label_issues or opts.duplicates or opts.outliers:
        from imgcls.commands.check_data import check_data as run_checks

        found = run_checks(
            without_bad(splits, bad),
            out=opts.out,
            label=opts.label_issues,
            dupes=opts.duplicates,
            odd=opts.outliers,
            model=opts.model,
            image_size=opts.image_size,
            folds=opts.folds,
            views=opts.views,
            near=opts.near,
            workers=opts.workers,
            force=opts.force,
        )
    return DataCheck(splits, bad, found)


class DataCheck:
    """What ``check_data`` found: ``bad_files`` (DataFrame: path, reason), and with the feature checks
    ``summary`` (summary.json), ``label_issues``, ``label_quality``, ``class_noise``, ``duplicates``,
    ``outliers``, ``class_counts`` (DataFrames of the CSVs), ``path`` and ``report_path``."""

    def __init__(self, splits, bad: list, found: dict | None):
        self.splits = splits
        self.bad = bad
        self.summary = found or {}
        self.path = Path(found["out"]) if found else None

    def __repr__(self) -> str:
        return f"DataCheck({self.splits.root!r}: {len(self.bad)} bad file(s), findings in {self.path})"

    @property
    def report_path(self) -> Path | None:
        return self.path / "report.html" if self.path else None

    @property
    def bad_files(self):
        import pandas as pd

        return pd.DataFrame([{"path": b.path, "reason": b.reason} for b in self.bad], columns=["path", "reason"])

    def _csv(self, name: str):
        import pandas as pd

        from imgcls.core.tables import read_table

        if self.path is None or not (self.path / name).is_file():
            return None
        table = read_table(self.path / name, ours=True, exact=True, empty_ok=True)
        return pd.DataFrame(table.rows, columns=table.header)

    label_issues = property(lambda self: self._csv("label_issues.csv"))
    label_quality = property(lambda self: self._csv("label_quality.csv"))
    class_noise = property(lambda self: self._csv("class_noise.csv"))
    duplicates = property(lambda self: self._csv("duplicates.csv"))
    outliers = property(lambda self: self._csv("outliers.csv"))
    class_counts = property(lambda self: self._csv("class_counts.csv"))

    def _repr_html_(self) -> str:
        s = self.splits
        facts = [
            ("data", s.root),
            ("layout", s.layout),
            ("task", s.task),
            ("classes", len(s.classes)),
            ("images (training / validation / held-out)", f"{len(s.train)} / {len(s.val)} / {len(s.test)}"),
            ("bad files", len(self.bad)),
        ]
        for key, what in (("label_issues", "flagged"), ("outliers", "flagged")):
            if key in self.summary:
                facts.append((f"{key.replace('_', ' ')} {what}", self.summary[key][what]))
        if "duplicates" in self.summary:
            d = self.summary["duplicates"]
            facts.append(
                (
                    "duplicate pairs (exact / near / across train and held-out)",
                    f"{d['exact']} / {d['near']} / {d['leaks']}",
                )
            )
        report = display.link(self.report_path, "open the report") if self.report_path else ""
        return f"<div><b>imgcls check-data</b> {report}{display.facts(facts)}</div>"


def demo_data(out: str | Path, **options: Any) -> Path:
    """The synthetic demo dataset (11 classes, Food-11's flat layout) in a new or empty folder."""
    from imgcls.data.demo import write_demo_dataset

    opts = checked(DemoDataOptions, dict(out=str(out), **options), "imgcls.demo_data")
    return Path(write_demo_dataset(opts.out, per_class=opts.per_class, size=opts.size, seed=opts.seed))


def available_models(**options: Any):
    """The registered models (name, params, GFLOPs, default size, weights) as a DataFrame; ``all=True`` or
    ``filter="word"``: every ``timm:``/``tv:`` classifier ``model=`` accepts (params counted for short
    lists, on PyTorch's meta device: shapes only, no memory, no weights)."""
    import pandas as pd

    opts = checked(ModelsOptions, options, "imgcls.available_models")
    if opts.all or opts.filter:
        return pd.DataFrame(_hub_models(opts.filter, opts.num_classes))
    from imgcls.models.profile import count_gflops, count_params
    from imgcls.models.registry import create_model, get_model_info, list_models

    rows = []
    for name in list_models():
        info = get_model_info(name)
        model = create_model(name, opts.num_classes, pretrained=False)
        params, _ = count_params(model)
        rows.append(
            {
                "model": name,
                "params": params,
                "gflops": count_gflops(model, info.default_image_size),
                "size": info.default_image_size,
                "weights": info.weights or "none (trains from scratch)",
            }
        )
    return pd.DataFrame(rows)


def _hub_models(word: str | None, num_classes: int) -> list[dict]:
    import torch

    from imgcls.models.hub_models import list_hub_models, weights_cached
    from imgcls.models.registry import create_model, get_model_info

    names = list_hub_models(word)
    count = len(names) <= 40
    rows = []
    for name in names:
        try:
            info = get_model_info(name)
            params = None
            if count:
                with torch.device("meta"):
                    params = sum(p.numel() for p in create_model(name, num_classes).parameters())
        except Exception as exc:  # noqa: BLE001 - one unbuildable entry must not end the listing
            why = str(exc).splitlines()[0][:80] if str(exc) else type(exc).__name__
            rows.append({"model": name, "params": None, "size": None, "weights": f"({why})"})
            continue
        state = "none" if not info.has_weights else ("cached" if weights_cached(name) else "downloadable")
        rows.append({"model": name, "params": params, "size": info.default_image_size, "weights": state})
    return rows
