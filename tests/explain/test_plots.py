"""Plots write non-empty PNGs of the expected pixel size, atomically, and say what they show."""
from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from cnnlab import CnnlabError
from cnnlab import layers as L
from cnnlab.explain.plots import (
    Plot, block_outputs, drawn, feature_maps_figure, history_figure, plot_confusion_matrix, plot_feature_maps,
    plot_filters, plot_history, plot_runs, runs_figure, samples_figure, series, with_error,
)

HISTORY = {"epoch": [1, 2, 3, 4], "loss": [1.0, 0.8, 0.6, 0.5], "accuracy": [0.3, 0.5, 0.6, 0.7],
           "val_loss": [math.nan, 0.9, math.nan, 0.7], "val_accuracy": [None, 0.45, None, 0.6]}


def size_of(path) -> tuple[int, int]:
    assert path.stat().st_size > 1000
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


def no_temp_files(directory) -> bool:
    return not [p for p in directory.rglob("*") if p.name.startswith(".")]


def cnn() -> nn.Sequential:
    return nn.Sequential(L.Conv2d(3, 8, 3, padding="same"), L.BatchNorm2d(8), nn.ReLU(), L.MaxPool2d(2),
                         nn.Sequential(L.Conv2d(8, 16, 3), nn.ReLU()), L.GlobalPool2d(), nn.Linear(16, 10))


def test_series_skips_epochs_without_validation():
    assert series(HISTORY, "val_loss") == ([2, 4], [0.9, 0.7])
    assert series(HISTORY, "loss") == ([1, 2, 3, 4], [1.0, 0.8, 0.6, 0.5])
    sparse = {"epoch": [1, 2, 3, 4, 5, 6], "loss": [1] * 6, "val_loss": [0.5, 0.4, 0.3]}
    assert series(sparse, "val_loss")[0] == [2, 4, 6]
    assert series({**sparse, "val_epoch": [1, 3, 6]}, "val_loss")[0] == [1, 3, 6]


def test_plot_history(tmp_path):
    out = plot_history(HISTORY, tmp_path / "curves.png")
    assert out == tmp_path / "curves.png" and size_of(out) == (1000, 400)
    assert no_temp_files(tmp_path)


def test_plot_runs(tmp_path):
    out = plot_runs({"a": HISTORY, "b": {"loss": [1, 0.5], "accuracy": [0.2, 0.4]}}, tmp_path / "runs.png")
    assert size_of(out) == (1200, 500)


def test_plot_confusion_matrix(tmp_path):
    cm = np.arange(100).reshape(10, 10)
    assert size_of(plot_confusion_matrix(cm, [f"c{i}" for i in range(10)], tmp_path / "cm.png")) == (700, 700)
    raw = plot_confusion_matrix(cm[:3, :3], ["a", "b", "c"], tmp_path / "sub" / "raw.png", normalize=False)
    assert size_of(raw) == (400, 400)


def test_plot_filters(tmp_path):
    assert size_of(plot_filters(cnn(), tmp_path / "filters.png")) == (800, 800)
    gray = nn.Sequential(nn.Conv2d(1, 4, 5))
    assert size_of(plot_filters(gray, tmp_path / "gray.png")) == (800, 800)
    with pytest.raises(CnnlabError):
        plot_filters(nn.Linear(2, 2), tmp_path / "none.png")


def test_block_outputs_follow_cbapd_blocks():
    blocks = block_outputs(cnn(), torch.rand(3, 16, 16))
    assert [(name, tuple(out.shape)) for name, out in blocks] == [("0", (1, 8, 8, 8)), ("4.0", (1, 16, 6, 6))]


def test_plot_feature_maps(tmp_path):
    paths = plot_feature_maps(cnn(), torch.rand(3, 16, 16), tmp_path / "maps")
    assert [p.name for p in paths] == ["01_0.png", "02_4_0.png"]
    assert all(size_of(p) == (800, 800) for p in paths)
    assert no_temp_files(tmp_path)


