"""RunConfig: every choice of a training run in one typed object, saved as RUN_DIR/config.json."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ..errors import CnnlabError

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "onecycle")
PRECISIONS = ("fp32", "bf16")

# Fields that define what a run *is*: resuming with a different value would mix two experiments.
IDENTITY_FIELDS = ("model", "dataset", "seed", "batch_size", "optimizer", "augment", "val")


@dataclass
class RunConfig:
    """A training run. Defaults reproduce the course recipe: Adam, batch 32, 5 epochs, inputs in [0, 1]."""

    model: str = "baseline-cifar"
    dataset: str = "digits"
    data_dir: str | None = None
    epochs: int = 5
    batch_size: int = 32
    optimizer: str = "adam"
    lr: float | None = None  # None: the optimizer's customary default (adam 1e-3, sgd 0.01)
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "constant"
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    augment: str = "none"
    val: str = "test"  # "test": the dataset's test split (the course's validation_data); or a fraction of train
    val_every: int = 1
    seed: int = 0
    eval_batch_size: int = 500
    precision: str = "fp32"
    channels_last: bool = False
    checkpoint_every: int = 0  # steps between mid-epoch checkpoints; 0 = at epoch ends only
    limit_train: int | None = None  # use only the first N training images (quick checks, tests)
    limit_val: int | None = None
    device: str = "auto"
    model_kwargs: dict | None = None

    def validate(self) -> "RunConfig":
        """Raise a one-line CnnlabError for the first value that cannot work."""
        checks = [
            (self.epochs >= 1, f"--epochs must be at least 1 (got {self.epochs})"),
            (self.batch_size >= 1, f"--batch-size must be at least 1 (got {self.batch_size})"),
            (self.lr is None or self.lr > 0, f"--lr must be positive (got {self.lr})"),
            (self.optimizer in OPTIMIZERS, f"--optimizer must be one of {', '.join(OPTIMIZERS)} (got {self.optimizer!r})"),
            (self.schedule in SCHEDULES, f"--schedule must be one of {', '.join(SCHEDULES)} (got {self.schedule!r})"),
            (self.precision in PRECISIONS, f"--precision must be one of {', '.join(PRECISIONS)} (got {self.precision!r})"),
            (self.val_every >= 1, f"--val-every must be at least 1 (got {self.val_every})"),
            (self.weight_decay >= 0, f"--weight-decay must be >= 0 (got {self.weight_decay})"),
            (0 <= self.label_smoothing < 1, f"--label-smoothing must be in [0, 1) (got {self.label_smoothing})"),
            (self.checkpoint_every >= 0, f"--checkpoint-every must be >= 0 (got {self.checkpoint_every})"),
            (self.eval_batch_size >= 1, f"--eval-batch-size must be at least 1 (got {self.eval_batch_size})"),
        ]
        for ok, message in checks:
            if not ok:
                raise CnnlabError(message)
        self.val_fraction()
        return self

    def val_fraction(self) -> float | None:
        """The validation fraction carved from train, or None when validating on the test split."""
        if self.val == "test":
            return None
        try:
            frac = float(self.val)
        except ValueError:
            frac = -1.0
        if not 0 < frac < 1:
            raise CnnlabError(f"--val must be 'test' or a fraction of the training set in (0, 1), not {self.val!r}")
        return frac

    @property
    def base_lr(self) -> float:
        return self.lr if self.lr is not None else {"adam": 1e-3, "adamw": 1e-3, "sgd": 0.01}[self.optimizer]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def save(self, path: Path) -> None:
        from .checkpoint import atomic_write_bytes

        atomic_write_bytes(path, (json.dumps(self.to_dict(), indent=2) + "\n").encode())

    @classmethod
    def load(cls, path: Path) -> "RunConfig":
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, ValueError) as e:
            raise CnnlabError(f"cannot read run configuration {path}: {e}") from None

    def identity_mismatch(self, other: "RunConfig") -> list[str]:
        """Names of the identity fields on which two configs differ."""
        return [f for f in IDENTITY_FIELDS if getattr(self, f) != getattr(other, f)]
