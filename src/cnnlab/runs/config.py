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

from ..data.files import open_regular
from ..data.loader import AUGMENTS
from ..engine.config import FitConfig
from ..engine.evaluate import TTAS
from ..engine.optim import DEFAULT_LR, OPTIMIZERS, SCHEDULE_NEEDS, SCHEDULE_PARAMS, SCHEDULES, missing_schedule_param
from ..engine.precision import PRECISIONS
from ..errors import CnnlabError, first_line

FLOAT32_MAX = 3.4028234663852886e38  # a larger learning rate overflows inside the optimizer
MAX_SEED = 2**32 - 1  # numpy's and the loader's seed range
MAX_RESIZE = 4096  # pixels per side: larger images of a whole dataset do not fit in memory
LABEL_MODES = ("fine", "coarse")
FREEZE = ("none", "backbone")
POOLINGS = ("none", "avg", "max")
MONITORS = ("val_loss", "val_accuracy", "loss", "accuracy")

ENGINE = FitConfig()  # the loop's own defaults are the course recipe's: declared once, in engine/config.py
IDENTITY = "identity"  # defines what a run *is*: resuming with another value would mix two experiments
LENGTH_OR_HARDWARE = "length-or-hardware"  # may differ between a saved run and a re-run that reuses it
SETTING = "setting"
PREDATED = {"progressive_resize": 0, "lookahead": 0}  # fields added after runs were saved, with the value those runs trained with


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
    cli: bool = True  # False: Python only
    nargs: str | None = None  # "?": the flag may stand alone, meaning ``const``
    const: Any = None
    flag: str | None = None  # the CLI spelling when it is not --field-name (a dict field is a repeatable KEY=VALUE)

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
        """``>= 0``, ``in [0, 1)``, ``in [0, 4294967295]``, ``positive and finite in float32`` …"""
        if self.low is not None and self.high is not None and self.high != FLOAT32_MAX:
            return (f"in {'(' if self.low_open else '['}{_bound(self.low)}, {_bound(self.high)}"
                    f"{']' if self.high_closed else ')'}")
        text = "positive" if self.low == 0 and self.low_open else f">= {_bound(self.low)}" if self.low is not None else ""
        finite = "finite in float32" if self.high == FLOAT32_MAX else "finite"
        return f"{text} and {finite}" if text else finite


