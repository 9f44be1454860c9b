"""Test-time augmentation: the adaptive flip-shift evaluation against the fixed view sets it mixes."""
import pytest
import torch
from torch import nn

from cnnlab.data.loader import TensorLoader
from cnnlab.engine.evaluate import (UNSURE_SHARE, adaptive_logits, evaluate_metrics, forward_passes, least_sure,
                                    view_logits)


def _net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(32, 5)).eval()


def test_least_sure_picks_the_rows_whose_top_two_probabilities_are_closest():
    logits = torch.tensor([[5.0, 0.0, 0.0], [1.0, 0.9, 0.0], [3.0, 0.0, 2.9], [0.0, 4.0, 0.0]])
    assert sorted(least_sure(logits, 0.5).tolist()) == [1, 2]
    assert least_sure(logits, 0.01).tolist() in ([1], [2]) and len(least_sure(logits, 0.26)) == 2  # at least one; ceil


@torch.inference_mode()
def test_adaptive_tta_is_flip_shift_for_the_unsure_quarter_and_the_flip_pair_for_the_rest():
    model, x = _net(), torch.rand(16, 3, 8, 8)
    plain, mixed = adaptive_logits(model, x, "fp32")
    _, flipped = view_logits(model, x, "fp32", "flip")
    _, full = view_logits(model, x, "fp32", "flip-shift")
    unsure = set(least_sure(flipped, UNSURE_SHARE).tolist())
    assert len(unsure) == 4 and torch.allclose(plain, model(x))
    for i in range(16):
        assert torch.allclose(mixed[i], full[i] if i in unsure else flipped[i], atol=1e-6)


@torch.inference_mode()
def test_adaptive_tta_metrics_come_from_the_same_pass_as_the_plain_ones():
    model, y = _net(1), torch.arange(24) % 5
    x = torch.randint(0, 256, (24, 3, 8, 8), dtype=torch.uint8)
    loader = TensorLoader(x, y, 8, shuffle=False)
    adaptive, fixed = evaluate_metrics(model, loader, tta="flip-shift-adaptive"), evaluate_metrics(model, loader, tta="flip")
    assert adaptive["val_accuracy"] == fixed["val_accuracy"] and adaptive["val_loss"] == pytest.approx(fixed["val_loss"])
    assert 0.0 <= adaptive["tta_val_accuracy"] <= 1.0 and adaptive["tta_val_loss"] > 0


def test_forward_passes_count_the_views_each_evaluation_runs():
    assert [forward_passes(t) for t in ("none", "flip", "flip-shift")] == [1.0, 2.0, 6.0]
    assert forward_passes("flip-shift-adaptive") == 2 + 4 * UNSURE_SHARE
