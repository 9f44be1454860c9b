"""FitConfig: the settings of the training loop itself — what the engine needs, and nothing about models or data."""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class FitConfig:
    """How to train: epochs, optimizer, learning-rate rule, precision, validation and checkpoint cadence.

    The defaults are the course recipe's (Adam 1e-3, batch 32, 5 epochs); ``RunConfig`` takes them
    from here. The runs layer derives a FitConfig from a ``RunConfig`` (``RunConfig.fit_config()``),
    with ``lr`` resolved to a number (the optimizer's customary default when the run left it unset).
    """

    epochs: int = 5
    batch_size: int = 32  # images per step on all processes together (Muon scales its SGD groups by it)
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    nesterov: bool = True  # SGD's momentum: Nesterov's, or the classical one of He et al. and Keras' default
    weight_decay: float = 0.0
    schedule: str = "constant"
    warmup_epochs: float = 0.0
    decay: float = 0.0  # inverse-time schedule: lr / (1 + decay·step), Keras' optimizer ``decay``
    step_size: float | None = None  # step schedule: epochs between drops by ``gamma``
    gamma: float = 0.1
    decay_rate: float = 0.96  # exponential schedule: lr · decay_rate ** (step / decay_steps)
    decay_steps: int | None = None
    label_smoothing: float = 0.0
    precision: str = "fp32"
    val_every: int = 1  # epochs between validations; 0 = after the last epoch only
    tta: str = "none"  # the final evaluation's test-time augmentation
    progressive_resize: int = 0  # first epoch's image side, rising to full size (data.loader.progressive_size); 0 = off
    lookahead: int = 0  # steps between lookahead blends of the weights into a slow copy (engine.lookahead); 0 = off
    checkpoint_every: int = 0  # steps between mid-epoch checkpoints; 0 = at epoch ends only
    seed: int = 0  # seeds the RNG of processes that a resume adds

    def to_dict(self) -> dict:
        return asdict(self)


def validation_due(epoch: int, epochs: int, val_every: int) -> bool:
    """Whether epoch ``epoch`` (1-based) of ``epochs`` ends with a validation: every ``val_every`` epochs and after
    the last one (``val_every`` 0: after the last one only)."""
    return epoch == epochs or (val_every > 0 and epoch % val_every == 0)


def validations_per_epoch(val_every: int) -> float:
    """The share of epochs that validate before the last (0 when only the last one does)."""
    return 1 / val_every if val_every else 0.0


__all__ = ["FitConfig", "validation_due", "validations_per_epoch"]
