"""The explainer page: one self-contained HTML file that shows a network's layers, every layer's feature maps for
a few images, one unit's arithmetic on the real numbers, and the training story.

Python gathers the numbers in forward passes with hooks on every leaf layer; the page — hand-written
``explainer/page.html``, ``page.js`` and ``page.css``, no library — draws them. Everything is inline: no CDN, no
server, no request. What is stored, and why (docs/explain.md):

- pictures: per layer and image one 8-bit grayscale PNG holding the first ``max_maps`` maps side by side, each
  scaled by its own min/max (both stored), so hovering shows a value to 1/255 of the map's range;
- exact numbers (float32, zlib, base64) for the "one neuron" panel, which redoes every sum in the browser: a
  convolution's first ``max_maps`` input channels and their weights, plus per unit PyTorch's sum over the other
  input channels; a channel-by-channel layer (BatchNorm, activation, pooling, dropout) refers to the layer that
  made its input when the page can recompute that one, else stores its shown channels' input; a Dense unit's
  largest contributions are computed here;
- a size cap (``max_bytes``): first every layer's pictures (up to half the cap), then the exact numbers, both in
  forward order; a layer past the cap says so (a ResNet-50 at 224×224 with 4 images is the network that meets it).

Only a layer's first call is recorded (a module used twice, like torchvision's shared ReLU, shows its first use).
"""
from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import math
import os
import zlib
from dataclasses import dataclass, field, replace
from importlib.resources import files
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.weak import WeakTensorKeyDictionary

from .. import layers as L
from ..io import atomic_write_text
from .summary import Row, Summary, summarize

MAX_MAPS = 16  # feature maps pictured per layer by default
MAX_PICTURE = 64  # larger maps are pictured averaged down to this many pixels a side
MAX_UNITS = 256  # units of a vector layer shown (and Dense units explained)
TOP_TERMS = 8  # a Dense unit's largest contributions listed one by one
MAX_BYTES = 9_000_000  # the default page size cap: a course network's page stays under 10 MB
THUMBS_PER_CELL = 6  # validation images kept per confusion-matrix cell
MAX_MATRIX_CLASSES = 20  # a larger confusion matrix is shown for the classes with the most errors
ASSETS = ("page.html", "page.css", "page.js")
DATA_TAG = '<script id="cnnlab-data" type="application/json">'

_ACTIVATIONS: dict[type, str] = {
    nn.ReLU: "relu", nn.ReLU6: "relu6", nn.LeakyReLU: "leaky_relu", nn.Sigmoid: "sigmoid", nn.Tanh: "tanh",
    nn.GELU: "gelu", nn.SiLU: "silu", nn.ELU: "elu", nn.Hardswish: "hardswish", nn.Hardsigmoid: "hardsigmoid",
    nn.Identity: "identity",
}
_DROPOUTS = (nn.Dropout, nn.Dropout2d, nn.AlphaDropout)


@dataclass(frozen=True)
class Story:
    """How the network was trained: its per-epoch history and the confusion matrix of one split, with images."""

    history: dict[str, list[float]] | None = None
    confusion: torch.Tensor | None = None  # k×k counts, rows the true class
    split: str = "val"
    accuracy: float | None = None
    cells: dict[tuple[int, int], list[int]] = field(default_factory=dict)  # (true, predicted) → thumbnail indices
    thumbnails: torch.Tensor | None = None  # uint8 M×C×H×W
    note: str = ""  # why a part is missing, shown on the page


