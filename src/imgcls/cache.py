"""Where imgcls keeps what it can recompute: ``$IMGCLS_CACHE`` or ``~/.cache/imgcls``, one folder per kind
(features, decoded, onnx, scan)."""

from __future__ import annotations

import os
from pathlib import Path


def user_cache(kind: str) -> Path:
    return Path(os.environ.get("IMGCLS_CACHE") or Path.home() / ".cache" / "imgcls") / kind
