"""RunConfig: every choice of a training run in one typed object, saved as RUN_DIR/config.json."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from ..errors import CnnlabError

if TYPE_CHECKING:
    from .recipes import Recipe

OPTIMIZERS = ("adam", "adamw", "sgd", "muon")
SCHEDULES = ("constant", "cosine", "onecycle", "linear")
PRECISIONS = ("fp32", "bf16")
FLOAT32_MAX = 3.4028234663852886e38  # a larger learning rate overflows inside the optimizer
TTAS = ("none", "flip", "flip-shift")  # test-time augmentation of the final evaluation
LABEL_MODES = ("fine", "coarse")
FREEZE = ("none", "backbone")
POOLINGS = ("none", "avg", "max")

# Fields that define what a run *is*: resuming with a different value would mix two experiments.
IDENTITY_FIELDS = ("model", "dataset", "seed", "batch_size", "optimizer", "augment", "val", "rgb", "resize",
                   "label_mode", "pretrained", "freeze", "head", "pooling")


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
    tta: str = "none"  # final evaluation averages logits over views: none, flip, flip-shift (flips × 1-pixel shifts)
    time_budget: float | None = None  # minutes from start to final accuracy: the epochs are chosen to fit
    recipe: str | None = None  # the named recipe (engine/recipes.py) whose defaults and hooks this run took
    sync_bn: bool = False  # under torchrun on GPUs: BatchNorm statistics over the global batch (SyncBatchNorm)
    checkpoint_every: int = 0  # steps between mid-epoch checkpoints; 0 = at epoch ends only
    limit_train: int | None = None  # use only the first N training images (quick checks, tests)
    limit_val: int | None = None
    device: str = "auto"
    model_kwargs: dict | None = None
    rgb: bool = False  # repeat a grayscale channel three times (the course's MNIST → RGB for VGG16)
    resize: int | None = None  # resize images to resize×resize pixels
    label_mode: str = "fine"  # CIFAR-100: fine (100 classes) or coarse (20 superclasses)
    pretrained: str | None = None  # "imagenet", a torchvision weights name, or a local .pth state dict
    freeze: str = "none"  # "backbone": train only the new head (Keras layer.trainable = False)
    head: str | None = None  # hidden Dense widths of a new head, e.g. "256,64" (Keras include_top=False)
    pooling: str = "none"  # feature map → new head: none (flatten), avg or max (Keras pooling=)

    def validate(self) -> "RunConfig":
        """Raise a one-line CnnlabError for the first value that cannot work."""
        checks = [
            (self.epochs >= 1, f"--epochs must be at least 1 (got {self.epochs})"),
            (self.batch_size >= 1, f"--batch-size must be at least 1 (got {self.batch_size})"),
            (self.lr is None or 0 < self.lr < FLOAT32_MAX, f"--lr must be positive and finite in float32 (got {self.lr})"),
            (self.optimizer in OPTIMIZERS, f"--optimizer must be one of {', '.join(OPTIMIZERS)} (got {self.optimizer!r})"),
            (self.schedule in SCHEDULES, f"--schedule must be one of {', '.join(SCHEDULES)} (got {self.schedule!r})"),
            (self.precision in PRECISIONS, f"--precision must be one of {', '.join(PRECISIONS)} (got {self.precision!r})"),
            (self.val_every >= 1, f"--val-every must be at least 1 (got {self.val_every})"),
            (self.weight_decay >= 0, f"--weight-decay must be >= 0 (got {self.weight_decay})"),
            (0 <= self.momentum < 1, f"--momentum must be in [0, 1) (got {self.momentum})"),
            (0 <= self.warmup_epochs < FLOAT32_MAX, f"--warmup-epochs must be >= 0 (got {self.warmup_epochs})"),
            (0 <= self.label_smoothing < 1, f"--label-smoothing must be in [0, 1) (got {self.label_smoothing})"),
            (self.checkpoint_every >= 0, f"--checkpoint-every must be >= 0 (got {self.checkpoint_every})"),
            (self.eval_batch_size >= 1, f"--eval-batch-size must be at least 1 (got {self.eval_batch_size})"),
            (self.tta in TTAS, f"--tta must be one of {', '.join(TTAS)} (got {self.tta!r})"),
            (self.time_budget is None or self.time_budget > 0, f"--time-budget must be positive (got {self.time_budget})"),
            (self.resize is None or self.resize >= 1, f"--resize must be at least 1 (got {self.resize})"),
            (self.label_mode in LABEL_MODES, f"--label-mode must be one of {', '.join(LABEL_MODES)} (got {self.label_mode!r})"),
            (self.freeze in FREEZE, f"--freeze must be one of {', '.join(FREEZE)} (got {self.freeze!r})"),
            (self.pooling in POOLINGS, f"--pooling must be one of {', '.join(POOLINGS)} (got {self.pooling!r})"),
        ]
        for ok, message in checks:
            if not ok:
                raise CnnlabError(message)
        self.val_fraction()
        self.head_widths()
        return self

    @property
    def transfer(self) -> bool:
        """True when the network is a backbone under a new head (any transfer option set)."""
        return bool(self.pretrained or self.head is not None or self.freeze != "none" or self.pooling != "none")

    def head_widths(self) -> list[int]:
        """The new head's hidden Dense widths: "256,64" → [256, 64]; "" or None → []."""
        from ..models.transfer import parse_head

        return parse_head(self.head or "")

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
        return self.lr if self.lr is not None else {"adam": 1e-3, "adamw": 1e-3, "sgd": 0.01, "muon": 0.05}[self.optimizer]

    def apply_recipe(self, recipe: "Recipe", explicit: Iterable[str] = ()) -> "RunConfig":
        """A copy that takes ``recipe``'s defaults for every field not named in ``explicit`` (what the user set)."""
        given = set(explicit)
        return replace(self, recipe=recipe.name, **{k: v for k, v in recipe.defaults.items() if k not in given})

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
