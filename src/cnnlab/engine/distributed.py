"""Thin helpers over torch.distributed so the fit loop reads the same with one process or many.

cnnlab uses PyTorch's own engine (torchrun + DistributedDataParallel); these helpers only answer
"which rank am I" and sum metrics across ranks. Without an initialised process group they are no-ops.
"""
from __future__ import annotations

import os
from typing import Any, Callable, TypeVar

import torch
import torch.distributed as dist
from torch import nn

T = TypeVar("T")


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


def local_device(device: torch.device) -> torch.device:
    """Under torchrun a bare ``cuda`` means this process's own GPU, ``cuda:LOCAL_RANK``."""
    if device.type == "cuda" and device.index is None and launched_by_torchrun():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def rank_seed(seed: int) -> int:
    """The torch seed of a rank > 0 (rank 0 keeps the run's own stream), so dropout differs per rank."""
    return seed * 1_000_003 + 7_919 * rank()


def main_first(fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0, then on the others: rank 0 downloads and extracts, the rest read its cache."""
    if not is_main():
        barrier()
    result = fn()
    if is_main():
        barrier()
    return result


def any_rank(flag: bool, device: torch.device) -> bool:
    """True when ``flag`` is true on any rank, so all ranks take the same branch (no-op in one process)."""
    if not is_distributed():
        return flag
    return bool(all_reduce_sum(torch.tensor([float(flag)], device=device)).item())


def gather(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` in one process)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def sync_buffers(model: nn.Module) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics): the ones its checkpoint holds."""
    if is_distributed():
        for buffer in unwrap(model).buffers():
            dist.broadcast(buffer, 0)


def without_ddp(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel: its forward has no collectives, so ranks may run unequal batches."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def lost_peer(error: BaseException) -> bool:
    """True for the error a collective raises when another rank has died (closed connection, timeout)."""
    text = str(error)
    return is_distributed() and (isinstance(error, dist.DistError) or "closed by peer" in text
                                 or "reset by peer" in text)


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
