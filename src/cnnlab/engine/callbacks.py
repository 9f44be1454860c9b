"""Keras' callbacks for the fit loop: the same names, arguments and decisions, and they survive a resume.

A callback is called at Keras' hooks — ``on_train_begin/end(logs)``, ``on_epoch_begin/end(epoch, logs)``
(``epoch`` counts from 0, ``logs`` holds the epoch's ``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``,
``lr`` …) and ``on_train_batch_begin/end(batch, logs)`` — and sees the ``Trainer`` as ``self.trainer``
(``self.model`` is the network). What Keras does through the model, a callback does through the trainer:

- stop: ``self.trainer.stop_training = True`` (Keras' ``self.model.stop_training``). The loop stops at the
  end of the batch or epoch; the run is then *finished*: running it again does not train more.
- steer the learning rate: ``self.trainer.scale_lr(factor)`` multiplies the schedule's rate from the next
  step on; ``self.trainer.current_lr()`` is the rate the next step takes. The multiplier is checkpointed.
- remember: ``state_dict()`` / ``load_state_dict()`` (patience counters, best values) go into every
  checkpoint, so a resumed run takes the same decisions as an uninterrupted one.

Relative paths (ModelCheckpoint, TensorBoard, CSVLogger) are inside the run directory, like every file of
a run. Callbacks that only write files run on the main process under torchrun; the others see the same
(all-reduced) metrics on every process and so decide alike.
"""
from __future__ import annotations

import csv
import importlib.util
import inspect
import math
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from ..errors import CnnlabError
from . import distributed as D

if TYPE_CHECKING:
    from torch import nn

    from .fit import Trainer

Logs = dict[str, float]
MODES = ("auto", "min", "max")
BATCH_HOOKS = ("on_train_batch_begin", "on_train_batch_end")


class Callback:
    """Base class: override the hooks you need (Keras' names and arguments); all do nothing by default."""

    main_process_only = False  # True for callbacks that only write files: rank 0 runs them alone
    trainer: "Trainer"

    def set_trainer(self, trainer: "Trainer") -> None:
        """Called once by the Trainer that will run this callback."""
        self.trainer = trainer

    @property
    def model(self) -> "nn.Module":
        """The network being trained (without its DistributedDataParallel wrapper)."""
        return D.unwrap(self.trainer.model)

    def on_train_begin(self, logs: Logs | None = None) -> None:
        """Before the first step (also of a resumed run, before its saved state is loaded back)."""

    def on_train_end(self, logs: Logs | None = None) -> None:
        """After the last epoch, or after a callback stopped training; ``logs`` are the last epoch's."""

    def on_epoch_begin(self, epoch: int, logs: Logs | None = None) -> None:
        """Before the first step of epoch ``epoch`` (not called again for an epoch resumed part-way)."""

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        """After epoch ``epoch`` was validated; its checkpoint is written right after every callback ran."""

    def on_train_batch_begin(self, batch: int, logs: Logs | None = None) -> None:
        """Before step ``batch`` (counted within the epoch)."""

    def on_train_batch_end(self, batch: int, logs: Logs | None = None) -> None:
        """After step ``batch``; ``logs``: this epoch's running ``loss`` and ``accuracy`` (this process's share)."""

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs to continue this callback's decisions (plain values and tensors)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take back what ``state_dict`` returned."""


def overrides(callback: Callback, hook: str) -> bool:
    """True when ``callback`` does something at ``hook`` (a subclass method or a LambdaCallback function)."""
    return hook in vars(callback) or getattr(type(callback), hook) is not getattr(Callback, hook)


def state_keys(callbacks: Sequence[Callback]) -> list[str]:
    """A checkpoint key per callback: its class name, numbered from the second of a class on (``EarlyStopping#2``)."""
    seen: dict[str, int] = {}
    keys = []
    for cb in callbacks:
        name = type(cb).__name__
        seen[name] = seen.get(name, 0) + 1
        keys.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return keys


