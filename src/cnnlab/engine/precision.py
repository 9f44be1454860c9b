"""Mixed precision: bf16 or fp16 autocast when asked, and the gradient scaler fp16 needs.

bf16 has fp32's exponent range, so its gradients need no scaling (fast on CPUs with AMX/AVX512-BF16
and on recent GPUs). fp16 (CUDA's classic mixed precision) underflows small gradients: the loss is
scaled up before backward and the step skipped when a gradient overflowed (``torch.amp.GradScaler``).
Both are device-agnostic: torch's CPU autocast supports fp16 too (correct, rarely faster there), and a
device whose autocast lacks it is refused with one line.

``auto`` is bf16 where it pays and fp32 elsewhere: on a CUDA GPU with native bf16; on a CPU with AMX
(bf16 convolutions 2.6-3× fp32, docs/performance.md §2); on a CPU with bf16 instructions but no AMX
(AVX512-BF16, Arm BF16), where it has gone both ways, when a convolution timed once on this machine
says so (cached in ``~/.cache/cnnlab/cpu.json``); never where bf16 is only emulated (an AVX2 CPU:
15-20× slower, ``cnnlab.cpu``).
"""
from __future__ import annotations

import contextlib
import functools
import json
import os
import time
from pathlib import Path

import torch

from ..cpu import cpu_flags, cpu_model, native_bf16_cpu, onednn_isa_cap
from ..errors import CnnlabError

PRECISIONS = ("fp32", "bf16", "fp16", "auto")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@functools.cache
def native_bf16(device_type: str) -> bool:
    """Whether ``device_type`` (cpu, cuda, …) computes bf16 in hardware, so that bf16 beats fp32 there."""
    if device_type == "cpu":
        return native_bf16_cpu()
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    return False


PROBE_MARGIN = 1.1  # bf16 must beat fp32 by this factor on the probe to become auto's choice
PROBE_ROUNDS = 5


def cpu_cache_path() -> Path:
    """Where per-machine measurements are kept: $CNNLAB_CACHE/cpu.json, else ~/.cache/cnnlab/cpu.json."""
    root = os.environ.get("CNNLAB_CACHE")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "cnnlab") / "cpu.json"


def probe_key() -> str:
    """What a cached probe result holds for: the CPU, its flags, torch's version and oneDNN's ISA cap."""
    return f"{cpu_model()} | {' '.join(sorted(cpu_flags()))} | torch {torch.__version__} | isa {onednn_isa_cap()}"


def time_bf16_against_fp32(rounds: int = PROBE_ROUNDS) -> float:
    """fp32 time over bf16-autocast time of one convolution step (forward and backward, channels_last, a
    fast-cifar-sized layer), best of ``rounds`` interleaved rounds: above 1, bf16 is the faster."""
    with torch.inference_mode(False), torch.enable_grad():  # the first choice may come inside an evaluation
        gen = torch.Generator().manual_seed(0)
        conv = torch.nn.Conv2d(64, 128, 3, padding=1).to(memory_format=torch.channels_last)
        x = torch.randn(64, 64, 16, 16, generator=gen).to(memory_format=torch.channels_last)
        best = {"fp32": float("inf"), "bf16": float("inf")}
        for _ in range(rounds + 1):  # the first round builds oneDNN's primitives
            for name in best:
                t0 = time.perf_counter()
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=name == "bf16"):
                    y = conv(x)
                y.float().sum().backward()
                best[name] = min(best[name], time.perf_counter() - t0)
    return best["fp32"] / best["bf16"]


def measured_bf16_speedup() -> float:
    """:func:`time_bf16_against_fp32` for this machine, measured once and cached (a damaged cache is re-measured)."""
    from ..io import atomic_write_text

    path, key = cpu_cache_path(), probe_key()
    try:
        table = json.loads(path.read_text()).get("bf16_speedup")
    except (OSError, ValueError, AttributeError):
        table = None
    table = dict(table) if isinstance(table, dict) else {}  # other machines' entries are kept
    speedup = table.get(key)
    if isinstance(speedup, (int, float)) and not isinstance(speedup, bool) and speedup > 0:
        return float(speedup)
    speedup = time_bf16_against_fp32()
    table[key] = round(speedup, 3)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps({"bf16_speedup": table}, indent=2) + "\n")
    except OSError:
        pass  # a read-only home: measured again next time
    return speedup


@functools.cache
def bf16_choice(device_type: str) -> tuple[bool, str]:
    """Whether ``auto`` computes in bf16 on ``device_type``, and why (for the run's banner)."""
    if device_type == "cuda":
        ok = native_bf16("cuda")
        return ok, "native bf16 on this GPU" if ok else "no native bf16 on this GPU"
    if device_type != "cpu" or not native_bf16("cpu"):
        return False, f"no native bf16 on this {device_type}"
    if "amx_bf16" in cpu_flags():
        return True, "AMX-BF16 on this CPU"
    speedup = measured_bf16_speedup()
    return speedup >= PROBE_MARGIN, f"a bf16 convolution step ran {speedup:.2f}× fp32's speed on this CPU"


def resolve(precision: str, device: torch.device) -> str:
    """The precision a run computes in: ``auto`` becomes bf16 or fp32 for ``device``; the others stay."""
    if precision != "auto":
        return precision
    return "bf16" if bf16_choice(device.type)[0] else "fp32"


def fast_matmul_dtype(device: torch.device) -> torch.dtype:
    """The dtype for matmuls whose precision matters little (Muon's Newton–Schulz): bf16 where native."""
    return torch.bfloat16 if native_bf16(device.type) else torch.float32


def describe(precision: str, device: torch.device) -> str:
    """The precision for a run's banner: what ``auto`` chose and why, or a warning for emulated bf16."""
    if precision == "auto":
        return f"auto → {resolve(precision, device)} ({bf16_choice(device.type)[1]})"
    if precision == "bf16" and not native_bf16(device.type):
        return "bf16 (emulated on this device: expect it several times slower than fp32; --precision auto chooses)"
    return precision


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Autocast to ``precision``'s dtype on ``device`` (bf16, fp16; ``auto`` as :func:`resolve`), nothing for fp32."""
    precision = resolve(precision, device)
    if precision not in DTYPES:
        return contextlib.nullcontext()
    if not torch.amp.is_autocast_available(device.type):
        raise CnnlabError(f"--precision {precision} needs autocast, which PyTorch does not offer on {device.type}: "
                          "use --precision fp32")
    return torch.autocast(device.type, dtype=DTYPES[precision])


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """The loss scaler of a run: active for fp16, a pass-through otherwise (its state_dict is then empty)."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


__all__ = ["DTYPES", "PRECISIONS", "autocast", "bf16_choice", "describe", "fast_matmul_dtype", "grad_scaler",
           "measured_bf16_speedup", "native_bf16", "resolve"]
