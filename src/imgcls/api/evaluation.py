"""``imgcls.evaluate`` and the ``Evaluation`` it returns: the numbers of metrics.json and the tables beside it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from imgcls.api import display
from imgcls.api.common import checked, quiet_libraries
from imgcls.commands.options import EvaluateOptions


def evaluate(run: str | Path, **options: Any) -> Evaluation:
    """Evaluate a run (or an exported model) on a labelled split: by default the held-out one of the data it
    trained on, else validation. Options as ``imgcls evaluate``'s flags (``data``, ``split``, ``engine``,
    ``tta``, ``gallery``, the label-CSV options...). Writes ``RUN/eval/<split>/`` and returns its contents."""
    from imgcls.commands.evaluate import evaluate as run_evaluate
    from imgcls.plan import csv_options

    quiet_libraries()
    opts = checked(EvaluateOptions, dict(run=str(run), **options), "imgcls.evaluate")
    csv_values = {k: v for k, v in opts.csv_values().items() if v not in (None, False)}
    csv = None
    if csv_values:
        from imgcls.core.config import resolve_config

        csv = csv_options(resolve_config(None, csv_values))
    result = run_evaluate(
        opts.run,
        data=opts.data,
        csv=csv,
        split=opts.split,
        batch_size=opts.batch_size,
        workers=opts.workers,
        gallery=opts.gallery,
        tta=opts.tta,
        engine=opts.engine,
    )
    return Evaluation(result)


class Evaluation:
    """What ``evaluate`` found: ``metrics`` (the headline numbers), ``per_class`` (multi-label: ``per_label``),
    ``predictions`` and ``confusion`` (single-label) as DataFrames, ``path`` (the folder written).
    ``evaluation["top1"]`` reads any field of metrics.json."""

    HEADLINE = ("top1", "top5", "macro_f1", "mAP", "f1_macro", "f1_micro", "exact_match")

    def __init__(self, result: dict):
        self.result = result
        self.path = Path(result["out"])

    def __getitem__(self, key: str):
        return self.result[key]

    def __contains__(self, key: str) -> bool:
        return key in self.result

    def __repr__(self) -> str:
        return f"Evaluation({self.result['split']}: {self.metrics})"

    @property
    def task(self) -> str:
        return self.result["task"]

    @property
    def split(self) -> str:
        return self.result["split"]

    @property
    def metrics(self) -> dict:
        return {k: self.result[k] for k in self.HEADLINE if self.result.get(k) is not None}

    @property
    def per_class(self):
        import pandas as pd

        return pd.DataFrame(self.result["per_label" if self.task == "multilabel" else "per_class"])

    per_label = per_class

    @property
    def predictions(self):
        import pandas as pd

        from imgcls.core.tables import read_table

        table = read_table(self.path / "predictions.csv", ours=True, exact=True, empty_ok=True)
        return pd.DataFrame(table.rows, columns=table.header)

    @property
    def confusion(self):
        """Rows: true class; columns: predicted class (single-label runs)."""
        import pandas as pd

        from imgcls.core.tables import read_table

        table = read_table(self.path / "confusion_matrix.csv", ours=True, exact=True, empty_ok=True)
        first = table.header[0]
        frame = pd.DataFrame(table.rows, columns=table.header).set_index(first)
        return frame.astype(int)

    def _repr_html_(self) -> str:
        facts = [("split", self.split), ("images", self.result["images"]), *self.metrics.items()]
        facts.append(("engine", f"{self.result['engine']['engine']}: {self.result['engine']['file']}"))
        absent = self.result.get("labels_without_positives")
        if absent:
            facts.append(("labels without a positive image (not averaged)", ", ".join(absent)))
        return f"<div><b>imgcls evaluation</b>{display.facts(facts)}{display.table(self.per_class)}</div>"