class CallbackList:
    """The callbacks of one Trainer, called in order; their states keyed for the checkpoint."""

    def __init__(self, callbacks: Iterable[Callback], trainer: "Trainer") -> None:
        given = list(callbacks)
        bad = [cb for cb in given if not isinstance(cb, Callback)]
        if bad:
            raise CnnlabError(f"callbacks must be cnnlab.callbacks.Callback instances, not {type(bad[0]).__name__} "
                              "(wrap a function in LambdaCallback(on_epoch_end=...))")
        keyed = zip(state_keys(given), given)
        self.keyed = [(k, cb) for k, cb in keyed if D.is_main() or not cb.main_process_only]
        for _, cb in self.keyed:
            cb.set_trainer(trainer)
        # From every callback, those rank 0 runs alone included: all ranks must sync at the same steps.
        self.wants_batches = any(overrides(cb, hook) for cb in given for hook in BATCH_HOOKS)

    def call(self, hook: str, *args: Any) -> None:
        """Call ``hook`` on every callback, in order."""
        for _, cb in self.keyed:
            getattr(cb, hook)(*args)

    def state_dict(self) -> dict[str, dict]:
        return {key: state for key, cb in self.keyed if (state := cb.state_dict())}

    def load_state_dict(self, states: dict[str, dict]) -> None:
        for key, cb in self.keyed:
            if key in states:
                cb.load_state_dict(states[key])


# ---- helpers shared by the monitoring callbacks -------------------------------------------------
def monitor_mode(owner: str, monitor: str, mode: str) -> str:
    """``min`` or ``max``: as given, or inferred as Keras does (``…acc…`` goes up, ``…loss`` goes down)."""
    if mode not in MODES:
        raise CnnlabError(f"{owner}(mode={mode!r}): mode must be one of {', '.join(MODES)}")
    if mode != "auto":
        return mode
    if "acc" in monitor:
        return "max"
    if monitor.endswith("loss"):
        return "min"
    raise CnnlabError(f"{owner} cannot tell whether {monitor!r} should go down or up: pass mode='min' or mode='max'")


def improves(current: float, reference: float, mode: str, min_delta: float) -> bool:
    """True when ``current`` beats ``reference`` by more than ``min_delta`` in ``mode``'s direction."""
    return current < reference - min_delta if mode == "min" else current > reference + min_delta


def worst(mode: str) -> float:
    """The starting 'best' value: anything beats it."""
    return math.inf if mode == "min" else -math.inf


def check_number(owner: str, name: str, value: Any, low: float = 0.0) -> None:
    """Refuse a parameter that is not a finite number >= ``low``, in one line."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < low:
        raise CnnlabError(f"{owner}({name}={value!r}): {name} must be a number >= {low:g}")


def say(text: str) -> None:
    """A callback's message, on the main process only (stderr, beside the epoch lines)."""
    if D.is_main():
        print(text, file=sys.stderr, flush=True)


def epochs(n: int) -> str:
    """``1 epoch``, ``3 epochs``."""
    return f"{n} epoch" + ("" if n == 1 else "s")


def run_path(trainer: "Trainer", path: str | Path) -> Path:
    """``path`` as given when absolute, else inside the run directory."""
    return trainer.run_dir / Path(path).expanduser()


class _Monitoring(Callback):
    """A callback that watches one metric of the epoch logs."""

    def __init__(self, monitor: str, mode: str, min_delta: float) -> None:
        owner = type(self).__name__
        check_number(owner, "min_delta", min_delta)
        self.monitor, self.min_delta = monitor, abs(min_delta)
        self.mode = monitor_mode(owner, monitor, mode)

    def on_train_begin(self, logs: Logs | None = None) -> None:
        logged = self.trainer.metric_names()
        if self.monitor not in logged:
            unvalidated = self.monitor.startswith("val_") and "val_loss" not in logged
            hint = " (this run has no validation data)" if unvalidated else ""
            raise CnnlabError(f"{type(self).__name__} monitors {self.monitor!r}, which this run does not log{hint}: "
                              f"choose one of {', '.join(logged)}")

    def current(self, logs: Logs | None) -> float | None:
        """The monitored value of this epoch; None on an epoch that did not validate (``val_every``)."""
        value = (logs or {}).get(self.monitor)
        return None if value is None or math.isnan(value) else float(value)


