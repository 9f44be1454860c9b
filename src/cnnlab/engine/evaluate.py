"""Evaluation: loss and accuracy over a loader, all logits of a loader, and test-time augmentation views."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..data.loader import TensorLoader
from ..faults import fault_point
from ..layers import kernel_l2_layers
from . import distributed as D
from .loss import kernel_penalty
from .precision import autocast

TTAS = ("none", "flip", "flip-shift")  # test-time augmentation of the final evaluation


def tta_views(x: torch.Tensor, tta: str = "none") -> list[tuple[float, torch.Tensor]]:
    """(weight, view) pairs of a batch; the first view is the batch itself.

    ``flip``: the image and its mirror. ``flip-shift``: those (weight 1/2), and the mirrored pairs of
    the image shifted one pixel up-left and down-right with reflected borders (1/4 each).
    """
    def mirrored(v: torch.Tensor, weight: float) -> list[tuple[float, torch.Tensor]]:
        return [(weight / 2, v), (weight / 2, v.flip(-1))]

    if tta == "none":
        return [(1.0, x)]
    if tta == "flip":
        return mirrored(x, 1.0)
    h, w = x.shape[-2:]
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    return mirrored(x, 0.5) + mirrored(padded[..., :h, :w], 0.25) + mirrored(padded[..., 2:, 2:], 0.25)


def view_logits(model: nn.Module, x: torch.Tensor, precision: str, tta: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Float logits of the batch itself and the test-time-augmented ones (the same tensor for ``none``)."""
    views = tta_views(x, tta)
    with autocast(x.device, precision):
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


__all__ = ["TTAS", "evaluate", "evaluate_metrics", "predict_logits", "tta_views", "view_logits"]
