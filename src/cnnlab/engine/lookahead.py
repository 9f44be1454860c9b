"""Lookahead weight averaging (Zhang et al. 2019, as hlb-CIFAR10 and airbench schedule it).

Every ``period`` steps the network's floating-point state (weights and BatchNorm statistics) is blended
into a slow copy, and the network restarts from that copy. The blend keeps ``decay`` of the slow copy,
rising as the cube of the run's progress to ``PER_STEP_DECAY ** period``: early steps move freely, the
last ones are averaged over about ``1 / (1 - PER_STEP_DECAY)`` steps. The last step ends on the average.
"""
from __future__ import annotations

import torch
from torch import nn

PER_STEP_DECAY = 0.95  # the slow copy's weight per step at the end of the run (airbench: 0.95 ** 5 every 5 steps)


def lookahead_decay(step: int, total_steps: int, period: int) -> float:
    """The slow copy's share of the blend after ``step`` of ``total_steps`` steps."""
    return PER_STEP_DECAY ** period * (min(step, total_steps) / total_steps) ** 3


class Lookahead:
    """The slow copy of one network's floating-point state, blended and restored every ``period`` steps."""

    def __init__(self, model: nn.Module, period: int, total_steps: int) -> None:
        if period < 1:
            raise ValueError(f"a lookahead period is at least 1 step (got {period})")
        self.model, self.period, self.total_steps = model, period, total_steps
        self.names = [k for k, v in model.state_dict().items() if v.is_floating_point()]
        self.slow = [t.detach().clone() for t in self._live()]

    def _live(self) -> list[torch.Tensor]:
        """The model's floating-point state as it is now (a ``.to()`` may have replaced the tensors since)."""
        state = self.model.state_dict()
        return [state[k] for k in self.names]

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        """After optimisation step ``step`` (counted from 1): blend and restart when it is due, and at the end."""
        if step % self.period and step < self.total_steps:
            return
        weight = 1.0 - lookahead_decay(step, self.total_steps, self.period)
        for slow, fast in zip(self.slow, self._live()):
            slow.lerp_(fast.to(slow.dtype), weight)
            fast.copy_(slow)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(zip(self.names, self.slow))

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Take a saved slow copy (a checkpoint of the same network)."""
        missing = [k for k in self.names if k not in state]
        if missing:
            raise KeyError(f"the lookahead state lacks {missing[:3]}")
        for name, slow in zip(self.names, self.slow):
            slow.copy_(state[name])


__all__ = ["PER_STEP_DECAY", "Lookahead", "lookahead_decay"]