# ---- the Keras callbacks -------------------------------------------------------------------------
class EarlyStopping(_Monitoring):
    """Stop training when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs.

    Keras' rules: an epoch that beats the best so far resets the wait, but with a ``baseline`` only if it
    also beats the baseline; nothing is decided before ``start_from_epoch`` nor after the first epoch alone.
    ``restore_best_weights`` puts the best epoch's weights back into the model at the end (and into the
    run's last.pt, as a Keras model saved after ``fit`` would hold them); until then the checkpoints also
    carry a copy of the best weights, so that a resumed run can restore them too.
    """

    def __init__(self, monitor: str = "val_loss", min_delta: float = 0.0, patience: int = 0, verbose: int = 0,
                 mode: str = "auto", baseline: float | None = None, restore_best_weights: bool = False,
                 start_from_epoch: int = 0) -> None:
        super().__init__(monitor, mode, min_delta)
        check_number("EarlyStopping", "patience", patience)
        check_number("EarlyStopping", "start_from_epoch", start_from_epoch)
        self.patience, self.verbose, self.baseline = patience, verbose, baseline
        self.restore_best_weights, self.start_from_epoch = restore_best_weights, start_from_epoch
        self._reset()

    def _reset(self) -> None:
        self.wait, self.stopped_epoch, self.best_epoch = 0, 0, 0
        self.best = worst(self.mode)
        self.best_weights: dict | None = None

    def on_train_begin(self, logs: Logs | None = None) -> None:
        super().on_train_begin(logs)
        self._reset()

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        current = self.current(logs)
        if current is None or epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            self._keep_weights(epoch)
        self.wait += 1
        if improves(current, self.best, self.mode, self.min_delta):
            self.best, self.best_epoch = current, epoch
            if self.restore_best_weights:
                self._keep_weights(epoch)
            if self.baseline is None or improves(current, self.baseline, self.mode, self.min_delta):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.trainer.stop_training = True
            if self.verbose:
                say(f"EarlyStopping: {self.monitor} has not improved on {self.best:.4f} (epoch {self.best_epoch + 1}) "
                    f"for {epochs(self.wait)}: stopping after epoch {epoch + 1}")

    def _keep_weights(self, epoch: int) -> None:
        self.best_weights = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
        self.best_epoch = epoch

    def on_train_end(self, logs: Logs | None = None) -> None:
        if not (self.restore_best_weights and self.best_weights is not None):
            return
        self.model.load_state_dict(self.best_weights)
        self.trainer.save("last.pt")
        if self.verbose:
            say(f"EarlyStopping: restored the weights of epoch {self.best_epoch + 1} (best {self.monitor})")

    def state_dict(self) -> dict[str, Any]:
        state = {"wait": self.wait, "stopped_epoch": self.stopped_epoch, "best": self.best,
                 "best_epoch": self.best_epoch}
        return state | ({"best_weights": self.best_weights} if self.best_weights is not None else {})

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.wait, self.stopped_epoch = int(state["wait"]), int(state["stopped_epoch"])
        self.best, self.best_epoch = float(state["best"]), int(state["best_epoch"])
        self.best_weights = state.get("best_weights") if self.restore_best_weights else None


