"""Fit a run into a wall-clock budget: time a training step and an evaluation batch, then choose the epochs.

The whole schedule (learning-rate decay, a recipe's per-group horizons) is a function of the epoch
count, so a shorter budget gives a shorter schedule rather than a truncated one. The chosen count
goes into the run's config.json; resuming reuses it instead of timing again.
"""
from __future__ import annotations

import copy
import math
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..data.loader import TensorLoader, progressive_sides
from ..engine import distributed as D
from ..engine.config import validations_per_epoch
from ..engine.evaluate import forward_passes
from ..engine.fit import Trainer
from ..engine.optim import OptimizerFactory
from ..engine.precision import autocast
from .config import RunConfig

SAFETY = 0.97  # plan for this fraction of the remaining budget (timings on a shared machine wander)
TIMED_STEPS = 2  # training steps timed after the warm-up one; the fastest counts (a step's first runs are slow)


@dataclass(frozen=True)
class Costs:
    """Measured seconds per training step and per evaluated image (one view).

    A recipe whose parameter groups stop training part-way (``horizon`` < 1) has cheaper steps after
    that: ``late_step`` is the cost of one from ``late_from`` (fraction of the run) on.
    """

    train_step: float
    eval_image: float
    late_step: float | None = None
    late_from: float = 1.0

    @property
    def mean_step(self) -> float:
        """Seconds per step averaged over the whole run."""
        late = self.train_step if self.late_step is None else self.late_step
        return self.late_from * self.train_step + (1 - self.late_from) * late


def _seconds(fn: Callable[[], object]) -> float:
    """Wall time of one call of ``fn``."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure_costs(model: nn.Module, train_loader: TensorLoader, val_loader: TensorLoader, cfg: RunConfig,
                  optimizer_factory: OptimizerFactory | None = None) -> Costs:
    """Time training steps (after a warm-up step) and an evaluation batch on a throwaway copy of ``model``.

    The fastest of ``TIMED_STEPS`` steps counts: a single timed step ran 20 % slower than the run's
    steady state (allocator and kernel caches still warming). The run itself is untouched: the copy
    is discarded and the torch RNG state is restored.
    """
    rng = torch.get_rng_state()
    try:
        with tempfile.TemporaryDirectory() as scratch:
            trainer = Trainer(copy.deepcopy(model), train_loader, None, cfg.fit_config(), Path(scratch), progress=False,
                              optimizer_factory=optimizer_factory)
            train_loader.set_epoch(0)
            x, y = next(iter(train_loader))
            trainer.set_lr()
            trainer.train_step(x, y)
            step = min(_seconds(lambda: trainer.train_step(x, y)) for _ in range(TIMED_STEPS))
            late_from = max((h for g in trainer.optimizer.param_groups if (h := g.get("horizon", 1.0)) < 1), default=1.0)
            late = None
            if late_from < 1:  # time a step of the last epoch, where those groups take no gradients
                trainer.seek(cfg.epochs - 1)
                trainer.set_lr()
                late = min(_seconds(lambda: trainer.train_step(x, y)) for _ in range(TIMED_STEPS))
        vx, _ = next(iter(val_loader))
        net = trainer.model.eval()

        @torch.inference_mode()
        def forward() -> None:
            with autocast(vx.device, cfg.precision):
                net(vx)

        forward()
        per_image = _seconds(forward) / len(vx)
    finally:
        torch.set_rng_state(rng)
        train_loader.set_epoch(0)
    return Costs(step, per_image, late, late_from)


def full_size_epochs(epochs: int, full: int, smallest: int) -> float:
    """What ``epochs`` epochs of progressive resizing from side ``smallest`` cost, in epochs at full side ``full``.

    A step's cost follows the pixels: fast-cifar's step at batch 2000 took 0.67 s at 16², 1.45 s at 24² and
    2.0 s at 28² against 2.8 s at 32² (24%, 52%, 71% for areas of 25%, 56%, 77%), so this errs long.
    """
    if not smallest:
        return float(epochs)
    return sum((side / full) ** 2 for side in progressive_sides(epochs, full, smallest))


def plan_epochs(budget_s: float, spent_s: float, costs: Costs, steps_per_epoch: int, val_images: int,
                val_every: int, final_views: float, full: int = 0, smallest: int = 0) -> int:
    """Most epochs (at least 1) whose training, validations and final (augmented) evaluation fit the budget
    (with progressive resizing from side ``smallest`` to ``full`` when ``smallest`` is set)."""
    val_s = val_images * costs.eval_image
    per_epoch_val_s = val_s * validations_per_epoch(val_every)
    room = SAFETY * budget_s - spent_s - final_views * val_s + per_epoch_val_s
    epoch_s = steps_per_epoch * costs.mean_step

    def cost(epochs: int) -> float:
        return epochs * per_epoch_val_s + epoch_s * full_size_epochs(epochs, full, smallest)

    cheapest = per_epoch_val_s + epoch_s * ((smallest / full) ** 2 if smallest else 1.0)  # no epoch costs less
    low, high = 1, max(1, math.floor(room / cheapest))
    while low < high:  # the most epochs whose cost fits the room
        mid = (low + high + 1) // 2
        low, high = (mid, high) if cost(mid) <= room else (low, mid - 1)
    return low


def fit_to_budget(cfg: RunConfig, model: nn.Module, train_loader: TensorLoader, val_loader: TensorLoader,
                  spent_s: float, optimizer_factory: OptimizerFactory | None = None) -> RunConfig:
    """``cfg`` with the epoch count that fits ``cfg.time_budget`` minutes, ``spent_s`` of which are gone."""
    t0 = time.perf_counter()
    costs = measure_costs(model, train_loader, val_loader, cfg, optimizer_factory)
    spent_s += time.perf_counter() - t0  # the timing itself is part of the budget
    epochs = plan_epochs(cfg.time_budget * 60, spent_s, costs, len(train_loader), len(val_loader.images),
                         cfg.val_every, forward_passes(cfg.tta), train_loader.full_side,
                         cfg.progressive_resize)
    if D.is_distributed():  # every process must run the same schedule
        epochs = int(D.all_reduce_sum(torch.tensor([epochs], device=train_loader.device)).item()) // D.world_size()
    if D.is_main():
        late = "" if costs.late_step is None else f" ({costs.late_step:.2f} after {costs.late_from:.0%} of the run)"
        print(f"Time budget {cfg.time_budget:g} min: {costs.train_step:.2f} s/step{late} × {len(train_loader)} steps/epoch, "
              f"{costs.eval_image * 1e3:.2f} ms per evaluated image → {epochs} epochs", file=sys.stderr, flush=True)
    return replace(cfg, epochs=epochs)


def resumed_epochs(cfg: RunConfig, run_dir: Path) -> int | None:
    """The epoch count that a resumable run in ``run_dir`` chose for the same budget, if there is one."""
    if not (run_dir / "last.pt").exists() or not (run_dir / "config.json").exists():
        return None
    saved = RunConfig.load(run_dir / "config.json")
    return saved.epochs if saved.time_budget == cfg.time_budget else None