def _bound(value: float) -> str:
    """A bound as written: whole numbers in full (4294967295, not 4.29497e+09), others as %g."""
    return str(int(value)) if float(value).is_integer() and abs(value) < 2**63 else f"{value:g}"


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
    epochs: int = option(ENGINE.epochs, int, "epochs to train", low=1, role=LENGTH_OR_HARDWARE)
    batch_size: int = option(ENGINE.batch_size, int, "images per step (over all processes)", low=1, role=IDENTITY)
    optimizer: str = option(ENGINE.optimizer, str, "", choices=OPTIMIZERS, role=IDENTITY)
    lr: float = option(None, float, "learning rate (default: adam 1e-3, sgd 0.01, muon 0.05)", low=0, low_open=True,
                       high=FLOAT32_MAX)
    momentum: float = option(ENGINE.momentum, float, "SGD/Muon momentum; Adadelta's rho", low=0, high=1)
    nesterov: bool = option(ENGINE.nesterov, bool, "SGD: Nesterov momentum; --no-nesterov: the classical momentum "
                            "of He et al. 2016 and of Keras' SGD(momentum=…)", role=IDENTITY)
    weight_decay: float = option(ENGINE.weight_decay, float, "L2 weight decay (biases and norms excluded)", low=0)
    schedule: str = option(ENGINE.schedule, str, "learning-rate schedule; inverse-time, step and exponential are "
                           "Keras' decays (see --decay, --step-size, --decay-steps)", choices=SCHEDULES)
    warmup_epochs: float = option(ENGINE.warmup_epochs, float, "linear warm-up, in epochs", low=0, high=FLOAT32_MAX)
    decay: float = option(ENGINE.decay, float, "inverse-time schedule: lr / (1 + DECAY·step), Keras' SGD(decay=…); "
                          "setting it selects that schedule", low=0, high=FLOAT32_MAX, metavar="DECAY")
    step_size: float = option(ENGINE.step_size, float, "step schedule: multiply the learning rate by --gamma every "
                              "EPOCHS epochs", low=0, low_open=True, high=FLOAT32_MAX, metavar="EPOCHS")
    gamma: float = option(ENGINE.gamma, float, "step schedule's factor", low=0, low_open=True, high=1, high_closed=True)
    decay_rate: float = option(ENGINE.decay_rate, float, "exponential schedule: lr · RATE^(step / --decay-steps), "
                               "Keras' ExponentialDecay", low=0, low_open=True, high=1, high_closed=True, metavar="RATE")
    decay_steps: int = option(ENGINE.decay_steps, int, "exponential schedule: steps over which the rate falls by "
                              "--decay-rate", low=1, metavar="STEPS")
    label_smoothing: float = option(ENGINE.label_smoothing, float, "", low=0, high=1)
    augment: str = option("none", str, "training-time augmentation", choices=AUGMENTS, role=IDENTITY)
    val: str = option("test", str, "'test' (the course's validation_data), 'dev' (the dataset's dev split, else "
                      "a stratified 10%% of train, as Kim 2014) or a fraction of train, e.g. 0.1", role=IDENTITY)
    fold: int = option(None, int, "K-fold cross-validation: fold K of --folds (stratified, fixed) is the test split, "
                       "the other folds are train (see `cnnlab cv`)", low=1, metavar="K", role=IDENTITY)
    folds: int = option(10, int, "number of folds for --fold", low=2, role=IDENTITY)
    val_every: int = option(ENGINE.val_every, int, "epochs between validations (0: after the last epoch only)", low=0)
    seed: int = option(ENGINE.seed, int, "seeds weights, order and augmentation", low=0, high=MAX_SEED, high_closed=True,
                       role=IDENTITY)
    eval_batch_size: int = option(500, int, "", low=1, role=LENGTH_OR_HARDWARE)
    precision: str = option(ENGINE.precision, str, "bf16: autocast (fast on CPUs with AMX/AVX512-BF16 and on recent "
                            "GPUs, emulated and slow elsewhere); fp16: autocast with a gradient scaler (CUDA's mixed "
                            "precision; correct but rarely faster on a CPU); auto: bf16 where the device computes "
                            "it natively, else fp32", choices=PRECISIONS, role=LENGTH_OR_HARDWARE)
    channels_last: bool = option(False, bool, "NHWC memory layout (faster convolutions with bf16 on CPUs and GPUs)",
                                 role=LENGTH_OR_HARDWARE)
    tta: str = option(ENGINE.tta, str, "test-time augmentation of the final evaluation: flips, or flips and "
                      "1-pixel shifts (adaptive: the shifts only for the quarter of each batch the flips are least "
                      "sure of)", choices=TTAS)
    progressive_resize: int = option(ENGINE.progressive_resize, int, "progressive resizing: train the first epoch on "
                                     "images downsampled to side N, rising to full size for the last 3/8 of the "
                                     "epochs (validation always at full size); 0: off", low=0, metavar="N",
                                     role=IDENTITY)
    lookahead: int = option(ENGINE.lookahead, int, "lookahead weight averaging: every N steps blend the weights "
                            "into a slow copy and restart from it, averaging more as the run ends; 0: off",
                            low=0, metavar="N", role=IDENTITY)
    time_budget: float = option(None, float, "choose the epochs so that the run (data loading to final accuracy) "
                                "fits MINUTES", low=0, low_open=True, metavar="MINUTES", role=LENGTH_OR_HARDWARE)
    recipe: str = option(None, str, "the named recipe whose defaults and hooks the run takes (default: the "
                         "model's own)", cli=False)
    sync_bn: bool = option(False, bool, "under torchrun on GPUs: BatchNorm statistics over the global batch "
                           "(SyncBatchNorm)", role=LENGTH_OR_HARDWARE)
    checkpoint_every: int = option(ENGINE.checkpoint_every, int, "also save last.pt every STEPS steps inside an epoch (0: at epoch ends)",
                                   low=0, metavar="STEPS", role=LENGTH_OR_HARDWARE)
    early_stopping: int = option(None, int, "stop when --monitor has not improved for PATIENCE epochs (Keras' "
                                 "EarlyStopping); a stopped run is finished: re-running it trains no more",
                                 low=0, metavar="PATIENCE")
    reduce_lr_on_plateau: int = option(None, int, "multiply the learning rate by 0.1 when --monitor has not improved "
                                       "for PATIENCE epochs (Keras' ReduceLROnPlateau; PATIENCE alone: 10)", low=0,
                                       nargs="?", const=10, metavar="PATIENCE")
    monitor: str = option("val_loss", str, "what --early-stopping and --reduce-lr-on-plateau watch", choices=MONITORS)
    tensorboard: str = option(None, str, "write TensorBoard logs into DIR, relative to the run directory (DIR alone: "
                              "RUN_DIR/tensorboard); needs cnnlab[tensorboard]", nargs="?", const="tensorboard",
                              metavar="DIR")
    limit_train: int = option(None, int, "use only the first N training images", low=1, metavar="N")
    limit_val: int = option(None, int, "use only the first N validation images", low=1, metavar="N")
    device: str = option("auto", str, "auto (CUDA when present), cpu, cuda, cuda:1 …", role=LENGTH_OR_HARDWARE)
    model_kwargs: dict = option(None, dict, "a keyword of the model's factory, typed by it, e.g. stride_in_1x1=true "
                                "(resnet50), aux_logits=true (googlenet), variant=static or windows=3,4,5 (kim-cnn); "
                                "repeatable", flag="--model-option",
                                metavar="KEY=VALUE", role=IDENTITY)
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

        if self.recipe is not None and not isinstance(self.recipe, str):  # checked before it is looked up
            raise CnnlabError(f"--recipe must be a recipe's name (got {self.recipe!r})")
        recipe = get_recipe(self.recipe) if self.recipe else recipe_of_model(self.model)
        defaults = dict(recipe.defaults) if recipe else {}
        if self.schedule is None and self.decay:  # Keras' SGD(decay=…) means time-based decay, whatever the recipe
            defaults["schedule"] = "inverse-time"
        for name, opt in option_fields():
            value = getattr(self, name)
            if value is None:
                value = defaults.get(name, opt.default)
            object.__setattr__(self, name, _coerce(value, opt))
        object.__setattr__(self, "recipe", recipe.name if recipe else None)
        self.validate()
        if self.model_kwargs:
            from ..models.registry import typed_options

            object.__setattr__(self, "model_kwargs", typed_options(self.model, self.model_kwargs))

    def validate(self) -> "RunConfig":
        """Raise a one-line CnnlabError for the first value that cannot work."""
        for name, opt in option_fields():
            problem = opt.problem(getattr(self, name))
            if problem:
                raise CnnlabError(f"{flag(name)} {problem}")
        self.val_fraction()
        self.head_widths()
        self._check_schedule()
        if self.fold is not None and self.fold > self.folds:
            raise CnnlabError(f"--fold {self.fold} is beyond --folds {self.folds}: folds are numbered 1 to {self.folds}")
        return self

    def _check_schedule(self) -> None:
        """The schedule has the parameter it needs, and no other schedule's parameter is set."""
        missing = missing_schedule_param(self.schedule, {n: getattr(self, n) for n in SCHEDULE_NEEDS.values()})
        if missing:
            raise CnnlabError(f"--schedule {self.schedule} needs {flag(missing)}")
        defaults = dict(option_fields())
        for schedule, params in SCHEDULE_PARAMS.items():
            stray = [p for p in params if schedule != self.schedule and getattr(self, p) != defaults[p].default]
            if stray:
                raise CnnlabError(f"{flag(stray[0])} belongs to --schedule {schedule}, but this run's schedule is "
                                  f"{self.schedule}: drop it, or pass --schedule {schedule}")

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
                         momentum=self.momentum, nesterov=self.nesterov, weight_decay=self.weight_decay, schedule=self.schedule,
                         warmup_epochs=self.warmup_epochs, decay=self.decay, step_size=self.step_size,
                         gamma=self.gamma, decay_rate=self.decay_rate, decay_steps=self.decay_steps,
                         label_smoothing=self.label_smoothing,
                         precision=self.precision, val_every=self.val_every, tta=self.tta,
                         progressive_resize=self.progressive_resize, lookahead=self.lookahead,
                         checkpoint_every=self.checkpoint_every, seed=self.seed)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        """config.json's text."""
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        """A saved config; a field it predates takes the value that trained it then (``PREDATED``), not today's default."""
        known = {f.name for f in fields(cls)}
        return cls(**{**PREDATED, **{k: v for k, v in d.items() if k in known}})

    def save(self, path: Path) -> None:
        from ..io import atomic_write_text

        atomic_write_text(path, self.to_json())

    @classmethod
    def load(cls, path: Path) -> "RunConfig":
        """A saved config.json (a regular file only); a damaged one is one line naming it."""
        try:
            with open_regular(path) as fh:
                data = json.loads(fh.read().decode("utf-8"))
        except (OSError, ValueError) as e:
            raise CnnlabError(f"cannot read run configuration {path}: {first_line(e)}") from None
        if not isinstance(data, dict):
            raise CnnlabError(f"cannot read run configuration {path}: not a JSON object")
        try:
            return cls.from_dict(data)
        except CnnlabError as e:
            raise CnnlabError(f"run configuration {path} is damaged: {e}") from None

    def identity_mismatch(self, other: "RunConfig") -> list[str]:
        """Names of the identity fields on which two configs differ (as config.json holds them: a model option's
        tuple, windows=(3, 4, 5), is the list a saved config reads back)."""
        return [f for f in fields_with_role(IDENTITY) if _plain(getattr(self, f)) != _plain(getattr(other, f))]


def _plain(value: Any) -> Any:
    """``value`` with its tuples as lists, recursively: what a JSON round trip gives back."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


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
    """A field's CLI spelling: ``batch_size`` → ``--batch-size`` (``model_kwargs`` → ``--model-option``)."""
    opt = dict(option_fields()).get(name)
    return opt.flag if opt is not None and opt.flag else "--" + name.replace("_", "-")


__all__ = ["FREEZE", "IDENTITY", "LABEL_MODES", "LENGTH_OR_HARDWARE", "MONITORS", "Option", "POOLINGS", "RunConfig", "cli_options",
           "fields_with_role", "flag", "option_fields"]