def visible_ticks(ax) -> list[float]:
    """The x tick positions matplotlib draws (inside the view limits), after a draw."""
    ax.figure.canvas.draw()
    lo, hi = ax.get_xlim()
    return [t for t in ax.get_xticks() if lo <= t <= hi]


def test_a_one_epoch_run_gets_a_whole_epoch_tick_only():
    one = {"epoch": [1], "loss": [1.0], "accuracy": [0.5], "val_loss": [1.1], "val_accuracy": [0.4]}
    for fig in (runs_figure({"a": one, "b": one}), runs_figure({"a": one}, "error"), history_figure(one)):
        for ax in fig.axes:
            assert visible_ticks(ax) == [1.0]


def test_feature_maps_carry_channel_index_and_one_colour_scale():
    out = torch.arange(2 * 3 * 3, dtype=torch.float32).reshape(1, 2, 3, 3)
    fig = feature_maps_figure("stage1", out)
    panels = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in panels] == ["ch 0", "ch 1"]
    assert {(im.norm.vmin, im.norm.vmax) for ax in panels for im in ax.images} == {(0.0, 17.0)}  # shared scale
    colorbar = [ax for ax in fig.axes if ax.get_ylabel() == "activation"]
    assert len(colorbar) == 1 and fig._suptitle.get_text() == "stage1: 2 maps of 3x3"


def test_the_title_says_how_many_of_the_maps_are_drawn():
    fig = feature_maps_figure("layer4", torch.rand(1, 2048, 4, 4), max_maps=16)
    assert fig._suptitle.get_text() == "layer4: 16 of 2048 maps of 4x4"
    assert len([ax for ax in fig.axes if ax.images]) == 16


def test_one_by_one_maps_are_drawn_as_values_per_channel():
    values = torch.tensor([0.5, -1.0, 2.0, 0.0, 3.0])
    fig = feature_maps_figure("gap", values.reshape(1, 5, 1, 1), max_maps=4)
    (ax,) = fig.axes
    assert not ax.images and [p.get_height() for p in ax.patches] == [0.5, -1.0, 2.0, 0.0]
    assert ax.get_xlabel() == "channel" and fig._suptitle.get_text() == "gap: 1x1 maps, the value of 4 of 5 channels"


def test_error_curves_are_one_minus_accuracy_training_dashed():
    fig = runs_figure({"plain": HISTORY}, "error")
    train_ax, val_ax = fig.axes
    (train,) = train_ax.lines
    assert train.get_linestyle() == "--" and list(train.get_ydata()) == pytest.approx([0.7, 0.5, 0.4, 0.3])
    (val,) = val_ax.lines
    assert list(val.get_xdata()) == [2, 4] and list(val.get_ydata()) == pytest.approx([0.55, 0.4])
    assert with_error(HISTORY)["val_error"][0] is None
    with pytest.raises(CnnlabError, match="unknown curves 'loss'.*accuracy-loss, error"):
        runs_figure({"a": HISTORY}, "loss")


def test_samples_are_titled_with_their_class():
    images = torch.randint(0, 256, (3, 1, 8, 8), dtype=torch.uint8)
    fig = samples_figure(images, [2, 0, 1], ["cat", "dog", "emu"], "pets")
    assert [ax.get_title() for ax in fig.axes] == ["emu", "cat", "dog"]
    rgb = samples_figure(images.repeat(1, 3, 1, 1), [0, 0, 0], ["cat"], "rgb")
    assert rgb.axes[0].images[0].get_array().shape == (8, 8, 3)


def test_a_plot_is_a_figure_a_png_and_a_path(tmp_path):
    saved = drawn(history_figure(HISTORY), tmp_path / "c.png")
    assert os.fspath(saved) == str(tmp_path / "c.png") and size_of(saved.path) == (1000, 400)
    assert saved._repr_png_()[:8] == b"\x89PNG\r\n\x1a\n"
    unsaved = Plot(history_figure(HISTORY))
    with pytest.raises(TypeError, match="not saved"):
        os.fspath(unsaved)
