"""Mixed precision: bf16 or fp16 autocast when asked, and the gradient scaler fp16 needs.

bf16 has fp32's exponent range, so its gradients need no scaling (fast on CPUs with AMX/AVX512-BF16
and on recent GPUs). fp16 (CUDA's classic mixed precision) underflows small gradients: the loss is
scaled up before backward and the step skipped when a gradient overflowed (``torch.amp.GradScaler``).
Both are device-agnostic: torch's CPU autocast supports fp16 too (correct, rarely faster there), and a
device whose autocast lacks it is refused with one line.
"""
from __future__ import annotations

import contextlib

import torch

from ..errors import CnnlabError

PRECISIONS = ("fp32", "bf16", "fp16")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Autocast to ``precision``'s dtype on ``device`` (bf16, fp16), nothing for fp32."""
    if precision not in DTYPES:
        return contextlib.nullcontext()
    if not torch.amp.is_autocast_available(device.type):
        raise CnnlabError(f"--precision {precision} needs autocast, which PyTorch does not offer on {device.type}: "
                          "use --precision fp32")
    return torch.autocast(device.type, dtype=DTYPES[precision])


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """The loss scaler of a run: active for fp16, a pass-through otherwise (its state_dict is then empty)."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


__all__ = ["DTYPES", "PRECISIONS", "autocast", "grad_scaler"]
