"""Optimizers and learning-rate rules: the one home of both.

- ``make_optimizer``: Adam with Keras' epsilon (the course's), AdamW, Nesterov SGD, or Muon.
- Muon (orthogonalised momentum) for convolution filters and Nesterov SGD for the rest, as one
  optimizer: its ``state_dict`` holds both kinds of groups, so checkpoints and resume are unchanged.
  A group's ``orthogonalize`` flag picks the update.
- The learning rate is a pure function of the global step (``lr_factor``), so a resumed run continues
  the same schedule; a group may scale it (``lr_scale``) or stop training part-way (``horizon``, a
  fraction of the run): ``group_lr`` gives a group's rate at a step.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import torch
from torch import nn

from ..errors import CnnlabError
from . import distributed as D
from .config import FitConfig
from .precision import fast_matmul_dtype

OPTIMIZERS = ("adam", "adamw", "sgd", "muon", "adadelta")
SCHEDULES = ("constant", "cosine", "onecycle", "linear", "inverse-time", "step", "exponential")
# The parameter each Keras-style decay cannot do without, and every parameter it reads (FitConfig field names).
SCHEDULE_NEEDS = {"inverse-time": "decay", "step": "step_size", "exponential": "decay_steps"}
SCHEDULE_PARAMS = {"inverse-time": ("decay",), "step": ("step_size", "gamma"), "exponential": ("decay_rate", "decay_steps")}
DEFAULT_LR = {"adam": 1e-3, "adamw": 1e-3, "sgd": 0.01, "muon": 0.05, "adadelta": 1.0}  # when a run leaves lr unset
ADADELTA_EPS = 1e-6  # Zeiler 2012's and Kim 2014's epsilon
OptimizerFactory = Callable[[nn.Module, FitConfig], torch.optim.Optimizer]

# Newton–Schulz quintic whose slope at 0 is large: a few iterations push every singular value of
# the normalised update into roughly [0.7, 1.2], which is all Muon needs.
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NS_STEPS = 3
SGD_MOMENTUM = 0.85  # momentum of the plain-SGD groups (biases, head)
DEFAULT_SGD_LR_PER_SUM = 0.05  # lr of parameters no role names, for the loss summed over a batch


KERAS_ADAM_EPS = 1e-7


class _KerasEpsilon:
    """Adam's epsilon where Keras adds it: to sqrt(v) before the bias correction, with one step count for all.

    Keras: w -= lr·sqrt(1-β2ᵗ)/(1-β1ᵗ) · m / (sqrt(v) + ε); PyTorch: w -= lr/(1-β1ᵗ) · m / (sqrt(v/(1-β2ᵗ)) + ε).
    They agree when PyTorch's ε is ε / sqrt(1-β2ᵗ), set before each step: 32x Keras' ε at the first step,
    which is what moves a weight of a small gradient by less than lr (within 10% of ε after ~2,300 steps).
    """

    def step(self, closure=None):
        for group in self.param_groups:
            if "keras_step" not in group:  # a new optimizer, or state saved before the counter existed
                group["keras_step"] = max((int(self.state[p]["step"]) for p in group["params"]
                                           if "step" in self.state.get(p, {})), default=0)
            group["keras_step"] += 1
            group["eps"] = KERAS_ADAM_EPS / math.sqrt(1 - group["betas"][1] ** group["keras_step"])
        return super().step(closure)


class KerasAdam(_KerasEpsilon, torch.optim.Adam):
    """``torch.optim.Adam`` stepping as Keras' ``Adam`` (the course's ``optimizer='adam'``)."""


class KerasAdamW(_KerasEpsilon, torch.optim.AdamW):
    """``torch.optim.AdamW`` stepping as Keras' ``AdamW``."""


