"""Keep glibc malloc from handing large buffers back to the kernel after every training step.

PyTorch's CPU activations are large, short-lived blocks; by default glibc serves each from a fresh
mmap and unmaps it on free, so every step re-faults the same memory (the PyTorch CPU performance guide
points at the same cost). Raising the mmap and trim thresholds keeps that memory in the heap.
Set in-process with mallopt, so the interpreter is never restarted (flags, profilers and debuggers survive).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

# mallopt parameter numbers from glibc's malloc.h.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
# mallopt takes a C int: 2 GiB - 1 is the largest threshold it can express (GLIBC_TUNABLES allows 4 GiB).
MMAP_THRESHOLD = TRIM_THRESHOLD = 2**31 - 1
DISABLE_ENV = "IMGCLS_MALLOC_TUNING"  # set to 0 to leave malloc as it is (for measuring the difference)


def tune_malloc() -> dict:
    """Apply the thresholds; returns what was set (empty where glibc is absent or tuning is off)."""
    if sys.platform != "linux" or os.environ.get(DISABLE_ENV, "1") == "0":
        return {}
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other libcs have no mallopt
        return {}
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    done = {}
    if mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD):
        done["mmap_threshold"] = MMAP_THRESHOLD
    if mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD):
        done["trim_threshold"] = TRIM_THRESHOLD
    return done


def release_memory() -> None:
    """Give the heap's free memory back to the system (gc, then glibc's malloc_trim). Called before each
    training starts its loader workers: with the thresholds above, a process that trained before (a
    comparison's earlier variants) keeps gigabytes of free heap, and a forked worker would hold a
    copy-on-write snapshot of all of it (measured: 10 GB per worker, out of memory on 24 GB)."""
    import gc

    gc.collect()
    if sys.platform != "linux":
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
        libc.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass
