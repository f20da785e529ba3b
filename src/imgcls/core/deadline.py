"""A wall-clock deadline for long work that has no natural stopping point of its own (a feature
extraction inside a training, a search's trial): ``with deadline(t):`` and, in the loop, ``check()``."""

from __future__ import annotations

import time
from contextlib import contextmanager

_AT: list[float] = []  # the innermost deadline last (monotonic seconds)


class DeadlineReached(Exception):
    """The time given to this work is over (the caller decides what that means)."""


@contextmanager
def deadline(at: float | None):
    """Until the block ends, ``check()`` raises ``DeadlineReached`` once ``time.monotonic()`` passes ``at``
    (None: no deadline)."""
    if at is None:
        yield
        return
    _AT.append(at)
    try:
        yield
    finally:
        _AT.remove(at)


def check() -> None:
    if _AT and time.monotonic() > min(_AT):
        raise DeadlineReached(f"the deadline passed {time.monotonic() - min(_AT):.1f} s ago")


def left() -> float | None:
    """Seconds left before the nearest deadline (None: none set)."""
    return min(_AT) - time.monotonic() if _AT else None
