"""One side of one measure in a process of its own, so its peak resident memory is its own: ``run_job`` in a
child forked by the bench's fork server (torch, Lightning and timm imported once, not once per side)."""

from __future__ import annotations

import os

from bench.measures import find
from bench.settings import Result, Settings, peak_rss_mb


def measure(name: str, accelerator: str, side: str, settings: Settings) -> Result:
    """Run ``side`` ("baseline" or "imgcls") of the measure ``name``, in this process."""
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.disable(logging.INFO)
    m = find(name, accelerator)
    if side == "imgcls":
        from imgcls.core.malloc import tune_malloc

        tune_malloc()  # as imgcls train/compare do
    result = (m.imgcls if side == "imgcls" else m.baseline)(m.settings(settings))
    result.peak_rss_mb, result.worker_peak_rss_mb = peak_rss_mb()
    return result


def run_job(name: str, accelerator: str, side: str, settings: Settings, env: dict, conn) -> None:
    """The fork server's entry: ``env`` replaces the process environment; the result (or the error's
    traceback) goes back through ``conn``."""
    import multiprocessing
    import traceback

    # A fork server's child inherits "forkserver" as its start method; a user's process (and so the
    # DataLoader workers being measured) starts with the platform's default.
    multiprocessing.set_start_method(None, force=True)
    os.environ.clear()
    os.environ.update(env)
    quiet = os.open(os.devnull, os.O_WRONLY)  # the training's own lines: the bench prints its table
    os.dup2(quiet, 1)
    try:
        conn.send({"ok": measure(name, accelerator, side, settings)})
    except BaseException:
        conn.send({"error": traceback.format_exc()})
    finally:
        conn.close()
