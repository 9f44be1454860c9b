"""A Keras-like ``model.summary()`` for PyTorch: shapes, parameters, MACs and receptive field per layer.

One forward pass on zeros (eval mode, no grad) does everything at once:

- forward hooks record each layer's output shape (NCHW, rendered ``(N, C, H, W)``); a block that is
  never called as a whole (a head whose layers a model calls one by one) shows its last layer's output;
- ``torch.utils.flop_counter.FlopCounterMode`` counts FLOPs per module; MACs = FLOPs / 2
  (it counts convolutions and matrix products, as Keras/thop-style MAC counts do; BN, activations
  and pooling count 0). The papers' "FLOPs" (ResNet-50: 3.8 G) are multiply-adds, i.e. MACs; the
  summary names both: ``total_macs`` and ``total_flops`` (= 2 × MACs);
- a ``TorchFunctionMode`` follows every tensor derived from the input and composes its receptive
  field along the path the data really takes (``r_out = r_in + (k - 1)·d·j_in``, ``j_out = j_in·s``
  for every convolution and pooling; the union of the inputs' windows where branches meet, e.g.
  Inception's ``cat`` or ResNet's ``+``). It also keeps where unit (0, 0)'s window starts
  (``start_out = start_in - pad_before·j_in``, padding included, so TF's asymmetric ``same`` pads
  are exact): unit (i, j) sees input rows ``start + i·jump`` … ``+ size - 1``. This is the analytic
  (theoretical) receptive field, exact for branching networks and independent of the weights. Once
  a tensor is flattened or globally pooled the field is the whole input (``all``).
- a sentence network (N×L token ids) is followed the same way along its one axis, in tokens, through
  the embedding (N×L×C), transposes and 1-D convolutions and poolings (``Field.layout``); a data-dependent
  choice of positions (k-max pooling's ``topk``) makes the field the whole sentence.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterator

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode
from torch.utils.weak import WeakTensorKeyDictionary

Shape = tuple[int, ...]
Pair = tuple[int, ...]  # one entry per spatial axis: (h, w) for images, (tokens,) for sentences
WHOLE_INPUT = "all"
CHANNELS_FIRST, CHANNELS_LAST, NO_CHANNELS = "NC*", "N*C", "N*"  # where a tensor's spatial axes are


@dataclass(frozen=True)
class Field:
    """Receptive field size, jump (input positions between neighbouring outputs) and start per spatial axis, and
    the layout of the tensor it belongs to: N×C×H×W or N×C×L (channels first), N×L×C (an embedding's output,
    channels last) or N×L (token ids, no channels)."""

    size: Pair | None  # None: every input position (after flatten / global pooling)
    jump: Pair | None
    start: Pair | None = None  # input position where unit (0, 0)'s window begins (negative: in the padding)
    layout: str = CHANNELS_FIRST


_GLOBAL = Field(None, None)

# Argument names of the windowed ops, to read kernel/stride/dilation however they were passed.
_CONV_ARGS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
_WINDOW_ARGS: dict[str, tuple[str, ...]] = {
    "conv2d": _CONV_ARGS, "conv1d": _CONV_ARGS,
    "max_pool2d": ("input", "kernel_size", "stride", "padding", "dilation"),
    "max_pool1d": ("input", "kernel_size", "stride", "padding", "dilation"),
    "avg_pool2d": ("input", "kernel_size", "stride", "padding"),
    "avg_pool1d": ("input", "kernel_size", "stride", "padding"),
}
_PASS_THROUGH = {"pad", "constant_pad_nd"}
_GLOBAL_POOLS = {"adaptive_avg_pool2d", "adaptive_max_pool2d", "adaptive_avg_pool1d", "adaptive_max_pool1d"}
_TRANSPOSES = {"transpose", "permute", "swapaxes", "swapdims", "movedim"}
_SELECTIONS = {"topk", "sort", "argsort"}  # data-dependent choices of positions: any input position can be picked


def _axes(v: Any, default: Pair, n: int) -> Pair:
    """An int or sequence as an n-tuple (the last n entries); ``None`` or empty gives ``default``."""
    if v is None or (isinstance(v, (tuple, list)) and len(v) == 0):
        return default
    if isinstance(v, int):
        return (v,) * n
    return tuple(int(x) for x in v)[-n:] if len(v) >= n else (int(v[0]),) * n


def _pad_before(padding: Any, k: Pair, d: Pair) -> Pair:
    """Positions an op pads before the input on each axis: PyTorch's ``"same"`` puts the smaller half first."""
    if padding == "same":
        return tuple((ki - 1) * di // 2 for ki, di in zip(k, d))
    zeros = (0,) * len(k)
    return zeros if padding == "valid" else _axes(padding, zeros, len(k))


def _window(name: str, args: tuple, kwargs: dict) -> tuple[Pair, Pair, Pair, Pair] | None:
    """(kernel, stride, dilation, padding before) of a convolution or pooling call, else None."""
    names = _WINDOW_ARGS.get(name)
    if names is None:
        return None
    n = 1 if name.endswith("1d") else 2
    bound = dict(zip(names, args)) | kwargs
    ones = (1,) * n
    k = tuple(bound["weight"].shape[-n:]) if "weight" in names else _axes(bound["kernel_size"], ones, n)
    d = _axes(bound.get("dilation"), ones, n)
    return k, _axes(bound.get("stride"), k, n), d, _pad_before(bound.get("padding"), k, d)


def _compose(f: Field, k: Pair, s: Pair, d: Pair, p: Pair) -> Field:
    """The course's rule: r_out = r_in + (k - 1)·d·j_in, j_out = j_in·s; the window starts p·j_in earlier."""
    size = tuple(r + (ki - 1) * di * j for r, ki, di, j in zip(f.size, k, d, f.jump))
    start = tuple(a - pi * j for a, pi, j in zip(f.start, p, f.jump))
    return Field(size, tuple(j * si for j, si in zip(f.jump, s)), start, f.layout)


def _spatial_dims(f: Field, ndim: int) -> range:
    """The dimensions of an ``ndim``-dimensional tensor that hold field ``f``'s spatial axes, in its layout."""
    first = 2 if f.layout == CHANNELS_FIRST else 1
    return range(first, min(first + len(f.size), ndim))


def _shift(f: Field, pad: Any, ndim: int) -> Field:
    """``F.pad`` of an ``ndim``-dimensional tensor: the field is unchanged, its start moves by the positions padded
    before each spatial axis (``pad`` holds (before, after) pairs from the last dimension backwards)."""
    pad = list(pad)
    before = [pad[2 * (ndim - 1 - dim)] if 2 * (ndim - 1 - dim) < len(pad) else 0 for dim in _spatial_dims(f, ndim)]
    if len(before) != len(f.size):
        return f
    return Field(f.size, f.jump, tuple(a - b * j for a, b, j in zip(f.start, before, f.jump)), f.layout)


def _merge(fields: list[Field]) -> Field:
    """Where paths meet (add, cat, multiply) the output sees the union of the inputs' windows."""
    if any(f.size is None for f in fields) or len({len(f.size) for f in fields}) > 1:
        return _GLOBAL
    n = len(fields[0].size)
    start = tuple(min(f.start[i] for f in fields) for i in range(n))
    end = tuple(max(f.start[i] + f.size[i] for f in fields) for i in range(n))
    return Field(tuple(e - a for a, e in zip(start, end)), tuple(max(f.jump[i] for f in fields) for i in range(n)),
                 start, fields[0].layout)


def _spatial(t: torch.Tensor, f: Field) -> Pair | None:
    """The spatial shape of ``t`` read in field ``f``'s layout; None when ``t`` has no such axes (flattened, pooled)."""
    n = len(f.size)
    if f.layout == NO_CHANNELS:
        return tuple(t.shape[1:]) if t.dim() == n + 1 else None
    if t.dim() != n + 2:
        return None
    return tuple(t.shape[1:-1]) if f.layout == CHANNELS_LAST else tuple(t.shape[2:])


def _with_layout(f: Field, layout: str) -> Field:
    return Field(f.size, f.jump, f.start, layout)


def _relayout(name: str, merged: Field, source: torch.Tensor, out: torch.Tensor) -> Field | None:
    """The field of an op that moves the spatial axes of a sequence (embedding, transpose, unsqueeze), else None."""
    if len(merged.size) != 1 or out.dim() != 3:
        return None
    if name == "embedding" and merged.layout == NO_CHANNELS:
        return _with_layout(merged, CHANNELS_LAST)
    if name == "unsqueeze" and merged.layout == NO_CHANNELS and out.shape[-1] == source.shape[-1]:
        return _with_layout(merged, CHANNELS_FIRST)
    if name in _TRANSPOSES and merged.layout in (CHANNELS_FIRST, CHANNELS_LAST) and source.dim() == 3:
        length = source.shape[1] if merged.layout == CHANNELS_LAST else source.shape[2]
        flipped = CHANNELS_FIRST if merged.layout == CHANNELS_LAST else CHANNELS_LAST
        if (out.shape[2] if flipped == CHANNELS_FIRST else out.shape[1]) == length:
            return _with_layout(merged, flipped)
    return None


def _propagate(name: str, args: tuple, kwargs: dict, inputs: list[tuple[torch.Tensor, Field]],
               out: torch.Tensor) -> Field | None:
    """Field of ``out`` from the op ``name`` and its tracked inputs; None when unknowable."""
    merged = _merge([f for _, f in inputs])
    if merged.size is None or name in _SELECTIONS:
        return _GLOBAL
    moved = _relayout(name, merged, inputs[0][0], out)
    if moved is not None:
        return moved
    out_spatial = _spatial(out, merged)
    if out_spatial is None:
        return _GLOBAL
    window = _window(name, args, kwargs)
    if window is not None:
        return _compose(merged, *window)
    if name in _PASS_THROUGH:
        bound = dict(zip(("input", "pad"), args)) | kwargs
        return _shift(merged, bound["pad"], inputs[0][0].dim()) if len(inputs) == 1 else merged
    if name in _GLOBAL_POOLS and all(v == 1 for v in out_spatial):
        return _GLOBAL
    in_sizes = {_spatial(t, f) for t, f in inputs}
    return merged if in_sizes == {out_spatial} else None


class FieldTracker(TorchFunctionMode):
    """Follows every tensor computed from the input and records its receptive field."""

    def __init__(self, source: torch.Tensor) -> None:
        super().__init__()
        self.fields = WeakTensorKeyDictionary()
        tokens = source.dim() == 2
        n = 1 if tokens else source.dim() - 2
        self.fields[source] = Field((1,) * n, (1,) * n, (0,) * n, NO_CHANNELS if tokens else CHANNELS_FIRST)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = [(t, self.fields[t]) for t in tree_leaves((args, kwargs))
                  if isinstance(t, torch.Tensor) and t in self.fields]
        if inputs:
            name = getattr(func, "__name__", "")
            for t in tree_leaves(out):
                if isinstance(t, torch.Tensor):
                    field = _propagate(name, args, kwargs, inputs, t)
                    if field is not None:
                        self.fields[t] = field
        return out


@dataclass(frozen=True)
class Row:
    """One line of the table: a layer (or a block collapsed at the chosen depth)."""

    name: str
    kind: str
    depth: int
    outputs: tuple[Shape, ...]  # per-sample shapes (batch dimension dropped); () when not called
    params: int
    macs: int  # per image
    receptive_field: Pair | str | None  # (h, w) input pixels, (tokens,) for sentences; "all" once flattened
    jump: Pair | None
    start: Pair | None = None  # input position (row, col; token) where unit (0, 0)'s field begins; None when rf is
    # not a tuple
    layout: str | None = None  # the first output's layout (Field.layout), when its field is known


@dataclass(frozen=True)
class Summary:
    """Per-layer rows and model totals; ``str()`` renders a Keras-like table."""

    model_name: str
    input_size: tuple[int, ...]  # C, H, W; (L,) for token ids
    batch_size: int
    rows: tuple[Row, ...]
    outputs: tuple[Shape, ...]
    total_params: int
    trainable_params: int
    non_trainable_params: int
    bn_moving_stats: int  # BatchNorm running mean + variance elements (Keras counts them)
    total_macs: int  # per image, whole model (includes ops in forward() outside submodules)

    @property
    def keras_total_params(self) -> int:
        """The total Keras prints: parameters plus BN moving mean/variance (non-trainable)."""
        return self.total_params + self.bn_moving_stats

    @property
    def keras_non_trainable_params(self) -> int:
        """Keras' non-trainable count: frozen parameters plus BN moving statistics."""
        return self.non_trainable_params + self.bn_moving_stats

    @property
    def total_flops(self) -> int:
        """Forward floating-point operations per image: 2 per multiply-add (a multiply and an add)."""
        return 2 * self.total_macs

    @property
    def gmacs(self) -> float:
        """Multiply-adds per image in billions: the number the papers call FLOPs (ResNet-50: 3.8-4.1 G)."""
        return self.total_macs / 1e9

    @property
    def gflops(self) -> float:
        """Forward FLOPs per image in billions (2 per MAC): twice the papers' "FLOPs"."""
        return self.total_flops / 1e9

    def __str__(self) -> str:
        return render(self)

    def _repr_html_(self) -> str:
        from .notebook import summary_html

        return summary_html(self)


def _module_depth(name: str) -> int:
    return 0 if not name else name.count(".") + 1


def _shown(model: nn.Module, depth: int | None) -> list[tuple[str, nn.Module]]:
    """Modules that get a row: leaves, or modules at exactly ``depth`` (collapsed) when it is set."""
    rows = []
    for name, module in model.named_modules():
        d = _module_depth(name)
        is_leaf = not any(True for _ in module.children())
        if d == depth or (is_leaf and (depth is None or d <= depth)):
            rows.append((name, module))
    return rows


def _shapes(output: Any, batch_dims: int = 1) -> tuple[Shape, ...]:
    """Per-sample shapes of every tensor in an output (tensor, tuple, dict, namedtuple...)."""
    return tuple(tuple(t.shape[batch_dims:]) for t in tree_leaves(output) if isinstance(t, torch.Tensor))


def _first_tensor(output: Any) -> torch.Tensor | None:
    return next((t for t in tree_leaves(output) if isinstance(t, torch.Tensor)), None)


def _count(tensors: Iterator[torch.Tensor]) -> int:
    return sum(t.numel() for t in tensors)


def _bn_moving_stats(model: nn.Module) -> int:
    """Elements of BatchNorm running mean/variance, which Keras lists as non-trainable weights."""
    return sum(_count(b for b in (m.running_mean, m.running_var) if b is not None)
               for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))


