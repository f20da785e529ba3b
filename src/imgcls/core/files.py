"""How imgcls writes files: whole or not at all.

``atomic_path`` is the one door: a temporary name beside the target (unique per process and call, so
concurrent writers never share one), fsynced and renamed over the target when the body succeeds, removed
when it fails. ``atomic_write`` hands a writer an open file on top of it; ``staged_folder`` does the same
for a folder. A full disk is one line (``ImgclsError``) that leaves the old file; a Ctrl+C during the
write is raised once the file is whole (C++ writers such as torch.save's swallow a KeyboardInterrupt
raised in their callback and fail with "unexpected pos").
"""

from __future__ import annotations

import errno
import json
import os
import signal
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from imgcls.core.errors import ImgclsError

TMP_SUFFIX = ".tmp"


def temporary_name(path: Path, tag: str = "") -> Path:
    """``.name.PID.uid[.tag].tmp`` beside ``path``: hidden, unique to this process and call."""
    path = Path(path)
    extra = f".{tag}" if tag else ""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}{extra}{TMP_SUFFIX}")


def remove_dead_temporaries(folder: Path, pattern: str = ".*") -> None:
    """Temporary files (``temporary_name``'s ``.name.PID...``) in ``folder`` whose writer is no longer
    alive: a killed export's half model, a killed cache fill."""
    for part in Path(folder).glob(pattern):
        pid = next((int(p) for p in part.name.split(".") if p.isdigit()), None)
        if pid is None or pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            _remove(part)
        except (OverflowError, PermissionError):
            if pid > 2**22:  # above any Linux PID: not a process's file
                _remove(part)


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


def space_error(path: Path, what: str = "") -> ImgclsError:
    return ImgclsError(f"no space left on the device while writing {path}; {what or Path(path).name + ' is unchanged'}")


def fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


@contextmanager
def atomic_path(path: Path, *, tag: str = "", fsync: bool = True, defer: bool = False) -> Iterator[Path]:
    """A temporary path for a writer that needs a name (ONNX export, quantization): renamed over ``path``
    when the body returns, removed when it raises. ``defer``: a Ctrl+C during the body is raised at its
    end (for writes of milliseconds; a long export stays interruptible)."""
    path = Path(path)
    tmp = temporary_name(path, tag)
    try:
        with interrupts_deferred() if defer else _nothing():
            yield tmp
            if fsync and tmp.is_file():
                fsync_file(tmp)
            os.replace(tmp, path)
    except BaseException as exc:
        _remove(tmp)
        if out_of_space(exc):
            raise space_error(path) from None
        raise


@contextmanager
def _nothing():
    yield


def _remove(tmp: Path) -> None:
    if tmp.is_dir() and not tmp.is_symlink():
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.unlink(missing_ok=True)


def atomic_write(path: Path, write, *, binary: bool = False, unbuffered: bool = False) -> None:
    """``write(fh)`` into a temporary file that is fsynced and renamed: a kill never leaves half a file.

    ``unbuffered`` (binary only) hands ``write`` the raw file: torch.save writes its records in large
    blocks, which Python's buffered writer only slows down (ViT-B/16 + Adam, 1 GB into the page cache:
    2.4-7.4 s buffered, 0.6-0.7 s raw; a slow disk still bounds both).
    """
    with atomic_path(path, fsync=False, defer=True) as tmp:
        with open(tmp, "wb" if binary else "w", buffering=0 if unbuffered else -1) as fh:
            write(_WholeWrites(fh) if unbuffered else fh)
            fh.flush()
            os.fsync(fh.fileno())


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

    The writes it guards take milliseconds to seconds, so the user waits that long and the file is
    finished. Only the main thread can set handlers, and a handler someone else installed (Lightning's
    SIG_IGN during shutdown) is left alone.
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


def save_figure(fig, path: Path, *, dpi: int = 100) -> Path:
    """A matplotlib figure as PNG (a full disk leaves no half image)."""
    atomic_write(Path(path), lambda fh: fig.savefig(fh, format="png", dpi=dpi), binary=True)
    return Path(path)


@contextmanager
def staged_folder(folder: Path):
    """Fill a sibling temporary folder, then swap it in for ``folder`` whole: a failure (a full disk, a
    kill) leaves the previous contents, never a mix of old and new files."""
    import shutil

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    stage = temporary_name(folder)
    stage.mkdir()
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    old = temporary_name(folder, "old")
    if folder.exists():
        os.replace(folder, old)
    os.replace(stage, folder)
    shutil.rmtree(old, ignore_errors=True)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda fh: fh.write(text))


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def read_json(path: Path, *, expect: type | tuple[type, ...] | None = None, what: str = "") -> Any:
    """A JSON file imgcls wrote, or one line saying why it cannot be read: missing, not UTF-8, not JSON,
    or (``expect``) not the kind of value it should hold."""
    path = Path(path)
    try:
        value = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise ImgclsError(f"missing file: {path}") from None
    except UnicodeDecodeError as exc:
        raise ImgclsError(f"{path}: not UTF-8 text (byte {exc.start}); is it damaged?") from None
    except json.JSONDecodeError as exc:
        raise ImgclsError(f"{path}: not valid JSON ({exc})") from None
    except OSError as exc:
        raise ImgclsError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if expect is not None and not isinstance(value, expect):
        kinds = expect if isinstance(expect, tuple) else (expect,)
        want = what or " or ".join({dict: "a JSON object", list: "a JSON list"}.get(k, k.__name__) for k in kinds)
        raise ImgclsError(f"{path}: expected {want}, found {type(value).__name__}")
    return value


_DIGESTS: dict[tuple, str] = {}


def sha256_file(path: Path) -> str:
    """The file's SHA-256, remembered for this process by (path, size, mtime, inode): a checkpoint is
    hashed once however often exports are checked against it."""
    import hashlib

    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
    if key not in _DIGESTS:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]
