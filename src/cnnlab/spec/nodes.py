"""Layers of a spec: argument converters and signatures, ``Node`` subclasses with shape rules, the layer table.

Each node knows how its arguments read (``Sig``), which shape it gives for an input shape, and the
PyTorch module it builds; ``_LAYERS`` maps the layer names a spec may write to node classes.
"""
from __future__ import annotations

import math
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping

from torch import nn

from .. import layers
from ..models.course_blocks import InceptionBlock, ResBlock
from .errors import _Problem
from .lexer import Token

Shape = tuple[int, ...]  # (C, H, W) feature map or (N,) flat vector
Padding = str | int  # "same" | "valid" | explicit pixels


def _fmt(shape: Shape) -> str:
    """A shape as the course writes it, e.g. ``6x16x16``."""
    return "x".join(str(d) for d in shape)


# ------------------------------------------------------------------------------------------- values


def _int(text: str, minimum: int = 1) -> int:
    """A whole number of at least ``minimum``; ValueError names the expectation otherwise."""
    if not re.fullmatch(r"\d+", text) or int(text) < minimum:
        raise ValueError(f"a whole number >= {minimum}")
    return int(text)


def _float(text: str) -> float:
    """Any finite real number."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError("a number") from None
    if not math.isfinite(value):
        raise ValueError("a finite number")
    return value


def _rate(text: str) -> float:
    """A dropout rate in [0, 1)."""
    value = _float(text)
    if not 0 <= value < 1:
        raise ValueError("a rate in [0, 1)")
    return value


def _kernel(text: str) -> tuple[int, int]:
    """A kernel size ``k`` or ``kHxkW``."""
    match = re.fullmatch(r"(\d+)(?:x(\d+))?", text)
    if not match or int(match[1]) < 1 or int(match[2] or 1) < 1:
        raise ValueError("a kernel size such as 3 or 1x7")
    return int(match[1]), int(match[2] or match[1])


def _choice(options: tuple[str, ...]) -> Callable[[str], str]:
    """A converter accepting one of ``options`` (case-insensitive)."""

    def convert(text: str) -> str:
        if text.lower() not in options:
            raise ValueError(f"one of {'|'.join(options)}")
        return text.lower()

    return convert


_CONVERT: dict[str, Callable[[str], Any]] = {
    "act": _choice(tuple(layers.ACTIVATIONS)), "mode": _choice(("max", "avg")),
    "filters": _int, "units": _int, "ch": _int, "size": _int,
    "stride": _int, "dilation": _int, "groups": _int,
    "kernel": _kernel, "padding": lambda t: _int(t, 0), "rate": _rate, "momentum": _rate,
    "alpha": _float, "beta": _float, "k": _float,
}


# --------------------------------------------------------------------------------------- signatures


@dataclass(frozen=True)
class Sig:
    """How a layer's arguments read: plain values in order, keywords, and ``sN``-style options."""

    usage: str
    fields: tuple[str, ...] = ()  # plain values fill these in order (after keywords set some)
    required: int = 0  # the first ``required`` fields must be set
    words: Mapping[str, tuple[str, Any]] = field(default_factory=dict)  # keyword -> (field, value)
    numbered: Mapping[str, str] = field(default_factory=dict)  # letter of ``s2`` -> field


_PAD_WORDS = {"same": ("padding", "same"), "valid": ("padding", "valid")}
KERAS_L2 = 0.01  # tf.keras.regularizers.l2()'s default factor
_ACT_WORDS = {name: ("act", name) for name in layers.ACTIVATIONS}


def _read_args(sig: Sig, args: list[Token], layer: str) -> dict[str, Any]:
    """Field values from a layer's argument tokens: keywords and ``sN`` first, plain values in order."""
    values: dict[str, Any] = {}
    where: dict[str, Token] = {}
    plain: list[Token] = []
    for tok in args:
        numbered = re.fullmatch(r"([a-z])(\d+)", tok.text)
        if tok.text.lower() in sig.words:
            name, value = sig.words[tok.text.lower()]
        elif numbered and numbered[1] in sig.numbered:
            name = sig.numbered[numbered[1]]
            value = _typed(name, numbered[2], tok, layer, sig)
        else:
            plain.append(tok)
            continue
        _set(values, where, name, value, tok, layer, sig)
    free = [f for f in sig.fields if f not in values]
    for index, tok in enumerate(plain):
        if index >= len(free):
            raise _ArgError(tok, f"{layer} got an extra argument {tok.text!r}", f"write it as {sig.usage}")
        _set(values, where, free[index], _typed(free[index], tok.text, tok, layer, sig), tok, layer, sig)
    missing = [f for f in sig.fields[: sig.required] if f not in values]
    if missing:
        raise _ArgError(None, f"{layer} is missing its {missing[0]} argument", f"write it as {sig.usage}")
    return values


