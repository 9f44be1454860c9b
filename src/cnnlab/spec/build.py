"""Spec to modules: every layer placed with its shapes (``Step``, ``infer_shapes``), then ``SpecNet`` built."""
from __future__ import annotations

import math
import os
from collections import OrderedDict
from dataclasses import dataclass, replace
from itertools import islice
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import layers
from ..errors import CnnlabError
from ..models.base import ZooModel
from .errors import SpecError, _Problem
from .nodes import Act, Dense, Node, Shape, _fmt
from .parser import Spec, parse_spec

MAX_LAYER_PARAMS = 1 << 28  # parameters in one layer: 1 GB of float32 (2.6x VGG-16's fc6, the zoo's largest)
MAX_ELEMENTS = 1 << 28  # values one layer outputs per image (VGG-16 at 1024x1024 px: 67 million)


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
        if math.prod(out) > MAX_ELEMENTS:
            raise SpecError(spec.source, node.pos, f"{node.label} ({name}) would output {_fmt(out)}, "
                            f"{math.prod(out):,} values per image", f"at most {MAX_ELEMENTS:,}: use fewer channels "
                            "or a smaller input")
        steps.append(Step(stage, name, node, shape, out))
        shape = out
    return steps


def _check_size(spec: Spec, step: Step, classes: int | None) -> None:
    """Refuse a layer too large to hold, counted on the meta device before any memory is allocated for it."""
    with torch.device("meta"):
        params = sum(p.numel() for p in step.node.module(step.in_shape, classes).parameters())
    if params > MAX_LAYER_PARAMS:
        raise SpecError(spec.source, step.node.pos, f"{step.node.label} ({step.name}) would have {params:,} "
                        "parameters", f"at most {MAX_LAYER_PARAMS:,} a layer (VGG's largest has 102,764,544): use "
                        "fewer channels or units")


class Stage(nn.Sequential):
    """One stage of a spec network; ``stage(x, start, stop)`` runs only its layers ``[start:stop]``.

    The head API splits a stage at its flattening layer through the stage's own call, so hooks on the
    stage still see it run (transfer learning keeps exactly the stages ``forward_features`` calls).
    """

    def forward(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        for layer in islice(self, start, stop):
            x = layer(x)
        return x


class SpecNet(nn.Sequential, ZooModel):
    """The network a spec describes: named stages of named layers; ``forward`` gives logits.

    ``forward`` is ``nn.Sequential``'s, every stage in order. The zoo's head API (``ZooModel``) splits
    the same layers: the features end before the first layer that makes the map flat (F / GAP / GMP),
    the head is the rest, and the classifier is the final ``nn.Linear``.
    """

    def __init__(self, stages: OrderedDict[str, Stage], name: str, input_size: Shape,
                 num_classes: int | None, features_end: int | None) -> None:
        super().__init__(stages)
        self.spec_name, self.input_size = name, input_size
        self.features_end = features_end  # layers before the first flat one, counted through all stages
        named = [(f"{s}.{n}", layer) for s, stage in stages.items() for n, layer in stage.named_children()]
        self.num_layers = len(named)
        last = named[-1][1] if named else None
        linear = isinstance(last, nn.Linear)
        self.classifier_name = named[-1][0] if linear else None
        self.num_features = last.in_features if linear else None
        self.num_classes = last.out_features if linear else num_classes

    def extra_repr(self) -> str:
        return f"name={self.spec_name!r}, input={_fmt(self.input_size)}, classes={self.num_classes}"

    def _split(self) -> int:
        """Where the features end; a clear error when no layer makes the map flat."""
        if self.features_end is None:
            raise CnnlabError(f"spec network {self.spec_name!r} never makes its map flat, so it has no "
                              "features/head split (hint: add F, GAP or GMP before the dense layers)")
        return self.features_end

    def _check_classifier(self) -> None:
        """A clear error unless the network has a head that ends in an ``nn.Linear``."""
        self._split()
        if self.classifier_name is None:
            raise CnnlabError(f"spec network {self.spec_name!r} does not end in a linear classifier "
                              "(hint: end it with Dense(classes) without an activation)")

    def _run_layers(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """The layers ``[start:stop]``, counted through all stages; each stage runs its share in one call."""
        offset = 0
        for stage in self:
            lo, hi = max(start - offset, 0), min(stop - offset, len(stage))
            if lo < hi:
                x = stage(x, lo, hi)
            offset += len(stage)
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._run_layers(x, 0, self._split())

    def forward_pre_logits(self, x: torch.Tensor) -> torch.Tensor:
        self._check_classifier()
        return self._run_layers(x, self._split(), self.num_layers - 1)

    def get_classifier(self) -> nn.Module:
        self._check_classifier()
        return super().get_classifier()

    def reset_classifier(self, num_classes: int) -> None:
        self._check_classifier()
        super().reset_classifier(num_classes)


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
        _check_size(spec, step, classes)
    for step in steps:
        stage = stages.setdefault(f"stage{step.stage}", OrderedDict())
        stage[step.name] = step.node.module(step.in_shape, classes)
    features_end = next((i for i, step in enumerate(steps) if len(step.out_shape) == 1), None)
    model = SpecNet(OrderedDict((k, Stage(v)) for k, v in stages.items()), spec.name,
                    _input_shape(spec, in_channels, input_size), classes, features_end)
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
