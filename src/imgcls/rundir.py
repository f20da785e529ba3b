"""The run directory contract (see docs): every training command writes one, every consumer reads one."""

from __future__ import annotations

import csv
import errno
import json
import os
import signal
import threading
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imgcls.errors import ImgclsError

METRICS_COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_acc5", "lr", "epoch_seconds"]
# Multi-label runs: micro-F1 while training; validation mean average precision (macro) and macro-F1 at 0.5.
MULTILABEL_COLUMNS = ["epoch", "train_loss", "train_f1", "val_loss", "val_mAP", "val_f1", "lr", "epoch_seconds"]


def metrics_columns(task: str) -> list[str]:
    return MULTILABEL_COLUMNS if task == "multilabel" else METRICS_COLUMNS


@dataclass(frozen=True)
class RunPaths:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def classes(self) -> Path:
        return self.root / "classes.json"

    @property
    def splits(self) -> Path:
        return self.root / "splits.csv"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.csv"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def best(self) -> Path:
        return self.checkpoints / "best.ckpt"

    @property
    def last(self) -> Path:
        return self.checkpoints / "last.ckpt"

    @property
    def bad_files(self) -> Path:
        return self.root / "bad_files.txt"

    @property
    def eval_dir(self) -> Path:
        return self.root / "eval"

    @property
    def export_dir(self) -> Path:
        return self.root / "export"

    @property
    def export_onnx(self) -> Path:
        return self.export_dir / "model.onnx"

    @property
    def inference(self) -> Path:
        return self.root / "inference.json"

    @property
    def thresholds(self) -> Path:
        return self.root / "thresholds.json"

    @property
    def edits(self) -> Path:
        return self.root / "data_edits.csv"


def atomic_write(path: Path, write, *, binary: bool = False, unbuffered: bool = False) -> None:
    """``write(fh)`` into a temporary file that is fsynced and renamed: a kill never leaves half a file.

    ``unbuffered`` (binary only) hands ``write`` the raw file: torch.save writes its records in large
    blocks, which Python's buffered writer only slows down (ViT-B/16 + Adam, 1 GB into the page cache:
    2.4-7.4 s buffered, 0.6-0.7 s raw; a slow disk still bounds both).

    The temporary name is unique per process and call, so concurrent writers never share one, and it is
    removed when the write fails (a full disk leaves no ``.tmp`` behind).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with interrupts_deferred():
            with open(tmp, "wb" if binary else "w", buffering=0 if unbuffered else -1) as fh:
                write(_WholeWrites(fh) if unbuffered else fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if out_of_space(exc):
            raise ImgclsError(f"no space left on the device while writing {path}; {path.name} is unchanged") from None
        raise


class _WholeWrites:
    """A raw file whose ``write`` never stops short: write(2) may (2 GB at most per call on Linux), and
    torch.save's writer ignores the count it returns."""

    def __init__(self, raw):
        self.raw = raw

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        done = 0
        while done < len(view):
            written = self.raw.write(view[done:])
            if not written:  # never loop forever on a file that takes nothing
                raise OSError(errno.EIO, f"a write to {getattr(self.raw, 'name', 'a file')} made no progress")
            done += written
        return done

    def flush(self) -> None:
        self.raw.flush()


