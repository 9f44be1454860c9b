"""The training loss, including networks that return auxiliary logits while training (GoogLeNet's two heads).

The protocol: in training mode such a network returns a tuple ``(main, aux1, aux2, …)`` (a named tuple
such as ``GoogLeNetOutputs``) and declares ``aux_loss_weights``, one weight per auxiliary output; the
loss is ``CE(main) + Σ wᵢ·CE(auxᵢ)`` (the paper's 0.3 each). In eval mode it returns the main logits only.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CnnlabError


def aux_loss_weights(model: nn.Module) -> tuple[float, ...]:
    """The weights a network declares for its auxiliary outputs (none for a plain network)."""
    return tuple(float(w) for w in getattr(model, "aux_loss_weights", ()))


def kernel_penalty(terms: Sequence[tuple[float, torch.Tensor]]) -> torch.Tensor | None:
    """Keras' kernel regularisation loss, Σ factor·Σw² over ``layers.kernel_l2_layers``; None without any."""
    if not terms:
        return None
    return sum(factor * weight.float().square().sum() for factor, weight in terms)


def training_loss(output: torch.Tensor | Sequence[torch.Tensor], y: torch.Tensor, weights: Sequence[float],
                  label_smoothing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, main logits) of a training-mode forward: plain logits, or main + weighted auxiliary logits."""
    if isinstance(output, torch.Tensor):
        return F.cross_entropy(output.float(), y, label_smoothing=label_smoothing), output
    main, *aux = output
    if len(aux) != len(weights):
        raise CnnlabError(f"the network returned {len(aux)} auxiliary outputs in training but declares "
                          f"{len(weights)} aux_loss_weights: give it one weight per auxiliary output")
    loss = F.cross_entropy(main.float(), y, label_smoothing=label_smoothing)
    for w, logits in zip(weights, aux):
        loss = loss + w * F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)
    return loss, main


__all__ = ["aux_loss_weights", "kernel_penalty", "training_loss"]
