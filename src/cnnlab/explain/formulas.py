"""The course's formulas as pure functions: each returns the number and the worked text.

Every function returns a :class:`Worked` whose ``value`` is the answer and whose ``explain()`` shows
the course formula with the numbers substituted, so the CLI can print the derivation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

from ..errors import CnnlabError
from ..layers import Padding, conv_out_size


@dataclass(frozen=True)
class Worked:
    """An answer with the steps that lead to it."""

    title: str
    value: Any
    steps: tuple[str, ...]

    def explain(self) -> str:
        """The title, then one step per line."""
        return "\n".join([self.title, *(f"  {s}" for s in self.steps)])


def conv_output(n: int, kernel: int, stride: int = 1, padding: Padding = "valid", dilation: int = 1) -> Worked:
    """Output length of a conv/pool along one axis, by the course's SAME/VALID rule or PyTorch's."""
    out = conv_out_size(n, kernel, stride, padding, dilation)
    eff = (kernel - 1) * dilation + 1
    if padding == "same":
        step = f"same (zero padding): ceil(n / s) = ceil({n} / {stride}) = {out}"
    elif padding == "valid":
        span = f"{n} - {eff} + 1" if dilation == 1 else f"{n} - ({dilation}·({kernel} - 1) + 1) + 1"
        step = f"valid (no padding): ceil((n - k + 1) / s) = ceil(({span}) / {stride}) = {out}"
    else:
        p = padding if isinstance(padding, int) else padding[0]
        step = (f"PyTorch padding={p}: floor((n + 2p - d(k - 1) - 1) / s) + 1 = "
                f"floor(({n} + {2 * p} - {dilation}·{kernel - 1} - 1) / {stride}) + 1 = {out}")
    return Worked(f"conv output size: n={n}, k={kernel}, s={stride}, padding={padding!r}, d={dilation}",
                  out, (step,))


def receptive_field(layers: Sequence[tuple[int, ...]]) -> Worked:
    """Receptive field of a chain of (kernel, stride[, dilation]) layers: r += (k-1)·d·j; j *= s."""
    r, j = 1, 1
    steps = ["input: r = 1, j = 1"]
    for i, spec in enumerate(layers, 1):
        k, s, d = (*spec, 1)[:3]
        r_new, j_new = r + (k - 1) * d * j, j * s
        steps.append(f"layer {i} (k={k}, s={s}, d={d}): r = {r} + ({k} - 1)·{d}·{j} = {r_new}, "
                     f"j = {j}·{s} = {j_new}")
        r, j = r_new, j_new
    return Worked(f"receptive field of {len(layers)} layers", r, tuple(steps))


def dense_params(sizes: Sequence[int]) -> Worked:
    """Parameters of a fully connected network: sum over layers of (in × out weights + out biases)."""
    steps, total = [], 0
    for i, (a, b) in enumerate(zip(sizes, sizes[1:]), 1):
        n = a * b + b
        total += n
        steps.append(f"layer {i}: {a} × {b} w + {b} b = {n:,}")
    steps.append(f"total: {total:,}")
    return Worked(f"dense network {list(sizes)}", total, tuple(steps))


Poly = tuple[int, int, int]  # coefficients (a, b, c) of a·x² + b·x + c


def _valid_conv_macs(k: int, shrink: int) -> Poly:
    """MACs of a k×k valid stride-1 conv on an (x - shrink)² map: k²·(x - shrink - k + 1)²."""
    m = shrink + k - 1
    return (k * k, -2 * k * k * m, k * k * m * m)


def _poly_add(p: Poly, q: Poly) -> Poly:
    return tuple(a + b for a, b in zip(p, q))


def _poly_at(p: Poly, x: float) -> float:
    return p[0] * x * x + p[1] * x + p[2]


def _poly_text(p: Poly) -> str:
    a, b, c = p
    return f"{a}x² {'-' if b < 0 else '+'} {abs(b)}x {'-' if c < 0 else '+'} {abs(c)}"


def _break_even(p: Poly, q: Poly) -> float:
    """The largest x where the two cost polynomials are equal."""
    a, b, c = (qi - pi for pi, qi in zip(p, q))
    return (-b + math.sqrt(b * b - 4 * a * c)) / (2 * a)


@dataclass(frozen=True)
class KernelComparison:
    """Two stacked 3×3 convolutions versus one 5×5 (same 5×5 receptive field) on an x×x input."""

    x: int
    params_3x3: int
    params_5x5: int
    macs_3x3: int
    macs_5x5: int
    break_even: float


def compare_kernels(x: int) -> Worked:
    """The course's comparison: params 18 vs 25, MACs 18x²-108x+180 vs 25x²-200x+400, cheaper for x > 10."""
    if x < 5:
        raise CnnlabError(f"compare-kernels needs --input 5 or more: a 5x5 valid convolution does not fit a "
                          f"{x}x{x} input")
    two = _poly_add(_valid_conv_macs(3, 0), _valid_conv_macs(3, 2))
    one = _valid_conv_macs(5, 0)
    even = _break_even(two, one)
    value = KernelComparison(x, 9 + 9, 25, int(_poly_at(two, x)), int(_poly_at(one, x)), even)
    winner = ("two 3x3" if value.macs_3x3 < value.macs_5x5
              else "one 5x5" if value.macs_3x3 > value.macs_5x5 else "neither (equal)")
    steps = (
        "single channel, stride 1, valid padding; both see a 5x5 receptive field",
        "params: two 3x3 = 9 + 9 = 18; one 5x5 = 25",
        f"two 3x3: 9·(x-2)² + 9·(x-4)² = {_poly_text(two)} = {value.macs_3x3:,} MACs at x = {x}",
        f"one 5x5: 25·(x-4)² = {_poly_text(one)} = {value.macs_5x5:,} MACs at x = {x}",
        f"equal at x = {even:g}; two 3x3 are cheaper when x > {even:g}; here: {winner}",
    )
    return Worked(f"two 3x3 vs one 5x5 on a {x}x{x} input", value, steps)


# The course's worked example: a 3×3 input patch, a vertical-edge kernel and bias 1 give 1.
COURSE_PATCH = ((1, 0, 2), (5, 4, 2), (3, 4, 5))
COURSE_KERNEL = ((-1, 0, 1), (-1, 0, 1), (-1, 0, 1))
COURSE_BIAS = 1


def conv_example(patch: Sequence[Sequence[int]] = COURSE_PATCH, kernel: Sequence[Sequence[int]] = COURSE_KERNEL,
                 bias: int = COURSE_BIAS) -> Worked:
    """One output pixel: multiply the overlapping elements, sum, add the bias (the course's answer: 1)."""
    rows = [" + ".join(f"({w})*{v}" for w, v in zip(krow, prow)) for krow, prow in zip(kernel, patch)]
    total = sum(w * v for krow, prow in zip(kernel, patch) for w, v in zip(krow, prow)) + bias
    sign = "+" if bias >= 0 else "-"
    steps = (rows[0], *(f"+ {r}" for r in rows[1:]), f"{sign} {abs(bias)} = {total}")
    return Worked("one step of a 3x3 convolution", total, tuple(steps))
