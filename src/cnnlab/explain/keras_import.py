"""Load the weights of a course network saved by Keras into the matching cnnlab network.

Three formats are read:

- Keras 3 ``model.save_weights("x.weights.h5")``: one ``<path>/vars`` group per layer holding
  datasets ``0, 1, ...`` in the layer's variable order (``layers/conv2d/vars`` for a Sequential,
  the attribute name such as ``c1/vars`` or ``blocks/layers/resnet_block/c1/vars`` for a subclassed
  model), each tagged with the layer's own name (``conv2d_7``);
- legacy Keras 2 ``.h5`` (``save_weights`` or ``model.save``): the ``layer_names`` attribute
  lists the top-level layers in order, each with a ``weight_names`` attribute (a nested model's
  names say which inner layer each weight belongs to: ``resnet_block/conv2d_1/kernel:0``);
- the TensorFlow checkpoint that TF2's Keras 2 writes for the course's ``model.save_weights(
  "./checkpoint/Baseline.ckpt")`` (``.index`` + ``.data-*`` files; needs tensorflow), whose object
  graph lists the layers in the order the model tracked them.

Layers are matched in order *by type* (k-th Keras convolution ↔ k-th ``nn.Conv2d`` ...), the order in
which Keras created them: the files sort layers by attribute name or graph depth, but Keras' automatic
names count up as layers are made (``conv2d``, ``conv2d_1``, …), and for the course's networks that
creation order is cnnlab's module order. Without such names (layers named by hand) the file's own order
is used, Keras 3 paths ordered naturally (``conv2d_2`` < ``conv2d_10``, ``c2`` < ``c10``).
Conversions: conv kernel HWIO → OIHW; depthwise ``(kh, kw, C, m)`` → ``(C·m, 1, kh, kw)``; dense
``(in, out)`` → ``(out, in)``, and for the first Dense after a Flatten of a C×H×W map its rows are
reordered from Keras' H·W·C order to PyTorch's C·H·W; BatchNorm gamma/beta/moving mean/variance →
weight/bias/running_mean/running_var.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..data.files import open_regular
from ..errors import CnnlabError, first_line
from ..layers import SeparableConv2d

KINDS = ("conv", "separable", "dense", "bn")
MAX_WEIGHTS = 1 << 28  # numbers in one Keras weight array: VGG16's largest holds 103 million
_NOT_LAYERS = re.compile(r"^(optimizer|compile_metrics|compile_loss|loss_tracker|metrics)(/|$)")
Chw = tuple[int, int, int]


@dataclass(frozen=True)
class KerasLayer:
    """One Keras layer with weights: its path in the file, kind, arrays in Keras' order and Keras name."""

    name: str
    kind: str
    arrays: tuple[np.ndarray, ...]
    keras_name: str | None = None  # the layer's own name (``conv2d_7``), where the file records it


Raw = list[tuple[str, list[np.ndarray], str | None]]  # (path, arrays, Keras layer name) in the file's order
# Keras' automatic layer name of each kind, followed by ``_<n>`` for the n-th layer made after the first
AUTO_NAMES = {"conv": "conv2d", "separable": "separable_conv2d", "dense": "dense", "bn": "batch_normalization"}


def _h5py():
    """Import h5py lazily: it is an optional dependency (``pip install 'cnnlab[keras]'``)."""
    try:
        import h5py
    except ImportError:
        raise CnnlabError("reading Keras .h5 weights needs h5py: pip install 'cnnlab[keras]'") from None
    return h5py