def _field_of(tracker: FieldTracker, output: Any) -> Field | None:
    t = _first_tensor(output)
    return tracker.fields.get(t) if t is not None and t in tracker.fields else None


def _row_field(field: Field | None) -> tuple[Pair | str | None, Pair | None, Pair | None]:
    if field is None:
        return None, None, None
    return (WHOLE_INPUT, None, None) if field.size is None else (field.size, field.jump, field.start)


def _module_macs(flops: dict[str, dict], root: str, name: str, module: nn.Module, batch_size: int) -> int:
    """MACs of one module (all its calls) per image, from FlopCounterMode's per-module table; a module never
    entered itself (its layers called one by one) counts what its children counted."""
    key = f"{root}.{name}" if name else root
    if key in flops:
        return sum(flops[key].values()) // 2 // batch_size
    return sum(_module_macs(flops, root, f"{name}.{child}" if name else child, sub, batch_size)
               for child, sub in module.named_children())


def _record_of(records: dict[str, tuple], name: str) -> tuple:
    """A module's (shapes, field) from its own call, else from the last call of a module inside it."""
    if name in records:
        return records[name][1:]
    inside = [r for n, r in records.items() if not name or n.startswith(name + ".")]
    return max(inside, key=lambda r: r[0])[1:] if inside else ((), None)


