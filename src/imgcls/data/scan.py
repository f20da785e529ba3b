"""Find the files that will not decode before training starts, and remember the verdicts.

Each file is fully decoded once (JPEGs at 1/8 DCT scale: every byte is still parsed, so truncation shows)
on all cores. Verdicts are cached by path, size and mtime, so a second scan of the same folder is instant.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from imgcls.core.cache import CacheEntry
from imgcls.core.errors import BadImageError, ImgclsError
from imgcls.core.files import atomic_write_text
from imgcls.core.system import cpu_count
from imgcls.data.layouts import DatasetSplits, Sample

log = logging.getLogger(__name__)


@dataclass
class BadFile:
    path: str
    reason: str

    @property
    def kind(self) -> str:
        for word in ("empty", "decompression bomb", "not an image", "truncated", "not found"):
            if word in self.reason:
                return word
        return "unreadable"


def check_file(path: str) -> str | None:
    """None when the file decodes to an image, else the reason it does not."""
    from imgcls.data.decode import load_rgb

    try:
        if os.path.getsize(path) == 0:
            return "empty file (0 bytes)"
        load_rgb(path, draft_size=32)
        return None
    except BadImageError as exc:
        reason = exc.reason
        return f"truncated ({reason})" if "truncated" in reason.lower() else reason
    except OSError as exc:
        return f"unreadable ({exc})"


def per_file(samples: list[Sample], fn, *, kind: str, root: str, workers: int | None = None, missing=None) -> dict:
    """``{path: fn(path)}`` for the samples' files, remembered per data folder in the ``kind`` cache by
    path, size and mtime (a second pass over the same folder is instant); computed on all cores.
    Files that cannot be stat-ed get ``missing``."""
    entry = CacheEntry(kind, root=str(Path(root).resolve()))
    found = entry.load(mmap=False, require=("values",))
    cache = found[1]["values"] if found is not None else {}
    if not isinstance(cache, dict):
        cache = {}
    values: dict[str, object] = {}
    todo = []
    for s in samples:
        try:
            st = os.stat(s.path)
            stamp = [st.st_size, st.st_mtime_ns]
        except OSError:
            values[s.path] = missing
            continue
        hit = cache.get(s.path)
        if isinstance(hit, list) and len(hit) == 3 and hit[:2] == stamp:
            values[s.path] = hit[2]
        else:
            todo.append((s.path, stamp))
    if todo:
        n = cpu_count() if workers is None else workers
        paths = [p for p, _ in todo]
        if n > 1 and len(paths) > 64:
            with ProcessPoolExecutor(n) as pool:
                results = list(pool.map(fn, paths, chunksize=32))
        else:
            results = [fn(p) for p in paths]
        for (path, stamp), value in zip(todo, results):
            values[path] = value
            cache[path] = [*stamp, value]
        try:
            entry.put("values.json", cache)
            entry.commit({"root": str(Path(root).resolve()), "entries": len(cache)})
        except (OSError, ImgclsError) as exc:
            log.warning("could not save the %s cache %s: %s", kind, entry.folder, exc)
    return values


def scan_samples(samples: list[Sample], *, root: str, workers: int | None = None) -> list[BadFile]:
    verdicts = per_file(samples, check_file, kind="scan", root=root, workers=workers, missing="file not found")
    return [BadFile(s.path, verdicts[s.path]) for s in samples if verdicts.get(s.path)]


def pixel_hash(path: str) -> str | None:
    """SHA-1 of the decoded RGB pixels and their size (None when the file does not decode): a PNG re-save
    of a JPEG's pixels hashes the same."""
    import hashlib

    from imgcls.data.decode import load_rgb

    try:
        image = load_rgb(path)
    except BadImageError:
        return None
    h = hashlib.sha1(f"{image.width}x{image.height}".encode())
    h.update(image.tobytes())
    return h.hexdigest()


def summarize(bad: list[BadFile]) -> str:
    counts = Counter(b.kind for b in bad)
    return ", ".join(f"{n} {kind}" for kind, n in counts.most_common())


def without_bad(splits: DatasetSplits, bad: list[BadFile]) -> DatasetSplits:
    """``splits`` with the bad files left out of every split."""
    drop = {b.path for b in bad}
    keep = lambda xs: [s for s in xs if s.path not in drop]  # noqa: E731
    return replace(splits, train=keep(splits.train), val=keep(splits.val), test=keep(splits.test))


def scan_splits(splits: DatasetSplits, *, strict: bool = False) -> tuple[DatasetSplits, list[BadFile]]:
    """Splits without the bad files (and the bad files), or ImgclsError in strict mode."""
    every = splits.train + splits.val + splits.test
    bad = scan_samples(every, root=splits.root)
    listed = [BadFile(name, reason) for name, reason in splits.missing]  # --skip-missing: rows without a file
    if not bad:
        return splits, listed
    listing = "\n".join(f"  {b.path}: {b.reason}" for b in bad[:20]) + (
        f"\n  ... ({len(bad)} in all)" if len(bad) > 20 else ""
    )
    if strict:
        raise ImgclsError(f"{len(bad)} bad image file(s) in {splits.root} ({summarize(bad)}):\n{listing}")
    log.warning(
        "skipping %d bad image file(s) in %s (%s); listed in bad_files.txt", len(bad), splits.root, summarize(bad)
    )
    cleaned = without_bad(splits, bad)
    if not cleaned.train or not cleaned.val:
        raise ImgclsError(
            f"no readable images left in {'training' if not cleaned.train else 'validation'} "
            f"after skipping {len(bad)} bad files:\n{listing}"
        )
    return cleaned, bad + listed


def write_bad_files(path: Path, bad: list[BadFile]) -> None:
    atomic_write_text(path, "".join(f"{b.path}\t{b.reason}\n" for b in bad))
