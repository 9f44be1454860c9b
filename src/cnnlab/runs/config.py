"""RunConfig: every choice of a training run in one typed object, saved as RUN_DIR/config.json.

Each field is declared once, with its option metadata (help, choices, bounds, role): the CLI's
``train``/``compare`` options are generated from it (``cli.add_run_options``) and ``cnnlab.train``
accepts exactly the same names as keywords. A field left unset (``None``) is filled **on
construction**: from the model's recipe when its registry entry names one (``fast-cifar`` → the
``fast`` recipe), else from the course default in the metadata. So ``RunConfig(model="fast-cifar")``
and ``cnnlab train fast-cifar`` are the same run, and no RunConfig can skip its model's recipe.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator

from ..data.loader import AUGMENTS
from ..engine.config import FitConfig
from ..engine.evaluate import TTAS
from ..engine.optim import DEFAULT_LR, OPTIMIZERS, SCHEDULES
from ..engine.precision import PRECISIONS
from ..errors import CnnlabError

FLOAT32_MAX = 3.4028234663852886e38  # a larger learning rate overflows inside the optimizer
MAX_SEED = 2**32 - 1  # numpy's and the loader's seed range
MAX_RESIZE = 4096  # pixels per side: larger images of a whole dataset do not fit in memory
LABEL_MODES = ("fine", "coarse")
FREEZE = ("none", "backbone")
POOLINGS = ("none", "avg", "max")

IDENTITY = "identity"  # defines what a run *is*: resuming with another value would mix two experiments
LENGTH_OR_HARDWARE = "length-or-hardware"  # may differ between a saved run and a re-run that reuses it
SETTING = "setting"


@dataclass(frozen=True)
class Option:
    """How a RunConfig field appears as an option: its course default, type, help, allowed values, role."""

    default: Any
    type: type
    help: str = ""
    choices: tuple[str, ...] | None = None
    low: float | None = None  # inclusive unless low_open
    high: float | None = None  # exclusive unless high_closed
    low_open: bool = False
    high_closed: bool = False
    metavar: str | None = None
    role: str = SETTING
    cli: bool = True  # False: Python only (a dict, say)

    def problem(self, value: Any) -> str | None:
        """What is wrong with ``value`` (None when it is acceptable)."""
        if value is None:
            return None
        if self.choices is not None and value not in self.choices:
            return f"must be one of {', '.join(self.choices)} (got {value!r})"
        if self.type in (int, float):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (self.type is int and value != int(value)):
                return f"must be {'a whole number' if self.type is int else 'a number'} (got {value!r})"
            if not math.isfinite(value) or not self._within(value):
                return f"must be {self.bounds_text()} (got {value})"
        elif not isinstance(value, self.type):
            return f"must be a {self.type.__name__} (got {value!r})"
        return None

    def _within(self, value: float) -> bool:
        low_ok = self.low is None or (value > self.low if self.low_open else value >= self.low)
        high_ok = self.high is None or (value <= self.high if self.high_closed else value < self.high)
        return low_ok and high_ok

    def bounds_text(self) -> str:
        """``>= 0``, ``in [0, 1)``, ``positive and finite in float32`` …"""
        if self.low is not None and self.high is not None and self.high != FLOAT32_MAX:
            return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{']' if self.high_closed else ')'}"
        text = "positive" if self.low == 0 and self.low_open else f">= {self.low:g}" if self.low is not None else ""
        finite = "finite in float32" if self.high == FLOAT32_MAX else "finite"
        return f"{text} and {finite}" if text else finite


def option(default: Any, type_: type, help: str = "", **kw: Any) -> Any:
    """A RunConfig field: unset (None) until construction fills it; its Option in the metadata."""
    return field(default=None, metadata={"option": Option(default, type_, help, **kw)})


@dataclass(frozen=True)
class RunConfig:
    """A training run. The course defaults reproduce the course recipe: Adam, batch 32, 5 epochs, inputs in [0, 1]."""

    model: str = "baseline-cifar"
    dataset: str = option("digits", str, "digits (embedded, no download), cifar10, cifar100, mnist, fashion-mnist, "
                          "or an image folder; for text models mr, sst2, trec, a LABEL-sentence/TSV/CSV file or a "
                          "folder of class folders of .txt files", role=IDENTITY)
    data_dir: str = option(None, str, "where datasets are cached/extracted (default: $CNNLAB_DATA or "
                           "~/.cache/cnnlab/data)", role=LENGTH_OR_HARDWARE)
    epochs: int = option(5, int, "epochs to train", low=1, role=LENGTH_OR_HARDWARE)
    batch_size: int = option(32, int, "images per step (over all processes)", low=1, role=IDENTITY)
    optimizer: str = option("adam", str, "", choices=OPTIMIZERS, role=IDENTITY)
    lr: float = option(None, float, "learning rate (default: adam 1e-3, sgd 0.01, muon 0.05)", low=0, low_open=True,
                       high=FLOAT32_MAX)
    momentum: float = option(0.9, float, "SGD/Muon momentum; Adadelta's rho", low=0, high=1)
    weight_decay: float = option(0.0, float, "L2 weight decay (biases and norms excluded)", low=0)
    schedule: str = option("constant", str, "learning-rate schedule", choices=SCHEDULES)
    warmup_epochs: float = option(0.0, float, "linear warm-up, in epochs", low=0, high=FLOAT32_MAX)
    label_smoothing: float = option(0.0, float, "", low=0, high=1)
    augment: str = option("none", str, "training-time augmentation", choices=AUGMENTS, role=IDENTITY)
    val: str = option("test", str, "'test' (the course's validation_data), 'dev' (the dataset's dev split, else "
                      "a stratified 10%% of train, as Kim 2014) or a fraction of train, e.g. 0.1", role=IDENTITY)
    fold: int = option(None, int, "K-fold cross-validation: fold K of --folds (stratified, fixed) is the test split, "
                       "the other folds are train (see `cnnlab cv`)", low=1, metavar="K", role=IDENTITY)
    folds: int = option(10, int, "number of folds for --fold", low=2, role=IDENTITY)
    val_every: int = option(1, int, "epochs between validations", low=1)
    seed: int = option(0, int, "seeds weights, order and augmentation", low=0, high=MAX_SEED, high_closed=True,
                       role=IDENTITY)
    eval_batch_size: int = option(500, int, "", low=1, role=LENGTH_OR_HARDWARE)
    precision: str = option("fp32", str, "bf16: autocast (fast on CPUs with AMX/AVX512-BF16 and on recent GPUs)",
                            choices=PRECISIONS, role=LENGTH_OR_HARDWARE)
    channels_last: bool = option(False, bool, "NHWC memory layout (faster convolutions with bf16 on CPUs and GPUs)",
                                 role=LENGTH_OR_HARDWARE)
    tta: str = option("none", str, "test-time augmentation of the final evaluation: flips, or flips and "
                      "1-pixel shifts", choices=TTAS)
    time_budget: float = option(None, float, "choose the epochs so that the run (data loading to final accuracy) "
                                "fits MINUTES", low=0, low_open=True, metavar="MINUTES", role=LENGTH_OR_HARDWARE)
    recipe: str = option(None, str, "the named recipe whose defaults and hooks the run takes (default: the "
                         "model's own)", cli=False)
    sync_bn: bool = option(False, bool, "under torchrun on GPUs: BatchNorm statistics over the global batch "
                           "(SyncBatchNorm)", role=LENGTH_OR_HARDWARE)
    checkpoint_every: int = option(0, int, "also save last.pt every STEPS steps inside an epoch (0: at epoch ends)",
                                   low=0, metavar="STEPS", role=LENGTH_OR_HARDWARE)
    limit_train: int = option(None, int, "use only the first N training images", low=1, metavar="N")
    limit_val: int = option(None, int, "use only the first N validation images", low=1, metavar="N")
    device: str = option("auto", str, "auto (CUDA when present), cpu, cuda, cuda:1 …", role=LENGTH_OR_HARDWARE)
    model_kwargs: dict = option(None, dict, "keyword arguments of the model's factory", cli=False, role=IDENTITY)
    rgb: bool = option(False, bool, "repeat a grayscale channel three times (MNIST → RGB)", role=IDENTITY)
    resize: int = option(None, int, "resize images to NxN (e.g. 32 for VGG16 on MNIST)", low=1, high=MAX_RESIZE,
                         high_closed=True, metavar="N", role=IDENTITY)
    label_mode: str = option("fine", str, "CIFAR-100: fine (100 classes) or coarse (20 superclasses)",
                             choices=LABEL_MODES, role=IDENTITY)
    pretrained: str = option(None, str, "start the backbone from torchvision's ImageNet weights (or a weights name "
                             "such as IMAGENET1K_V2, a local .pth state dict, or a cnnlab run directory); implies a "
                             "new head", metavar="imagenet|NAME|PATH", role=IDENTITY)
    freeze: str = option("none", str, "backbone: train only the new head", choices=FREEZE, role=IDENTITY)
    head: str = option(None, str, 'hidden Dense widths of a new head, e.g. "256,64" (Keras include_top=False + '
                       'Dense layers); "" for the classifier only', metavar="W1,W2", role=IDENTITY)
    word_vectors: str = option(None, str, "pretrained word vectors for a text model's embeddings: word2vec binary "
                               "(.bin) or text/GloVe (.txt) file", metavar="PATH", role=IDENTITY)
    pooling: str = option("none", str, "new head's input: none (flatten the feature map), avg or max (global "
                          "pooling)", choices=POOLINGS, role=IDENTITY)

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model:
            raise CnnlabError(f"model must be a registered name or a .cbapd path (got {self.model!r})")
        from .recipes import get_recipe, recipe_of_model

        recipe = get_recipe(self.recipe) if self.recipe else recipe_of_model(self.model)
        defaults = dict(recipe.defaults) if recipe else {}
        for name, opt in option_fields():
            value = getattr(self, name)
            if value is None:
                value = defaults.get(name, opt.default)
            object.__setattr__(self, name, _coerce(value, opt))
        object.__setattr__(self, "recipe", recipe.name if recipe else None)
        self.validate()

    def validate(self) -> "RunConfig":
        """Raise a one-line CnnlabError for the first value that cannot work."""
        for name, opt in option_fields():
            problem = opt.problem(getattr(self, name))
            if problem:
                raise CnnlabError(f"{flag(name)} {problem}")
        self.val_fraction()
        self.head_widths()
        if self.fold is not None and self.fold > self.folds:
            raise CnnlabError(f"--fold {self.fold} is beyond --folds {self.folds}: folds are numbered 1 to {self.folds}")
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
        """The validation fraction carved from train, or None when validating on the test or dev split."""
        if self.val in ("test", "dev"):
            return None
        try:
            frac = float(self.val)
        except ValueError:
            frac = -1.0
        if not 0 < frac < 1:
            raise CnnlabError(f"--val must be 'test', 'dev' or a fraction of the training set in (0, 1), not "
                              f"{self.val!r}")
        return frac

    @property
    def base_lr(self) -> float:
        """The learning rate: the one set, else the optimizer's customary default."""
        return self.lr if self.lr is not None else DEFAULT_LR[self.optimizer]

    def fit_config(self) -> FitConfig:
        """The engine's share of this run: how to train, without the model's name or the dataset."""
        return FitConfig(epochs=self.epochs, batch_size=self.batch_size, optimizer=self.optimizer, lr=self.base_lr,
                         momentum=self.momentum, weight_decay=self.weight_decay, schedule=self.schedule,
                         warmup_epochs=self.warmup_epochs, label_smoothing=self.label_smoothing,
                         precision=self.precision, val_every=self.val_every, tta=self.tta,
                         checkpoint_every=self.checkpoint_every, seed=self.seed)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        """config.json's text."""
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def save(self, path: Path) -> None:
        from ..io import atomic_write_text

        atomic_write_text(path, self.to_json())

    @classmethod
    def load(cls, path: Path) -> "RunConfig":
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as e:
            raise CnnlabError(f"cannot read run configuration {path}: {e}") from None
        if not isinstance(data, dict):
            raise CnnlabError(f"cannot read run configuration {path}: not a JSON object")
        return cls.from_dict(data)

    def identity_mismatch(self, other: "RunConfig") -> list[str]:
        """Names of the identity fields on which two configs differ."""
        return [f for f in fields_with_role(IDENTITY) if getattr(self, f) != getattr(other, f)]