def _typed(name: str, text: str, tok: Token, layer: str, sig: Sig) -> Any:
    """Convert one argument, reporting a wrong type at the argument's position."""
    try:
        return _CONVERT[name](text)
    except ValueError as exc:
        raise _ArgError(tok, f"{layer} {name} must be {exc}, got {text!r}", f"write it as {sig.usage}") from None


def _set(values: dict, where: dict, name: str, value: Any, tok: Token, layer: str, sig: Sig) -> None:
    """Record a field once; a second value for it is an error."""
    if name in values:
        raise _ArgError(tok, f"{layer} {name} given twice ({where[name].text!r} and {tok.text!r})",
                        f"write it as {sig.usage}")
    values[name], where[name] = value, tok


class _ArgError(Exception):
    """An argument mistake; ``tok`` is None when it belongs to the whole layer."""

    def __init__(self, tok: Token | None, problem: str, hint: str) -> None:
        super().__init__(problem)
        self.tok, self.problem, self.hint = tok, problem, hint


# -------------------------------------------------------------------------------------------- nodes


def _map(node: Node, shape: Shape) -> tuple[int, int, int]:
    """The (C, H, W) a spatial layer needs; a flat input is a mistake."""
    if len(shape) != 3:
        raise _Problem(f"{node.label} needs a CxHxW feature map but gets a flat vector of {shape[0]}",
                       "put spatial layers before F / GAP / GMP")
    return shape  # type: ignore[return-value]


def _conv_hw(h: int, w: int, kernel: tuple[int, int], stride: int, padding: Padding,
             dilation: int = 1, ceil: bool = False) -> tuple[int, int]:
    """Output (H, W) of a conv or pool, by layers.conv_out_size along each axis."""
    return (layers.conv_out_size(h, kernel[0], stride, padding, dilation, ceil),
            layers.conv_out_size(w, kernel[1], stride, padding, dilation, ceil))


@dataclass(frozen=True, kw_only=True)
class Node:
    """One layer of a spec: its text, where it was written, its shape rule and its module."""

    SIG: ClassVar[Sig] = Sig("")
    PREFIX: ClassVar[str] = ""
    pos: tuple[int, int] = (0, 0)
    label: str = ""

    def check(self) -> None:
        """Reject argument combinations that are each valid alone (raises _Problem)."""

    def out_shape(self, shape: Shape, classes: int | None) -> Shape:
        """Shape after this layer; the default keeps the shape."""
        return shape

    def module(self, shape: Shape, classes: int | None) -> nn.Module:
        """The PyTorch layer for an input of ``shape``."""
        raise NotImplementedError


@dataclass(frozen=True)
class Conv(Node):
    """C(filters, k, sN, same|valid|pad, dN, gN, nobias, he): a TF-exact 2-D convolution."""

    SIG: ClassVar[Sig] = Sig("C(filters, k, sN, same|valid|pad, dN, gN, nobias, he)",
                             ("filters", "kernel", "padding"), 2,
                             {**_PAD_WORDS, "nobias": ("bias", False), "he": ("he", True)},
                             {"s": "stride", "d": "dilation", "g": "groups"})
    PREFIX: ClassVar[str] = "c"
    filters: int = 1
    kernel: tuple[int, int] = (1, 1)
    stride: int = 1
    padding: Padding = "valid"
    dilation: int = 1
    groups: int = 1
    bias: bool = True
    he: bool = False

    def out_shape(self, shape: Shape, classes: int | None) -> Shape:
        c, h, w = _map(self, shape)
        if c % self.groups or self.filters % self.groups:
            raise _Problem(f"{self.label}: groups={self.groups} must divide both {c} input channels "
                           f"and {self.filters} filters", "pick a group count that divides both")
        return (self.filters, *_conv_hw(h, w, self.kernel, self.stride, self.padding, self.dilation))

    def module(self, shape: Shape, classes: int | None) -> nn.Module:
        conv = layers.Conv2d(shape[0], self.filters, self.kernel, self.stride, self.padding,
                             self.dilation, self.groups, self.bias)
        if self.he:
            conv.keras_kernel_init = "he_normal"
        return conv


@dataclass(frozen=True)
class SepConv(Node):
    """SC(filters, k, sN, same|valid|pad, dN, nobias): Keras SeparableConv2D (depthwise + 1x1)."""

    SIG: ClassVar[Sig] = Sig("SC(filters, k, sN, same|valid|pad, dN, nobias)",
                             ("filters", "kernel", "padding"), 2,
                             {**_PAD_WORDS, "nobias": ("bias", False)}, {"s": "stride", "d": "dilation"})
    PREFIX: ClassVar[str] = "sc"
    filters: int = 1
    kernel: tuple[int, int] = (1, 1)
    stride: int = 1
    padding: Padding = "valid"
    dilation: int = 1
    bias: bool = True

    def out_shape(self, shape: Shape, classes: int | None) -> Shape:
        _, h, w = _map(self, shape)
        return (self.filters, *_conv_hw(h, w, self.kernel, self.stride, self.padding, self.dilation))

    def module(self, shape: Shape, classes: int | None) -> nn.Module:
        return layers.SeparableConv2d(shape[0], self.filters, self.kernel, self.stride,  # type: ignore[arg-type]
                                      self.padding, self.dilation, self.bias)


