"""One writer per run folder: ``RunLock``.

The lock is a POSIX record lock (``fcntl.lockf``) on ``RUN/.lock``. The kernel drops it when the holder
dies, and, unlike ``flock``, a forked child (a DataLoader worker) does not inherit it: after a ``kill -9``
of a training, an immediate ``--resume`` is not refused while the orphaned workers wind down. Record locks
do not exclude the holder's own process, so a registry of the folders this process holds does that (two
trainings into one folder from one notebook are refused too).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from imgcls.core.errors import ImgclsError
from imgcls.core.rundir import LOCK_NAME, folder_state

_HELD: set[str] = set()
_HELD_LOCK = threading.Lock()


class RunLock:
    """An exclusive lock on a run folder for as long as a process writes it (train, resume, export).
    A second writer gets a one-line error naming the holder's PID."""

    def __init__(self, root: Path, *, what: str = "--out"):
        self.root = Path(root)
        self.fh = None
        self.created = False
        self.key = ""
        self.what = what

    def _refuse(self, holder: str):
        return ImgclsError(
            f"{self.root} is being written by another imgcls process (PID {holder}); "
            f"wait for it to finish, or use another {self.what}"
        )

    def __enter__(self) -> RunLock:
        try:
            import fcntl
        except ImportError:  # no record locks (Windows): run unlocked
            return self
        if self.root.exists() and not self.root.is_dir():
            raise ImgclsError(f"{self.root} is a file, not a folder; choose another {self.what}")
        self.created = not self.root.exists()
        self.root.mkdir(parents=True, exist_ok=True)
        self.key = str(self.root.resolve())
        with _HELD_LOCK:
            if self.key in _HELD:
                raise self._refuse(str(os.getpid()))  # a training or export running in this process
            _HELD.add(self.key)
        try:
            self.fh = open(self.root / LOCK_NAME, "a+")
            try:
                fcntl.lockf(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                self.fh.seek(0)
                holder = self.fh.read().strip() or "unknown"
                self.fh.close()
                self.fh = None
                raise self._refuse(holder) from None
        except BaseException:
            with _HELD_LOCK:
                _HELD.discard(self.key)
            raise
        self.fh.seek(0)
        self.fh.truncate()
        self.fh.write(f"{os.getpid()}\n")
        self.fh.flush()
        # Only a lock holder writes checkpoints/ and export/, so a temporary file there is a killed
        # writer's (a half checkpoint as large as the model and its optimizer; a half int8 model).
        for folder in ("checkpoints", "export"):
            for tmp in (self.root / folder).glob(".*.tmp"):
                tmp.unlink(missing_ok=True)
        return self

    def __exit__(self, *exc) -> None:
        if self.fh is None:
            return
        import fcntl

        # A command that wrote no run here (refused, failed early) leaves the folder as it found it.
        if folder_state(self.root) != "run":
            (self.root / LOCK_NAME).unlink(missing_ok=True)
            if self.created and not any(self.root.iterdir()):
                self.root.rmdir()
        fcntl.lockf(self.fh, fcntl.LOCK_UN)
        self.fh.close()
        self.fh = None
        with _HELD_LOCK:
            _HELD.discard(self.key)