def _text(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _natural_key(path: str) -> list:
    """Sort key that orders embedded numbers numerically (``conv2d_2`` before ``conv2d_10``)."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", path)]


def _legacy_layers(root) -> Raw:
    """Layers in the order of the ``layer_names`` attribute (Keras 2 ``.h5``), a nested model's split by owner."""
    out: Raw = []
    for name in _names(root.attrs, "layer_names", "the file"):
        group = _member(root, name, "layer_names")
        owners: dict[str, list[np.ndarray]] = {}
        for weight in _names(group.attrs, "weight_names", name):
            owners.setdefault(weight.rsplit("/", 1)[0], []).append(_array(group, weight, name))
        for owner, arrays in owners.items():
            path = name if len(owners) == 1 else f"{name}/{owner}"
            out.append((path, arrays, owner.rsplit("/", 1)[-1]))
        if not owners:
            out.append((name, [], None))
    return out


def _keras3_layers(f) -> Raw:
    """Layers of every ``.../vars`` group (Keras 3 ``.weights.h5``), naturally sorted by path."""
    paths: list[str] = []
    f.visititems(lambda name, obj: paths.append(name) if name.rsplit("/", 1)[-1] == "vars" and
                 hasattr(obj, "keys") else None)
    layers: Raw = []
    for path in sorted(paths, key=_natural_key):
        owner = path.rsplit("/vars", 1)[0]
        if not _NOT_LAYERS.match(owner):
            group = f[path]
            name = group.attrs.get("name")
            layers.append((owner, [_array(group, k, path) for k in _numbered(group.keys(), path)],
                           None if name is None else _text(name)))
    return layers


def _tensorflow():
    """Import TensorFlow lazily, only to read a TensorFlow checkpoint."""
    try:
        import tensorflow as tf
        from tensorflow.core.protobuf import trackable_object_graph_pb2
    except ImportError:
        raise CnnlabError("a TensorFlow checkpoint (the course's save_weights('....ckpt')) needs tensorflow to read: "
                          "pip install tensorflow-cpu, or save it again with model.save_weights('name.weights.h5')"
                          ) from None
    return tf, trackable_object_graph_pb2


def checkpoint_prefix(path: str | os.PathLike) -> str | None:
    """The TensorFlow checkpoint ``path`` names (its prefix, its ``.index`` file or its folder), else None."""
    p = os.fspath(path)
    if os.path.isdir(p):
        listed = Path(p, "checkpoint")
        found = re.search(r'^model_checkpoint_path:\s*"(.+)"', listed.read_text(), re.M) if listed.is_file() else None
        p = os.path.join(p, found.group(1)) if found else p
    p = p[:-len(".index")] if p.endswith(".index") else p
    return p if os.path.isfile(p + ".index") else None


_SKIPPED_CHILDREN = {"optimizer", "save_counter", "keras_api"}


def _checkpoint_layers(prefix: str) -> Raw:
    """Layers of a TensorFlow checkpoint in the order of its object graph (children as the model tracked them)."""
    tf, proto = _tensorflow()
    try:
        reader = tf.train.load_checkpoint(prefix)
        graph = proto.TrackableObjectGraph()
        graph.ParseFromString(reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))
    except (tf.errors.OpError, ValueError) as e:
        raise CnnlabError(f"cannot read TensorFlow checkpoint {prefix!r}: {str(e).splitlines()[0]}") from None
    layers: Raw = []
    seen: set[int] = set()

    def value(node_id: int) -> np.ndarray | None:
        keys = [a.checkpoint_key for a in graph.nodes[node_id].attributes if a.name == "VARIABLE_VALUE"]
        return np.asarray(reader.get_tensor(keys[0])) if keys else None

    def visit(node_id: int, path: str) -> None:
        seen.add(node_id)
        children = [(c, value(c.node_id)) for c in graph.nodes[node_id].children
                    if c.local_name not in _SKIPPED_CHILDREN]
        arrays = [a for _, a in children if a is not None]
        if arrays:
            layers.append((path, arrays, None))
        for c, a in children:
            if a is None and c.node_id not in seen:
                visit(c.node_id, f"{path}/{c.local_name}".lstrip("/"))

    visit(0, "")
    return layers


# ---- reading the file: every malformed part is one line naming it ----------------------------------------
class _Malformed(Exception):
    """A part of the HDF5 file that is not what a Keras weights file holds (turned into one CnnlabError)."""


def _names(attrs, key: str, where: str) -> list[str]:
    """A string-list attribute (``layer_names``, ``weight_names``); absent means none."""
    value = attrs.get(key, [])
    names = np.atleast_1d(value)
    if isinstance(value, (bytes, str)) or not all(isinstance(v, (bytes, str)) for v in names):
        raise _Malformed(f"the {key} attribute of {where} is not a list of names")
    return [_text(v) for v in names]


def _member(group, name: str, listed_in: str):
    """The group ``name`` that ``listed_in`` names."""
    member = group.get(name)
    if member is None or not hasattr(member, "keys"):
        raise _Malformed(f"{listed_in} names {name!r}, but the file has no such group")
    return member


def _numbered(keys, where: str) -> list[str]:
    """A ``vars`` group's variable names in order: Keras 3 numbers them 0, 1, 2 …"""
    keys = list(keys)
    odd = next((k for k in keys if not k.isdigit()), None)
    if odd is not None:
        raise _Malformed(f"variable {odd!r} of {where} is not numbered (Keras names them 0, 1, 2 …)")
    return sorted(keys, key=int)


