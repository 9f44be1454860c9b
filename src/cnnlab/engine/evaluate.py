"""Evaluation: loss and accuracy over a loader, all logits of a loader, and test-time augmentation views."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..data.loader import TensorLoader
from ..faults import fault_point
from ..layers import kernel_l2_layers
from . import distributed as D
from .loss import kernel_penalty
from .precision import autocast

TTAS = ("none", "flip", "flip-shift", "flip-shift-adaptive")  # test-time augmentation of the final evaluation
# flip-shift-adaptive: share of each batch (the images the flip pair is least sure of) that also gets the shifted
# pairs. On a trained fast-cifar run even 10% gave all 10,000 held-out predictions of flip-shift (performance.md §0h).
UNSURE_SHARE = 0.25


def tta_views(x: torch.Tensor, tta: str = "none") -> list[tuple[float, torch.Tensor]]:
    """(weight, view) pairs of a batch; the first view is the batch itself.

    ``flip``: the image and its mirror. ``flip-shift``: those (weight 1/2), and the mirrored pairs of
    the image shifted one pixel up-left and down-right with reflected borders (1/4 each).
    (``flip-shift-adaptive`` chooses per image, see :func:`adaptive_logits`.)
    """
    if tta == "none":
        return [(1.0, x)]
    if tta == "flip":
        return mirrored(x, 1.0)
    return mirrored(x, 0.5) + shifted_pairs(x, 0.5)


def mirrored(x: torch.Tensor, weight: float) -> list[tuple[float, torch.Tensor]]:
    """The batch and its mirror, ``weight / 2`` each."""
    return [(weight / 2, x), (weight / 2, x.flip(-1))]


def shifted_pairs(x: torch.Tensor, weight: float) -> list[tuple[float, torch.Tensor]]:
    """The mirrored pairs of the batch shifted one pixel up-left and down-right (reflected borders), ``weight / 4`` each."""
    h, w = x.shape[-2:]
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    return mirrored(padded[..., :h, :w], weight / 2) + mirrored(padded[..., 2:, 2:], weight / 2)


def least_sure(logits: torch.Tensor, share: float) -> torch.Tensor:
    """Indices of the ``share`` of rows (at least one) whose top two softmax probabilities are closest."""
    top2 = logits.softmax(1).topk(min(2, logits.shape[1]), 1).values
    gap = top2[:, 0] - top2[:, -1]
    return gap.argsort()[:max(1, math.ceil(share * len(logits)))]


def adaptive_logits(model: nn.Module, x: torch.Tensor, precision: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``flip-shift`` logits for the least sure ``UNSURE_SHARE`` of the batch, the flip pair's for the rest.

    The shifted pairs weigh half of flip-shift's average, so they overturn a prediction mostly where the flip
    pair's top two are close; the confident rest skips two thirds of the forward passes (half flip-shift's cost).
    """
    plain, flipped = view_logits(model, x, precision, "flip")
    unsure = least_sure(flipped, UNSURE_SHARE)
    _, shifted = weighted_logits(model, shifted_pairs(x[unsure], 0.5), precision)
    mixed = flipped.clone()
    mixed[unsure] = 0.5 * flipped[unsure] + shifted
    return plain, mixed


def forward_passes(tta: str) -> float:
    """Forward passes per image that an evaluation with ``tta`` costs (for time budgets)."""
    probe = torch.zeros(1, 1, 3, 3)
    if tta == "flip-shift-adaptive":
        return len(mirrored(probe, 1.0)) + UNSURE_SHARE * len(shifted_pairs(probe, 1.0))
    return float(len(tta_views(probe, tta)))


def view_logits(model: nn.Module, x: torch.Tensor, precision: str, tta: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Float logits of the batch itself and the test-time-augmented ones (the same tensor for ``none``)."""
    if tta == "flip-shift-adaptive":
        return adaptive_logits(model, x, precision)
    return weighted_logits(model, tta_views(x, tta), precision)


def weighted_logits(model: nn.Module, views: list[tuple[float, torch.Tensor]],
                    precision: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Float logits of the first view and the views' weighted sum (the same tensor for a single view)."""
    with autocast(views[0][1].device, precision):
        outs = [model(v).float() for _, v in views]
    return outs[0], outs[0] if len(outs) == 1 else sum(w * o for (w, _), o in zip(views, outs))


@torch.inference_mode()
def predict_logits(model: nn.Module, loader: TensorLoader, precision: str = "fp32",
                   tta: str = "none") -> tuple[torch.Tensor, torch.Tensor]:
    """All logits (test-time augmented when ``tta`` says) and labels of a loader, in eval mode (float32 on CPU)."""
    was_training = model.training
    model.eval()
    outs, ys = [], []
    for x, y in loader:
        outs.append(view_logits(model, x, precision, tta)[1].cpu())
        ys.append(y.cpu())
    model.train(was_training)
    return torch.cat(outs), torch.cat(ys)


@torch.inference_mode()
def evaluate_metrics(model: nn.Module, loader: TensorLoader, precision: str = "fp32",
                     tta: str = "none") -> dict[str, float]:
    """``val_loss``/``val_accuracy``, and ``tta_val_loss``/``tta_val_accuracy`` unless ``tta`` is none, in one pass.

    The losses include a ``Dense(…, l2)`` layer's kernel regularisation, as Keras' ``val_loss`` does.

    Summed across ranks when distributed.
    """
    was_training = model.training
    model.eval()
    sums = torch.zeros(5, dtype=torch.float64, device=loader.device)
    for x, y in loader:
        plain, augmented = view_logits(model, x, precision, tta)
        sums += torch.stack([F.cross_entropy(plain, y, reduction="sum"), (plain.argmax(1) == y).sum(),
                             F.cross_entropy(augmented, y, reduction="sum"), (augmented.argmax(1) == y).sum(),
                             torch.tensor(len(y), device=y.device)]).double()
        fault_point("val")
    model.train(was_training)
    totals = D.all_reduce_sum(sums).tolist()
    loss, correct, tta_loss, tta_correct = (v / max(totals[4], 1) for v in totals[:4])
    penalty = kernel_penalty(kernel_l2_layers(model))  # Keras' val_loss holds the kernel regularisation too
    if penalty is not None:
        loss, tta_loss = loss + penalty.item(), tta_loss + penalty.item()
    metrics = {"val_loss": loss, "val_accuracy": correct}
    return metrics if tta == "none" else {**metrics, "tta_val_loss": tta_loss, "tta_val_accuracy": tta_correct}


def evaluate(model: nn.Module, loader: TensorLoader, precision: str = "fp32", tta: str = "none") -> tuple[float, float]:
    """Mean cross-entropy and accuracy over a loader, test-time augmented when ``tta`` says."""
    m = evaluate_metrics(model, loader, precision, tta)
    prefix = "" if tta == "none" else "tta_"
    return m[prefix + "val_loss"], m[prefix + "val_accuracy"]


__all__ = ["TTAS", "UNSURE_SHARE", "adaptive_logits", "evaluate", "evaluate_metrics", "forward_passes", "least_sure",
           "mirrored", "predict_logits", "shifted_pairs", "tta_views", "view_logits",
           "weighted_logits"]
