"""CBAPD text notation: parse a network written in the course's vocabulary, infer shapes, build it.

A spec is a few header lines (``name:``, ``input: 3x32x32``, ``classes: 10``) and a body of layers
in the course's order Conv · BatchNorm · Activation · Pooling · Dropout, for example::

    C(6,5,same) B A(relu) P(max,2,s2,same) D(0.2) | F | Dense(128,relu) D(0.2) | Dense(classes)

``|`` and line breaks separate stages, ``[...]xN`` or ``LayerxN`` repeats, ``#`` starts a comment.
Shapes are inferred statically, so Flatten → Dense knows its inputs; the built network gives logits
(a final softmax is accepted and left out). The full grammar is in ``docs/cbapd.md``. Every mistake
raises :class:`SpecError`, one line with ``source:line:col``, the problem and a hint.
"""
from __future__ import annotations

import difflib
import math
import os
import re
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Mapping, NamedTuple

import torch
from torch import nn

from . import layers
from .errors import CnnlabError

Shape = tuple[int, ...]  # (C, H, W) feature map or (N,) flat vector
Padding = str | int  # "same" | "valid" | explicit pixels


class SpecError(CnnlabError):
    """A mistake in a spec, located at ``line:col`` of ``source`` and with a hint to fix it."""

    def __init__(self, source: str, pos: tuple[int, int], problem: str, hint: str) -> None:
        self.source, (self.line, self.col), self.problem, self.hint = source, pos, problem, hint
        super().__init__(f"{source}:{self.line}:{self.col}: {problem} (hint: {hint})")


class _Problem(Exception):
    """A node-level mistake without a position; the caller adds the node's position."""

    def __init__(self, problem: str, hint: str) -> None:
        super().__init__(problem)
        self.problem, self.hint = problem, hint


# ---------------------------------------------------------------------------------------- values


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


# ------------------------------------------------------------------------------------ signatures


@dataclass(frozen=True)
class Sig:
    """How a layer's arguments read: plain values in order, keywords, and ``sN``-style options."""

    usage: str
    fields: tuple[str, ...] = ()  # plain values fill these in order (after keywords set some)
    required: int = 0  # the first ``required`` fields must be set
    words: Mapping[str, tuple[str, Any]] = field(default_factory=dict)  # keyword -> (field, value)
    numbered: Mapping[str, str] = field(default_factory=dict)  # letter of ``s2`` -> field


_PAD_WORDS = {"same": ("padding", "same"), "valid": ("padding", "valid")}
_ACT_WORDS = {name: ("act", name) for name in layers.ACTIVATIONS}


class Token(NamedTuple):
    """One lexeme: kind is ``word``, ``nl`` or the punctuation itself."""

    kind: str
    text: str
    pos: tuple[int, int]


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


# ------------------------------------------------------------------------------------------ nodes


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
    """Dense(units|classes, activation): a fully connected layer on a flat vector."""

    SIG: ClassVar[Sig] = Sig("Dense(units|classes, activation)", ("units", "act"), 1,
                             {"classes": ("units", "classes"), **_ACT_WORDS})
    PREFIX: ClassVar[str] = "f"
    units: int | str = 1
    act: str | None = None

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
        linear = nn.Linear(shape[0], self._units(classes))
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


# ------------------------------------------------------------------------------ composite blocks


def conv_bn_relu(in_channels: int, out_channels: int, kernel: int, stride: int = 1,
                 bias: bool = True) -> nn.Sequential:
    """The course's ConvBNRelu: a ``same`` conv, Keras BatchNorm and ReLU."""
    return nn.Sequential(OrderedDict(
        conv=layers.Conv2d(in_channels, out_channels, kernel, stride, "same", bias=bias),
        bn=layers.BatchNorm2d(out_channels),
        relu=nn.ReLU(),
    ))


