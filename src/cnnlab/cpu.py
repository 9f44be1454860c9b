"""CPU tuning, applied only when asked: OpenMP's wait policy and thread pinning, glibc's malloc thresholds.

Importing cnnlab changes none of them. ``cnnlab train`` (the CLI) calls :func:`tune_cpu` before
torch loads; ``cnnlab.train`` calls it too and says what it could no longer apply; a Python user who
wants all of it calls ``cnnlab.tune_cpu()`` before importing torch. A value the user set wins, always.

- **OpenMP waits** (``OMP_WAIT_POLICY``, read once when torch loads libgomp): on a quiet machine a
  waiting thread should spin briefly, since the next op comes within microseconds; on a machine
  whose cores are already busy a spinning thread holds the core that the thread it waits for
  needs, so there it should sleep (PASSIVE). What other processes use of the CPU in a 0.1 s sample
  at start-up decides (docs/performance.md has the measurements behind both).
- **Pinning** (``OMP_PROC_BIND=true``), on CPUs with AMX only: one thread per core, pinned; oneDNN's AMX bf16
  weight-gradient convolutions stalled for about a second per call when their threads migrated (a 2-core
  KVM guest). Without AMX pinning bought nothing and cost 6-15% (an AVX512-BF16 AMD EPYC, docs/performance.md
  §0d). Not under torchrun or with ``OMP_NUM_THREADS`` set, where several processes would pin to the same cores.
- **bf16** (``--precision auto``, the fast recipe's): only where the CPU computes bf16 natively (AMX-BF16,
  AVX512-BF16; Arm's BF16) and it pays (``engine.precision.bf16_choice``). Elsewhere oneDNN emulates it:
  on an AVX2-only AMD EPYC the fast network's step ran 19× and a bf16 matmul over 50× slower than fp32
  (docs/performance.md §0b), so fp32 it is.
- **malloc**: glibc serves blocks above its mmap threshold (at most 32 MB) with ``mmap`` and unmaps
  them on ``free``, so a step with activations of hundreds of MB (the fast recipe at batch 2000)
  page-faults gigabytes back in every step: about 790,000 minor faults and 1.5-2 s of kernel time per
  step. Raised thresholds make malloc reuse that memory; a step's peak is unchanged. When the sizes of a
  run's tensors change (progressive resizing), the kept blocks fragment the heap: :func:`trim_freed_memory`
  gives them back once per change (32-pixel steps after smaller ones ran 10-30% slower until trimmed).
"""
from __future__ import annotations

import ctypes
import functools
import os
import platform
import sys
import time
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)
MMAP_THRESHOLD = 1 << 30  # blocks below 1 GiB come from the heap, so freed ones are reused
TRIM_THRESHOLD = 2**31 - 1  # keep up to ~2 GiB of freed heap instead of returning it after each step
MALLOC_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")
BUSY_SHARE = 0.5  # other processes using more than this share of the machine's CPU time count as busy
SAMPLE_SECONDS = 0.1  # how long tune_cpu watches /proc/stat
OPENMP_SETTINGS = ("OMP_WAIT_POLICY", "OMP_PROC_BIND")

_malloc_applied: bool | None = None
_tuning: "CpuTuning | None" = None  # what the first tune_cpu() of this process did


@dataclass(frozen=True)
class CpuTuning:
    """What :func:`tune_cpu` set, what it left as the user had it, and what it could not apply."""

    applied: dict[str, str] = field(default_factory=dict)
    kept: dict[str, str] = field(default_factory=dict)
    not_applied: dict[str, str] = field(default_factory=dict)  # setting -> why
    malloc: bool = False

    def describe(self) -> str:
        """One line for a run's start-up banner."""
        parts = [f"{k}={v}" for k, v in self.applied.items()]
        parts += [f"{k}={v} (yours)" for k, v in self.kept.items()]
        if self.malloc:
            parts.append("malloc keeps freed memory")
        text = "CPU settings: " + (", ".join(parts) or "none")
        if self.not_applied:
            text += "; not applied: " + "; ".join(f"{k} ({why})" for k, why in self.not_applied.items())
        return text


def usable_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies of all cores since boot, from /proc/stat (None where it is not readable)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def busy_share(seconds: float = SAMPLE_SECONDS) -> float | None:
    """Share of the machine's CPU time that other processes used over the last ``seconds`` (this one is idle)."""
    before = cpu_times()
    if before is None:
        return None
    time.sleep(seconds)
    after = cpu_times()
    if after is None or after[1] == before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1])


def machine_is_busy(share: float | None = None, cores: int | None = None) -> bool:
    """True when other work keeps the cores busy right now (sampled, not the load average: a run that just
    ended would still weigh on a 1-minute average and slow the next one on a machine that is free)."""
    share = busy_share() if share is None else share
    if share is None:
        try:
            share = os.getloadavg()[0] / (cores or usable_cores())
        except OSError:
            return False
    return share > BUSY_SHARE


def openmp_choice(environ: Mapping[str, str], busy: bool, pin: bool) -> dict[str, str]:
    """The OpenMP settings cnnlab would make for this environment, load and CPU (``pin``: it has AMX; a pure function)."""
    choice = {"OMP_WAIT_POLICY": "PASSIVE"} if busy else {}
    if pin and not {"LOCAL_RANK", "OMP_NUM_THREADS"} & set(environ):
        choice["OMP_PROC_BIND"] = "true"
    return choice