@dataclass(frozen=True)
class ExplainerPage:
    """A built page: the HTML, what it holds, and where it was saved. In a notebook it shows itself inline."""

    html: str
    layers: int
    layers_pictured: int
    layers_explained: int  # layers whose units the one-neuron panel explains with exact numbers
    images: int
    path: Path | None = None
    skipped: tuple = ()  # inputs that could not be read (``Skipped``: path and reason), when the caller says

    @property
    def size(self) -> int:
        """Bytes of the HTML file."""
        return len(self.html.encode())

    def data(self) -> dict[str, Any]:
        """The numbers the page carries, read back from its HTML (what its script draws)."""
        start = self.html.index(DATA_TAG) + len(DATA_TAG)
        return json.loads(self.html[start:self.html.index("</script>", start)])

    def save(self, path: str | os.PathLike) -> "ExplainerPage":
        """Write the page atomically; the returned page knows its path."""
        atomic_write_text(path, self.html)
        return replace(self, path=Path(path))

    def _repr_html_(self) -> str:
        """The page inside an iframe (srcdoc), so Jupyter shows it without a server."""
        return (f'<iframe srcdoc="{html.escape(self.html, quote=True)}" sandbox="allow-scripts" '
                'style="width:100%;height:900px;border:1px solid #ddd"></iframe>')


class Blobs:
    """float32 arrays stored once each (zlib, base64) and referred to by id; counts the bytes it holds."""

    def __init__(self) -> None:
        self.items: dict[str, str] = {}
        self.bytes = 0

    def add(self, array: np.ndarray | torch.Tensor) -> str:
        """The id of ``array`` (float32, C order), stored on first sight."""
        data = np.ascontiguousarray(np.asarray(array, dtype="<f4")).tobytes()
        key = hashlib.blake2b(data, digest_size=8).hexdigest()
        if key not in self.items:
            self.items[key] = base64.b64encode(zlib.compress(data, 6)).decode()
            self.bytes += len(self.items[key])
        return key

    def rollback(self, count: int) -> None:
        """Forget every array stored after the first ``count`` (a layer that did not fit under the cap)."""
        for key in list(self.items)[count:]:
            self.bytes -= len(self.items.pop(key))


def png_base64(pixels: np.ndarray) -> str:
    """An H×W (gray) or H×W×3 (RGB) uint8 array as base64 PNG."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buf, format="PNG", optimize=True)
    return base64.b64encode(buf.getvalue()).decode()


def image_pixels(image: torch.Tensor) -> np.ndarray:
    """A C×H×W image (uint8, or float in [0, 1]) as the H×W or H×W×3 uint8 array a PNG holds."""
    x = image.detach().cpu()
    if x.dtype != torch.uint8:
        x = (x.float() * 255).round().clamp(0, 255).to(torch.uint8)
    return x[0].numpy() if x.shape[0] != 3 else x.permute(1, 2, 0).numpy()


def map_sprite(maps: torch.Tensor, side: int = MAX_PICTURE) -> dict[str, Any]:
    """K×H×W maps side by side in one 8-bit PNG, each scaled by its own min/max (stored to restore values).

    Maps larger than ``side`` pixels are averaged down to fit it first (the page draws a map at most 96 px).
    """
    if max(maps.shape[-2:]) > side:
        scale = side / max(maps.shape[-2:])
        size = (max(1, round(maps.shape[-2] * scale)), max(1, round(maps.shape[-1] * scale)))
        maps = torch.nn.functional.adaptive_avg_pool2d(maps, size)
    k, h, w = maps.shape
    lo, hi = maps.amin((1, 2)), maps.amax((1, 2))
    scaled = ((maps - lo[:, None, None]) / (hi - lo).clamp(min=1e-12)[:, None, None] * 255).round()
    strip = scaled.clamp(0, 255).to(torch.uint8).permute(1, 0, 2).reshape(h, k * w)
    return {"png": png_base64(strip.numpy()), "min": _floats(lo), "max": _floats(hi), "hw": [h, w]}


def _floats(values: torch.Tensor | Sequence[float]) -> list[float]:
    """JSON-ready floats with float32's precision (7 significant digits)."""
    return [float(f"{float(v):.7g}") for v in (values.tolist() if isinstance(values, torch.Tensor) else values)]


def _pair(v: Any) -> list[int]:
    return [int(v), int(v)] if isinstance(v, int) else [int(v[0]), int(v[-1])]


