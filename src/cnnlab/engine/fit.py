"""The fit loop: train, validate, keep ``best.pt`` and ``last.pt``, resume exactly where a run stopped.

Exact resume rests on three facts: the loader's order and augmentation are a pure function of
``(seed, epoch)``; the checkpoint holds model, optimizer, gradient scaler, torch RNG, the step reached
inside the epoch, the running sums of that epoch and the callbacks' state; the learning rate is a pure
function of the global step times the multiplier callbacks steer (checkpointed too).
"""
from __future__ import annotations

import contextlib
import math
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch
from torch import nn

from ..cpu import trim_freed_memory
from ..data.loader import TensorLoader, progressive_size
from ..errors import CnnlabError, first_line
from ..faults import fault_point
from ..layers import kernel_l2_layers
from . import distributed as D
from .callbacks import Callback, CallbackList
from .checkpoint import check_fields, load_checkpoint, load_model_state, non_finite, save_checkpoint
from .config import FitConfig, validation_due
from .evaluate import evaluate_metrics
from .history import History
from .lookahead import Lookahead
from .loss import aux_loss_weights, kernel_penalty, training_loss
from .optim import OptimizerFactory, decay_of, group_horizon_steps, group_lr, make_optimizer
from .precision import autocast, grad_scaler
from .progress import progress_bar

ResumeCheck = Callable[[dict], None]  # raises when a saved checkpoint belongs to another experiment
SYNC_EVERY = 10  # steps between reads of the running loss from the device (progress bar, divergence check)
RESUME_FIELDS = {"model": dict, "optimizer": dict, "epoch": int, "step": int, "partial": dict, "history": dict,
                 "best_val_accuracy": (int, float), "rng": dict}  # what last.pt must hold to resume from


class TrainingInterrupted(CnnlabError):
    """Ctrl-C / SIGTERM: a resumable checkpoint was saved before stopping."""


@dataclass
class EpochSums:
    """Running sums of an epoch; saved in mid-epoch checkpoints so resumed metrics are exact."""

    loss: float = 0.0
    correct: float = 0.0
    seen: float = 0.0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {"loss": self.loss, "correct": self.correct, "seen": self.seen, "seconds": self.seconds}


class _StopFlag:
    """Turns the first Ctrl-C / SIGTERM into a request to stop at the next step boundary."""

    ECHO_SECONDS = 1.0  # torchrun forwards the terminal's Ctrl-C to workers that got it already: one press

    def __init__(self) -> None:
        self.signum: int | None = None
        self.since = 0.0
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:  # noqa: ARG002 (signal handler signature)
        if self.signum is not None:  # second Ctrl-C: stop at once (last.pt is still intact)
            if time.monotonic() - self.since < self.ECHO_SECONDS:
                return
            raise KeyboardInterrupt
        self.signum, self.since = signum, time.monotonic()
        if D.is_main():
            print("\nStopping after this step and saving a resumable checkpoint (Ctrl-C again to abort)…",
                  file=sys.stderr, flush=True)

    @contextlib.contextmanager
    def installed(self) -> Iterator["_StopFlag"]:
        import threading

        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        for s in (signal.SIGINT, signal.SIGTERM):
            self._previous[s] = signal.signal(s, self._handle)
        try:
            yield self
        finally:
            for s, h in self._previous.items():
                signal.signal(s, h)


