"""Thin helpers over torch.distributed so the fit loop reads the same with one process or many.

cnnlab uses PyTorch's own engine (torchrun + DistributedDataParallel); these helpers only answer
"which rank am I" and sum metrics across ranks. Without an initialised process group they are no-ops.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """Only rank 0 prints, writes checkpoints and logs."""
    return rank() == 0


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1


def init_from_env(device: torch.device) -> None:
    """Join the process group torchrun describes (nccl on CUDA, gloo on CPU)."""
    if launched_by_torchrun() and not is_distributed():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum a metrics tensor over ranks (in place when distributed)."""
    if is_distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside a DistributedDataParallel or torch.compile wrapper."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def barrier() -> None:
    if is_distributed():
        dist.barrier()
