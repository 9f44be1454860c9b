"""engine.memory: freed large blocks are reused, not page-faulted in again on the next allocation."""
import resource
import sys

import pytest
import torch

from cnnlab.engine.memory import keep_freed_memory


def _faults_of_allocating(n_bytes: int) -> int:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(n_bytes, dtype=torch.uint8)  # written, so every page is touched; freed at once
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@pytest.mark.skipif(sys.platform != "linux", reason="glibc malloc tuning")
def test_a_freed_64_mb_block_is_reused_without_page_faults():
    if not keep_freed_memory():
        pytest.skip("not glibc, or malloc tuned through MALLOC_* variables")
    size = 64 << 20
    blocks = [torch.ones(size, dtype=torch.uint8) for _ in range(3)]  # a step's activations grow the heap...
    del blocks  # ...and are freed at its end
    assert _faults_of_allocating(size) < size // 4096 // 10  # mmap'd afresh it would fault in all 16,384 pages
    assert keep_freed_memory()  # idempotent