class Trainer:
    """Owns one run's moving parts.

    ``fit()`` runs the whole loop. The step API — ``seek``, ``set_lr``, ``train_step``, ``train_epoch``,
    ``finish_epoch`` — lets a caller drive or time parts of it (the budget planner, the benchmarks).
    ``extra`` is stored in every checkpoint as it is (the runs layer's run card and config).
    ``callbacks`` (``engine.callbacks``, Keras' hooks) may set ``stop_training`` — the run is then finished —
    and steer the learning rate through ``scale_lr``.
    """

    def __init__(self, model: nn.Module, train_loader: TensorLoader, val_loader: TensorLoader | None,
                 cfg: FitConfig, run_dir: Path, extra: dict | None = None, callbacks: Sequence[Callback] = (),
                 progress: bool = True, optimizer_factory: OptimizerFactory | None = None) -> None:
        self.model = model
        self.train_loader, self.val_loader = train_loader, val_loader
        self.cfg, self.run_dir, self.extra = cfg, Path(run_dir), dict(extra or {})
        self.progress = progress and D.is_main()
        self.device = train_loader.device
        self.optimizer = (optimizer_factory or make_optimizer)(model, cfg)
        self.scaler = grad_scaler(self.device, cfg.precision)
        self.aux_weights = aux_loss_weights(D.unwrap(model))
        self.l2_terms = kernel_l2_layers(D.unwrap(model))  # Keras' kernel_regularizer=l2(), as Dense(…, l2)
        self.stop_training = False  # set by a callback: the run ends after this batch/epoch, and stays finished
        self.lr_multiplier = 1.0  # steered by callbacks (ReduceLROnPlateau, LearningRateScheduler)
        self.history = History()
        self.best = -math.inf
        self.epoch, self.step = 0, 0  # completed epochs; completed steps inside the current epoch
        self.sums = EpochSums()
        self.steps_per_epoch = len(train_loader)
        self.total_steps = cfg.epochs * self.steps_per_epoch
        self.warmup_steps = round(cfg.warmup_epochs * self.steps_per_epoch)
        self.decay = decay_of(cfg, self.steps_per_epoch)
        self.lookahead = Lookahead(D.unwrap(model), cfg.lookahead, self.total_steps) if cfg.lookahead else None
        self._finished: set[nn.Parameter] = set()  # frozen by set_lr once their group's horizon passed
        self.callbacks = CallbackList(callbacks or (), self)
        self._callback_states: dict[str, dict] = {}  # from the checkpoint, loaded after on_train_begin

    # ---- checkpoint state -------------------------------------------------------------------
    def state(self) -> dict:
        """Everything a resume needs; every rank calls it (it sums the epoch over ranks, gathers their RNGs)."""
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        rng_ranks = D.gather(rng)
        return {
            "model": D.unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": self.epoch, "step": self.step, "partial": self._global_sums().as_dict(),
            "rng": rng, **({"rng_ranks": rng_ranks} if len(rng_ranks) > 1 else {}),
            "history": self.history.to_dict(), "best_val_accuracy": self.best,
            "scaler": self.scaler.state_dict(), "lr_multiplier": self.lr_multiplier,
            "stop_training": self.stop_training, "callbacks": self.callbacks.state_dict(),
            **({"lookahead": self.lookahead.state_dict()} if self.lookahead else {}), **self.extra,
        }

    def save(self, name: str) -> None:
        """Rank 0 writes the run directory's checkpoint ``name`` (best.pt, last.pt)."""
        self.save_to(self.run_dir / name)

    def save_to(self, path: Path) -> None:
        """Rank 0 writes a full checkpoint to ``path``; it never holds non-finite weights (the previous one is kept)."""
        if non_finite(D.unwrap(self.model).state_dict()):  # parameters, or buffers such as BatchNorm statistics
            raise self._diverged("weights became non-finite", self.epoch + (self.step > 0),
                                 self.step or self.steps_per_epoch)
        state = self.state()
        if D.is_main():
            save_checkpoint(path, state)

    def restore(self, ckpt: dict) -> None:
        load_model_state(D.unwrap(self.model), ckpt["model"], str(self.run_dir / "last.pt"))
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.epoch, self.step = int(ckpt["epoch"]), int(ckpt["step"])
        self.sums = EpochSums(**ckpt["partial"]) if D.is_main() else EpochSums()  # the sums are global
        self.history = History.from_dict(ckpt["history"], f"the history inside {self.run_dir / 'last.pt'}")
        self.best = float(ckpt["best_val_accuracy"])
        if ckpt.get("scaler") and self.scaler.is_enabled():  # a run resumed in another precision starts afresh
            self.scaler.load_state_dict(ckpt["scaler"])
        self.lr_multiplier = float(ckpt.get("lr_multiplier", 1.0))
        self.stop_training = bool(ckpt.get("stop_training", False))
        self._callback_states = dict(ckpt.get("callbacks", {}))
        if self.lookahead:
            self.lookahead.load_state_dict(ckpt["lookahead"])
        rngs = ckpt.get("rng_ranks", [ckpt["rng"]])
        if D.rank() >= len(rngs):  # resumed on more processes than saved it
            torch.manual_seed(D.rank_seed(self.cfg.seed))
            return
        torch.set_rng_state(rngs[D.rank()]["torch"])
        if "cuda" in rngs[D.rank()] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rngs[D.rank()]["cuda"])

    def _global_sums(self) -> EpochSums:
        """This epoch's running sums over all ranks (with rank 0's time)."""
        if not D.is_distributed():
            return self.sums
        local = torch.tensor([self.sums.loss, self.sums.correct, self.sums.seen], dtype=torch.float64, device=self.device)
        loss, correct, seen = D.all_reduce_sum(local).tolist()
        return EpochSums(loss, correct, seen, self.sums.seconds)

    def _diverged(self, what: str, epoch: int, step: int) -> CnnlabError:
        """The error for a loss or weights that stopped being finite: where, what was kept, the usual fix."""
        last = self.run_dir / "last.pt"
        kept = f"{last} keeps the last good state" if last.exists() else "no checkpoint had been written yet"
        return CnnlabError(f"{what} at epoch {epoch}, step {step}: training stopped, {kept}. "
                           f"Try a lower --lr (now {self.cfg.lr:g}).")

    # ---- the step API ---------------------------------------------------------------------------
    def seek(self, epoch: int, step: int = 0) -> None:
        """Stand at ``step`` of ``epoch`` (0-based), without training: the schedule and the loader follow."""
        self.epoch, self.step = epoch, step

    @property
    def global_step(self) -> int:
        """Steps completed since the start of the run."""
        return self.epoch * self.steps_per_epoch + self.step

    def _group_lr(self, group: dict) -> float:
        """A group's rate at the current step: the schedule's (``optim.group_lr``) times the callbacks' multiplier."""
        return self.lr_multiplier * group_lr(group, self.cfg.lr, self.global_step, self.total_steps,
                                             self.cfg.schedule, self.warmup_steps, self.decay)

    def current_lr(self) -> float:
        """The first group's learning rate for the next step."""
        return self._group_lr(self.optimizer.param_groups[0])

    def scale_lr(self, factor: float) -> None:
        """Multiply every group's learning rate by ``factor`` from the next step on (on top of the schedule)."""
        if not (math.isfinite(factor) and factor >= 0):
            raise CnnlabError(f"a learning-rate factor must be finite and >= 0 (got {factor})")
        self.lr_multiplier *= factor

    def metric_names(self) -> tuple[str, ...]:
        """The keys an epoch's logs can hold (validation ones only with validation data)."""
        names = ("loss", "accuracy", "lr", "seconds", "images_per_sec")
        if self.val_loader is None:
            return names
        return (*names, "val_loss", "val_accuracy",
                *(("tta_val_loss", "tta_val_accuracy") if self.cfg.tta != "none" else ()))

    def set_lr(self) -> float:
        """Set every group's lr for the current step (schedule × multiplier); returns the first group's.

        A group past its horizon also stops asking for gradients (single process: DDP expects a fixed
        set), so backward skips the work that fed it, e.g. the fast recipe's stem bias after 3/8 of the run.
        """
        g = self.global_step
        for group in self.optimizer.param_groups:
            group["lr"] = self._group_lr(group)
            if g >= group_horizon_steps(group, self.total_steps) and not D.is_distributed():
                for p in group["params"]:
                    if p.requires_grad:
                        p.requires_grad_(False)
                        self._finished.add(p)
        return self.optimizer.param_groups[0]["lr"]

    def _release_finished(self) -> None:
        """Give the parameters frozen by ``set_lr`` their gradients back: the returned model trains as built."""
        for p in self._finished:
            p.requires_grad_(True)
        self._finished.clear()

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimisation step; the loss and the count of correct predictions stay on the device (no sync).

        A network returning auxiliary logits adds their weighted losses (``engine.loss``); under fp16 the
        gradient scaler scales the loss and skips a step whose gradients overflowed.
        """
        with autocast(self.device, self.cfg.precision):
            output = self.model(x)
        loss, logits = training_loss(output, y, self.aux_weights, self.cfg.label_smoothing)
        penalty = kernel_penalty(self.l2_terms)
        if penalty is not None:  # in the reported loss too, as Keras reports it
            loss = loss + penalty
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self._after_step()
        fault_point("step")
        return loss.detach(), (logits.argmax(1) == y).sum()

    def _after_step(self) -> None:
        """Let the network constrain its weights after each update: its ``after_step()`` method, when it has one
        (Kim 2014's max-norm on the output layer, say), under ``no_grad``."""
        after_step = getattr(D.unwrap(self.model), "after_step", None)
        if after_step is not None:
            with torch.no_grad():
                after_step()

    def _flush(self, pending: list[tuple[torch.Tensor, torch.Tensor, int]]) -> None:
        """Read the pending steps' losses from the device at once, stop at a non-finite one, add them to the sums.

        The weights a non-finite step produced are never saved (``save``).
        """
        if not pending:
            return
        values = torch.stack([torch.stack([loss.float(), correct.float()]) for loss, correct, _ in pending]).tolist()
        bad = next((i for i, (loss, _) in enumerate(values) if not math.isfinite(loss)), None)
        if D.any_rank(bad is not None, self.device):
            what = "loss became non-finite on another process" if bad is None else f"loss became {values[bad][0]}"
            raise self._diverged(what, self.epoch + 1, self.step - len(pending) + 1 + (bad or 0))
        for (loss, correct), (_, _, n) in zip(values, pending):
            self.sums.loss += loss * n
            self.sums.correct += correct
            self.sums.seen += n
        pending.clear()

    def _running_logs(self) -> dict[str, float]:
        """This epoch's running loss and accuracy (Keras' batch logs)."""
        seen = max(self.sums.seen, 1.0)
        return {"loss": self.sums.loss / seen, "accuracy": self.sums.correct / seen}

    def train_side(self, epoch: int) -> int | None:
        """The image side epoch ``epoch`` (0-based) trains at under progressive resizing (None: as stored)."""
        if not self.cfg.progressive_resize:
            return None
        return progressive_size(epoch, self.cfg.epochs, self.train_loader.full_side, self.cfg.progressive_resize)

    def train_epoch(self, stop: _StopFlag | None = None) -> None:
        """Train from the current step to the end of the current epoch (a Ctrl-C flag, when given, can stop it;
        a batch callback's ``stop_training`` ends the epoch early)."""
        stop = stop or _StopFlag()
        batches = self.callbacks.wants_batches
        loader = self.train_loader
        loader.set_epoch(self.epoch, self.step)
        if loader.set_side(self.train_side(self.epoch)):
            trim_freed_memory()  # blocks kept for the previous size would fragment the heap for this one
        bar = progress_bar(self.steps_per_epoch, self.step, f"Epoch {self.epoch + 1}/{self.cfg.epochs}", self.progress)
        self.model.train()
        t0, seen0 = time.perf_counter(), self.sums.seen
        pending: list[tuple[torch.Tensor, torch.Tensor, int]] = []
        for x, y in loader:
            if batches:
                self.callbacks.call("on_train_batch_begin", self.step, {})
            self.set_lr()
            loss, correct = self.train_step(x, y)
            self.step += 1
            if self.lookahead:
                self.lookahead.after_step(self.global_step)
            pending.append((loss, correct, len(y)))
            bar.update(1)
            if batches or self.step % SYNC_EVERY == 0 or self.step == self.steps_per_epoch:
                self._flush(pending)
                if batches:
                    self.callbacks.call("on_train_batch_end", self.step - 1, self._running_logs())
                if self.progress:
                    rate = (self.sums.seen - seen0) * D.world_size() / max(time.perf_counter() - t0, 1e-9)
                    bar.set_postfix(loss=f"{self.sums.loss / self.sums.seen:.4f}",
                                    acc=f"{self.sums.correct / self.sums.seen:.4f}", img_s=f"{rate:,.0f}")
            stopping = D.any_rank(stop.signum is not None, self.device)  # all ranks stop at the same step
            if stopping or (self.cfg.checkpoint_every and self.step % self.cfg.checkpoint_every == 0
                            and self.step < self.steps_per_epoch):
                self._flush(pending)
                self.sums.seconds += time.perf_counter() - t0
                t0, seen0 = time.perf_counter(), self.sums.seen
                self.save("last.pt")
                if stopping:
                    bar.close()
                    raise TrainingInterrupted(
                        f"interrupted at epoch {self.epoch + 1}, step {self.step}: saved {self.run_dir / 'last.pt'}; "
                        "run the same command again to resume")
            if batches and D.any_rank(self.stop_training, self.device):
                self.stop_training = True
                break
        self._flush(pending)
        bar.close()
        self.sums.seconds += time.perf_counter() - t0

    def finish_epoch(self) -> dict:
        """Validate when due, record the epoch in the history, run the callbacks' ``on_epoch_end``, save
        ``best.pt``/``last.pt`` (with what the callbacks decided); returns the epoch's row."""
        total = self._global_sums()
        loss, correct, seen = total.loss, total.correct, total.seen
        row = {"epoch": self.epoch + 1, "loss": loss / seen, "accuracy": correct / seen,
               "lr": self.optimizer.param_groups[0]["lr"], "seconds": self.sums.seconds,
               "images_per_sec": seen / max(self.sums.seconds, 1e-9)}
        validate = self.val_loader is not None and validation_due(self.epoch + 1, self.cfg.epochs, self.cfg.val_every)
        if validate:
            D.sync_buffers(self.model)
            tta = self.cfg.tta if self.epoch + 1 == self.cfg.epochs else "none"  # augmented views at the end only
            row.update(evaluate_metrics(D.without_ddp(self.model), self.val_loader, self.cfg.precision, tta))
            if not math.isfinite(row["val_loss"]):  # finite but overflowing weights: nothing worth saving
                raise self._diverged(f"validation loss became {row['val_loss']}", self.epoch + 1, self.steps_per_epoch)
        self.history.append(**row)
        self.epoch, self.step, self.sums = self.epoch + 1, 0, EpochSums()
        improved = validate and row["val_accuracy"] > self.best
        if improved:
            self.best = row["val_accuracy"]
        self.callbacks.call("on_epoch_end", self.epoch - 1, epoch_logs(row))
        self.stop_training = D.any_rank(self.stop_training, self.device)
        if improved:
            self.save("best.pt")
        self.save("last.pt")
        if D.is_main():  # the epoch's line is printed once its checkpoints are on disk
            self.history.save(self.run_dir)
            print(format_row(row, self.cfg.epochs, improved), file=sys.stderr, flush=True)
        return row

    def resume(self, check: ResumeCheck | None = None) -> bool:
        """Continue from ``run_dir/last.pt`` when it exists, after ``check(checkpoint)`` had the chance to refuse it."""
        last = self.run_dir / "last.pt"
        if not last.exists():
            return False
        ckpt = load_checkpoint(last, map_location=self.device)
        check_fields(ckpt, RESUME_FIELDS, str(last))
        if check:
            check(ckpt)
        try:
            self.restore(ckpt)
        except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as e:  # a foreign or damaged state
            raise CnnlabError(f"{last} is damaged (its training state does not load: {first_line(e, 120)}): "
                              "pass --fresh to start over, or use another --run-dir") from None
        if D.is_main():
            where = f"epoch {self.epoch + 1}, step {self.step}" if self.step else f"the end of epoch {self.epoch}"
            print(f"Resuming {self.run_dir} from {where} of {self.cfg.epochs} (last.pt)." if not self.stop_training
                  else f"{self.run_dir} was stopped by a callback after epoch {self.epoch}: it is finished "
                       "(start over with --fresh to train it again).", file=sys.stderr, flush=True)
            if len(self.history):  # a kill between last.pt and history.json left the history one epoch behind
                self.history.save(self.run_dir)
        return True

    def fit(self) -> History:
        """Train every remaining epoch; Ctrl-C/SIGTERM saves a resumable ``last.pt`` and raises TrainingInterrupted."""
        if D.is_main():
            self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            return self._epochs()
        except RuntimeError as e:
            if not D.lost_peer(e):
                raise
            raise CnnlabError(f"another process of this torchrun job stopped ({first_line(e)}); "
                              f"{self.run_dir / 'last.pt'} is intact: see torchrun's failure summary for the cause, "
                              "then run the same command again to resume") from None

    def _epochs(self) -> History:
        if self.stop_training or self.epoch >= self.cfg.epochs:  # finished: nothing to train, no hook to call
            return self.history
        with _StopFlag().installed() as stop, contextlib.ExitStack() as cleanup:
            cleanup.callback(self._release_finished)
            self.callbacks.call("on_train_begin", {})
            self.callbacks.load_state_dict(self._callback_states)
            logs: dict[str, float] = {}
            while self.epoch < self.cfg.epochs and not self.stop_training:
                if self.step == 0:
                    self.callbacks.call("on_epoch_begin", self.epoch, {})
                self.train_epoch(stop)
                logs = epoch_logs(self.finish_epoch())
                if D.any_rank(stop.signum is not None, self.device):
                    raise TrainingInterrupted(
                        f"interrupted after epoch {self.epoch}: saved {self.run_dir / 'last.pt'}; "
                        "run the same command again to resume")
            if self.stop_training and D.is_main():
                print(f"Training stopped by a callback after epoch {self.epoch} of {self.cfg.epochs}: the run is "
                      "finished.", file=sys.stderr, flush=True)
            self.callbacks.call("on_train_end", logs)
        return self.history


def epoch_logs(row: dict) -> dict[str, float]:
    """An epoch's row as Keras' ``logs``: every metric, without the epoch number (callbacks get it apart)."""
    return {k: v for k, v in row.items() if k != "epoch"}


def format_row(row: dict, epochs: int, improved: bool) -> str:
    """One line per epoch, as Keras prints after ``model.fit``'s progress bar."""
    text = (f"epoch {int(row['epoch'])}/{epochs}: loss {row['loss']:.4f} - accuracy {row['accuracy']:.4f}")
    if "val_loss" in row:
        text += f" - val_loss {row['val_loss']:.4f} - val_accuracy {row['val_accuracy']:.4f}"
    if "tta_val_accuracy" in row:
        text += f" - tta_val_accuracy {row['tta_val_accuracy']:.4f}"
    text += f" - {row['seconds']:.1f}s ({row['images_per_sec']:,.0f} img/s)"
    return text + (" - saved best.pt" if improved else "")


def fit(model: nn.Module, train_loader: TensorLoader, val_loader: TensorLoader | None, cfg: FitConfig,
        run_dir: Path, extra: dict | None = None, resume: bool = True, callbacks: Sequence[Callback] = (),
        progress: bool = True, optimizer_factory: OptimizerFactory | None = None,
        check_resume: ResumeCheck | None = None) -> History:
    """Train ``model`` as ``cfg`` says, writing checkpoints and history into ``run_dir``; returns the History.

    With ``resume`` and an existing ``run_dir/last.pt`` the run continues from it (``Trainer.resume``).
    ``optimizer_factory`` (model, cfg) → optimizer replaces ``make_optimizer`` (a recipe's parameter groups, say).
    ``callbacks`` are Keras' (``engine.callbacks``): they may stop the run or steer its learning rate.
    """
    trainer = Trainer(model, train_loader, val_loader, cfg, Path(run_dir), extra, callbacks, progress,
                      optimizer_factory)
    if resume:
        trainer.resume(check_resume)
    return trainer.fit()


__all__ = ["ResumeCheck", "Trainer", "TrainingInterrupted", "epoch_logs", "fit", "format_row"]