NATIVE_BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16", "bf16"})  # x86 (AMX, AVX-512), Arm (FEAT_BF16)
AMX_FLAGS = frozenset({"amx_bf16", "amx_tile"})


@functools.cache
def cpuinfo() -> str:
    """The text of /proc/cpuinfo, read once ('' where there is none, as off Linux)."""
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_flags() -> frozenset[str]:
    """The instruction-set flags the kernel reports for this CPU (x86 ``flags``, Arm ``Features``); empty if unknown."""
    for line in cpuinfo().splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def cpu_model() -> str:
    """The CPU's marketing name (``model name`` in /proc/cpuinfo), else what ``platform`` knows."""
    for line in cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def onednn_isa_cap(environ: Mapping[str, str] | None = None) -> str:
    """oneDNN's instruction-set cap (``ONEDNN_MAX_CPU_ISA``, or its old name ``DNNL_MAX_CPU_ISA``), upper case;
    ``ALL`` when none is set."""
    environ = os.environ if environ is None else environ
    return (environ.get("ONEDNN_MAX_CPU_ISA") or environ.get("DNNL_MAX_CPU_ISA") or "ALL").upper()


def native_bf16_cpu(flags: frozenset[str] | None = None, environ: Mapping[str, str] | None = None) -> bool:
    """Whether this CPU computes bf16 in hardware, so that bf16 autocast is faster than fp32 rather than emulated.

    oneDNN's ISA cap below AVX512_CORE_BF16 keeps it from the bf16 instructions even where the CPU has them.
    """
    cap = onednn_isa_cap(environ)
    if cap != "ALL" and "BF16" not in cap and "AMX" not in cap:
        return False
    return bool(NATIVE_BF16_FLAGS & (cpu_flags() if flags is None else flags))


def has_amx(flags: frozenset[str] | None = None) -> bool:
    """Whether this CPU has AMX tiles (whose oneDNN kernels stall when their threads migrate: pin there)."""
    return bool(AMX_FLAGS & (cpu_flags() if flags is None else flags))


SPEED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "bf16")  # what decides the fast paths


def describe_cpu() -> str:
    """One line naming this CPU for a benchmark's table: model, cores, torch's kernel capability, the flags
    that decide its fast paths, and whether ``--precision auto`` picks bf16 here. (The machine's cores:
    once OpenMP pinned its threads, the main thread's own affinity is a single core.)"""
    import torch

    flags = " ".join(f for f in SPEED_FLAGS if f in cpu_flags()) or "none of " + "/".join(SPEED_FLAGS)
    return (f"{cpu_model()}; {os.cpu_count()} cores; torch {torch.__version__}, capability "
            f"{torch.backends.cpu.get_cpu_capability()}; flags: {flags}; native bf16: "
            f"{'yes' if native_bf16_cpu() else 'no (auto precision = fp32)'}")


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to reuse freed large blocks (once per process); False where it does not apply.

    Skipped off glibc Linux and when the user tuned malloc through its ``MALLOC_*_`` variables.
    """
    global _malloc_applied
    if _malloc_applied is None:
        _malloc_applied = _set_malloc_thresholds()
    return _malloc_applied


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """glibc, where this process runs on it."""
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def _set_malloc_thresholds() -> bool:
    libc = _glibc()
    if libc is None or any(v in os.environ for v in MALLOC_SETTINGS):
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def trim_freed_memory() -> bool:
    """Give the freed heap that :func:`keep_freed_memory` keeps back to the system (glibc's ``malloc_trim(0)``).

    For a change of tensor sizes: blocks kept for the old sizes fragment the heap for the new ones. Does
    nothing (False) where the thresholds were not raised.
    """
    libc = _glibc()
    return bool(_malloc_applied and libc is not None and libc.malloc_trim(0))


def tune_cpu(environ: MutableMapping[str, str] | None = None, busy: bool | None = None,
             pin: bool | None = None) -> CpuTuning:
    """Apply cnnlab's CPU settings to this process; what is already set (by the user) is left alone.

    OpenMP reads its variables when torch loads it: once torch is imported they are reported as not
    applied. The first call decides for the process; later ones return what it did. ``environ``, ``busy``
    and ``pin`` exist for tests (default: ``os.environ``, the load, and whether the CPU has AMX).
    """
    global _tuning
    if environ is None and busy is None and pin is None and _tuning is not None:
        return _tuning
    environ = os.environ if environ is None else environ
    wanted = openmp_choice(environ, machine_is_busy() if busy is None else busy, has_amx() if pin is None else pin)
    applied, kept, not_applied = {}, {k: environ[k] for k in OPENMP_SETTINGS if k in environ}, {}
    for key, value in wanted.items():
        if key in kept:
            continue
        if "torch" in sys.modules:
            not_applied[key] = "torch was imported first; call cnnlab.tune_cpu() before importing torch"
            continue
        environ[key] = applied[key] = value
    tuning = CpuTuning(applied, kept, not_applied, keep_freed_memory())
    if environ is os.environ:
        _tuning = tuning
    return tuning


__all__ = ["CpuTuning", "busy_share", "cpu_flags", "cpu_model", "cpuinfo", "describe_cpu", "has_amx", "keep_freed_memory",
           "machine_is_busy", "native_bf16_cpu", "onednn_isa_cap", "openmp_choice", "trim_freed_memory", "tune_cpu",
           "usable_cores"]
