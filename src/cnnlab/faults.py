"""Fault injection for the reliability tests: off unless ``CNNLAB_FAULT_AT`` is set.

``CNNLAB_FAULT_AT=POINT:N`` (or ``POINT:N@RANK`` to hit one torchrun rank) SIGKILLs the process the
N-th time it reaches POINT, so a test can land a real ``kill -9`` at an exact moment:

- ``step``: inside a training step, after the optimizer update, before the step is counted;
- ``val``: during validation, after a batch;
- ``write``: inside an atomic write, when the temporary file is complete but not yet renamed.

Nothing runs after the kill (no ``finally``, no flush), exactly as with an external SIGKILL.
"""
from __future__ import annotations

import os
import signal
from collections import Counter
from functools import lru_cache

ENV = "CNNLAB_FAULT_AT"
POINTS = ("step", "val", "write")
_reached: Counter[str] = Counter()


@lru_cache(maxsize=8)
def parse_fault(text: str) -> tuple[str, int, int | None]:
    """``step:7@1`` → ("step", 7, 1); a malformed value is an error, so a typo cannot silently disarm a test."""
    where, _, rank = text.partition("@")
    point, _, count = where.partition(":")
    if point not in POINTS or not count.isdigit() or int(count) < 1 or (rank and not rank.isdigit()):
        raise ValueError(f"{ENV} must look like step:7, val:2 or write:3@1 (points: {', '.join(POINTS)}), not {text!r}")
    return point, int(count), int(rank) if rank else None


def fault_point(name: str) -> None:
    """SIGKILL this process if ``CNNLAB_FAULT_AT`` names this point and occurrence (a no-op otherwise)."""
    text = os.environ.get(ENV)
    if not text:
        return
    point, count, rank = parse_fault(text)
    if point != name or (rank is not None and rank != int(os.environ.get("RANK", "0"))):
        return
    _reached[name] += 1
    if _reached[name] == count:
        os.kill(os.getpid(), signal.SIGKILL)
