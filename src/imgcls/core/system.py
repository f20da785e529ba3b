"""What this machine offers the process."""

from __future__ import annotations

import os


def cpu_count() -> int:
    """The cores this process may run on (its affinity mask, not the machine's total)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_workers() -> int:
    """DataLoader workers: one core stays with the main process (the model); the rest decode (2 cores: 1)."""
    return max(0, min(8, cpu_count() - 1))


def global_rank() -> int:
    """This process's rank in a multi-process run (0 when alone), known from the launcher's environment
    before any process group exists."""
    import sys

    if "lightning.pytorch" in sys.modules:  # a Trainer may have set it (spawned processes)
        from lightning.pytorch.utilities import rank_zero_only

        return getattr(rank_zero_only, "rank", 0) or 0
    # Lightning's own order (rank_zero._get_rank), without importing it: ~2.5 s before a lock or an error.
    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        if os.environ.get(key, "").strip().lstrip("-").isdigit():
            return int(os.environ[key])
    return 0
