"""Muon (orthogonalised momentum) for convolution filters and Nesterov SGD for the rest, as one optimizer.

One optimizer object keeps checkpoints and resume unchanged: its ``state_dict`` holds both kinds of
groups. A group's ``orthogonalize`` flag picks the update; ``lr_scale`` and ``horizon`` are read by
the fit loop's learning-rate schedule (see ``fit.Trainer._set_lr``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
from torch import nn

from ..errors import CnnlabError

# Newton–Schulz quintic whose slope at 0 is large: a few iterations push every singular value of
# the normalised update into roughly [0.7, 1.2], which is all Muon needs.
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NS_STEPS = 3
SGD_MOMENTUM = 0.85  # momentum of the plain-SGD groups (biases, head)
DEFAULT_SGD_LR_PER_SUM = 0.05  # lr of parameters no role names, for the loss summed over a batch


def orthogonalize(g: torch.Tensor, steps: int = NS_STEPS) -> torch.Tensor:
    """An approximately orthogonal matrix with ``g``'s singular vectors (Newton–Schulz, in bf16)."""
    a, b, c = NS_COEFFICIENTS
    x = g.to(torch.bfloat16)
    x = x / (x.norm() + 1e-7)
    wide = x.shape[0] <= x.shape[1]
    x = x if wide else x.T
    for _ in range(steps):
        s = x @ x.T
        x = a * x + (b * s + c * s @ s) @ x
    return (x if wide else x.T).to(g.dtype)


class Muon(torch.optim.Optimizer):
    """Groups with ``orthogonalize=True``: Muon (weights kept at norm √fan_out); others: Nesterov SGD + L2."""

    def __init__(self, groups: Iterable[dict], lr: float, momentum: float = 0.6, nesterov: bool = True,
                 weight_decay: float = 0.0) -> None:
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay, orthogonalize=False)
        super().__init__(list(groups), defaults)

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001 (torch's signature)
        """One update of every parameter that has a gradient."""
        for group in self.param_groups:
            mom, lr = group["momentum"], group["lr"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad if group["orthogonalize"] else p.grad.add(p, alpha=group["weight_decay"])
                buf = self.state[p].get("momentum_buffer")
                if buf is None:
                    buf = self.state[p]["momentum_buffer"] = g.clone()
                else:
                    buf.mul_(mom).add_(g)
                d = g.add(buf, alpha=mom) if group["nesterov"] else buf
                if group["orthogonalize"]:
                    p.mul_(len(p) ** 0.5 / p.norm().clamp_min(1e-12))
                    d = orthogonalize(d.reshape(len(d), -1)).view_as(p)
                p.add_(d, alpha=-lr)


@dataclass(frozen=True)
class Role:
    """SGD settings for the parameters whose name starts with ``prefix`` (first matching role wins)."""

    prefix: str
    lr_per_sum: float  # learning rate for the loss summed over a batch (the engine's mean loss × batch size)
    horizon: float = 1.0  # fraction of the run over which this group trains (then its lr is 0)


def muon_groups(model: nn.Module, base_lr: float, batch_size: int, weight_decay: float,
                roles: Sequence[Role] = ()) -> list[dict]:
    """Param groups: trainable conv filters → Muon; every other trainable parameter → SGD by its role.

    ``weight_decay`` is an L2 coefficient at ``base_lr``: each SGD group's coefficient is rescaled so that
    its decay per step (its lr × coefficient) is ``base_lr × weight_decay`` whatever its own lr.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise CnnlabError("the model has no trainable parameters (is everything frozen?)")
    groups = [{"params": [p for _, p in named if p.dim() == 4], "orthogonalize": True, "lr_scale": 1.0}]
    sgd: dict[Role, list[nn.Parameter]] = {}
    fallback = Role("", DEFAULT_SGD_LR_PER_SUM)
    for name, p in named:
        if p.dim() != 4:
            role = next((r for r in roles if name.startswith(r.prefix)), fallback)
            sgd.setdefault(role, []).append(p)
    for role, params in sgd.items():
        lr = role.lr_per_sum * batch_size
        groups.append({"params": params, "orthogonalize": False, "lr_scale": lr / base_lr, "horizon": role.horizon,
                       "momentum": SGD_MOMENTUM, "weight_decay": weight_decay * base_lr / lr})
    return [g for g in groups if g["params"]]


def make_muon(model: nn.Module, lr: float, momentum: float, batch_size: int, weight_decay: float,
              roles: Sequence[Role] = ()) -> Muon:
    """Muon over ``muon_groups``: ``lr`` and ``momentum`` are the filters'; SGD groups carry their own."""
    return Muon(muon_groups(model, lr, batch_size, weight_decay, roles), lr=lr, momentum=momentum)


__all__ = ["Muon", "Role", "make_muon", "muon_groups", "orthogonalize"]
