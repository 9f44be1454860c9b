"""Keep freed tensor memory in the process: glibc otherwise returns every large block to the OS on free.

glibc's malloc serves blocks above its mmap threshold (at most 32 MB by default) with ``mmap`` and
unmaps them on ``free``; a training step that allocates activations of hundreds of MB (the fast
recipe at batch 2000) then page-faults gigabytes back in every step: about 790,000 minor faults and
1.5-2 s of kernel CPU time per 2,000-image step, a quarter of its CPU time (docs/performance.md).
Raising the mmap and trim thresholds makes malloc reuse that memory instead. The peak memory of a
step is unchanged; it merely stays mapped between steps.
"""
from __future__ import annotations

import ctypes
import os
import platform
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)
MMAP_THRESHOLD = 1 << 30  # blocks below 1 GiB come from the heap, so freed ones are reused
TRIM_THRESHOLD = 2**31 - 1  # keep up to ~2 GiB of freed heap instead of returning it after each step
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to reuse freed large blocks (once per process); False where it does not apply.

    Skipped off glibc Linux and when the user tuned malloc through its ``MALLOC_*_`` variables.
    """
    global _applied
    if _applied is None:
        _applied = _set_thresholds()
    return _applied


def _set_thresholds() -> bool:
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc" or any(v in os.environ for v in USER_SETTINGS):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


__all__ = ["keep_freed_memory"]