def make_optimizer(model: nn.Module, cfg: FitConfig) -> torch.optim.Optimizer:
    """Adam as Keras steps it (the course's default), AdamW, SGD with Nesterov or classical momentum, or Adadelta (its
    rho is ``cfg.momentum``: the decay of its running averages, 0.95 in Kim 2014).

    Weight decay skips biases and normalisation parameters, as is customary.
    """
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise CnnlabError("the model has no trainable parameters (is everything frozen?)")
    if cfg.optimizer == "muon":
        return make_muon(D.unwrap(model), cfg.lr, cfg.momentum, cfg.batch_size, cfg.weight_decay)
    if cfg.optimizer == "adadelta":
        return Adadelta(groups, lr=cfg.lr, rho=cfg.momentum, eps=ADADELTA_EPS)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)
    # One fused kernel per step on the CPU and CUDA: 2.2x faster than foreach for the course's small
    # networks (lenet5-cifar: 208 vs 485 us per step), a tenth of their whole step.
    fused = all(p.device.type in ("cpu", "cuda") for g in groups for p in g["params"]) or None
    adam = KerasAdamW if cfg.optimizer == "adamw" else KerasAdam
    return adam(groups, lr=cfg.lr, eps=KERAS_ADAM_EPS, fused=fused)


@dataclass(frozen=True)
class Decay:
    """The Keras-style decays' parameters, counted in steps (``decay_of`` converts a FitConfig's epochs)."""

    decay: float = 0.0  # inverse-time: 1 / (1 + decay·t), Keras' optimizer ``decay`` (SGD(decay=1e-3))
    step_size: int = 1  # step: gamma ** floor(t / step_size)
    gamma: float = 0.1
    decay_rate: float = 0.96  # exponential: decay_rate ** (t / decay_steps), Keras' ExponentialDecay
    decay_steps: int = 1


NO_DECAY = Decay()


def missing_schedule_param(schedule: str, values: dict[str, float | None]) -> str | None:
    """The parameter ``schedule`` needs that ``values`` leaves unset (None or 0), else None."""
    need = SCHEDULE_NEEDS.get(schedule)
    return need if need is not None and not values.get(need) else None


def decay_of(cfg: FitConfig, steps_per_epoch: int) -> Decay:
    """A FitConfig's decay parameters in steps (``step_size`` is given in epochs); one clear error when one is missing."""
    missing = missing_schedule_param(cfg.schedule, {name: getattr(cfg, name) for name in SCHEDULE_NEEDS.values()})
    if missing:
        raise CnnlabError(f"the {cfg.schedule} schedule needs {missing} (FitConfig.{missing} is unset)")
    step_size = max(1, round(cfg.step_size * steps_per_epoch)) if cfg.step_size else 1
    return Decay(cfg.decay, step_size, cfg.gamma, cfg.decay_rate, cfg.decay_steps or 1)


def lr_factor(step: int, total: int, schedule: str, warmup: int = 0, decay: Decay = NO_DECAY) -> float:
    """Multiplier of the base learning rate at ``step`` of ``total`` (a pure function: resumable).

    After ``warmup`` steps of linear warm-up: cosine, onecycle and linear run over the rest of the run;
    the Keras-style decays count ``t`` steps from the end of the warm-up, with ``decay``'s parameters.
    """
    if warmup and step < warmup:
        return (step + 1) / warmup
    steps = step - warmup
    if schedule == "inverse-time":
        return 1.0 / (1.0 + decay.decay * steps)
    if schedule == "step":
        return decay.gamma ** (steps // decay.step_size)
    if schedule == "exponential":
        return decay.decay_rate ** (steps / decay.decay_steps)
    t = steps / max(1, total - warmup)
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))
    if schedule == "onecycle":  # linear up for 25%, linear down to ~0 (the 1cycle policy's shape)
        return t / 0.25 if t < 0.25 else max(0.0, (1 - t) / 0.75)
    if schedule == "linear":  # straight down from 1 to 0
        return max(0.0, 1.0 - t)
    return 1.0


def group_lr(group: dict, base_lr: float, step: int, total_steps: int, schedule: str, warmup: int = 0,
             decay: Decay = NO_DECAY) -> float:
    """A param group's learning rate at global ``step``: the schedule until its ``horizon``, 0 after it."""
    total = group_horizon_steps(group, total_steps)
    factor = lr_factor(step, total, schedule, warmup, decay) if step < total else 0.0
    return base_lr * group.get("lr_scale", 1.0) * factor