@contextmanager
def interrupts_deferred():
    """Ctrl+C while the body runs is raised when it ends, not inside it.

    A KeyboardInterrupt raised inside a C++ writer's callback (torch.save's zip writer) is swallowed
    there and surfaces as "unexpected pos": a traceback instead of "interrupted". The write takes
    milliseconds, so the user waits that long and the file is finished. Only the main thread can set
    handlers, and a handler someone else installed (Lightning's SIG_IGN during shutdown) is left alone.
    """
    if threading.current_thread() is not threading.main_thread() or (
        signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return
    pending: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if pending:
        raise KeyboardInterrupt


def out_of_space(exc: BaseException | None) -> bool:
    """Whether a full disk (or quota) is behind ``exc``: writers often fail in their own words on the
    way out (torch.save's zip writer: "unexpected pos"), with the OSError as the context."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def save_figure(fig, path: Path, *, dpi: int = 100) -> Path:
    """A matplotlib figure as PNG through ``atomic_write`` (a full disk leaves no half image)."""
    atomic_write(Path(path), lambda fh: fig.savefig(fh, format="png", dpi=dpi), binary=True)
    return Path(path)


@contextmanager
def staged_folder(folder: Path):
    """Fill a sibling temporary folder, then swap it in for ``folder`` whole: a failure (a full disk, a
    kill) leaves the previous contents, never a mix of old and new files."""
    import shutil

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}.{uuid.uuid4().hex[:8]}"
    stage = folder.with_name(f".{folder.name}.{tag}.tmp")
    stage.mkdir()
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    old = folder.with_name(f".{folder.name}.{tag}.old")
    if folder.exists():
        os.replace(folder, old)
    os.replace(stage, folder)
    shutil.rmtree(old, ignore_errors=True)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda fh: fh.write(text))


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    import io

    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ImgclsError(f"missing file: {path}") from None
    except json.JSONDecodeError as exc:
        raise ImgclsError(f"{path}: not valid JSON ({exc})") from None


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    try:
        return _parse_metrics(path)
    except (ValueError, TypeError, csv.Error, UnicodeDecodeError) as exc:
        raise ImgclsError(
            f"{path} is damaged ({type(exc).__name__}: {str(exc)[:120]}); delete it to go on (its "
            "earlier rows are lost), or start the run over with --force"
        ) from None


def _parse_metrics(path: Path) -> list[dict[str, Any]]:
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if rows:
        expected = MULTILABEL_COLUMNS if "val_mAP" in rows[0] else METRICS_COLUMNS
        if set(expected) - set(rows[0]):
            raise ValueError(f"missing columns {sorted(set(expected) - set(rows[0]))}")
    return [
        {
            k: (float(v) if v not in ("", None) and k != "epoch" else (int(v) if k == "epoch" else None))
            for k, v in row.items()
        }
        for row in rows
    ]


def write_metrics(path: Path, rows: list[dict[str, Any]], columns: list[str] = METRICS_COLUMNS) -> None:
    """Floats are written with repr (shortest round-trip form), so summary numbers equal the file's."""
    lines = [",".join(columns)]
    for row in rows:
        lines.append(",".join("" if row.get(c) is None else repr(row[c]) for c in columns))
    atomic_write_text(path, "\n".join(lines) + "\n")


DEFAULT_THRESHOLD = 0.5  # a multi-label class without a tuned threshold (none in the run, or no positives)


def read_thresholds(path: Path, classes: list[str]) -> list[float]:
    """The run's thresholds in class order (0.5 for every label when the file is missing)."""
    if not Path(path).is_file():
        return [DEFAULT_THRESHOLD] * len(classes)
    record = read_json(path)
    values = record.get("thresholds") if isinstance(record, dict) else None
    if record.get("classes") != classes or not isinstance(values, list) or len(values) != len(classes):
        raise ImgclsError(f"{path}: its classes or thresholds do not match the run's {len(classes)} classes")
    if not all(isinstance(v, (int, float)) and 0 <= v <= 1 for v in values):
        raise ImgclsError(f"{path}: thresholds must be numbers between 0 and 1")
    return [float(v) for v in values]


def open_run(run_dir: str | Path, *, checkpoint: str = "best") -> RunPaths:
    """A run directory that has what consumers need, or a clear error saying what is missing."""
    paths = RunPaths(Path(run_dir))
    if not paths.root.is_dir():
        raise ImgclsError(f"run folder not found: {paths.root}")
    for needed in (paths.config, paths.classes):
        if not needed.is_file():
            raise ImgclsError(f"{paths.root} is not an imgcls run folder (missing {needed.name})")
    ckpt = paths.best if checkpoint == "best" else paths.last
    if not ckpt.is_file():
        raise ImgclsError(
            f"{paths.root} has no checkpoint ({ckpt.relative_to(paths.root)}); "
            "train it first, or resume with: imgcls train --resume " + str(paths.root)
        )
    return paths


RUN_FILES = (
    "config.yaml",
    "classes.json",
    "splits.csv",
    "metrics.csv",
    "summary.json",
    "bad_files.txt",
    "inference.json",
    "thresholds.json",
    "data_edits.csv",
)
RUN_DIRS = ("checkpoints", "eval", "export", "explain")
LOCK_NAME = ".lock"


def folder_state(root: Path) -> str:
    """'empty' (or missing), 'run' (an imgcls run folder: config.yaml + classes.json) or 'foreign'."""
    root = Path(root)
    if not root.is_dir():
        if root.exists():
            return "foreign"
        return "empty"
    entries = [p for p in root.iterdir() if p.name != LOCK_NAME]
    if not entries:
        return "empty"
    if (root / "config.yaml").is_file() and (root / "classes.json").is_file() and _looks_like_a_run(root):
        return "run"
    return "foreign"


def _looks_like_a_run(root: Path) -> bool:
    """config.yaml is a mapping with a model, and classes.json a list of names: a user's own files with
    those names are not taken for a run (and never cleared by --force)."""
    import yaml

    try:
        config = yaml.safe_load((root / "config.yaml").read_text())
        classes = json.loads((root / "classes.json").read_text())
    except (OSError, ValueError, yaml.YAMLError):
        return False
    return isinstance(config, dict) and "model" in config and isinstance(classes, list)


def clear_run(root: Path) -> None:
    """Remove what an imgcls run wrote (and only that), so a new run can start in the folder."""
    import shutil

    for name in RUN_FILES:
        (root / name).unlink(missing_ok=True)
    for name in RUN_DIRS:
        if (root / name).is_dir():
            shutil.rmtree(root / name)
    for tmp in root.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)