class InceptionBlock(nn.Module):
    """The course's InceptionBlk: 1x1 | 1x1→3x3 | 1x1→5x5 | 3x3 max-pool→1x1, concatenated."""

    def __init__(self, in_channels: int, ch: int, stride: int = 1) -> None:
        super().__init__()
        self.c1 = conv_bn_relu(in_channels, ch, 1, stride)
        self.c2_1 = conv_bn_relu(in_channels, ch, 1, stride)
        self.c2_2 = conv_bn_relu(ch, ch, 3)
        self.c3_1 = conv_bn_relu(in_channels, ch, 1, stride)
        self.c3_2 = conv_bn_relu(ch, ch, 5)
        self.p4_1 = layers.MaxPool2d(3, 1, "same")
        self.c4_2 = conv_bn_relu(in_channels, ch, 1, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = [self.c1(x), self.c2_2(self.c2_1(x)), self.c3_2(self.c3_1(x)), self.c4_2(self.p4_1(x))]
        return torch.cat(branches, dim=1)


class ResBlock(nn.Module):
    """The course's ResnetBlock: relu(BN(conv(relu(BN(conv(x))))) + shortcut), bias-free convs."""

    def __init__(self, in_channels: int, filters: int, stride: int = 1) -> None:
        super().__init__()
        self.c1 = layers.Conv2d(in_channels, filters, 3, stride, "same", bias=False)
        self.b1 = layers.BatchNorm2d(filters)
        self.a1 = nn.ReLU()
        self.c2 = layers.Conv2d(filters, filters, 3, 1, "same", bias=False)
        self.b2 = layers.BatchNorm2d(filters)
        self.residual_path = stride != 1 or in_channels != filters
        if self.residual_path:
            self.down_c1 = layers.Conv2d(in_channels, filters, 1, stride, "same", bias=False)
            self.down_b1 = layers.BatchNorm2d(filters)
        self.a2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.b2(self.c2(self.a1(self.b1(self.c1(x)))))
        residual = self.down_b1(self.down_c1(x)) if self.residual_path else x
        return self.a2(y + residual)


# ------------------------------------------------------------------------------------------ lexer

_TOKEN = re.compile(r"(?P<skip>\s+)|(?P<punct>[()\[\],|])|(?P<word>[\w.+-]+)")
_HEADER = re.compile(r"\s*([A-Za-z_]\w*)\s*:(.*)")


def _strip_comment(line: str) -> str:
    """The line without its ``#`` comment."""
    return line.split("#", 1)[0]


def _tokens(line: str, lineno: int, source: str) -> Iterator[Token]:
    """The tokens of one body line, then an end-of-line token."""
    col = 0
    while col < len(line):
        match = _TOKEN.match(line, col)
        if match is None:
            raise SpecError(source, (lineno, col + 1), f"unexpected character {line[col]!r}",
                            "layers look like C(6,5,same); use # for comments")
        if match.lastgroup != "skip":
            kind = "word" if match.lastgroup == "word" else match[0]
            yield Token(kind, match[0], (lineno, col + 1))
        col = match.end()
    yield Token("nl", "", (lineno, len(line) + 1))


# ----------------------------------------------------------------------------------------- parser


class _Cursor:
    """Walks the body tokens for the recursive-descent parser."""

    def __init__(self, tokens: list[Token], source: str) -> None:
        self.tokens, self.source, self.i = tokens, source, 0

    def peek(self) -> Token | None:
        """The next token without consuming it (None at the end)."""
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def next(self) -> Token:
        """Consume and return the next token."""
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def error(self, pos: tuple[int, int], problem: str, hint: str) -> SpecError:
        """A located error in this cursor's source."""
        return SpecError(self.source, pos, problem, hint)


def _parse_body(cur: _Cursor) -> tuple[tuple[Node, ...], ...]:
    """Stages (split at ``|`` and line breaks) of expanded layer nodes."""
    stages: list[tuple[Node, ...]] = []
    current: list[Node] = []
    while (tok := cur.peek()) is not None:
        if tok.kind in ("nl", "|"):
            cur.next()
            if current:
                stages.append(tuple(current))
            current = []
        else:
            current.extend(_parse_item(cur))
    if current:
        stages.append(tuple(current))
    return tuple(stages)


def _parse_item(cur: _Cursor) -> list[Node]:
    """One layer or bracket group, with its optional ``xN`` repetition."""
    tok = cur.next()
    if tok.kind == "[":
        nodes = _parse_group(cur, tok)
    elif tok.kind == "word":
        nodes = [_parse_layer(cur, tok)]
    elif tok.kind == "]":
        raise cur.error(tok.pos, "unbalanced ']' without a matching '['", "open the group with '['")
    else:
        raise cur.error(tok.pos, f"unexpected {tok.text!r}",
                        "arguments go in parentheses right after a layer name")
    return nodes * _parse_repeat(cur)


def _parse_group(cur: _Cursor, opening: Token) -> list[Node]:
    """Layers up to the ``]`` that closes ``opening``; line breaks inside are spaces."""
    nodes: list[Node] = []
    while (tok := cur.peek()) is not None:
        if tok.kind == "nl":
            cur.next()
        elif tok.kind == "]":
            cur.next()
            if not nodes:
                raise cur.error(opening.pos, "empty bracket group",
                                "put layers inside, e.g. [C(64,3,same) B A(relu)]x2")
            return nodes
        elif tok.kind == "|":
            raise cur.error(tok.pos, "'|' inside a bracket group", "close the group with ']' before '|'")
        else:
            nodes.extend(_parse_item(cur))
    raise cur.error(opening.pos, "unbalanced '[' without a matching ']'", "close the group with ']'")


def _parse_repeat(cur: _Cursor) -> int:
    """The count of a following ``xN`` (1 when there is none)."""
    tok = cur.peek()
    if tok is None or tok.kind != "word" or not re.fullmatch(r"x\d+", tok.text):
        return 1
    cur.next()
    if int(tok.text[1:]) < 1:
        raise cur.error(tok.pos, f"repeat count {tok.text!r} must be at least 1", "write x1 or more, e.g. x2")
    return int(tok.text[1:])


def _parse_args(cur: _Cursor, opening: Token) -> list[Token]:
    """The single-token arguments between ``opening`` ``(`` and its ``)``."""
    args: list[Token] = []
    expect_value = True
    while (tok := cur.peek()) is not None and tok.kind != "nl":
        cur.next()
        if tok.kind == ")":
            if expect_value and args:
                raise cur.error(tok.pos, "empty argument before ')'", "remove the trailing comma")
            return args
        if expect_value and tok.kind == "word":
            args.append(tok)
            expect_value = False
        elif not expect_value and tok.kind == ",":
            expect_value = True
        elif tok.kind == ",":
            raise cur.error(tok.pos, "empty argument", "separate single values by one comma, e.g. C(6,5,same)")
        else:
            raise cur.error(tok.pos, f"unexpected {tok.text!r} in arguments",
                            "separate arguments by commas, e.g. C(6,5,same)")
    raise cur.error(opening.pos, "unbalanced '(' without a matching ')' on its line",
                    "close the arguments with ')' on the same line")


def _unknown_layer(cur: _Cursor, tok: Token) -> SpecError:
    """The error for a name that is no layer, with the likeliest fix."""
    glued = re.fullmatch(r"(\w+?)x(\d+)", tok.text)
    if glued and glued[1].lower() in _LAYERS:
        hint = f"separate the repeat from the name: {glued[1]} x{glued[2]}"
    else:
        close = difflib.get_close_matches(tok.text.lower(), [n.lower() for n in _LAYER_NAMES], n=1, cutoff=0.4)
        names = {n.lower(): n for n in _LAYER_NAMES}
        suggestion = f"did you mean {names[close[0]]}? " if close else ""
        hint = f"{suggestion}layers are {', '.join(_LAYER_NAMES)}"
    return cur.error(tok.pos, f"unknown layer {tok.text!r}", hint)


def _parse_layer(cur: _Cursor, name: Token) -> Node:
    """A layer name with its optional parenthesised arguments, as a checked node."""
    entry = _LAYERS.get(name.text.lower())
    if entry is None:
        raise _unknown_layer(cur, name)
    cls, preset = entry
    parens = (tok := cur.peek()) is not None and tok.kind == "("
    args = _parse_args(cur, cur.next()) if parens else []
    label = name.text + (f"({','.join(a.text for a in args)})" if parens else "")
    try:
        values = _read_args(cls.SIG, args, name.text)
    except _ArgError as exc:
        raise cur.error(exc.tok.pos if exc.tok else name.pos, exc.problem, exc.hint) from None
    node = cls(pos=name.pos, label=label, **preset, **values)
    try:
        node.check()
    except _Problem as exc:
        raise cur.error(name.pos, exc.problem, exc.hint) from None
    return node


# ---------------------------------------------------------------------------------------- headers


@dataclass(frozen=True)
class Spec:
    """A parsed CBAPD spec: metadata from the headers and the body's stages of layer nodes."""

    stages: tuple[tuple[Node, ...], ...]
    input_size: tuple[int, int, int]  # C, H, W
    num_classes: int | None = None
    name: str = "spec"
    source: str = "<spec>"

    @property
    def nodes(self) -> tuple[Node, ...]:
        """All layers in order, stages concatenated."""
        return tuple(node for stage in self.stages for node in stage)


def _header_value(key: str, value: str, pos: tuple[int, int], source: str) -> Any:
    """The typed value of one header line."""
    if key == "name":
        if not value:
            raise SpecError(source, pos, "empty name", "write e.g. 'name: my-net'")
        return value
    if key == "input":
        match = re.fullmatch(r"(\d+)\s*x\s*(\d+)\s*x\s*(\d+)", value)
        if not match or min(int(g) for g in match.groups()) < 1:
            raise SpecError(source, pos, f"input must be CxHxW, got {value!r}", "write e.g. 'input: 3x32x32'")
        return tuple(int(g) for g in match.groups())
    if key == "classes":
        if not re.fullmatch(r"\d+", value) or int(value) < 1:
            raise SpecError(source, pos, f"classes must be a positive whole number, got {value!r}",
                            "write e.g. 'classes: 10'")
        return int(value)
    raise SpecError(source, pos, f"unknown header {key!r}", "headers are name:, input:, classes:")


def parse_spec(text: str, source: str = "<spec>") -> Spec:
    """Parse CBAPD text into a :class:`Spec`; ``source`` names it in error messages."""
    headers: dict[str, Any] = {}
    tokens: list[Token] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = _strip_comment(raw)
        header = _HEADER.match(line)
        if header is None:
            tokens.extend(_tokens(line, lineno, source))
            continue
        key, pos = header[1].lower(), (lineno, header.start(1) + 1)
        if key in headers:
            raise SpecError(source, pos, f"header {key!r} given twice", "keep one")
        headers[key] = _header_value(key, header[2].strip(), pos, source)
    stages = _parse_body(_Cursor(tokens, source))
    if not stages:
        raise SpecError(source, (1, 1), "the spec has no layers", "write layers such as C(6,5,same) B A(relu)")
    if "input" not in headers:
        raise SpecError(source, (1, 1), "missing 'input:' header", "add e.g. 'input: 3x32x32' (C x H x W)")
    default_name = Path(source).stem if not source.startswith("<") else "spec"
    return Spec(stages, headers["input"], headers.get("classes"), headers.get("name", default_name), source)


# ------------------------------------------------------------------------------- shapes and build


@dataclass(frozen=True)
class Step:
    """One layer placed in the network: its stage, module name, node and shapes (no batch axis)."""

    stage: int
    name: str
    node: Node
    in_shape: Shape
    out_shape: Shape

    @property
    def path(self) -> str:
        """The dotted module name in the built network, e.g. ``stage1.c1``."""
        return f"stage{self.stage}.{self.name}"


def _fmt(shape: Shape) -> str:
    """A shape as the course writes it, e.g. ``6x16x16``."""
    return "x".join(str(d) for d in shape)


def _logits_only(stages: tuple[tuple[Node, ...], ...]) -> list[tuple[int, Node]]:
    """(stage number, node) pairs without a final softmax: the network outputs logits."""
    pairs = [(i, node) for i, stage in enumerate(stages, 1) for node in stage]
    stage, last = pairs[-1]
    if isinstance(last, Act) and last.act == "softmax":
        return pairs[:-1]
    if isinstance(last, Dense) and last.act == "softmax":
        return pairs[:-1] + [(stage, replace(last, act=None))]
    return pairs


def _input_shape(spec: Spec, in_channels: int | None, input_size: tuple[int, int] | None) -> Shape:
    """The spec's (C, H, W) with the caller's overrides."""
    c, h, w = spec.input_size
    if input_size is not None:
        h, w = (int(v) for v in input_size)
    return (int(in_channels) if in_channels is not None else c, h, w)


def _classes(spec: Spec, num_classes: int | None) -> int | None:
    """The class count: the caller's, else the spec's ``classes:`` header."""
    return num_classes if num_classes is not None else spec.num_classes


def infer_shapes(spec: Spec, num_classes: int | None = None, in_channels: int | None = None,
                 input_size: tuple[int, int] | None = None) -> list[Step]:
    """Every layer of the built network with its input/output shape, checked without running it."""
    classes = _classes(spec, num_classes)
    shape = _input_shape(spec, in_channels, input_size)
    counters: dict[str, int] = {}
    steps: list[Step] = []
    for stage, node in _logits_only(spec.stages):
        counters[node.PREFIX] = counters.get(node.PREFIX, 0) + 1
        name = f"{node.PREFIX}{counters[node.PREFIX]}"
        try:
            out = node.out_shape(shape, classes)
        except _Problem as exc:
            raise SpecError(spec.source, node.pos, exc.problem, exc.hint) from None
        if min(out) < 1:
            raise SpecError(spec.source, node.pos,
                            f"{node.label} ({name}) shrinks {_fmt(shape)} to {_fmt(out)}",
                            "use same padding, a smaller kernel or stride, or a larger input")
        steps.append(Step(stage, name, node, shape, out))
        shape = out
    return steps


class SpecNet(nn.Sequential):
    """The network a spec describes: named stages of named layers; ``forward`` gives logits."""

    def __init__(self, stages: OrderedDict[str, nn.Module], name: str, input_size: Shape,
                 num_classes: int | None) -> None:
        super().__init__(stages)
        self.spec_name, self.input_size, self.num_classes = name, input_size, num_classes

    def extra_repr(self) -> str:
        return f"name={self.spec_name!r}, input={_fmt(self.input_size)}, classes={self.num_classes}"


def _he_normal_(weight: torch.Tensor) -> None:
    """Keras ``he_normal``: truncated normal, std sqrt(2 / fan_in) before truncation at 2 sigma."""
    fan_in = weight[0].numel()
    std = math.sqrt(2.0 / fan_in) / 0.87962566103423978
    nn.init.trunc_normal_(weight, 0.0, std, -2 * std, 2 * std)


def _init_(model: nn.Module, init: str) -> None:
    """Initialise as Keras does (``keras``) or keep PyTorch's defaults (``torch``)."""
    if init == "torch":
        return
    if init != "keras":
        raise CnnlabError(f"unknown init {init!r} (hint: choose 'keras' or 'torch')")
    layers.keras_init_(model)
    for module in model.modules():
        if getattr(module, "keras_kernel_init", None) == "he_normal":
            with torch.no_grad():
                _he_normal_(module.weight)


def build(spec: Spec, num_classes: int | None = None, in_channels: int | None = None,
          input_size: tuple[int, int] | None = None, init: str = "keras") -> nn.Module:
    """The ``nn.Module`` for ``spec`` (logits out); arguments override the spec's headers."""
    steps = infer_shapes(spec, num_classes, in_channels, input_size)
    classes = _classes(spec, num_classes)
    stages: OrderedDict[str, OrderedDict[str, nn.Module]] = OrderedDict()
    for step in steps:
        stage = stages.setdefault(f"stage{step.stage}", OrderedDict())
        stage[step.name] = step.node.module(step.in_shape, classes)
    model = SpecNet(OrderedDict((k, nn.Sequential(v)) for k, v in stages.items()), spec.name,
                    _input_shape(spec, in_channels, input_size), classes)
    _init_(model, init)
    return model


def load_spec_file(path: str | os.PathLike | Any) -> Spec:
    """Read and parse a ``.cbapd`` file (a path or an importlib.resources Traversable)."""
    file = Path(path) if isinstance(path, (str, os.PathLike)) else path
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CnnlabError(f"spec file not found: {file} (hint: check the path; specs end in .cbapd)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CnnlabError(f"cannot read spec file {file}: {exc} (hint: a spec is a UTF-8 text file)") from None
    return parse_spec(text, source=str(file))


def build_spec_file(path: str | os.PathLike | Any, num_classes: int | None = None,
                    in_channels: int | None = None, input_size: tuple[int, int] | None = None,
                    **kw: Any) -> nn.Module:
    """Load a ``.cbapd`` file and build it (see :func:`build` for the arguments)."""
    return build(load_spec_file(path), num_classes, in_channels, input_size, **kw)
