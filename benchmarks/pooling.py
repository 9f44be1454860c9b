"""Max pooling forward+backward on the CPU: PyTorch's NCHW kernel against the same pool run in channels_last.

cnnlab's ``layers.MaxPool2d`` routes overlapping NCHW windows through channels_last (copies both
ways included) because PyTorch's NCHW CPU kernel is not vectorised over channels. This script shows
the ratio that rule rests on, for the pools of the course networks at the course's batch size, and
checks that values and gradients are identical. Variants alternate round after round (noisy machines).

    .venv/bin/python benchmarks/pooling.py --batch 32 --rounds 5
"""
from __future__ import annotations

import argparse
import statistics
import time

import cnnlab  # noqa: F401  (first: its OpenMP defaults must be set before torch loads libgomp)
import torch
import torch.nn.functional as F

from cnnlab.cli import positive_int

# (channels, side, kernel, stride, padding, where it occurs)
POOLS = [
    (64, 16, 3, 1, 1, "inception10-cifar, 3x3 stride-1 branch"),
    (128, 8, 3, 1, 1, "inception10-cifar, 3x3 stride-1 branch"),
    (96, 30, 3, 2, 0, "alexnet8-cifar"),
    (64, 32, 2, 2, 0, "vgg16-cifar (not overlapping: left in NCHW)"),
    (6, 28, 2, 2, 0, "lenet5-cifar (not overlapping: left in NCHW)"),
]


def plain(x: torch.Tensor, k: int, s: int, p: int) -> torch.Tensor:
    return F.max_pool2d(x, k, s, p)


def via_channels_last(x: torch.Tensor, k: int, s: int, p: int) -> torch.Tensor:
    return F.max_pool2d(x.contiguous(memory_format=torch.channels_last), k, s, p).contiguous()


def time_fwd_bwd(fn, x: torch.Tensor, grad: torch.Tensor, k: int, s: int, p: int, repeats: int) -> float:
    """Median milliseconds of ``repeats`` forward+backward passes (after one warm-up)."""
    times = []
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        fn(x, k, s, p).backward(grad)
        if i:
            times.append((time.perf_counter() - t0) * 1e3)
        x.grad = None
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=positive_int, default=32)
    parser.add_argument("--rounds", type=positive_int, default=5)
    parser.add_argument("--repeats", type=positive_int, default=20, help="passes per variant per round")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}\n")
    print("| input | kernel/stride | NCHW ms | via channels_last ms | speed-up | where |")
    print("|---|---|---|---|---|---|")
    for c, side, k, s, p, where in POOLS:
        x = torch.randn(args.batch, c, side, side, requires_grad=True)
        grad = torch.randn_like(plain(x, k, s, p))
        grads = []
        for fn in (plain, via_channels_last):
            fn(x, k, s, p).backward(grad)
            grads.append(x.grad)
            x.grad = None
        assert torch.equal(plain(x, k, s, p), via_channels_last(x, k, s, p)), "values differ"
        assert torch.equal(*grads), "gradients differ"
        rounds: dict[str, list[float]] = {"plain": [], "cl": []}
        for _ in range(args.rounds):
            rounds["plain"].append(time_fwd_bwd(plain, x, grad, k, s, p, args.repeats))
            rounds["cl"].append(time_fwd_bwd(via_channels_last, x, grad, k, s, p, args.repeats))
        t_plain, t_cl = statistics.median(rounds["plain"]), statistics.median(rounds["cl"])
        print(f"| {c}x{side}x{side} | {k}/{s} | {t_plain:.2f} | {t_cl:.2f} | {t_plain / t_cl:.2f}x | {where} |")


if __name__ == "__main__":
    main()
