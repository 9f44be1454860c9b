"""engine.memory: freed large blocks are reused, not page-faulted in again on the next allocation."""
import os
import platform
import subprocess
import sys

import pytest

# A fresh interpreter: its main thread allocates from glibc's main arena, as a training process does
# (a long test session may have moved the main thread to another arena, where large blocks are always mmap'd).
PROBE = """
import resource, sys, torch
from cnnlab.engine.memory import keep_freed_memory
applied = keep_freed_memory()
size = 64 << 20
blocks = [torch.ones(size, dtype=torch.uint8) for _ in range(3)]  # a step's activations grow the heap...
del blocks  # ...and are freed at its end
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
torch.ones(size, dtype=torch.uint8)  # the next step's: every page is written
print(int(applied), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(sys.platform != "linux" or platform.libc_ver()[0] != "glibc", reason="glibc malloc tuning")
def test_a_freed_64_mb_block_is_reused_without_page_faults():
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, env=env)
    applied, faults = map(int, out.stdout.split())
    assert applied == 1
    assert faults < (64 << 20) // 4096 // 10  # mmap'd afresh, all 16,384 pages would fault in


def test_user_malloc_settings_are_left_alone(monkeypatch):
    from cnnlab.engine import memory

    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    assert memory._set_thresholds() is False