def group_horizon_steps(group: dict, total_steps: int) -> int:
    """The step from which a group stops training (its ``horizon`` share of the run; the whole run by default)."""
    return round(group.get("horizon", 1.0) * total_steps)


def orthogonalize(g: torch.Tensor, steps: int = NS_STEPS) -> torch.Tensor:
    """An approximately orthogonal matrix with ``g``'s singular vectors (Newton–Schulz; in bf16 where the
    device computes it natively, fp32 elsewhere: emulated bf16 matmuls are over 20× slower on an AVX2 CPU)."""
    a, b, c = NS_COEFFICIENTS
    x = g.to(fast_matmul_dtype(g.device))
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


class Adadelta(torch.optim.Optimizer):
    """Zeiler (2012)'s Adadelta — ``torch.optim.Adadelta``'s update — touching only the rows that change.

    A row whose gradient is zero (an embedding's words absent from the batch) keeps its weights; its two
    running averages only shrink by ``rho``. That shrinking is deferred to the row's next non-zero
    gradient (``rho ** steps skipped`` at once), so a step costs the batch's rows, not the vocabulary's:
    the same weights as the dense update, up to rounding, 10-20x less work for Kim's CNN.
    """

    def __init__(self, params: Iterable, lr: float = 1.0, rho: float = 0.9, eps: float = 1e-6,
                 weight_decay: float = 0.0) -> None:
        super().__init__(params, dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001 (torch's signature)
        """One update of every parameter that has a gradient."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad if not group["weight_decay"] else p.grad.add(p, alpha=group["weight_decay"])
                state = self.state[p]
                if not state:
                    state.update(step=0, square_avg=torch.zeros_like(p), acc_delta=torch.zeros_like(p),
                                 last=torch.zeros(len(p) if p.dim() else 1, dtype=torch.int64, device=p.device))
                state["step"] += 1
                rows = grad.flatten(1).abs().sum(1).nonzero().squeeze(1) if p.dim() > 1 else None
                if rows is None or len(rows) == len(p):
                    _adadelta_rows(p, grad, state["square_avg"], state["acc_delta"], group, None)
                    state["last"].fill_(state["step"])
                    continue
                skipped = state["step"] - 1 - state["last"].index_select(0, rows)
                decay = torch.pow(group["rho"], skipped.to(p.dtype)).view(-1, *([1] * (p.dim() - 1)))
                _adadelta_rows(p, grad, state["square_avg"], state["acc_delta"], group, rows, decay)
                state["last"].index_fill_(0, rows, state["step"])


def _adadelta_rows(p: torch.Tensor, grad: torch.Tensor, square_avg: torch.Tensor, acc_delta: torch.Tensor,
                   group: dict, rows: torch.Tensor | None, decay: torch.Tensor | None = None) -> None:
    """The Adadelta update of all of ``p`` (``rows`` None), or of the given rows after their deferred ``decay``."""
    rho, eps = group["rho"], group["eps"]
    pick = (lambda t: t) if rows is None else (lambda t: t.index_select(0, rows))
    g, sq, acc = pick(grad), pick(square_avg), pick(acc_delta)
    if decay is not None:
        sq.mul_(decay)
        acc.mul_(decay)
    sq.mul_(rho).addcmul_(g, g, value=1 - rho)
    delta = acc.add(eps).sqrt_().div_(sq.add(eps).sqrt_()).mul_(g)
    acc.mul_(rho).addcmul_(delta, delta, value=1 - rho)
    if rows is None:
        p.add_(delta, alpha=-group["lr"])
        return
    square_avg.index_copy_(0, rows, sq)
    acc_delta.index_copy_(0, rows, acc)
    p.index_add_(0, rows, delta, alpha=-group["lr"])


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


__all__ = ["ADADELTA_EPS", "Adadelta", "DEFAULT_LR", "Decay", "OPTIMIZERS", "Muon", "OptimizerFactory", "Role",
           "SCHEDULES", "SCHEDULE_NEEDS", "SCHEDULE_PARAMS", "decay_of", "group_horizon_steps", "group_lr", "lr_factor",
           "make_muon", "make_optimizer", "missing_schedule_param", "muon_groups", "orthogonalize"]
