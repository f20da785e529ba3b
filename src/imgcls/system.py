"""What this machine offers the process."""

from __future__ import annotations

import os


def cpu_count() -> int:
    """The cores this process may run on (its affinity mask, not the machine's total)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def global_rank() -> int:
    """This process's rank in a multi-process run (0 when alone), known from the launcher's environment
    before any process group exists."""
    from lightning.pytorch.utilities import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) or 0
