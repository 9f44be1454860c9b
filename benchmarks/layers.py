"""Forward+backward time of cnnlab's CPU layer variants against PyTorch's, at the course's shapes.

Each row pits PyTorch's way (A) against cnnlab's (B), alternating round after round (noisy machines),
and first checks what the layer promises: identical values and gradients for the pools, the same
keep rate and scale for dropout. The rules in ``cnnlab.layers`` rest on these ratios:

- overlapping max pools of NCHW tensors run in channels_last (``layers.MaxPool2d``);
- TF ``same`` max pools with symmetric padding let the op pad with -inf instead of copying a padded input;
- 2x2 stride-2 max pools of NCHW tensors needing no gradient by pairwise maxima (``layers.pairwise_max_pool``;
  timed forward only, under ``no_grad``);
- dropout draws its mask with ``torch.rand`` instead of ``bernoulli_`` (``layers.Dropout``).

    .venv/bin/python benchmarks/layers.py --batch 32 --rounds 5
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import cnnlab

cnnlab.tune_cpu()  # the CLI's CPU settings, before torch loads (cnnlab.cpu)
import torch
import torch.nn.functional as F

from cnnlab import layers
from cnnlab.cli import positive_int

Layer = Callable[[torch.Tensor], torch.Tensor]
MINUS_INF = float("-inf")


def nchw_pool(k: int, s: int, p: int) -> Layer:
    return lambda x: F.max_pool2d(x, k, s, p)


def channels_last_pool(k: int, s: int, p: int) -> Layer:
    return lambda x: F.max_pool2d(x.contiguous(memory_format=torch.channels_last), k, s, p).contiguous()


def padded_same_pool(k: int) -> Layer:
    return lambda x: F.max_pool2d(F.pad(x, [k // 2] * 4, value=MINUS_INF), k, 1)


def torch_dropout(p: float) -> Layer:
    return lambda x: F.dropout(x, p, training=True)


def cnnlab_dropout(p: float) -> Layer:
    return layers.Dropout(p).train()


def channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last)


# (label, input shape without the batch, layout, A: PyTorch's way, B: cnnlab's, exact?, where it occurs)
CASES = [
    ("3x3/1 max pool, NCHW vs via channels_last", (64, 16, 16), None, nchw_pool(3, 1, 1), channels_last_pool(3, 1, 1),
     True, "inception10-cifar"),
    ("3x3/1 max pool, NCHW vs via channels_last", (128, 8, 8), None, nchw_pool(3, 1, 1), channels_last_pool(3, 1, 1),
     True, "inception10-cifar"),
    ("3x3/2 max pool, NCHW vs via channels_last", (96, 30, 30), None, nchw_pool(3, 2, 0), channels_last_pool(3, 2, 0),
     True, "alexnet8-cifar"),
    ("2x2/2 max pool, NCHW vs via channels_last", (64, 32, 32), None, nchw_pool(2, 2, 0), channels_last_pool(2, 2, 0),
     True, "vgg16-cifar (not overlapping: not via channels_last)"),
    ("2x2/2 max pool, NCHW vs via channels_last", (6, 28, 28), None, nchw_pool(2, 2, 0), channels_last_pool(2, 2, 0),
     True, "lenet5-cifar (not overlapping: not via channels_last)"),
    ("2x2/2 max pool, NCHW vs pairwise, inference", (64, 32, 32), None, nchw_pool(2, 2, 0), layers.pairwise_max_pool,
     True, "vgg16-cifar, validation and predict"),
    ("2x2/2 max pool, NCHW vs pairwise, inference", (6, 28, 28), None, nchw_pool(2, 2, 0), layers.pairwise_max_pool,
     True, "lenet5-cifar, validation and predict"),
    ("2x2/2 max pool, NCHW vs pairwise, inference", (16, 10, 10), None, nchw_pool(2, 2, 0), layers.pairwise_max_pool,
     True, "lenet5-cifar, validation and predict"),
    ("3x3/1 same max pool, F.pad(-inf) vs implicit", (64, 16, 16), channels_last, padded_same_pool(3),
     layers.MaxPool2d(3, 1, "same"), True, "inception10-cifar (channels_last)"),
    ("dropout 0.2, bernoulli_ vs rand", (6, 16, 16), None, torch_dropout(0.2), cnnlab_dropout(0.2), False,
     "baseline-cifar"),
    ("dropout 0.5, bernoulli_ vs rand", (2048,), None, torch_dropout(0.5), cnnlab_dropout(0.5), False,
     "alexnet8-cifar, vgg16-cifar"),
]


def time_fwd_bwd(fn: Layer, x: torch.Tensor, grad: torch.Tensor, repeats: int, inference: bool = False) -> float:
    """Median milliseconds of ``repeats`` forward+backward passes, or forward passes under ``no_grad`` for
    ``inference`` (after one warm-up)."""
    times = []
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        if inference:
            with torch.no_grad():
                fn(x.detach())
        else:
            fn(x).backward(grad)
        if i:
            times.append((time.perf_counter() - t0) * 1e3)
        x.grad = None
    return statistics.median(times)


def check(a: Layer, b: Layer, x: torch.Tensor, grad: torch.Tensor, exact: bool) -> None:
    """Pools: identical values and gradients. Dropout: zeros where the mask drops, the same scale elsewhere."""
    if exact:
        ya, yb = a(x), b(x)
        ga, gb = torch.autograd.grad(ya, x, grad)[0], torch.autograd.grad(yb, x, grad)[0]
        assert torch.equal(ya, yb) and torch.equal(ga, gb), "values or gradients differ"
        return
    ones = torch.ones(x.shape[0] * 64, *x.shape[1:])
    ya, yb = a(ones), b(ones)
    rate_a, rate_b = float((ya != 0).float().mean()), float((yb != 0).float().mean())
    assert abs(rate_a - rate_b) < 0.01, f"keep rates differ: {rate_a:.3f} vs {rate_b:.3f}"
    assert torch.equal(ya.unique(), yb.unique()), "kept values are scaled differently"

def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=positive_int, default=32)
    parser.add_argument("--rounds", type=positive_int, default=5)
    parser.add_argument("--repeats", type=positive_int, default=20, help="passes per variant per round")
    args = parser.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}\n")
    print("| layer | input | A: PyTorch ms | B: cnnlab ms | speed-up | where |")
    print("|---|---|---|---|---|---|")
    for label, shape, layout, a, b, exact, where in CASES:
        x = torch.randn(args.batch, *shape)
        x = (layout(x) if layout else x).requires_grad_(True)
        grad = torch.randn_like(a(x))
        check(a, b, x, grad, exact)
        rounds: dict[str, list[float]] = {"a": [], "b": []}
        inference = label.endswith("inference")
        for _ in range(args.rounds):
            rounds["a"].append(time_fwd_bwd(a, x, grad, args.repeats, inference))
            rounds["b"].append(time_fwd_bwd(b, x, grad, args.repeats, inference))
        t_a, t_b = statistics.median(rounds["a"]), statistics.median(rounds["b"])
        dims = "x".join(map(str, (args.batch, *shape)))
        print(f"| {label} | {dims} | {t_a:.2f} | {t_b:.2f} | {t_a / t_b:.2f}x | {where} |")


if __name__ == "__main__":
    main()
