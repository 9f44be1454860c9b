"""Spec to modules: each layer placed with its shapes (``Step``, ``infer_shapes``), then ``SpecNet`` built and initialised."""
from __future__ import annotations

import math
import os
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import layers
from ..errors import CnnlabError
from .errors import SpecError, _Problem
from .nodes import Act, Dense, Node, Shape, _fmt
from .parser import Spec, parse_spec


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
