"""Pictures: training curves, confusion matrix, first-layer filters, feature maps, run comparison.

Figures are drawn on matplotlib's Agg canvas without pyplot (no global state, never a window) and
written atomically (temporary file in the same directory, then rename); each function returns the
path(s) it wrote. Sizes are fixed (``figsize × dpi``, no tight cropping) so callers can rely on them.
"""
from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
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


def save_figure(fig: Figure, path: str | os.PathLike) -> Path:
    """Write ``fig`` as PNG to ``path`` atomically (tmp file + rename) and return the path."""
    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    atomic_write_bytes(path, buf.getvalue())
    return path


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
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    ax.grid(alpha=0.3)


def plot_history(history: History, path: str | os.PathLike) -> Path:
    """The course figure: training/validation accuracy (left) and loss (right) against epoch."""
    fig = _figure(10, 4)
    for i, metric in enumerate(("accuracy", "loss")):
        ax = fig.add_subplot(1, 2, i + 1)
        _curves(ax, history, metric)
        ax.set_title(f"Training and Validation {metric.title()}")
        ax.legend()
    return save_figure(fig, path)


def plot_runs(histories: Mapping[str, History], path: str | os.PathLike) -> Path:
    """Several runs overlaid (accuracy and loss; dashed = training, solid = validation)."""
    fig = _figure(12, 5)
    axes = [fig.add_subplot(1, 2, i + 1) for i in range(2)]
    colors = [f"C{i % 10}" for i in range(len(histories))]
    for (name, history), color in zip(histories.items(), colors):
        for ax, metric in zip(axes, ("accuracy", "loss")):
            _curves(ax, history, metric, label=name, color=color)
    for ax, metric in zip(axes, ("accuracy", "loss")):
        ax.set_title(f"{metric.title()} per run")
        ax.legend(fontsize="small")
    return save_figure(fig, path)


def plot_confusion_matrix(cm: np.ndarray, classes: Sequence[str], path: str | os.PathLike,
                          normalize: bool = True) -> Path:
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
    return save_figure(fig, path)


def _normalise(a: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] (a constant array becomes 0.5)."""
    lo, hi = float(a.min()), float(a.max())
    return np.full_like(a, 0.5) if hi - lo < 1e-12 else (a - lo) / (hi - lo)


def _grid(fig: Figure, images: Sequence[np.ndarray], title: str) -> None:
    """Tiles in a near-square grid without axes; HxW tiles are grey, HxWx3 are colour."""
    cols = math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / cols)
    for i, img in enumerate(images):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.imshow(img, cmap=None if img.ndim == 3 else "viridis", interpolation="nearest")
        ax.set_axis_off()
    fig.suptitle(title)


def first_conv(model: nn.Module) -> nn.Conv2d:
    """The first ordinary (non-depthwise) 2-D convolution in module order."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and (m.groups == 1 or m.in_channels == 1):
            return m
    raise CnnlabError(f"{type(model).__name__} has no Conv2d layer whose filters could be drawn")


def plot_filters(model: nn.Module, path: str | os.PathLike) -> Path:
    """First conv layer's kernels as a grid: RGB when it reads 3 channels, else the channel mean."""
    conv = first_conv(model)
    w = conv.weight.detach().float().cpu().numpy()
    tiles = [_normalise(k.transpose(1, 2, 0)) if k.shape[0] == 3 else _normalise(k.mean(0)) for k in w]
    fig = _figure(8, 8)
    kh, kw = conv.kernel_size
    _grid(fig, tiles, f"first conv layer: {len(tiles)} filters of {conv.in_channels}x{kh}x{kw}")
    return save_figure(fig, path)


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


def plot_feature_maps(model: nn.Module, image: torch.Tensor, out_dir: str | os.PathLike, max_maps: int = 64,
                      forward: Callable[[torch.Tensor], Any] | None = None) -> list[Path]:
    """One grid PNG per conv block (up to ``max_maps`` channels each) for one C×H×W image."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    paths = []
    for i, (name, out) in enumerate(block_outputs(model, image.to(device), forward)):
        maps = out[0, :max_maps].float().cpu().numpy()
        fig = _figure(8, 8)
        _grid(fig, [_normalise(m) for m in maps], f"{name}: {out.shape[1]} maps of {out.shape[2]}x{out.shape[3]}")
        safe = name.replace(".", "_")
        paths.append(save_figure(fig, Path(out_dir) / f"{i + 1:02d}_{safe}.png"))
    return paths