class RunLock:
    """An exclusive lock on a run folder for as long as a process writes it (train, resume, export).

    A second process gets a one-line error naming the holder's PID. The lock is the kernel's (flock):
    it disappears with the process, so a killed run never leaves the folder locked.
    """

    def __init__(self, root: Path):
        self.root = Path(root)
        self.fh = None
        self.created = False

    def __enter__(self) -> RunLock:
        try:
            import fcntl
        except ImportError:  # no flock (Windows): run unlocked
            return self
        if self.root.exists() and not self.root.is_dir():
            raise ImgclsError(f"{self.root} is a file, not a folder; choose another --out")
        self.created = not self.root.exists()
        self.root.mkdir(parents=True, exist_ok=True)
        self.fh = open(self.root / LOCK_NAME, "a+")
        try:
            fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.fh.seek(0)
            holder = self.fh.read().strip() or "unknown"
            self.fh.close()
            self.fh = None
            raise ImgclsError(
                f"{self.root} is being written by another imgcls process (PID {holder}); "
                "wait for it to finish, or use another --out"
            ) from None
        self.fh.seek(0)
        self.fh.truncate()
        self.fh.write(f"{os.getpid()}\n")
        self.fh.flush()
        # Only a lock holder writes checkpoints/, so a temporary file there is a killed writer's half
        # checkpoint (as large as the model and its optimizer state): gone before anything is written.
        for tmp in (self.root / "checkpoints").glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
        return self

    def __exit__(self, *exc) -> None:
        if self.fh is not None:
            import fcntl

            # A command that wrote no run here (refused, failed early) leaves the folder as it found it.
            if folder_state(self.root) != "run":
                (self.root / LOCK_NAME).unlink(missing_ok=True)
                if self.created and not any(self.root.iterdir()):
                    self.root.rmdir()
            fcntl.flock(self.fh, fcntl.LOCK_UN)
            self.fh.close()
            self.fh = None