def _array(group, name: str, where: str) -> np.ndarray:
    """A numeric dataset of ``group``, read whole."""
    dataset = group.get(name)
    if dataset is None or not hasattr(dataset, "dtype") or not hasattr(dataset, "shape"):
        raise _Malformed(f"{where} lists the weight {name!r}, but the file holds no such array")
    if dataset.size > MAX_WEIGHTS:  # compressed, a file of a few MB can declare terabytes
        raise _Malformed(f"the weight {name!r} of {where} holds {dataset.size:,} numbers, more than any layer has")
    value = np.asarray(dataset[()])
    if value.dtype.kind not in "fiu":
        raise _Malformed(f"the weight {name!r} of {where} holds {value.dtype} data, not numbers")
    return value


def _external_link(f) -> str | None:
    """The first link to another file, if any: a weights file must be self-contained."""
    h5py = _h5py()
    found: list[str] = []
    f.visititems_links(lambda name, link: found.append(f"{name} → {link.filename}")
                       if isinstance(link, h5py.ExternalLink) else None)
    return found[0] if found else None


def _read_layers(fh) -> Raw:
    """(layer, arrays) of an open HDF5 file, in either layout."""
    with _h5py().File(fh, "r") as f:
        link = _external_link(f)
        if link:
            raise _Malformed(f"it refers to another file ({link}); only self-contained weights files are read")
        root = f["model_weights"] if "model_weights" in f else f
        return _legacy_layers(root) if "layer_names" in root.attrs else _keras3_layers(f)


def _kind(name: str, arrays: list[np.ndarray]) -> str:
    """Layer kind from its variables' shapes: conv, separable, dense or bn."""
    dims = [a.ndim for a in arrays]
    if dims == [1, 1, 1, 1]:
        return "bn"
    if dims[:2] == [4, 4] and arrays[1].shape[:2] == (1, 1) and len(arrays) <= 3:
        return "separable"
    if dims in ([4], [4, 1]):
        return "conv"
    if dims in ([2], [2, 1]):
        return "dense"
    raise CnnlabError(f"Keras layer {name!r} has weights of shapes {[a.shape for a in arrays]}, "
                      "which match no supported layer (Conv2D, SeparableConv2D, Dense, BatchNormalization)")


def _h5_layers(h5_path: str | os.PathLike) -> Raw:
    """The layers of a Keras HDF5 weights file (Keras 3 or legacy Keras 2) in the file's order.

    Only a regular file is opened (never a FIFO or device); a malformed file is one CnnlabError naming it.
    """
    where = os.fspath(h5_path)
    fix = "pass the file written by Keras' model.save_weights (.weights.h5) or model.save (.h5)"
    try:
        with open_regular(h5_path) as fh:
            return _read_layers(fh)
    except _Malformed as e:
        raise CnnlabError(f"{where} is not a Keras weights file as cnnlab reads them: {e}; {fix}") from None
    except CnnlabError:
        raise
    except Exception as e:  # missing, unreadable, or damage: h5py raises OSError, KeyError, RuntimeError, ValueError …
        reason = e.strerror if isinstance(e, OSError) and e.strerror else first_line(e)
        raise CnnlabError(f"cannot read Keras weights {where!r}: {reason}; {fix}") from None


def read_keras_layers(path: str | os.PathLike) -> list[KerasLayer]:
    """The weighted layers of a Keras weights file or TensorFlow checkpoint, in the file's order, with their kinds."""
    prefix = checkpoint_prefix(path)
    raw = _checkpoint_layers(prefix) if prefix else _h5_layers(path)
    return [KerasLayer(name, _kind(name, arrays), tuple(arrays), keras_name) for name, arrays, keras_name in raw
            if arrays]


def creation_order(layers: list[KerasLayer], kind: str) -> list[KerasLayer]:
    """The layers in the order Keras made them, read off automatic names (``conv2d``, ``conv2d_1``, …).

    The file's order is kept unless every layer has such a name: a name given by hand tells nothing.
    """
    pattern = re.compile(rf"{AUTO_NAMES[kind]}(?:_(\d+))?")
    found = [pattern.fullmatch(k.keras_name or "") for k in layers]
    if not all(found):
        return layers
    return [k for _, k in sorted(zip((int(m.group(1) or 0) for m in found), layers), key=lambda t: t[0])]


