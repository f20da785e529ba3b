"""``imgcls.auto``: the best model for these photos within a time budget, and the ``AutoResult`` it returns."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from imgcls.api import display
from imgcls.api.common import checked, quiet_libraries
from imgcls.commands.options import AUTO_SEARCHED, AutoOptions, parse_duration
from imgcls.core.config import TrainConfig
from imgcls.core.errors import ImgclsError
from imgcls.core.options import check_names, flag_name


def auto(
    data: str | Path | None = None,
    *,
    time_limit: str | float | None = None,
    out: str | Path | None = None,
    models: list[str] | None = None,
    metric: str = "auto",
    storage: str | None = None,
    study: str | None = None,
    config: str | None = None,
    force: bool = False,
    started: float | None = None,
    **fields: Any,
) -> AutoResult:
    """Search backbones (EfficientNet-Lite0/1/2 and ``models``), how much of them trains, cached views and
    learning rate for ``time_limit`` (``"5m"``, ``"90s"``, seconds) of wall clock, the winner's evaluation
    included. The data options are ``imgcls.train``'s keywords (``val_split``, label-CSV options, ``exclude``...).
    The study lives in ``storage`` (default SQLite in ``out``): running again continues it, and several
    processes given one storage share it. Returns the leaderboard, the winner as a ``Run`` and the report."""
    from imgcls.commands.auto import auto as run_auto
    from imgcls.core.config import resolve_config
    from imgcls.core.malloc import tune_malloc

    started = time.monotonic() if started is None else started
    quiet_libraries()
    values = dict(
        time_limit=None if time_limit is None else str(time_limit),
        out=None if out is None else str(out),
        models=models,
        metric=metric,
        storage=storage,
        study=study,
        config=config,
        force=force,
    )
    opts = checked(AutoOptions, values, "imgcls.auto")
    check_names(TrainConfig, fields, where="imgcls.auto")
    searched = sorted(k for k in fields if k in AUTO_SEARCHED and fields[k] is not None)
    if searched:
        raise ImgclsError(
            f"imgcls auto chooses {', '.join(flag_name(k) for k in searched)} itself; drop it (the search's folder "
            "is --out, its backbones --models)"
        )
    if not opts.time_limit:
        raise ImgclsError("give the search a budget: --time-limit 10m (or 90s, 1h, plain seconds)")
    if data is None and "data" not in fields:
        raise ImgclsError("no data folder given: pass --data DIR")
    overrides = {k: v for k, v in fields.items() if v is not None}
    if data is not None:
        overrides["data"] = str(data)
    base = resolve_config(opts.config, overrides)
    out_dir = opts.out or f"runs/auto-{Path(base.data).resolve().name}"
    tune_malloc()
    result = run_auto(
        base,
        time_limit=parse_duration(opts.time_limit),
        out=out_dir,
        models=opts.models,
        metric=opts.metric,
        storage=opts.storage,
        study_name=opts.study,
        force=opts.force,
        started=started,
    )
    return AutoResult(result)


class AutoResult:
    """What ``auto`` found: ``leaderboard`` (every trial, best first, as a DataFrame), ``best`` (the winner's
    run folder ``OUT/best`` as a ``Run``), ``held_out`` (its one score on the held-out split), ``report_path``."""

    def __init__(self, result: dict):
        self.result = result

    def __repr__(self) -> str:
        h = self.result["held_out"]
        return f"AutoResult(best={self.result['best_run']!r}, {h['split']} {h['metric']} {h['value']:.4f})"

    @property
    def leaderboard(self):
        import pandas as pd

        return pd.DataFrame(self.result["leaderboard"])

    @property
    def best(self):
        from imgcls.api.runs import Run

        return Run(self.result["best_run"])

    @property
    def held_out(self) -> dict:
        return dict(self.result["held_out"])

    @property
    def report_path(self) -> Path:
        return Path(self.result["report"])

    @property
    def seconds(self) -> float:
        return self.result["seconds"]

    def _repr_html_(self) -> str:
        b, h = self.result["best"], self.result["held_out"]
        ensemble = self.result.get("ensemble")
        if ensemble:
            winner = "ensemble of trials " + ", ".join(f"{t} (x{w})" for t, w in ensemble["members"])
        else:
            winner = f"trial {b['trial']}: {b['model']} {b['finetune']}" + (
                f", {b['views']} view(s)" if b["views"] else ""
            )
        facts = [
            ("winner", winner),
            (f"{h['metric']} on {h['split']} (scored once)", h["value"]),
            ("trials", len(self.result["leaderboard"])),
            ("seconds (limit)", f"{self.result['seconds']:.0f} ({self.result['time_limit']:.0f})"),
        ]
        columns = [c for c in ("trial", "state", "model", "finetune", "views", "lr", "epochs", "seconds", "stopped")]
        metric = next(k for k in self.result["leaderboard"][0] if k.startswith("val_"))
        table = self.leaderboard[[*columns[:6], metric, *columns[6:]]]
        return (
            f"<div><b>imgcls auto</b> {display.link(self.report_path, 'open the report')}"
            f"{display.facts(facts)}{display.table(table)}</div>"
        )