def _coerce(value: Any, opt: Option) -> Any:
    """Accept what Python users naturally pass: a path for a text option, a number for ``val``."""
    if opt.type is str and isinstance(value, os.PathLike):
        return os.fspath(value)
    if opt.type is str and isinstance(value, float):
        return repr(value)
    return value


def option_fields() -> Iterator[tuple[str, Option]]:
    """(name, Option) of every RunConfig field that is an option, in declaration order."""
    for f in fields(RunConfig):
        if "option" in f.metadata:
            yield f.name, f.metadata["option"]


def fields_with_role(role: str) -> tuple[str, ...]:
    """The option fields of one role (``IDENTITY``, ``LENGTH_OR_HARDWARE``); ``model`` is always identity."""
    names = tuple(name for name, opt in option_fields() if opt.role == role)
    return ("model", *names) if role == IDENTITY else names


def cli_options() -> list[tuple[str, Option]]:
    """The fields the CLI offers as ``--long-options``."""
    return [(name, opt) for name, opt in option_fields() if opt.cli]


def flag(name: str) -> str:
    """A field's CLI spelling: ``batch_size`` → ``--batch-size``."""
    return "--" + name.replace("_", "-")


__all__ = ["FREEZE", "IDENTITY", "LABEL_MODES", "LENGTH_OR_HARDWARE", "Option", "POOLINGS", "RunConfig", "cli_options",
           "fields_with_role", "flag", "option_fields"]