def torch_layers(model: nn.Module) -> list[tuple[str, str, nn.Module]]:
    """(name, kind, module) of the model's weighted layers in module order."""
    out, inside = [], set()
    for name, m in model.named_modules():
        if id(m) in inside:
            continue
        if isinstance(m, SeparableConv2d):
            out.append((name, "separable", m))
            inside.update(id(c) for c in m.modules())
        elif isinstance(m, nn.Conv2d):
            out.append((name, "conv", m))
        elif isinstance(m, nn.Linear):
            out.append((name, "dense", m))
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            out.append((name, "bn", m))
    return out


def _flatten_shapes_traced(model: nn.Module, input_size: Chw) -> dict[str, Chw]:
    """C×H×W flattened into each Dense that directly follows a spatial map, from one forward pass."""
    last: list[Chw | None] = [tuple(input_size)]  # a Flatten may come first: the input is the map it flattens
    found: dict[str, Chw] = {}
    names = {id(m): n for n, m in model.named_modules()}

    def record(module, inputs, output):
        if isinstance(output, torch.Tensor) and output.dim() == 4:
            last[0] = tuple(output.shape[1:])

    def before_linear(module, inputs):
        chw = last[0]
        if chw is not None and math.prod(chw) == module.in_features and chw[1] * chw[2] > 1:
            found[names[id(module)]] = chw
        last[0] = None

    leaves = [m for m in model.modules() if not any(True for _ in m.children())]
    handles = [m.register_forward_hook(record) for m in leaves]
    handles += [m.register_forward_pre_hook(before_linear) for m in leaves if isinstance(m, nn.Linear)]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            p = next(model.parameters(), torch.zeros(()))
            model(torch.zeros((1, *input_size), device=p.device, dtype=p.dtype))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return found


def _channels(m: nn.Module) -> int:
    """Output channels of a spatial layer (conv, separable conv or BatchNorm)."""
    if isinstance(m, SeparableConv2d):
        return m.pointwise.out_channels
    return m.out_channels if isinstance(m, nn.Conv2d) else m.num_features