@dataclass(frozen=True)
class BatchNorm(Node):
    """B(momentum): BatchNorm with Keras' epsilon and momentum (0.99 unless given; 2-D or 1-D by shape).

    ``momentum`` is Keras' (the weight kept by the moving average). A run of only a few hundred steps
    leaves 0.99's moving statistics behind the weights, so validation lags; ``B(0.9)`` catches up faster.
    """

    SIG: ClassVar[Sig] = Sig("B(momentum)", ("momentum",))
    PREFIX: ClassVar[str] = "b"
    momentum: float = 1 - layers.KERAS_BN_MOMENTUM

    def module(self, shape: Shape, classes: int | None) -> nn.Module:
        norm = layers.KerasBatchNorm2d if len(shape) == 3 else layers.KerasBatchNorm1d
        return norm(shape[0], momentum=1 - self.momentum)


@dataclass(frozen=True)
class LRN(Node):
    """LRN(size, alpha, beta, k): local response normalisation, AlexNet paper's constants."""

    SIG: ClassVar[Sig] = Sig("LRN(size, alpha, beta, k)", ("size", "alpha", "beta", "k"))
    PREFIX: ClassVar[str] = "lrn"
    size: int = 5
    alpha: float = 1e-4
    beta: float = 0.75
    k: float = 2.0

    def out_shape(self, shape: Shape, classes: int | None) -> Shape:
        return _map(self, shape)

    def module(self, shape: Shape, classes: int | None) -> nn.Module:
        # The paper multiplies the window sum by alpha; PyTorch multiplies it by alpha / size.
        return nn.LocalResponseNorm(self.size, self.alpha * self.size, self.beta, self.k)


@dataclass(frozen=True)
class Act(Node):
    """A(relu|sigmoid|tanh|gelu|softmax|linear): an activation layer."""

    SIG: ClassVar[Sig] = Sig(f"A({'|'.join(layers.ACTIVATIONS)})", ("act",), 1, _ACT_WORDS)
    PREFIX: ClassVar[str] = "a"
    act: str = "relu"

    def module(self, shape: Shape, classes: int | None) -> nn.Module:
        return layers.activation(self.act)


@dataclass(frozen=True)
class Pool(Node):
    """P(max|avg, k, sN, same|valid|pad, ceil): pooling; the stride defaults to the kernel."""

    SIG: ClassVar[Sig] = Sig("P(max|avg, k, sN, same|valid|pad, ceil)", ("mode", "kernel", "padding"), 2,
                             {"max": ("mode", "max"), "avg": ("mode", "avg"), "ceil": ("ceil", True),
                              **_PAD_WORDS}, {"s": "stride"})
    PREFIX: ClassVar[str] = "p"
    mode: str = "max"
    kernel: tuple[int, int] = (2, 2)
    stride: int | None = None
    padding: Padding = "valid"
    ceil: bool = False

    def check(self) -> None:
        if self.ceil and self.padding == "same":
            raise _Problem(f"{self.label}: ceil has no effect with same padding", "drop ceil or use valid")
        if isinstance(self.padding, int) and 2 * self.padding > min(self.kernel):
            raise _Problem(f"{self.label}: explicit pad {self.padding} exceeds half the kernel",
                           "PyTorch pools accept pad <= kernel/2")

    def out_shape(self, shape: Shape, classes: int | None) -> Shape:
        c, h, w = _map(self, shape)
        stride = self.stride or self.kernel[0]
        return (c, *_conv_hw(h, w, self.kernel, stride, self.padding, 1, self.ceil))

    def module(self, shape: Shape, classes: int | None) -> nn.Module:
        cls = layers.MaxPool2d if self.mode == "max" else layers.AvgPool2d
        return cls(self.kernel, self.stride or self.kernel[0], self.padding, self.ceil)


@dataclass(frozen=True)
class GlobalPool(Node):
    """GAP / GMP: global average or max pooling to a flat vector of channels."""

    SIG: ClassVar[Sig] = Sig("GAP or GMP")
    PREFIX: ClassVar[str] = "p"
    mode: str = "avg"

    def out_shape(self, shape: Shape, classes: int | None) -> Shape:
        return (_map(self, shape)[0],)

    def module(self, shape: Shape, classes: int | None) -> nn.Module:
        return layers.GlobalPool2d(self.mode)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Dropout(Node):
    """D(rate): dropout, Keras' rate (fraction dropped)."""

    SIG: ClassVar[Sig] = Sig("D(rate)", ("rate",), 1)
    PREFIX: ClassVar[str] = "d"
    rate: float = 0.5

    def module(self, shape: Shape, classes: int | None) -> nn.Module:
        return layers.Dropout(self.rate)


