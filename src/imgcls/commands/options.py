"""Every command's options, one dataclass each (``TrainConfig`` is training's): the Python API's keywords,
the CLI's flags and arguments, their checks and their ``--help`` all come from these fields.

Light on purpose (no torch): the CLI builds its parser from here in milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass

from imgcls.core.config import TrainConfig
from imgcls.core.options import like, opt

ENGINES = ("auto", "onnx", "torch", "int8")
ENGINE_HELP = (
    "what runs the model: auto (ONNX Runtime on CPU), onnx, torch, or int8 (the run's accepted int8 export; "
    "only when asked)"
)
# The label-CSV options, shared with training (one definition: TrainConfig's).
CSV_FIELDS = ("labels", "images", "image_col", "label_col", "label_sep", "task", "skip_missing", "allow_outside_data")


@dataclass(kw_only=True)
class CsvFields:
    """How to read a label CSV the run did not train on (``--data`` with other files)."""

    labels: str | None = like(TrainConfig, "labels")
    images: str | None = like(TrainConfig, "images")
    image_col: str | None = like(TrainConfig, "image_col")
    label_col: str | None = like(TrainConfig, "label_col")
    label_sep: str | None = like(TrainConfig, "label_sep")
    skip_missing: bool = like(TrainConfig, "skip_missing")
    allow_outside_data: bool = like(TrainConfig, "allow_outside_data")

    def csv_values(self) -> dict:
        return {k: getattr(self, k) for k in CSV_FIELDS if hasattr(self, k)}


@dataclass(kw_only=True)
class RunOptions:
    """What ``train``, ``compare``, ``lr-find`` and ``auto`` take beside the recipe."""

    config: str | None = opt(None, "YAML file of options (defaults < YAML < flags)")
    force: bool = opt(False, "write into a folder that holds other files, or start a finished run over")
    progress: bool | None = opt(None, "progress bars (default: on a terminal; one line per epoch always)")


@dataclass(kw_only=True)
class TrainOptions(RunOptions):
    resume: str | None = opt(None, "continue this run folder from its last checkpoint", flag=False)


@dataclass(kw_only=True)
class CompareOptions(RunOptions):
    models: list[str] | None = opt(
        None,
        "model specs name[:key=value,...][+field=value] (default: the reference set; the demo set without --data)",
        nargs="+",
        metavar="SPEC",
    )
    out: str | None = opt(None, "comparison folder (default runs/compare-<data folder name>)")
    retrain: bool = opt(False, "start over the variants whose saved config differs from the requested one")


def parse_duration(text: str) -> float:
    """``90s``, ``10m``, ``1h``, ``1h30m``, ``1.5h`` or plain seconds -> seconds (> 0)."""
    import re

    value = str(text).strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        seconds = float(value)
    else:
        parts = re.findall(r"(\d+(?:\.\d+)?)\s*(h|m|s)", value)
        if not parts or "".join(f"{n}{u}" for n, u in parts) != value.replace(" ", ""):
            raise ValueError("expected a duration such as 90s, 10m, 1h or 1h30m (or plain seconds)")
        seconds = sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)
    if not seconds > 0:
        raise ValueError("a time limit must be more than 0 seconds")
    return seconds


def _check_duration(value: str) -> str | None:
    try:
        parse_duration(value)
    except ValueError as exc:
        return str(exc)
    return None


# Training options auto searches (or sets per trial) rather than taking from the user.
AUTO_SEARCHED = ("model", "out", "finetune", "feature_cache", "lr", "epochs", "pretrained")


@dataclass(kw_only=True)
class AutoOptions:
    config: str | None = like(RunOptions, "config")
    force: bool = opt(False, "write into an --out that holds other files")
    time_limit: str | None = opt(
        None,
        "wall-clock budget of the whole command, extraction and the winner's evaluation included: 90s, 10m, 1h, "
        "1h30m or plain seconds (required; running the same command again continues with what is left)",
        check=_check_duration,
    )
    out: str | None = opt(None, "the search's folder (default runs/auto-<data folder name>)")
    models: list[str] | None = opt(
        None,
        "backbones to consider besides EfficientNet-Lite0/1/2 (model specs, timm:/tv: names included)",
        nargs="+",
        metavar="SPEC",
    )
    metric: str = opt(
        "auto",
        "validation metric the search maximises (val_loss: minimises); auto: val_acc, or val_mAP for multi-label",
        choices=("auto", "val_acc", "val_mAP", "val_loss"),
    )
    storage: str | None = opt(
        None,
        "Optuna storage URL shared by every process of the search (default: sqlite:///OUT/study.db); e.g. "
        "postgresql://user@host/db, or journal:///shared/disk/study.log",
    )
    study: str | None = opt(None, "the study's name in the storage (default: the --out folder's name)")


@dataclass(kw_only=True)
class LrFindOptions:
    config: str | None = like(RunOptions, "config")
    plot: str = opt("lr_find.png", "where to write the loss-against-lr plot")
    steps: int = opt(100, "training steps of the search", lo=10, hi=100_000)
    min_lr: float = opt(1e-6, "the smallest learning rate tried", lo=0, lo_open=True)
    max_lr: float = opt(1.0, "the largest learning rate tried", lo=0, lo_open=True)


@dataclass(kw_only=True)
class EvaluateOptions(CsvFields):
    run: str = opt(None, "run folder (or an exported model.onnx / model.safetensors)", positional=True)
    data: str | None = opt(None, "dataset folder (default: the one the run trained on)")
    split: str | None = opt(
        None,
        "evaluation | validation | training (default: evaluation, else validation when the data has no labelled "
        "evaluation split; a single folder of class folders is evaluated whole)",
    )
    gallery: int = opt(16, "how many confident errors errors.png shows", lo=0)
    batch_size: int = opt(64, "images per batch", lo=1)
    workers: int | None = opt(None, "decoding processes (default: cores - 1)", lo=0)
    tta: str | None = opt(None, "test-time augmentation: average with the mirror image", choices=("flip",))
    engine: str | None = opt(None, ENGINE_HELP, choices=ENGINES)


@dataclass(kw_only=True)
class PredictOptions:
    run: str = opt(None, "run folder (or an exported model.onnx, or an ImageNet model name)", positional=True)
    inputs: list[str] = opt(None, "image files or folders", positional=True, nargs="+", split=False)
    out: str = opt("preds.csv", "the CSV to write")
    topk: int = opt(0, "add the top K class names and probabilities", lo=0)
    submission: str | None = opt(
        None,
        "a sample submission (e.g. sample_submission.csv): write its columns in its row order, filled in from "
        "the images its ids name",
        metavar="CSV",
    )
    force: bool = opt(False, "replace --out even if it is not a predictions CSV")
    batch_size: int = like(EvaluateOptions, "batch_size")
    workers: int | None = like(EvaluateOptions, "workers")
    tta: str | None = like(EvaluateOptions, "tta")
    engine: str | None = like(EvaluateOptions, "engine")


@dataclass(kw_only=True)
class ExportOptions:
    run: str = opt(None, "run folder", positional=True)
    format: str = opt("onnx", "file format", choices=("onnx", "safetensors"))
    out: str | None = opt(None, "folder (default RUN/export)")
    quantize: str | None = opt(
        None,
        "also write model.int8.onnx (static int8, calibrated on training images; refused if its top-1 agrees "
        "with fp32 on < 99% of the validation split)",
        choices=("int8",),
    )
    force: bool = opt(False, "replace files in --out that imgcls export did not write")


@dataclass(kw_only=True)
class ServeOptions:
    run: str = opt(None, "run folder (or an exported model.onnx)", positional=True)
    host: str = opt("127.0.0.1", "address to bind (default loopback only)")
    port: int = opt(8000, "TCP port", lo=1, hi=65535)
    max_upload_mb: float = opt(10.0, "largest upload in MB", lo=0, lo_open=True)
    max_pixels: int = opt(
        24_000_000, "refuse images with more pixels (413), checked from the header before decoding", lo=1
    )
    upload_timeout: float = opt(
        30.0, "seconds an upload may send nothing before it is answered 408", lo=0, lo_open=True
    )
    engine: str | None = like(EvaluateOptions, "engine")


@dataclass(kw_only=True)
class ExplainOptions:
    run: str = opt(None, "run folder", positional=True)
    images: list[str] = opt(None, "image files", positional=True, nargs="+", split=False)
    out: str | None = opt(None, "folder for the PNGs (default RUN/explain)")


@dataclass(kw_only=True)
class CheckDataOptions(CsvFields):
    data: str = opt(None, "dataset folder, or a run folder (its recorded splits)", positional=True)
    val_split: float | None = opt(
        None,
        "carve the validation split train would (default: the data is checked as it is, with or without one)",
        lo=0,
        hi=1,
        lo_open=True,
        hi_open=True,
    )
    task: str = like(TrainConfig, "task")
    strict: bool = opt(False, "exit 2 when any file is bad")
    label_issues: bool = opt(False, "rank likely mislabeled images (confident learning)")
    duplicates: bool = opt(False, "exact and near duplicates, within and across splits")
    outliers: bool = opt(False, "images far from every other, and the class counts")
    model: str = opt("efficientnet_lite0", "pretrained backbone whose features are compared")
    image_size: int | None = opt(None, "input size (default: the model's)", lo=16, hi=2048)
    folds: int = opt(5, "out-of-fold splits for --label-issues", lo=2, hi=20)
    views: int = opt(1, "feature views per image for --label-issues (1 + augmented)", lo=1, hi=16)
    near: float = opt(
        0.90,
        "feature cosine similarity at or above which two images are near duplicates (the 64 px pass uses this + 0.04)",
        lo=0.5,
        hi=1.0,
    )
    out: str | None = opt(None, "folder for the CSVs and report.html (default: check-<data folder name>/ here)")
    force: bool = opt(False, "write into an --out that holds other files")
    workers: int | None = like(EvaluateOptions, "workers")


@dataclass(kw_only=True)
class DemoDataOptions:
    out: str = opt(None, "folder to write (new or empty)", positional=True)
    per_class: int = opt(150, "training images per class (validation and evaluation: 30% each)", lo=2, hi=100_000)
    size: int = opt(64, "image side in px", lo=16, hi=1024)
    seed: int = opt(0, "random seed", lo=0)


@dataclass(kw_only=True)
class ModelsOptions:
    num_classes: int = opt(11, "head size the parameters are counted with", lo=2)
    all: bool = opt(False, "list every timm:<name> and tv:<name> that --model accepts")
    filter: str | None = opt(None, "only names containing this word (implies --all)")


@dataclass(kw_only=True)
class ReportOptions:
    dir: str = opt(None, "comparison folder", positional=True)


@dataclass(kw_only=True)
class LoadtestOptions:
    url: str = opt(None, "e.g. http://127.0.0.1:8000", positional=True)
    image: str = opt(None, "image file to upload", positional=True)
    requests: int = opt(500, "requests in all", lo=1, hi=1_000_000)
    concurrency: int = opt(8, "requests in flight at once", lo=1, hi=256)
