"""Pictures: training curves, confusion matrix, first-layer filters, feature maps, run comparison.

Figures are drawn on matplotlib's Agg canvas without pyplot (no global state, never a window). Each
picture has a ``*_figure`` builder that returns the matplotlib Figure (a notebook shows it, a user can
restyle it) and a ``plot_*`` function that writes it atomically (temporary file in the same directory,
then rename) and returns the path. Sizes are fixed (``figsize × dpi``, no tight cropping) so callers
can rely on them.
"""
from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.ticker import MaxNLocator
from torch import nn

from ..io import atomic_write_bytes
from ..errors import CnnlabError
from ..layers import SeparableConv2d

History = Mapping[str, Sequence[float | None]]
DPI = 100


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def png_bytes(fig: Figure) -> bytes:
    """``fig`` encoded as PNG."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def save_figure(fig: Figure, path: str | os.PathLike) -> Path:
    """Write ``fig`` as PNG to ``path`` atomically (tmp file + rename) and return the path."""
    path = Path(path)
    atomic_write_bytes(path, png_bytes(fig))
    return path


@dataclass(frozen=True)
class Plot:
    """A drawn picture: the matplotlib ``figure`` and the PNG ``path`` it was saved to (None: not saved).

    A notebook displays it inline; ``os.fspath(plot)`` is the path, so it stands in for one.
    """

    figure: Figure
    path: Path | None = None

    def _repr_png_(self) -> bytes:
        return png_bytes(self.figure)

    def __fspath__(self) -> str:
        if self.path is None:
            raise TypeError("this picture was not saved to a file (pass out=PATH to save it)")
        return os.fspath(self.path)

    def __str__(self) -> str:
        return str(self.path) if self.path is not None else repr(self.figure)


def drawn(fig: Figure, path: str | os.PathLike | None) -> Plot:
    """``fig`` as a Plot, saved to ``path`` first when one is given."""
    return Plot(fig, save_figure(fig, path) if path is not None else None)


def _is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def series(history: History, key: str) -> tuple[list[float], list[float]]:
    """(epochs, values) of one metric, skipping epochs without a value.

    Validation that ran every K epochs is either aligned with ``epoch`` holding None/NaN elsewhere
    (cnnlab's History), listed with its own ``val_epoch`` numbers, or — when shorter and neither —
    taken to have run every ``len(epoch) // len(values)`` epochs, ending at the last one.
    """
    values = list(history.get(key) or [])
    epochs = list(history.get("epoch") or range(1, len(history.get("loss") or values) + 1))
    if key.startswith("val_") and history.get("val_epoch"):
        epochs = list(history["val_epoch"])
    elif values and len(values) < len(epochs):
        step = len(epochs) // len(values)
        epochs = epochs[step - 1::step][-len(values):]
    pairs = [(e, v) for e, v in zip(epochs, values) if not _is_missing(v)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _curves(ax, history: History, metric: str, label: str = "", color: str | None = None) -> None:
    """Training (dashed when overlaying runs) and validation curves of ``metric`` on one axis."""
    for key, name, style in ((metric, "Training", "--" if label else "-"), (f"val_{metric}", "Validation", "-")):
        x, y = series(history, key)
        if y:
            ax.plot(x, y, style, color=color, marker="o" if len(y) < 2 else None,
                    label=f"{label} {name.lower()}".strip() if label else f"{name} {metric.title()}")
    _epoch_axis(ax, metric)


def _epoch_axis(ax, ylabel: str) -> None:
    """Epoch on x with whole-number ticks only, even for a single epoch; a grid."""
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.grid(alpha=0.3)


def history_figure(history: History) -> Figure:
    """The course figure: training/validation accuracy (left) and loss (right) against epoch."""
    fig = _figure(10, 4)
    for i, metric in enumerate(("accuracy", "loss")):
        ax = fig.add_subplot(1, 2, i + 1)
        _curves(ax, history, metric)
        ax.set_title(f"Training and Validation {metric.title()}")
        ax.legend()
    return fig


def plot_history(history: History, path: str | os.PathLike) -> Path:
    """``history_figure`` written to ``path``."""
    return save_figure(history_figure(history), path)


def with_error(history: History) -> dict[str, list[float | None]]:
    """``history`` plus ``error`` and ``val_error``: 1 − accuracy where the accuracy is known."""
    def error(values: Sequence[float | None]) -> list[float | None]:
        return [None if _is_missing(v) else 1.0 - v for v in values]

    return {**history, "error": error(history.get("accuracy") or []),
            "val_error": error(history.get("val_accuracy") or [])}


CURVES = ("accuracy-loss", "error")  # what a comparison figure shows


def check_curves(curves: str) -> str:
    """``curves`` when it names a comparison view, else a one-line error listing them."""
    if curves not in CURVES:
        raise CnnlabError(f"unknown curves {curves!r}: choose one of {', '.join(CURVES)}")
    return curves


def runs_figure(histories: Mapping[str, History], curves: str = "accuracy-loss") -> Figure:
    """Several runs overlaid, one colour each: accuracy and loss (dashed = training, solid = validation),
    or ``curves="error"``: training error and validation error (1 − accuracy), as He et al.'s Fig. 1 and 6."""
    check_curves(curves)
    fig = _figure(12, 5)
    axes = [fig.add_subplot(1, 2, i + 1) for i in range(2)]
    colors = [f"C{i % 10}" for i in range(len(histories))]
    if curves == "error":
        panels = (("error", "Training error (1 - accuracy)"), ("val_error", "Validation error (1 - accuracy)"))
        for (name, history), color in zip(histories.items(), colors):
            for ax, (key, _) in zip(axes, panels):
                x, y = series(with_error(history), key)
                ax.plot(x, y, "--" if key == "error" else "-", color=color, label=name,
                        marker="o" if len(y) < 2 else None)
        for ax, (_, title) in zip(axes, panels):
            _epoch_axis(ax, "error")
            ax.set_title(title)
            ax.legend(fontsize="small")
        return fig
    for (name, history), color in zip(histories.items(), colors):
        for ax, metric in zip(axes, ("accuracy", "loss")):
            _curves(ax, history, metric, label=name, color=color)
    for ax, metric in zip(axes, ("accuracy", "loss")):
        ax.set_title(f"{metric.title()} per run")
        ax.legend(fontsize="small")
    return fig


def plot_runs(histories: Mapping[str, History], path: str | os.PathLike, curves: str = "accuracy-loss") -> Path:
    """``runs_figure`` written to ``path``."""
    return save_figure(runs_figure(histories, curves), path)


def confusion_figure(cm: np.ndarray, classes: Sequence[str], normalize: bool = True) -> Figure:
    """Confusion matrix (rows: true class, columns: predicted), row-normalised by default."""
    cm = np.asarray(cm, dtype=float)
    if normalize:
        cm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    n = len(classes)
    side = max(4.0, 0.5 * n + 2)
    fig = _figure(side, side)
    ax = fig.add_subplot(1, 1, 1)
    top = 1.0 if normalize else max(float(cm.max()), 1.0)
    im = ax.imshow(cm, cmap="Blues", vmin=0, vmax=top)
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set(xticks=range(n), yticks=range(n), xlabel="predicted", ylabel="true",
           title="Confusion matrix" + (" (row-normalised)" if normalize else ""))
    ax.set_xticklabels(classes, rotation=45, ha="right")
    ax.set_yticklabels(classes)
    if n <= 20:
        for (i, j), v in np.ndenumerate(cm):
            ax.text(j, i, f"{v:.2f}" if normalize else f"{int(v)}", ha="center", va="center", fontsize=7,
                    color="white" if v > top / 2 else "black")
    fig.tight_layout()  # long class names ("automobile") and the axis titles stay inside the picture
    return fig


def plot_confusion_matrix(cm: np.ndarray, classes: Sequence[str], path: str | os.PathLike,
                          normalize: bool = True) -> Path:
    """``confusion_figure`` written to ``path``."""
    return save_figure(confusion_figure(cm, classes, normalize), path)


def _normalise(a: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] (a constant array becomes 0.5)."""
    lo, hi = float(a.min()), float(a.max())
    return np.full_like(a, 0.5) if hi - lo < 1e-12 else (a - lo) / (hi - lo)


def _grid(fig: Figure, images: Sequence[np.ndarray], labels: Sequence[str] = (), norm: Normalize | None = None,
          cmap: str = "viridis") -> tuple[list[Axes], AxesImage]:
    """Tiles in a near-square grid without axes, each titled by its label when given; HxW tiles take
    ``cmap`` (on the shared ``norm`` when given), HxWx3 are colour. Returns the axes and the last image."""
    cols = math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / cols)
    axes, im = [], None
    for i, img in enumerate(images):
        ax = fig.add_subplot(rows, cols, i + 1)
        im = ax.imshow(img, cmap=None if img.ndim == 3 else cmap, norm=None if img.ndim == 3 else norm,
                       interpolation="nearest")
        ax.set_axis_off()
        if labels:
            ax.set_title(labels[i], fontsize=7, pad=2)
        axes.append(ax)
    return axes, im


def first_conv(model: nn.Module) -> nn.Conv2d:
    """The first ordinary (non-depthwise) 2-D convolution in module order."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and (m.groups == 1 or m.in_channels == 1):
            return m
    raise CnnlabError(f"{type(model).__name__} has no Conv2d layer whose filters could be drawn")


def filters_figure(model: nn.Module) -> Figure:
    """First conv layer's kernels as a grid: RGB when it reads 3 channels, else the channel mean."""
    conv = first_conv(model)
    w = conv.weight.detach().float().cpu().numpy()
    tiles = [_normalise(k.transpose(1, 2, 0)) if k.shape[0] == 3 else _normalise(k.mean(0)) for k in w]
    fig = _figure(8, 8)
    kh, kw = conv.kernel_size
    _grid(fig, tiles)
    fig.suptitle(f"first conv layer: {len(tiles)} filters of {conv.in_channels}x{kh}x{kw}")
    return fig


def plot_filters(model: nn.Module, path: str | os.PathLike) -> Path:
    """``filters_figure`` written to ``path``."""
    return save_figure(filters_figure(model), path)


def _contains_conv(module: nn.Module) -> bool:
    return any(isinstance(m, (nn.Conv2d, SeparableConv2d)) for m in module.modules())


def _units(model: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """The model's top-level layers, with Sequential/ModuleList containers opened up."""
    out = []
    for name, child in model.named_children():
        full = f"{prefix}{name}"
        if isinstance(child, (nn.Sequential, nn.ModuleList)):
            out += _units(child, f"{full}.")
        else:
            out.append((full, child))
    return out


def block_outputs(model: nn.Module, image: torch.Tensor,
                  forward: Callable[[torch.Tensor], Any] | None = None) -> list[tuple[str, torch.Tensor]]:
    """Output of each conv block: a layer containing a conv plus the non-conv layers after it
    (the course's C-B-A-P-D), taken where the block ends; spatial (4-D) outputs only.
    ``forward`` runs the image when ``model`` is called through something else (a wrapper's forward_features)."""
    units = _units(model) or [("model", model)]
    calls: list[tuple[str, bool, torch.Tensor]] = []

    def hook_for(name: str, conv: bool):
        def hook(module, inputs, output):
            if isinstance(output, torch.Tensor) and output.dim() == 4 and name not in {c[0] for c in calls}:
                calls.append((name, conv, output.detach()))
        return hook

    handles = [m.register_forward_hook(hook_for(n, _contains_conv(m))) for n, m in units]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            (forward or model)(image.unsqueeze(0) if image.dim() == 3 else image[:1])
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    blocks: list[tuple[str, torch.Tensor]] = []
    for name, conv, out in calls:
        if conv or not blocks:
            blocks.append((name, out))
        else:
            blocks[-1] = (blocks[-1][0], out)
    return blocks


def _shared_norm(values: np.ndarray) -> Normalize:
    """One colour scale for every panel of a figure (a constant block gets a unit-wide one)."""
    lo, hi = float(values.min()), float(values.max())
    return Normalize(lo - 0.5, hi + 0.5) if hi - lo < 1e-12 else Normalize(lo, hi)


def feature_maps_figure(name: str, output: torch.Tensor, max_maps: int = 64) -> Figure:
    """The first ``max_maps`` channels of one block's 1×C×H×W output for one image.

    Panels carry their channel index and share one colour scale (the colour bar), so maps compare
    with each other; 1×1 maps (after global pooling, or a network's last stage on a small input)
    are drawn as one bar per channel, since a 1-pixel picture shows nothing but its colour.
    """
    channels, h, w = output.shape[1:]
    maps = output[0, :max_maps].float().cpu().numpy()
    shown = f"{len(maps)} of {channels}" if len(maps) < channels else f"{channels}"
    fig = _figure(8, 8)
    if h == w == 1:
        ax = fig.add_subplot(1, 1, 1)
        ax.bar(np.arange(len(maps)), maps[:, 0, 0], color="C0")
        ax.set(xlabel="channel", ylabel="activation", xlim=(-0.6, len(maps) - 0.4))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.grid(alpha=0.3, axis="y")
        fig.suptitle(f"{name}: 1x1 maps, the value of {shown} channels")
        return fig
    axes, im = _grid(fig, list(maps), [f"ch {i}" for i in range(len(maps))], _shared_norm(maps))
    fig.colorbar(im, ax=axes, shrink=0.8, label="activation")
    fig.suptitle(f"{name}: {shown} maps of {h}x{w}")
    return fig


def plot_feature_maps(model: nn.Module, image: torch.Tensor, out_dir: str | os.PathLike, max_maps: int = 64,
                      forward: Callable[[torch.Tensor], Any] | None = None) -> list[Path]:
    """One ``feature_maps_figure`` PNG per conv block for one C×H×W image, into ``out_dir``."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    paths = []
    for i, (name, out) in enumerate(block_outputs(model, image.to(device), forward)):
        safe = name.replace(".", "_")
        paths.append(save_figure(feature_maps_figure(name, out, max_maps), Path(out_dir) / f"{i + 1:02d}_{safe}.png"))
    return paths


def samples_figure(images: torch.Tensor, labels: Sequence[int], classes: Sequence[str], title: str) -> Figure:
    """uint8 N×C×H×W images in a grid, each titled with its class: the course's ``plt.imshow(x_train[0])``."""
    tiles = [img[0].numpy() if img.shape[0] == 1 else img.permute(1, 2, 0).numpy() for img in images]
    side = max(4.0, 1.3 * math.ceil(math.sqrt(len(tiles))) + 1)
    fig = _figure(side, side)
    _grid(fig, tiles, [str(classes[int(y)]) for y in labels], Normalize(0, 255), cmap="gray")
    fig.suptitle(title)
    return fig