@dataclass(frozen=True)
class Flatten(Node):
    """F: flatten a C x H x W map to a vector (channel-major, PyTorch order)."""

    SIG: ClassVar[Sig] = Sig("F")
    PREFIX: ClassVar[str] = "flatten"

    def out_shape(self, shape: Shape, classes: int | None) -> Shape:
        return (math.prod(shape),)

    def module(self, shape: Shape, classes: int | None) -> nn.Module:
        return nn.Flatten()


@dataclass(frozen=True)
class Dense(Node):
    """Dense(units|classes, activation, l2): a fully connected layer on a flat vector; ``l2`` is Keras'
    ``kernel_regularizer=l2()``, 0.01·Σw² of its kernel added to the training loss (the course's ResNet18 head)."""

    SIG: ClassVar[Sig] = Sig("Dense(units|classes, activation, l2)", ("units", "act"), 1,
                             {"classes": ("units", "classes"), "l2": ("l2", KERAS_L2), **_ACT_WORDS})
    PREFIX: ClassVar[str] = "f"
    units: int | str = 1
    act: str | None = None
    l2: float = 0.0

    def _units(self, classes: int | None) -> int:
        if self.units != "classes":
            return int(self.units)
        if classes is None:
            raise _Problem(f"{self.label} needs a class count", "add a 'classes: N' header or pass num_classes")
        return classes

    def out_shape(self, shape: Shape, classes: int | None) -> Shape:
        if len(shape) != 1:
            raise _Problem(f"{self.label} needs a flat vector but gets a {_fmt(shape)} feature map",
                           "put F (flatten) or GAP / GMP before Dense")
        return (self._units(classes),)

    def module(self, shape: Shape, classes: int | None) -> nn.Module:
        linear = layers.kernel_l2(nn.Linear(shape[0], self._units(classes)), self.l2)
        if self.act is None:
            return linear
        return nn.Sequential(OrderedDict(linear=linear, act=layers.activation(self.act)))


@dataclass(frozen=True)
class Inception(Node):
    """Inception(ch, sN): the course's InceptionBlk, four branches of ``ch`` channels concatenated."""

    SIG: ClassVar[Sig] = Sig("Inception(ch, sN)", ("ch",), 1, {}, {"s": "stride"})
    PREFIX: ClassVar[str] = "inception"
    ch: int = 16
    stride: int = 1

    def out_shape(self, shape: Shape, classes: int | None) -> Shape:
        _, h, w = _map(self, shape)
        return (4 * self.ch, *_conv_hw(h, w, (1, 1), self.stride, "same"))

    def module(self, shape: Shape, classes: int | None) -> nn.Module:
        return InceptionBlock(shape[0], self.ch, self.stride)


@dataclass(frozen=True)
class Res(Node):
    """Res(filters, sN): the course's ResnetBlock, with a 1x1 projection when the shape changes."""

    SIG: ClassVar[Sig] = Sig("Res(filters, sN)", ("filters",), 1, {}, {"s": "stride"})
    PREFIX: ClassVar[str] = "res"
    filters: int = 64
    stride: int = 1

    def out_shape(self, shape: Shape, classes: int | None) -> Shape:
        _, h, w = _map(self, shape)
        return (self.filters, *_conv_hw(h, w, (3, 3), self.stride, "same"))

    def module(self, shape: Shape, classes: int | None) -> nn.Module:
        return ResBlock(shape[0], self.filters, self.stride)


_LAYERS: dict[str, tuple[type[Node], dict[str, Any]]] = {
    "c": (Conv, {}), "conv": (Conv, {}),
    "sc": (SepConv, {}), "sepconv": (SepConv, {}),
    "b": (BatchNorm, {}), "bn": (BatchNorm, {}),
    "lrn": (LRN, {}),
    "a": (Act, {}),
    "p": (Pool, {}), "pool": (Pool, {}),
    "gap": (GlobalPool, {"mode": "avg"}), "gmp": (GlobalPool, {"mode": "max"}),
    "d": (Dropout, {}),
    "f": (Flatten, {}), "flatten": (Flatten, {}),
    "dense": (Dense, {}),
    "inception": (Inception, {}),
    "res": (Res, {}),
}
_LAYER_NAMES = ["C", "SC", "B", "LRN", "A", "P", "GAP", "GMP", "D", "F", "Dense", "Inception", "Res"]