def _flatten_shapes_square(layers: list[tuple[str, str, nn.Module]]) -> dict[str, Chw]:
    """Without an input size: C from the preceding spatial layer, and a square H = W map."""
    found: dict[str, Chw] = {}
    channels = None
    for name, kind, m in layers:
        if kind != "dense":
            channels = _channels(m)
            continue
        if channels and m.in_features != channels and m.in_features % channels == 0:
            side = math.isqrt(m.in_features // channels)
            if side * side * channels != m.in_features:
                raise CnnlabError(f"cannot tell the H×W map flattened into {name!r} ({m.in_features} inputs, "
                                  f"{channels} channels); pass input_size=(C, H, W)")
            found[name] = (channels, side, side)
        channels = None
    return found


def _conv_kernel(k: np.ndarray) -> np.ndarray:
    """Keras conv kernel (kh, kw, in, out) → PyTorch (out, in, kh, kw)."""
    return k.transpose(3, 2, 0, 1)


def _depthwise_kernel(k: np.ndarray) -> np.ndarray:
    """Keras depthwise kernel (kh, kw, C, m) → PyTorch grouped weight (C·m, 1, kh, kw)."""
    kh, kw, c, mult = k.shape
    return k.reshape(kh, kw, c * mult).transpose(2, 0, 1)[:, None]


def _dense_kernel(k: np.ndarray, chw: Chw | None) -> np.ndarray:
    """Keras dense kernel (in, out) → PyTorch (out, in), rows reordered HWC → CHW after a Flatten."""
    if chw is not None and k.shape[0] == math.prod(chw):  # another size: the shape check reports it
        c, h, w = chw
        k = k.reshape(h, w, c, -1).transpose(2, 0, 1, 3).reshape(c * h * w, -1)
    return k.T


Pairs = list[tuple[str, torch.Tensor | None, np.ndarray | None]]


def _bias(m: nn.Module, arrays: tuple[np.ndarray, ...], index: int) -> Pairs:
    return [("bias", m.bias, arrays[index] if len(arrays) > index else None)]


def _conv_pairs(m: nn.Conv2d, arrays: tuple[np.ndarray, ...], chw: Chw | None) -> Pairs:
    return [("kernel", m.weight, _conv_kernel(arrays[0]))] + _bias(m, arrays, 1)


def _separable_pairs(m: SeparableConv2d, arrays: tuple[np.ndarray, ...], chw: Chw | None) -> Pairs:
    return [("depthwise_kernel", m.depthwise.weight, _depthwise_kernel(arrays[0])),
            ("pointwise_kernel", m.pointwise.weight, _conv_kernel(arrays[1]))] + _bias(m.pointwise, arrays, 2)


def _dense_pairs(m: nn.Linear, arrays: tuple[np.ndarray, ...], chw: Chw | None) -> Pairs:
    return [("kernel", m.weight, _dense_kernel(arrays[0], chw))] + _bias(m, arrays, 1)


def _bn_pairs(m: nn.modules.batchnorm._BatchNorm, arrays: tuple[np.ndarray, ...], chw: Chw | None) -> Pairs:
    names = ("gamma", "beta", "moving_mean", "moving_variance")
    targets = (m.weight, m.bias, m.running_mean, m.running_var)
    return list(zip(names, targets, arrays))


_PAIRS: dict[str, Callable[..., Pairs]] = {
    "conv": _conv_pairs, "separable": _separable_pairs, "dense": _dense_pairs, "bn": _bn_pairs,
}


def _check(torch_name: str, keras_name: str, pairs: Pairs) -> None:
    """Raise a one-line CnnlabError where a converted array is missing, extra or of another shape."""
    for what, target, value in pairs:
        if (target is None) != (value is None):
            has, lacks = (f"cnnlab {torch_name!r}", f"Keras {keras_name!r}") if value is None else \
                (f"Keras {keras_name!r}", f"cnnlab {torch_name!r}")
            raise CnnlabError(f"{what}: {has} has one and {lacks} has none (use_bias/affine differ)")
        if target is not None and tuple(target.shape) != value.shape:
            raise CnnlabError(f"{what} of Keras layer {keras_name!r} has shape {value.shape} (converted), "
                              f"cnnlab layer {torch_name!r} expects {tuple(target.shape)}")


def _by_kind(items: list, kind_of: Callable) -> dict[str, list]:
    return {k: [i for i in items if kind_of(i) == k] for k in KINDS}


Plan = list[tuple[str, str, Pairs]]  # (cnnlab layer, Keras layer, converted arrays)


def _plan(layers: list[tuple[str, str, nn.Module]], keras: dict[str, list[KerasLayer]],
          flat: dict[str, Chw]) -> Plan:
    """Pair the k-th cnnlab layer of each kind with the k-th Keras one and convert its arrays, checked."""
    queues = {k: iter(keras[k]) for k in KINDS}
    plan = []
    for name, kind, module in layers:
        k = next(queues[kind])
        pairs = _PAIRS[kind](module, k.arrays, flat.get(name))
        _check(name, k.name, pairs)
        plan.append((name, k.name, pairs))
    return plan


def _orders(found: list[KerasLayer]) -> list[dict[str, list[KerasLayer]]]:
    """Candidate pairings: layers in Keras' creation order, then in the file's order.

    Neither is always the forward order: a functional model's file lists its layers by graph depth
    (an Inception block's four 1x1 convolutions first), and ``Dense(84)(Dense(120)(x))`` creates the 84
    before the 120. Only one fits every shape in the course's networks; the first that fits is taken.
    """
    by_kind = _by_kind(found, lambda k: k.kind)
    created = {kind: creation_order(layers, kind) for kind, layers in by_kind.items()}
    return [created] if created == by_kind else [created, by_kind]


def load_keras_weights(model: nn.Module, h5_path: str | os.PathLike,
                       input_size: Chw | None = None) -> list[tuple[str, str]]:
    """Copy Keras weights (HDF5 or a TensorFlow checkpoint) into ``model``; returns the (cnnlab, Keras) layer pairs.

    ``input_size`` (C, H, W) lets a forward pass find the map flattened into the first Dense; without
    it that map is taken to be square, with C from the layer before the Dense.
    """
    orders = _orders(read_keras_layers(h5_path))
    layers = torch_layers(model)
    ours = _by_kind(layers, lambda t: t[1])
    counts = {k: (len(ours[k]), len(orders[0][k])) for k in KINDS if len(ours[k]) != len(orders[0][k])}
    if counts:
        detail = ", ".join(f"{k}: cnnlab {a} vs Keras {b}" for k, (a, b) in counts.items())
        raise CnnlabError(f"the Keras file does not match the model's layers ({detail})")
    flat = _flatten_shapes_traced(model, input_size) if input_size else _flatten_shapes_square(layers)
    errors = []
    for keras in orders:
        try:
            plan = _plan(layers, keras, flat)
        except CnnlabError as e:
            errors.append(e)
            continue
        with torch.no_grad():
            for _, _, pairs in plan:
                for _, target, value in pairs:
                    if target is not None:
                        target.copy_(torch.from_numpy(np.ascontiguousarray(value)).to(target.dtype))
        return [(name, keras_name) for name, keras_name, _ in plan]
    raise errors[0]

