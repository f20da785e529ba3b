"""``imgcls.train`` and the ``Run`` it returns: a run folder as Python objects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from imgcls.api import display
from imgcls.api.common import checked, progress_bars, quiet_libraries
from imgcls.commands.options import TrainOptions
from imgcls.core.config import TrainConfig
from imgcls.core.errors import ImgclsError
from imgcls.core.options import check_names


def train(
    *,
    config: str | None = None,
    resume: str | Path | bool | None = None,
    force: bool = False,
    progress: bool | None = None,
    **fields: Any,
) -> Run:
    """Train one model into a run folder and return it as a ``Run``.

    Every ``TrainConfig`` field is a keyword with the flag's default, check and message
    (``imgcls.train(data="food5", model="efficientnet_lite0", epochs=5, val_split=0.2, out="runs/x")``);
    ``config``: a YAML file under the keywords; ``resume``: a run folder to continue (or True: ``out``);
    ``force``: start a finished run over, or write into a folder of other files.
    """
    from imgcls.core.config import RESUMABLE, resolve_config
    from imgcls.core.malloc import tune_malloc
    from imgcls.core.options import flag_name
    from imgcls.engine.train import train as fit
    from imgcls.plan import resume_config

    quiet_libraries()
    opts = checked(TrainOptions, dict(config=config, force=force, progress=progress), "imgcls.train")
    check_names(TrainConfig, fields, where="imgcls.train")
    overrides = {k: v for k, v in fields.items() if v is not None}
    if resume is not None and resume is not False:
        run_dir = overrides.get("out") if resume is True else resume
        if not run_dir:
            raise ImgclsError("--resume needs the run folder: --resume runs/NAME (or --out runs/NAME --resume)")
        if opts.config:
            allowed = ", ".join(flag_name(f) for f in sorted(RESUMABLE))
            raise ImgclsError(f"a resumed run keeps its config: drop --config (only {allowed} may change)")
        cfg = resume_config(run_dir, overrides)
    else:
        cfg = resolve_config(opts.config, overrides)
    tune_malloc()
    paths = fit(cfg, resume=resume not in (None, False), progress=progress_bars(opts.progress), force=opts.force)
    return Run(paths.root)


def open_run(path: str | Path) -> Run:
    return Run(path)


class Run:
    """A run folder: ``path``, ``config`` (the resolved TrainConfig), ``classes``, ``summary`` (summary.json),
    ``metrics`` (metrics.csv as a DataFrame), and what can be done with it: ``evaluate``, ``predict``,
    ``load``, ``export``. In a notebook it shows its curves and summary."""

    def __init__(self, path: str | Path):
        from imgcls.core.rundir import folder_state

        self.path = Path(path)
        if folder_state(self.path) != "run":
            raise ImgclsError(f"{self.path} is not an imgcls run folder (no config.yaml + classes.json of a run)")

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    @property
    def config(self) -> TrainConfig:
        from imgcls.core.config import load_run_config

        return load_run_config(self.path / "config.yaml")

    @property
    def classes(self) -> list[str]:
        from imgcls.core.files import read_json

        return read_json(self.path / "classes.json", expect=list)

    @property
    def summary(self) -> dict:
        from imgcls.core.files import read_json

        summary = self.path / "summary.json"
        return read_json(summary, expect=dict) if summary.is_file() else {}

    @property
    def metrics(self):
        """metrics.csv: one row per completed epoch."""
        import pandas as pd

        from imgcls.core.rundir import metrics_columns, read_metrics

        rows = read_metrics(self.path / "metrics.csv")
        return pd.DataFrame(rows, columns=metrics_columns(self.summary.get("task", "single")))

    @property
    def best(self) -> float | None:
        """The best validation score (accuracy, or mAP for multi-label)."""
        summary = self.summary
        return summary.get(f"best_{summary.get('metric', 'val_acc')}")

    def evaluate(self, **options):
        """``imgcls.evaluate`` of this run (the held-out split by default)."""
        from imgcls.api.evaluation import evaluate

        return evaluate(self.path, **options)

    def load(self, *, engine: str | None = None):
        from imgcls.api.model import load

        return load(self.path, engine=engine)

    def predict(self, images, *, topk: int = 1, engine: str | None = None, batch_size: int = 64):
        return self.load(engine=engine).predict(images, topk=topk, batch_size=batch_size)

    def export(self, **options) -> dict:
        from imgcls.api.model import export

        return export(self.path, **options)

    def _repr_html_(self) -> str:
        s = self.summary
        metric = s.get("metric", "val_acc")
        facts = [
            ("run", str(self.path)),
            ("model", s.get("model")),
            ("task", s.get("task")),
            ("classes", s.get("num_classes")),
            ("fine-tune", s.get("finetune")),
            ("epochs", f"{s.get('epochs_completed')} of {s.get('epochs_requested')}"),
            (f"best {metric}", s.get(f"best_{metric}")),
            ("best epoch", s.get("best_epoch")),
            ("training time (s)", s.get("train_seconds")),
            ("trainable / all params", f"{s.get('trainable_params', 0):,} / {s.get('params', 0):,}"),
        ]
        return f"<div><b>imgcls run</b>{display.facts(facts)}{display.curves(self.metrics, s.get('model', ''))}</div>"