def _shown(x: torch.Tensor, limit: int) -> torch.Tensor:
    """The first ``limit`` channels (maps) or units (vectors) of an N×C… tensor."""
    return x[:, :limit]


def _conv_op(m: nn.Conv2d, x: torch.Tensor, y: torch.Tensor, k: int, k_in: int, blobs: Blobs) -> dict | None:
    """What the panel needs to redo a unit of the first ``k`` output maps: the geometry, the first ``k_in`` input
    channels with their weights, and per unit the sum over the other input channels (PyTorch's float32 conv)."""
    if m.padding_mode != "zeros" or x.dim() != 4:
        return None
    size = tuple(x.shape[-2:])
    pad = m.padding_before(size) if isinstance(m, L.Conv2d) else _torch_padding(m.padding, m.kernel_size, m.dilation)
    cin_per = x.shape[1] // m.groups
    w_cin = min(cin_per, k_in) if m.groups == 1 else cin_per
    op = {"kind": "conv", "k": list(m.kernel_size), "s": list(m.stride), "d": list(m.dilation), "pad": list(pad),
          "groups": m.groups, "cin": int(x.shape[1]), "cin_stored": k_in, "w_cin": w_cin, "in_hw": list(size),
          "cout_stored": k, "w": blobs.add(m.weight[:k, :w_cin].detach()),
          "b": None if m.bias is None else blobs.add(m.bias[:k].detach()),
          "x": [blobs.add(xi) for xi in x[:, :k_in]]}
    if k_in < x.shape[1]:
        op["rest"] = [blobs.add(r) for r in _conv_rest(m, x, y, k, k_in, pad)]
    return op


def _conv_rest(m: nn.Conv2d, x: torch.Tensor, y: torch.Tensor, k: int, k_in: int, pad: Sequence[int]) -> torch.Tensor:
    """The first ``k`` output maps of the convolution over input channels ``k_in`` onwards only (no bias)."""
    rest = x.clone()
    rest[:, :k_in] = 0
    (h, w), (kh, kw), (sh, sw), (dh, dw) = x.shape[-2:], m.kernel_size, m.stride, m.dilation
    bottom = (y.shape[-2] - 1) * sh + (kh - 1) * dh + 1 - h - pad[0]
    right = (y.shape[-1] - 1) * sw + (kw - 1) * dw + 1 - w - pad[1]
    padded = torch.nn.functional.pad(rest, [pad[1], right, pad[0], bottom])
    return torch.nn.functional.conv2d(padded, m.weight, None, m.stride, 0, m.dilation, m.groups)[:, :k]