class ReduceLROnPlateau(_Monitoring):
    """Multiply the learning rate by ``factor`` when ``monitor`` has not improved for ``patience`` epochs.

    Keras' rules: after a reduction, ``cooldown`` epochs pass before the wait counts again; the rate never
    goes below ``min_lr``. The reduction multiplies whatever the schedule gives (a constant rate: Keras).
    """

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10, verbose: int = 0,
                 mode: str = "auto", min_delta: float = 1e-4, cooldown: int = 0, min_lr: float = 0.0) -> None:
        super().__init__(monitor, mode, min_delta)
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not 0 < factor < 1:
            raise CnnlabError(f"ReduceLROnPlateau(factor={factor!r}): factor must be in (0, 1), e.g. 0.1 or 0.5")
        for name, value in (("patience", patience), ("cooldown", cooldown), ("min_lr", min_lr)):
            check_number("ReduceLROnPlateau", name, value)
        self.factor, self.patience, self.verbose = float(factor), patience, verbose
        self.cooldown, self.min_lr = cooldown, float(min_lr)
        self._reset()

    def _reset(self) -> None:
        self.wait, self.cooldown_counter = 0, 0
        self.best = worst(self.mode)

    def on_train_begin(self, logs: Logs | None = None) -> None:
        super().on_train_begin(logs)
        self._reset()

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        current = self.current(logs)
        if current is None:
            return
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if improves(current, self.best, self.mode, self.min_delta):
            self.best, self.wait = current, 0
        elif self.cooldown_counter == 0:
            self.wait += 1
            if self.wait >= self.patience:
                self._reduce(epoch)

    def _reduce(self, epoch: int) -> None:
        old = self.trainer.current_lr()
        if old <= self.min_lr or old == 0:
            return
        new = max(old * self.factor, self.min_lr)
        self.trainer.scale_lr(new / old)
        self.cooldown_counter, self.wait = self.cooldown, 0
        if self.verbose:
            say(f"ReduceLROnPlateau: {self.monitor} has not improved for {epochs(self.patience)}: learning rate "
                f"{old:.3g} → {new:.3g} after epoch {epoch + 1}")

    def state_dict(self) -> dict[str, Any]:
        return {"wait": self.wait, "cooldown_counter": self.cooldown_counter, "best": self.best}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.wait, self.cooldown_counter, self.best = int(state["wait"]), int(state["cooldown_counter"]), float(state["best"])


class ModelCheckpoint(_Monitoring):
    """Save a checkpoint after every epoch, or only when ``monitor`` improved (``save_best_only``).

    ``filepath`` may name the epoch (from 1) and any logged metric, as in Keras:
    ``"ckpt/epoch{epoch:02d}-{val_loss:.3f}.pt"``. The file is a full cnnlab checkpoint (``cnnlab eval`` and
    ``predict`` read it), or with ``save_weights_only`` a plain state dict (``create_model(pretrained=PATH)``).
    """

    def __init__(self, filepath: str | Path, monitor: str = "val_loss", verbose: int = 0,
                 save_best_only: bool = False, save_weights_only: bool = False, mode: str = "auto",
                 initial_value_threshold: float | None = None) -> None:
        super().__init__(monitor, mode, 0.0)
        self.filepath, self.verbose = str(filepath), verbose
        self.save_best_only, self.save_weights_only = save_best_only, save_weights_only
        self.initial = worst(self.mode) if initial_value_threshold is None else float(initial_value_threshold)
        self.best = self.initial

    def on_train_begin(self, logs: Logs | None = None) -> None:
        if self.save_best_only:
            super().on_train_begin(logs)
        self.best = self.initial

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        if self.save_best_only:
            current = self.current(logs)
            if current is None or not improves(current, self.best, self.mode, 0.0):
                return
            self.best = current
        path = run_path(self.trainer, self.format_path(epoch, logs or {}))
        if self.save_weights_only:
            self._save_weights(path)
        else:
            self.trainer.save_to(path)
        if self.verbose:
            say(f"ModelCheckpoint: saved {path}")

    def format_path(self, epoch: int, logs: Logs) -> str:
        """``filepath`` with ``{epoch}`` (from 1) and the logged metrics filled in."""
        try:
            return self.filepath.format(epoch=epoch + 1, **logs)
        except (KeyError, IndexError, ValueError) as e:
            raise CnnlabError(f"ModelCheckpoint filepath {self.filepath!r} cannot be filled ({e}): it may name "
                              f"{{epoch}} and {', '.join('{' + k + '}' for k in logs)}") from None

    def _save_weights(self, path: Path) -> None:
        """The network's state dict alone, written atomically by the main process."""
        if not D.is_main():
            return
        import io

        import torch

        from ..io import atomic_write_bytes

        buf = io.BytesIO()
        torch.save(self.model.state_dict(), buf)
        atomic_write_bytes(path, buf.getvalue())

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best} if self.save_best_only else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = float(state["best"])


