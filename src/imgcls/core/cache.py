"""Where imgcls keeps what it can recompute, and the one way an entry is made and read.

``$IMGCLS_CACHE`` (or ``~/.cache/imgcls``) holds one folder per kind (features, decoded, onnx, scan) and
in it one folder per entry, named by a hash of everything its contents depend on. An entry is
``key -> size check -> reserve -> fill -> commit (meta.json last) -> load``: ``meta.json`` is written
only after every file is in place, so its presence means the entry is complete; it records each
file's size, dtype, shape and a sampled checksum, so a truncated or overwritten file is found at load
and the entry is rebuilt (with a one-line warning) instead of breaking every later run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import zlib
from pathlib import Path
from typing import Any

from imgcls.core.files import remove_dead_temporaries, temporary_name

log = logging.getLogger(__name__)
META = "meta.json"
_SAMPLES = 16  # blocks read by the checksum, spread over the file
_BLOCK = 64 * 1024


def user_cache(kind: str) -> Path:
    return Path(os.environ.get("IMGCLS_CACHE") or Path.home() / ".cache" / "imgcls") / kind


def cache_key(**parts) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def file_fingerprint(samples, *, labels: bool = True) -> list:
    """Path, label (unless the entry does not store labels), size and mtime of each sample's file: a
    changed file makes a new key."""
    out = []
    for s in samples:
        label = (list(s.label) if isinstance(s.label, tuple) else s.label) if labels else None
        try:
            st = os.stat(s.path)
            out.append([s.path, label, st.st_size, st.st_mtime_ns])
        except OSError:
            out.append([s.path, label, -1, -1])
    return out


def sampled_checksum(path: Path) -> int:
    """CRC32 of the size and of blocks spread evenly over the file: cheap on gigabytes, and it catches
    truncation, same-size garbage and most partial overwrites."""
    size = path.stat().st_size
    crc = zlib.crc32(str(size).encode())
    with open(path, "rb") as fh:
        step = max(_BLOCK, size // _SAMPLES)
        for offset in list(range(0, size, step))[:_SAMPLES] + [max(0, size - _BLOCK)]:
            fh.seek(offset)
            crc = zlib.crc32(fh.read(_BLOCK), crc)
    return crc


class DamagedEntry(Exception):
    pass


class CacheEntry:
    """One cache entry: a folder of ``.npy`` arrays and JSON files plus ``meta.json``."""

    def __init__(self, kind: str, **key_parts):
        self.kind = kind
        self.key = cache_key(**key_parts)
        self.folder = user_cache(kind) / self.key
        self._parts: dict[str, Path] = {}

    # -- reading ------------------------------------------------------------------------------------
    def load(self, *, mmap: bool = True, require: tuple[str, ...] = ()) -> tuple[dict, dict[str, Any]] | None:
        """(meta, {name: array or parsed JSON}) of a complete entry; None when there is none. A damaged
        entry, or one without a ``require``d part (written by another version of imgcls), is removed with a
        warning and also gives None (the caller rebuilds it)."""
        if not (self.folder / META).is_file():
            return None
        try:
            meta, parts = self._load(mmap)
            missing = [name for name in require if name not in parts]
            if missing:
                raise DamagedEntry(f"no {', '.join(missing)}: written by another version of imgcls")
            return meta, parts
        except DamagedEntry as exc:
            log.warning("damaged %s cache entry %s (%s): rebuilding it", self.kind, self.folder, exc)
            shutil.rmtree(self.folder, ignore_errors=True)
            return None

    def _load(self, mmap: bool) -> tuple[dict, dict[str, Any]]:
        import numpy as np

        try:
            meta = json.loads((self.folder / META).read_text())
            files = meta["files"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DamagedEntry(f"{META} unreadable: {type(exc).__name__}") from None
        out: dict[str, Any] = {}
        for name, record in files.items():
            path = self.folder / name
            try:
                if path.stat().st_size != record["bytes"]:
                    raise DamagedEntry(f"{name} has {path.stat().st_size} bytes, {record['bytes']} were written")
                if sampled_checksum(path) != record["crc"]:
                    raise DamagedEntry(f"{name} changed since it was written")
                if name.endswith(".npy"):
                    array = np.load(path, mmap_mode="r" if mmap else None)
                    if list(array.shape) != record["shape"] or str(array.dtype) != record["dtype"]:
                        raise DamagedEntry(f"{name} is {array.shape} {array.dtype}, not {record['shape']}")
                    out[name.removesuffix(".npy")] = array
                else:
                    out[name.removesuffix(".json")] = json.loads(path.read_text())
            except DamagedEntry:
                raise
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise DamagedEntry(f"{name}: {type(exc).__name__}") from None
        return meta, out

    # -- writing ------------------------------------------------------------------------------------
    def check_space(self, size: int, what: str, label: str, hint: str) -> None:
        """Say how big the entry will be before filling it, and refuse when the disk cannot hold it."""
        from imgcls.core.errors import ImgclsError

        self.folder.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(self.folder).free
        print(f"{label}: {size / 2**20:.1f} MB ({what}) in {self.folder}")
        if size + 256 * 2**20 > free:
            raise ImgclsError(
                f"the {label} needs {size / 2**20:.0f} MB but {self.folder} has {free / 2**20:.0f} MB free; "
                f"free some space, point $IMGCLS_CACHE elsewhere, or {hint}"
            )

    def _part(self, name: str) -> Path:
        """This process's temporary name for ``name``: ``.name.PID.uid.tmp`` (a second write of the same
        name replaces the first)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        remove_stale(self.folder)
        if name in self._parts:
            self._parts.pop(name).unlink(missing_ok=True)
        part = temporary_name(self.folder / name)
        self._parts[name] = part
        return part

    def part(self, name: str) -> Path:
        """The temporary file being filled for ``name`` (e.g. to reopen it in loader workers)."""
        return self._parts[name]

    def reserve(self, name: str, dtype, shape: tuple):
        """A writable ``.npy`` memory map whose disk blocks are allocated up front: a disk that fills up
        meanwhile fails here with a message, instead of killing the process (SIGBUS) mid-write."""
        import numpy as np

        from imgcls.core.errors import ImgclsError

        part = self._part(name)
        out = np.lib.format.open_memmap(part, mode="w+", dtype=dtype, shape=shape)
        try:
            if hasattr(os, "posix_fallocate"):
                with open(part, "r+b") as fh:
                    os.posix_fallocate(fh.fileno(), 0, os.path.getsize(part))
        except OSError as exc:
            del out
            self.discard()
            raise ImgclsError(
                f"cannot reserve {part.parent} ({exc.strerror}); free some space or point $IMGCLS_CACHE elsewhere"
            ) from None
        return out

    def put(self, name: str, value) -> None:
        """A small array (``.npy``) or JSON value written whole into the entry."""
        import numpy as np

        part = self._part(name)
        try:
            if name.endswith(".npy"):
                with open(part, "wb") as fh:
                    np.save(fh, value)
            else:
                part.write_text(json.dumps(value))
        except OSError as exc:
            self.discard()
            raise _space_error(exc, self.folder) from None

    def commit(self, meta: dict) -> None:
        """Move every file into place, then write ``meta.json`` (with each file's record) last."""
        import numpy as np

        records = {}
        for name, part in self._parts.items():
            record: dict[str, Any] = {}
            if name.endswith(".npy"):
                header = np.load(part, mmap_mode="r")
                record.update(shape=list(header.shape), dtype=str(header.dtype))
                del header
            record.update(bytes=part.stat().st_size, crc=sampled_checksum(part))
            records[name] = record
        try:
            for name, part in self._parts.items():
                os.replace(part, self.folder / name)
            tmp = temporary_name(self.folder / META)
            tmp.write_text(json.dumps({**meta, "files": records}, indent=2))
            os.replace(tmp, self.folder / META)
        except OSError as exc:
            self.discard()
            raise _space_error(exc, self.folder) from None
        self._parts = {}

    def discard(self) -> None:
        """Remove this process's unfinished files (a failed or interrupted fill)."""
        for part in self._parts.values():
            part.unlink(missing_ok=True)
        self._parts = {}


def _space_error(exc: OSError, folder: Path):
    from imgcls.core.files import out_of_space, space_error

    return space_error(folder, "the cache entry was not kept") if out_of_space(exc) else exc


def remove_stale(folder: Path) -> None:
    """Partial files left by a process that was killed while filling an entry."""
    remove_dead_temporaries(folder)
