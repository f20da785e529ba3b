"""What every API call shares: the options check, quiet libraries, and whether to draw progress bars."""

from __future__ import annotations

import logging
import sys
import warnings
from typing import Any

from imgcls.core import options

_QUIET = False


def quiet_libraries() -> None:
    """Library chatter off: Lightning's rank-zero info lines, Pillow's EXIF warnings (the warning filters
    again on every call: ``warnings.catch_warnings`` blocks reset them). imgcls's own notes stay."""
    global _QUIET
    if not _QUIET:
        _QUIET = True
        if not logging.getLogger().handlers:
            logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
            logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*litlogger.*")
    # Pillow warns once per file about EXIF quirks ("Tag data larger than file", "Corrupt EXIF data"): the
    # image still decodes, so it is not the user's business. Real decoding failures stay errors.
    warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
    logging.getLogger("PIL").setLevel(logging.ERROR)


def progress_bars(progress: bool | None) -> bool:
    """Bars redraw in place only on a terminal; in a notebook, a log or a pipe there is one line per epoch
    (never a wall of lines). ``True`` asks for them anyway."""
    if progress is not None:
        return progress
    return sys.stdout.isatty() and sys.stderr.isatty()


def checked(cls, values: dict[str, Any], where: str):
    """``cls`` built from keyword arguments, checked as the CLI checks its flags."""
    return options.build(cls, {k: v for k, v in values.items()}, where=where)