class TensorBoard(Callback):
    """TensorBoard logs through ``torch.utils.tensorboard``: Keras' layout and tag names.

    ``log_dir/train`` and ``log_dir/validation`` hold ``epoch_loss``, ``epoch_accuracy`` (and the train
    side ``epoch_learning_rate``) per epoch, so TensorBoard overlays the two curves; every
    ``histogram_freq`` epochs the weights' histograms (Keras' default is 0: never); the model's graph
    once; with ``update_freq=N`` also ``batch_loss`` every N steps (in ``log_dir/train_batches``). A resumed run purges what the interrupted one wrote past its
    checkpoint. View with ``tensorboard --logdir LOG_DIR``.
    """

    main_process_only = True

    def __init__(self, log_dir: str | Path = "logs", histogram_freq: int = 1, write_graph: bool = True,
                 update_freq: str | int = "epoch") -> None:
        if importlib.util.find_spec("tensorboard") is None:
            raise CnnlabError("TensorBoard logging needs the tensorboard package: pip install 'cnnlab[tensorboard]'")
        check_number("TensorBoard", "histogram_freq", histogram_freq)
        if update_freq != "epoch":
            check_number("TensorBoard", "update_freq", update_freq, low=1)
        self.log_dir, self.histogram_freq, self.write_graph = log_dir, histogram_freq, write_graph
        self.update_freq = update_freq
        self.writers: dict[str, Any] = {}

    def on_train_begin(self, logs: Logs | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        root = run_path(self.trainer, self.log_dir)
        epoch, steps = self.trainer.epoch, self.trainer.global_step
        self.writers = {"train": SummaryWriter(root / "train", purge_step=epoch if epoch else None),
                        "validation": SummaryWriter(root / "validation", purge_step=epoch if epoch else None)}
        if self.update_freq != "epoch":  # its own run: a purge counts steps there, epochs in the others
            self.writers["batch"] = SummaryWriter(root / "train_batches", purge_step=steps if steps else None)
        if self.write_graph and epoch == 0 and steps == 0:
            self._write_graph()

    def _write_graph(self) -> None:
        """The network's graph, traced on one zero image (a network torch.jit cannot trace is reported, not fatal)."""
        import torch

        sample, was_training = self.trainer.train_loader.images[:1], self.model.training
        try:
            with warnings.catch_warnings():  # the tracer's notices (deprecation, Python values in shapes) are not
                warnings.simplefilter("ignore", FutureWarning)  # the user's concern: add_graph has no other tracer
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                self.writers["train"].add_graph(self.model.eval(), torch.zeros(sample.shape, device=sample.device))
        except Exception as e:  # noqa: BLE001 (tracing fails in many ways; the scalars matter more)
            say(f"TensorBoard: the graph was not written ({str(e).splitlines()[0][:120]})")
        finally:
            self.model.train(was_training)

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        for key, value in (logs or {}).items():
            if math.isnan(value):
                continue
            side, tag = tensorboard_tag(key)
            self.writers[side].add_scalar(tag, value, epoch)
        if self.histogram_freq and (epoch + 1) % self.histogram_freq == 0:
            for name, p in self.model.named_parameters():
                self.writers["train"].add_histogram(name, p.detach().float().cpu(), epoch)
        for w in self.writers.values():
            w.flush()

    def on_train_batch_end(self, batch: int, logs: Logs | None = None) -> None:
        step = self.trainer.global_step
        if self.update_freq != "epoch" and step % self.update_freq == 0:
            self.writers["batch"].add_scalar("batch_loss", (logs or {})["loss"], step)

    def on_train_end(self, logs: Logs | None = None) -> None:
        for w in self.writers.values():
            w.close()


# Keras' tag names for the log keys that differ from "epoch_" + key.
_TAGS = {"lr": ("train", "epoch_learning_rate"), "seconds": ("train", "epoch_seconds")}


def tensorboard_tag(key: str) -> tuple[str, str]:
    """(writer, tag) of a log key: ``val_loss`` → validation/epoch_loss, ``lr`` → train/epoch_learning_rate."""
    if key in _TAGS:
        return _TAGS[key]
    prefix, _, rest = key.partition("val_")
    if rest:  # val_loss, tta_val_accuracy
        return "validation", "epoch_" + prefix + rest
    return "train", "epoch_" + key


class CSVLogger(Callback):
    """One CSV row per epoch: ``epoch`` (from 0, as Keras writes it) then the logged metrics in sorted order.

    ``append=False`` starts the file over at every (re)start of training, as Keras does: pass ``append=True``
    to keep the rows of a run that is resumed. (Every run also writes history.csv by itself.)
    """

    main_process_only = True

    def __init__(self, filename: str | Path, separator: str = ",", append: bool = False) -> None:
        self.filename, self.separator, self.append = filename, separator, append
        self.keys: list[str] | None = None
        self.header = True
        self.file = None
        self.writer: csv.DictWriter | None = None

    def on_train_begin(self, logs: Logs | None = None) -> None:
        path = run_path(self.trainer, self.filename)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.header = not (self.append and path.exists() and path.stat().st_size > 0)
        self.file = open(path, "a" if self.append else "w", newline="")  # noqa: SIM115 (open for the whole run)
        self.keys, self.writer = None, None

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        logs = logs or {}
        if self.writer is None:
            self.keys = sorted(logs)
            self.writer = csv.DictWriter(self.file, ["epoch", *self.keys], delimiter=self.separator,
                                         lineterminator="\n", extrasaction="ignore", restval="NA")
            if self.header:
                self.writer.writeheader()
        self.writer.writerow({"epoch": epoch, **{k: "NA" if math.isnan(v) else v for k, v in logs.items()}})
        self.file.flush()

    def on_train_end(self, logs: Logs | None = None) -> None:
        if self.file:
            self.file.close()
            self.file = None


class LearningRateScheduler(Callback):
    """Set the learning rate at the start of every epoch to ``schedule(epoch, lr)`` (or ``schedule(epoch)``).

    ``lr`` is the rate the epoch would start with; the returned rate holds for the epoch (over a constant
    schedule, as in Keras; over another schedule it scales that schedule's rate).
    """

    def __init__(self, schedule: Callable[..., float], verbose: int = 0) -> None:
        if not callable(schedule):
            raise CnnlabError(f"LearningRateScheduler needs a function schedule(epoch, lr) -> lr, not {schedule!r}")
        self.schedule, self.verbose = schedule, verbose
        self.takes_lr = positional_arity(schedule) >= 2

    def on_epoch_begin(self, epoch: int, logs: Logs | None = None) -> None:
        old = self.trainer.current_lr()
        new = self.schedule(epoch, old) if self.takes_lr else self.schedule(epoch)
        if isinstance(new, bool) or not isinstance(new, (int, float)) or not math.isfinite(new) or new < 0:
            raise CnnlabError(f"LearningRateScheduler: schedule({epoch}, …) returned {new!r}, not a learning rate >= 0")
        if new == old:
            return
        if old == 0:
            raise CnnlabError(f"LearningRateScheduler cannot set epoch {epoch}'s rate: the --schedule gives 0 there "
                              "(use a constant schedule under it)")
        self.trainer.scale_lr(new / old)
        if self.verbose:
            say(f"LearningRateScheduler: epoch {epoch + 1} learning rate {new:.3g}")


def positional_arity(fn: Callable[..., Any]) -> int:
    """How many positional arguments ``fn`` accepts (a large number for ``*args``)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 2
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return 1 << 16
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)


class LambdaCallback(Callback):
    """A callback from plain functions, as Keras' ``LambdaCallback``: ``on_epoch_end=lambda epoch, logs: …``."""

    def __init__(self, on_epoch_begin: Callable | None = None, on_epoch_end: Callable | None = None,
                 on_train_begin: Callable | None = None, on_train_end: Callable | None = None,
                 on_train_batch_begin: Callable | None = None, on_train_batch_end: Callable | None = None) -> None:
        hooks = dict(on_epoch_begin=on_epoch_begin, on_epoch_end=on_epoch_end, on_train_begin=on_train_begin,
                     on_train_end=on_train_end, on_train_batch_begin=on_train_batch_begin,
                     on_train_batch_end=on_train_batch_end)
        for hook, fn in hooks.items():
            if fn is not None:
                if not callable(fn):
                    raise CnnlabError(f"LambdaCallback({hook}=…) needs a function, not {fn!r}")
                setattr(self, hook, fn)


__all__ = ["CSVLogger", "Callback", "CallbackList", "EarlyStopping", "LambdaCallback", "LearningRateScheduler",
           "ModelCheckpoint", "ReduceLROnPlateau", "TensorBoard", "improves", "monitor_mode", "tensorboard_tag"]