def _device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    p = next(iter(model.parameters()), None)
    return (p.device, p.dtype) if p is not None and p.dtype.is_floating_point else (torch.device("cpu"), torch.float32)


def example_batch(input_size: tuple[int, ...], batch_size: int, device: torch.device,
                  dtype: torch.dtype) -> torch.Tensor:
    """Zeros of a C×H×W input; for an (L,) input, L token ids of an unknown word (1), a sentence filling the length."""
    if len(input_size) == 1:
        return torch.ones((batch_size, *input_size), device=device, dtype=torch.int64)
    return torch.zeros((batch_size, *input_size), device=device, dtype=dtype)


def summarize(model: nn.Module, input_size: tuple[int, ...], batch_size: int = 1,
              depth: int | None = None) -> Summary:
    """Summarize ``model`` on a C×H×W input (or (L,) token ids): one row per leaf layer, or per block at ``depth``."""
    shown = _shown(model, depth)
    records: dict[str, Any] = {}
    device, dtype = _device_dtype(model)
    x = example_batch(tuple(input_size), batch_size, device, dtype)

    def hook_for(name: str):
        def hook(module, inputs, output):
            records.setdefault(name, (len(records), _shapes(output), _field_of(tracker, output)))
        return hook

    handles = [m.register_forward_hook(hook_for(n)) for n, m in model.named_modules()]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter, FieldTracker(x) as tracker:
            out = model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    flops = counter.get_flop_counts()
    root = type(model).__name__
    rows = []
    for name, module in shown:
        outputs, field = _record_of(records, name)
        rf, jump, start = _row_field(field)
        rows.append(Row(name or root, type(module).__name__, _module_depth(name), outputs, _count(module.parameters()),
                        _module_macs(flops, root, name, module, batch_size), rf, jump, start,
                        None if field is None else field.layout))
    params = list(model.parameters())
    trainable = _count(p for p in params if p.requires_grad)
    return Summary(root, tuple(input_size), batch_size, tuple(rows), _shapes(out), _count(iter(params)),
                   trainable, _count(iter(params)) - trainable, _bn_moving_stats(model),
                   counter.get_total_flops() // 2 // batch_size)


def input_window(row: Row, unit: Pair) -> tuple[Pair, Pair] | None:
    """(first, last) input row and (first, last) input column that unit (i, j) of ``row``'s output sees; for a
    sentence network (first, last) token of unit (t,).

    Unclipped: a window reaching into the padding has a negative first or a last beyond the image.
    None when the field is unknown or the whole input.
    """
    if not isinstance(row.receptive_field, tuple) or row.start is None:
        return None
    first = [a + u * j for a, u, j in zip(row.start, unit, row.jump)]
    return tuple((f, f + r - 1) for f, r in zip(first, row.receptive_field))


def format_shape(shape: Shape) -> str:
    """``(N, 6, 16, 16)``: PyTorch's NCHW order with the batch dimension written N."""
    return "(" + ", ".join(["N", *map(str, shape)]) + ")"


def format_sequence_shape(shape: Shape, layout: str | None) -> str:
    """``(N, 58 tokens, 100 ch)``: a sequence layer's output in tokens × channels, whichever order it is stored in."""
    if len(shape) != 2 or layout not in (CHANNELS_FIRST, CHANNELS_LAST):
        return format_shape(shape)
    channels, tokens = shape if layout == CHANNELS_FIRST else shape[::-1]
    return f"(N, {tokens} tokens, {channels} ch)"


def _format_outputs(outputs: tuple[Shape, ...], layout: str | None = None, tokens: bool = False) -> str:
    if not outputs:
        return "-"
    return ", ".join(format_sequence_shape(s, layout) if tokens else format_shape(s) for s in outputs)


def _format_pair(p: Pair | str | None) -> str:
    if p is None:
        return "?"
    if isinstance(p, str):
        return p
    return str(p[0]) if len(set(p)) == 1 else "x".join(map(str, p))


def _table_lines(s: Summary) -> list[list[str]]:
    head = ["Layer (type)", "Output Shape", "Param #", "MACs", "RF", "Jump"]
    top = min((r.depth for r in s.rows), default=0)
    tokens = len(s.input_size) == 1
    body = [[f"{'  ' * (r.depth - top)}{r.name} ({r.kind})", _format_outputs(r.outputs, r.layout, tokens),
             f"{r.params:,}", f"{r.macs:,}", _format_pair(r.receptive_field),
             "-" if r.jump is None else _format_pair(r.jump)] for r in s.rows]
    return [head, *body]


def format_input(s: Summary) -> str:
    """``(N, 3, 32, 32)``, or ``(N, 64) token ids``."""
    return f"(N, {s.input_size[0]}) token ids" if len(s.input_size) == 1 else format_shape(s.input_size)


def input_units(s: Summary) -> tuple[str, str]:
    """What the receptive field counts and what one input is: (pixels, image), or (tokens, sentence)."""
    return ("tokens", "sentence") if len(s.input_size) == 1 else ("pixels", "image")


def _input_line(s: Summary) -> str:
    """``Input: (N, 3, 32, 32)``, or ``Input: (N, 64) token ids``."""
    return f"Input: {format_input(s)}   Output: {_format_outputs(s.outputs)}"


def render(s: Summary) -> str:
    """The Keras-like text table with totals underneath."""
    lines = _table_lines(s)
    widths = [max(len(row[i]) for row in lines) for i in range(len(lines[0]))]

    def fmt(row: list[str]) -> str:
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))

    rule = "=" * len(fmt(lines[0]))
    table = [f'Model: "{s.model_name}"', rule, fmt(lines[0]), rule, *map(fmt, lines[1:]), rule]
    unit = input_units(s)
    totals = [
        _input_line(s),
        f"Total params: {s.total_params:,}",
        f"Trainable params: {s.trainable_params:,}",
        f"Non-trainable params: {s.non_trainable_params:,}",
        f"Keras total params: {s.keras_total_params:,} (adds {s.bn_moving_stats:,} BatchNorm moving "
        f"mean/variance values, non-trainable in Keras: {s.keras_non_trainable_params:,})",
        f"MACs per {unit[1]}: {s.total_macs:,} = {s.gmacs:.4g} G multiply-adds (what the papers call FLOPs)",
        f"FLOPs per {unit[1]} (2×MACs): {s.total_flops:,} = {s.gflops:.4g} G",
        f"RF: receptive field in input {unit[0]} (all = whole {unit[1]}); Jump: input {unit[0]} between outputs.",
    ]
    return "\n".join(table + totals)


def summary_to_dict(s: Summary) -> dict[str, Any]:
    """JSON-ready dict of a summary (shapes per sample, batch dimension dropped)."""
    d = asdict(s)
    d.update(keras_total_params=s.keras_total_params, keras_non_trainable_params=s.keras_non_trainable_params,
             total_flops=s.total_flops, gmacs=s.gmacs, gflops=s.gflops)
    return d
