"""Plots write non-empty PNGs of the expected pixel size, atomically."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from cnnlab import CnnlabError
from cnnlab import layers as L
from cnnlab.explain.plots import (
    block_outputs, plot_confusion_matrix, plot_feature_maps, plot_filters, plot_history, plot_runs, series,
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
