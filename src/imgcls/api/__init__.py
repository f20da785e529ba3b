"""The Python API: what the CLI and the notebook share. Every function checks its keywords as the
matching command checks its flags, and raises ``ImgclsError`` with the CLI's one-line message."""

from imgcls.api.auto import AutoResult, auto
from imgcls.api.comparison import Comparison, compare, rebuild_report
from imgcls.api.data import DataCheck, available_models, check_data, demo_data
from imgcls.api.evaluation import Evaluation, evaluate
from imgcls.api.model import Model, Predictions, explain, export, load, predict, serve
from imgcls.api.runs import Run, open_run, train
from imgcls.api.tools import loadtest, lr_find

__all__ = [
    "AutoResult",
    "Comparison",
    "DataCheck",
    "Evaluation",
    "Model",
    "Predictions",
    "Run",
    "check_data",
    "compare",
    "demo_data",
    "evaluate",
    "explain",
    "export",
    "load",
    "loadtest",
    "lr_find",
    "auto",
    "available_models",
    "open_run",
    "predict",
    "rebuild_report",
    "serve",
    "train",
]