def _torch_padding(padding: Any, kernel: Sequence[int], dilation: Sequence[int]) -> tuple[int, int]:
    """PyTorch's padding before the input: ``same`` puts the smaller half first."""
    if padding == "same":
        return tuple((k - 1) * d // 2 for k, d in zip(kernel, dilation))
    return (0, 0) if padding == "valid" else tuple(_pair(padding))


def _bn_op(m: nn.modules.batchnorm._BatchNorm, k: int) -> dict[str, Any] | None:
    """The four numbers of each of the first ``k`` channels: moving mean and variance, γ and β."""
    if m.running_mean is None or m.training:
        return None
    ones = torch.ones_like(m.running_mean)
    gamma = m.weight if m.weight is not None else ones
    beta = m.bias if m.bias is not None else torch.zeros_like(ones)
    return {"kind": "bn", "mean": _floats(m.running_mean[:k]), "var": _floats(m.running_var[:k]),
            "gamma": _floats(gamma[:k].detach()), "beta": _floats(beta[:k].detach()), "eps": m.eps}


def _activation_op(m: nn.Module) -> dict[str, Any]:
    param = {nn.LeakyReLU: "negative_slope", nn.ELU: "alpha", nn.GELU: "approximate"}.get(type(m))
    return {"kind": "act", "fn": _ACTIVATIONS[type(m)], "param": getattr(m, param) if param else None}


def _pool_op(m: nn.Module, x: torch.Tensor) -> dict[str, Any] | None:
    """A pooling window's geometry on input ``x``: TF ``same`` or explicit padding, ceil mode."""
    if x.dim() != 4:
        return None
    size = tuple(x.shape[-2:])
    is_max = isinstance(m, (L.MaxPool2d, nn.MaxPool2d))
    if isinstance(m, L._Pool2d):
        geometry = {"k": list(m.kernel_size), "s": list(m.stride), "d": [1, 1], "pad": list(m.padding_before(size)),
                    "same": m.padding == "same", "count_pad": True, "ceil": m.ceil_mode}
    else:
        if getattr(m, "divisor_override", None) or getattr(m, "return_indices", False):
            return None
        geometry = {"k": _pair(m.kernel_size), "s": _pair(m.stride), "d": _pair(getattr(m, "dilation", 1)),
                    "pad": _pair(m.padding), "same": False, "count_pad": bool(getattr(m, "count_include_pad", True)),
                    "ceil": bool(m.ceil_mode)}
    return {"kind": "maxpool" if is_max else "avgpool", "in_hw": list(size), **geometry}


def _global_pool_op(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any] | None:
    """Global average/max pooling (to a vector or to 1×1 maps): each unit is its map's mean or maximum."""
    if x.dim() != 4 or (y.dim() == 4 and tuple(y.shape[-2:]) != (1, 1)):
        return None
    mode = m.mode if isinstance(m, L.GlobalPool2d) else "max" if isinstance(m, nn.AdaptiveMaxPool2d) else "avg"
    return {"kind": "gap", "mode": mode, "in_hw": list(x.shape[-2:])}


def _dense_terms(x: torch.Tensor, w: torch.Tensor, top: int) -> torch.Tensor:
    """One image's top ``top`` contributions per unit as rows (indices…, x…, w…, rest), in float64."""
    terms = x.double()[None, :] * w  # units × inputs
    order = terms.abs().topk(top, dim=1).indices
    picked_x, picked_w = x.double()[order], torch.gather(w, 1, order)
    rest = terms.sum(1) - (picked_x * picked_w).sum(1)
    return torch.cat([order.double(), picked_x, picked_w, rest[:, None]], 1)


def _dense_op(m: nn.Linear, x: torch.Tensor, units: int, blobs: Blobs, in_shape: Sequence[int] | None) -> dict:
    """Each shown unit's largest contributions w·x (index, x, w), the sum of the others, and the bias."""
    w = m.weight[:units].detach().double()
    top = min(TOP_TERMS, x.shape[1])
    bias = m.bias[:units].detach() if m.bias is not None else torch.zeros(units)
    return {"kind": "dense", "units": int(w.shape[0]), "top": top, "inputs": int(x.shape[1]),
            "in_shape": list(in_shape) if in_shape else None, "bias": blobs.add(bias),
            "terms": [blobs.add(_dense_terms(xi, w, top)) for xi in x]}


PER_UNIT = ("bn", "act", "maxpool", "avgpool", "gap", "dropout")  # ops that read their input channel by channel


def describe_op(m: nn.Module, x: torch.Tensor, y: torch.Tensor, limit: int, blobs: Blobs,
                flat_from: Sequence[int] | None = None, source: str | None = None) -> dict[str, Any] | None:
    """The numbers the "one neuron" panel needs for layer ``m`` (input ``x``, output ``y``); None when unexplained.

    A channel-by-channel op whose input is the output of the layer ``source`` (whose units the page can
    recompute) refers to it instead of storing its input: the page recomputes those values exactly.
    """
    k = stored_count(x, limit)
    op = _op(m, x, y, k, limit, blobs, flat_from)
    if op is not None and op["kind"] in PER_UNIT:
        op.update({"stored": k}, **({"src": source} if source else {"x": [blobs.add(xi) for xi in _shown(x, k)]}))
    return op


def stored_count(x: torch.Tensor, limit: int) -> int:
    """Channels (of maps, at most ``limit``) or units (of vectors, at most MAX_UNITS) a layer keeps of ``x``."""
    return min(limit if x.dim() == 4 else MAX_UNITS, x.shape[1]) if x.dim() > 1 else 0


def computable(op: dict[str, Any] | None) -> int:
    """How many leading channels/units of a layer's output the page can recompute from what it stores."""
    if op is None or op["kind"] == "flatten":
        return 0
    if op["kind"] == "conv":
        return op["cout_stored"]
    return op["units"] if op["kind"] == "dense" else op["stored"]


def _op(m: nn.Module, x: torch.Tensor, y: torch.Tensor, k: int, limit: int, blobs: Blobs,
        flat_from: Sequence[int] | None) -> dict[str, Any] | None:
    if isinstance(m, nn.Conv2d):
        return _conv_op(m, x, y, min(limit, y.shape[1]), min(limit, x.shape[1]), blobs)
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        return _bn_op(m, k)
    if type(m) in _ACTIVATIONS:
        return _activation_op(m)
    if isinstance(m, (L._Pool2d, nn.MaxPool2d, nn.AvgPool2d)):
        return _pool_op(m, x)
    if isinstance(m, (L.GlobalPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        return _global_pool_op(m, x, y)
    if isinstance(m, nn.Linear) and x.dim() == 2:
        return _dense_op(m, x, min(MAX_UNITS, y.shape[1]), blobs, flat_from)
    if isinstance(m, _DROPOUTS):
        return {"kind": "dropout", "p": m.p}
    if isinstance(m, nn.Flatten) and x.dim() == 4:
        return {"kind": "flatten", "in_shape": list(x.shape[1:])}
    return None


def display(y: torch.Tensor, max_maps: int, blobs: Blobs) -> dict[str, Any] | None:
    """How a layer's output is pictured: maps (8-bit sprites) or a vector (float32), with the honest count."""
    if y.dim() == 4:
        k = min(max_maps, y.shape[1])
        return {"type": "maps", "count": int(y.shape[1]), "shown": k, "hw": list(y.shape[-2:]),
                "img": [map_sprite(yi[:k].float()) for yi in y]}
    if y.dim() == 2:
        u = min(MAX_UNITS, y.shape[1])
        return {"type": "vector", "count": int(y.shape[1]), "shown": u, "img": [blobs.add(yi[:u]) for yi in y]}
    return None


def _entry_size(entry: dict[str, Any]) -> int:
    return len(json.dumps(entry, separators=(",", ":")))


PICTURE_SHARE = 0.5  # pictures may take half of the cap: the rest is kept for the exact numbers
CAP_NOTE = "the page reached its size cap (max_mb) after {}"


@dataclass
class _Trace:
    """Per-layer records of two forward passes, in call order until the byte cap: first every layer's pictures,
    then the exact numbers the one-neuron panel needs (so a capped page still pictures every layer it can)."""

    max_maps: int
    max_bytes: int
    phase: str = "pictures"
    blobs: Blobs = field(default_factory=Blobs)
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    done: set[str] = field(default_factory=set)  # layers recorded in this phase (a second call is not)
    inputs: dict[str, torch.Tensor] = field(default_factory=dict)
    used: int = 0
    capped: dict[str, str | None] = field(default_factory=lambda: {"pictures": None, "numbers": None})
    last: str = "the input"  # the last layer recorded in this phase
    last_map_shape: list[int] | None = None
    produced: WeakTensorKeyDictionary = field(default_factory=WeakTensorKeyDictionary)  # output → its layer
    sources: dict[str, str | None] = field(default_factory=dict)
    computable: dict[str, int] = field(default_factory=dict)

    def start(self, phase: str) -> None:
        self.phase, self.done, self.last = phase, set(), "the input"
        self.produced = WeakTensorKeyDictionary()

    def before(self, name: str):
        def hook(module, args):
            if name not in self.done and args and isinstance(args[0], torch.Tensor):
                self.sources[name] = self.produced.get(args[0])
                self.inputs[name] = args[0].detach().clone()  # in-place ops (ReLU(inplace=True)) overwrite it
        return hook

    def after(self, name: str):
        def hook(module, args, output):
            x = self.inputs.pop(name, None)
            if name in self.done or not isinstance(output, torch.Tensor) or x is None:
                return
            self.done.add(name)
            if self.phase == "pictures":
                self.picture(name, output.detach())
            else:
                self.numbers(name, module, x, output.detach())
            self.produced[output] = name
            self.last = name
        return hook

    def source(self, name: str, x: torch.Tensor) -> str | None:
        """The layer whose output is ``name``'s input, when the page can recompute the units ``name`` reads."""
        source = self.sources.pop(name, None)
        return source if source and self.computable.get(source, 0) >= stored_count(x, self.max_maps) else None

    def fits(self, cost: int) -> bool:
        """Take ``cost`` bytes of the budget, or say (once) where the page filled up."""
        limit = self.max_bytes * (PICTURE_SHARE if self.phase == "pictures" else 1)
        if self.capped[self.phase] is None and self.used + cost <= limit:
            self.used += cost
            return True
        self.capped[self.phase] = self.capped[self.phase] or self.last
        return False

    def picture(self, name: str, y: torch.Tensor) -> None:
        """A layer's pictures (maps or a vector), unless the cap was reached."""
        before, stored = self.blobs.bytes, len(self.blobs.items)
        shown = display(y, self.max_maps, self.blobs) if self.capped["pictures"] is None else None
        entry = {"display": shown}
        if not self.fits(self.blobs.bytes - before + _entry_size(entry)):
            self.blobs.rollback(stored)
            entry = {"note": "not pictured: " + CAP_NOTE.format(self.capped["pictures"])}
        self.entries[name] = entry

    def numbers(self, name: str, module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
        """The exact numbers behind a pictured layer's units, unless the cap was reached."""
        entry = self.entries[name]
        flat_from = self.last_map_shape if isinstance(module, nn.Linear) else None
        if isinstance(module, nn.Flatten) and x.dim() == 4:
            self.last_map_shape = list(x.shape[1:])  # the next Dense names its inputs by map and position
        elif not isinstance(module, (*_DROPOUTS, *_ACTIVATIONS)):
            self.last_map_shape = None
        if entry.get("display") is None:
            return
        before, stored = self.blobs.bytes, len(self.blobs.items)
        op = describe_op(module, x, y, self.max_maps, self.blobs, flat_from, self.source(name, x)) \
            if self.capped["numbers"] is None else None
        if self.fits(self.blobs.bytes - before + len(json.dumps(op))):
            entry["op"] = op
            self.computable[name] = computable(op)
        else:
            self.blobs.rollback(stored)
            entry["note"] = "pictures only, no exact numbers: " + CAP_NOTE.format(self.capped["numbers"])


def trace(model: nn.Module, images: torch.Tensor, summary: Summary, max_maps: int = MAX_MAPS,
          max_bytes: int = MAX_BYTES) -> tuple[_Trace, torch.Tensor]:
    """Two eval-mode forward passes of ``images`` with hooks on every summary row: the trace and the logits."""
    modules = dict(model.named_modules())
    t = _Trace(max_maps, max_bytes)
    handles = []
    for row in summary.rows:
        m = modules.get(row.name)
        if m is not None:
            handles += [m.register_forward_pre_hook(t.before(row.name)), m.register_forward_hook(t.after(row.name))]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for phase in ("pictures", "numbers"):
                t.start(phase)
                logits = model(images)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return t, logits


def _row_json(row: Row, entry: dict[str, Any] | None) -> dict[str, Any]:
    rf = row.receptive_field
    return {"name": row.name, "type": row.kind, "depth": row.depth,
            "shape": list(row.outputs[0]) if row.outputs else None, "params": row.params, "macs": row.macs,
            "rf": list(rf) if isinstance(rf, tuple) else rf, "jump": list(row.jump) if row.jump else None,
            "start": list(row.start) if row.start else None, **(entry or {"note": "not called in forward()"})}


def matrix_classes(confusion: torch.Tensor, limit: int = MAX_MATRIX_CLASSES) -> list[int]:
    """Every class when there are few; else the ``limit`` classes with the most errors (as truth or guess)."""
    k = confusion.shape[0]
    if k <= limit:
        return list(range(k))
    errors = confusion.sum(0) + confusion.sum(1) - 2 * confusion.diag()
    return sorted(errors.topk(limit).indices.tolist())


def _story_json(story: Story | None) -> dict[str, Any] | None:
    if story is None:
        return None
    history = None if story.history is None else {
        key: [None if v is None or math.isnan(v) else v for v in values] for key, values in story.history.items()}
    thumbs = [] if story.thumbnails is None else [png_base64(image_pixels(t)) for t in story.thumbnails]
    confusion = story.confusion
    return {"history": history, "split": story.split, "accuracy": story.accuracy, "note": story.note,
            "confusion": None if confusion is None else confusion.tolist(),
            "matrix_classes": None if confusion is None else matrix_classes(confusion),
            "cells": {f"{t},{p}": ids for (t, p), ids in story.cells.items()}, "thumbs": thumbs}


def _asset(name: str) -> str:
    return files("cnnlab.explain").joinpath("explainer", name).read_text(encoding="utf-8")


def render_page(data: dict[str, Any], title: str) -> str:
    """The template with its CSS, script and data inlined (``</`` escaped, so no string can close a tag)."""
    page, css, js = (_asset(name) for name in ASSETS)
    payload = json.dumps(data, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    return (page.replace("{{TITLE}}", html.escape(title)).replace("/*{{CSS}}*/", css)
            .replace("{{DATA}}", payload).replace("/*{{JS}}*/", js))


def build_page(model: nn.Module, images: torch.Tensor, names: Sequence[str], classes: Sequence[str], *,
               labels: Sequence[int | None] | None = None, story: Story | None = None, title: str = "",
               max_maps: int = MAX_MAPS, max_bytes: int = MAX_BYTES) -> ExplainerPage:
    """The explainer page of ``model`` for ``images`` (float N×C×H×W, as the model reads them).

    ``classes`` name the outputs; ``labels`` are the images' true classes when known; ``story`` adds the
    training curves and confusion matrix. Pictures and numbers stop at ``max_bytes`` (see the module doc).
    """
    summary = summarize(model, tuple(images.shape[1:]))
    inputs = [{"name": str(n), "label": None if labels is None else labels[i], "png": png_base64(image_pixels(x))}
              for i, (n, x) in enumerate(zip(names, images))]
    c, h, w = summary.input_size
    data = {"title": title, "model": summary.model_name, "input": [c, h, w], "classes": list(classes),
            "images": inputs, "summary": str(summary), "total_params": summary.total_params,
            "total_macs": summary.total_macs, "max_maps": max_maps, "story": _story_json(story),
            "layers": [_row_json(r, None) for r in summary.rows]}
    outputs = math.prod(summary.outputs[0]) if summary.outputs else 0
    fixed = len(json.dumps(data)) + 16 * len(images) * outputs + sum(len(_asset(n)) for n in ASSETS)
    t, logits = trace(model, images.float(), summary, max_maps, max_bytes - fixed)
    rows = [_row_json(r, t.entries.get(r.name)) for r in summary.rows]
    data.update(layers=rows, blobs=t.blobs.items, capped=t.capped,
                logits=[_floats(row.float()) for row in logits.reshape(len(images), -1)])
    pictured = sum(1 for r in rows if r.get("display"))
    explained = sum(1 for r in rows if r.get("op"))
    return ExplainerPage(render_page(data, title or summary.model_name), len(rows), pictured, explained, len(inputs))


__all__ = ["Blobs", "ExplainerPage", "MAX_BYTES", "MAX_MAPS", "Story", "build_page", "describe_op", "display",
           "map_sprite", "matrix_classes", "png_base64", "render_page", "trace"]
