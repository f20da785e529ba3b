"""``imgcls.compare`` and the ``Comparison`` it returns; ``imgcls.report`` rebuilds a report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from imgcls.api import display
from imgcls.api.common import checked, progress_bars, quiet_libraries
from imgcls.commands.options import CompareOptions
from imgcls.core.config import TrainConfig
from imgcls.core.errors import ImgclsError
from imgcls.core.options import check_names


def compare(
    data: str | Path | None = None,
    models: list[str] | None = None,
    *,
    out: str | Path | None = None,
    config: str | None = None,
    retrain: bool = False,
    force: bool = False,
    progress: bool | None = None,
    **fields: Any,
) -> Comparison:
    """Train each model spec with one recipe into ``out/<variant>/``, evaluate them and write the report.
    Without ``data``: the embedded demo (generated data, the four demo variants). Recipe fields are
    keywords as for ``imgcls.train``; finished variants are reused, interrupted ones resume."""
    from imgcls.commands.compare import DEMO_MODELS, DEMO_TRAIN, REFERENCE_MODELS, demo_data_dir
    from imgcls.commands.compare import compare as run_compare
    from imgcls.core.config import resolve_config
    from imgcls.core.malloc import tune_malloc

    quiet_libraries()
    opts = checked(
        CompareOptions,
        dict(models=models, out=out, config=config, retrain=retrain, force=force, progress=progress),
        "imgcls.compare",
    )
    out = opts.out
    check_names(TrainConfig, fields, where="imgcls.compare")
    if "model" in fields:
        raise ImgclsError("imgcls.compare: model= is not an option of a comparison; give models=[...]")
    overrides = {k: v for k, v in fields.items() if v is not None}
    if data is None:
        overrides = {**DEMO_TRAIN, **overrides, "data": str(demo_data_dir())}
        specs = opts.models or DEMO_MODELS
        out = out or "runs/compare-demo"
    else:
        overrides["data"] = str(data)
        specs = opts.models or REFERENCE_MODELS
        out = out or f"runs/compare-{Path(str(data)).resolve().name}"
    cfg = resolve_config(opts.config, overrides)
    tune_malloc()
    report = run_compare(cfg, specs, out, progress=progress_bars(opts.progress), retrain=opts.retrain, force=opts.force)
    return Comparison(Path(report).parent)


def rebuild_report(folder: str | Path) -> Path:
    """Rebuild a comparison's (or an ``auto`` search's) report from its folder alone."""
    from imgcls.report.build import build_report

    if (Path(folder) / "auto.json").is_file():
        from imgcls.commands.auto import report_from_files

        return report_from_files(Path(folder))
    return Path(build_report(folder))


class Comparison:
    """A comparison folder: ``summary`` (summary.csv, one row per variant), ``report_path`` (report.html),
    ``runs`` (each variant as a ``Run``)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not (self.path / "compare.json").is_file():
            raise ImgclsError(f"{self.path} is not an imgcls comparison (no compare.json)")

    def __repr__(self) -> str:
        return f"Comparison({str(self.path)!r})"

    @property
    def report_path(self) -> Path:
        return self.path / "report.html"

    @property
    def summary(self):
        import pandas as pd

        from imgcls.core.tables import read_table

        table = read_table(self.path / "summary.csv", ours=True, exact=True, empty_ok=True)
        frame = pd.DataFrame(table.rows, columns=table.header)
        for column in frame.columns:
            if column != "variant":
                try:
                    frame[column] = pd.to_numeric(frame[column])
                except (ValueError, TypeError):
                    pass  # text (flags, split names) stays text
        return frame

    @property
    def runs(self) -> dict:
        from imgcls.api.runs import Run
        from imgcls.core.files import read_json

        meta = read_json(self.path / "compare.json", expect=dict)
        return {d: Run(self.path / d) for d in meta.get("dirs", []) if (self.path / d / "config.yaml").is_file()}

    def _repr_html_(self) -> str:
        return (
            f"<div><b>imgcls comparison</b> {display.link(self.report_path, 'open the report')}"
            f"{display.table(self.summary)}</div>"
        )
