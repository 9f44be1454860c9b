"""Keras' callbacks: Keras' decisions on given metric sequences, and real fits that stop, steer, log and resume exactly."""
from __future__ import annotations

import csv
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from cnnlab.callbacks import (CSVLogger, Callback, EarlyStopping, LambdaCallback, LearningRateScheduler,
                              ModelCheckpoint, ReduceLROnPlateau, TensorBoard)
from cnnlab.engine import load_checkpoint
from cnnlab.engine.callbacks import tensorboard_tag
from cnnlab.errors import CnnlabError

LOGGED = ("loss", "accuracy", "lr", "val_loss", "val_accuracy")


def stub_trainer(lr: float = 0.1) -> SimpleNamespace:
    """What the monitoring callbacks use of a Trainer, with a learning rate they can scale."""
    t = SimpleNamespace(stop_training=False, lr=lr, metric_names=lambda: LOGGED)
    t.current_lr = lambda: t.lr
    t.scale_lr = lambda f: setattr(t, "lr", t.lr * f)
    return t


def feed(callback: Callback, values: list[float], monitor: str = "val_loss", lr: float = 0.1) -> list:
    """Run ``callback`` over epochs whose ``monitor`` takes ``values``; (stop flag, lr) after each epoch."""
    trainer = stub_trainer(lr)
    callback.set_trainer(trainer)
    callback.on_train_begin()
    seen = []
    for epoch, v in enumerate(values):
        callback.on_epoch_end(epoch, {monitor: v})
        seen.append((trainer.stop_training, trainer.lr))
    return seen


# ---- Keras' decisions ---------------------------------------------------------------------------
def test_early_stopping_waits_patience_epochs_after_the_best():
    stops = [s for s, _ in feed(EarlyStopping(patience=3), [1.0, 0.9, 0.95, 0.94, 0.93, 0.5])]
    assert stops == [False, False, False, False, True, True]  # stopped after epoch 5 (index 4)


def test_early_stopping_min_delta_and_mode_max():
    es = EarlyStopping(monitor="val_accuracy", patience=1, min_delta=0.05)
    assert es.mode == "max"
    stops = [s for s, _ in feed(es, [0.5, 0.52, 0.53, 0.9], monitor="val_accuracy")]
    assert stops == [False, True, True, True]  # +0.02 is no improvement by 0.05


def test_early_stopping_baseline_keeps_counting_until_beaten():
    values = [1.0, 0.9, 0.9]
    assert [s for s, _ in feed(EarlyStopping(patience=2), values)] == [False, False, False]
    assert [s for s, _ in feed(EarlyStopping(patience=2, baseline=0.5), values)] == [False, False, True]


def test_early_stopping_never_stops_after_the_first_epoch_alone_and_skips_unvalidated_epochs():
    assert feed(EarlyStopping(patience=0), [1.0])[0][0] is False
    assert [s for s, _ in feed(EarlyStopping(patience=0), [1.0, math.nan, 1.0])] == [False, False, True]


def test_reduce_lr_on_plateau_follows_keras_with_cooldown_and_min_lr():
    cb = ReduceLROnPlateau(factor=0.5, patience=2, cooldown=2, min_lr=0.02)
    lrs = [lr for _, lr in feed(cb, [1.0] * 10)]
    # wait 1, 2 → 0.05; cooldown 2 → 1 (no wait), 1 → 0 and wait 1 (Keras counts in the cooldown's last epoch),
    # wait 2 → 0.025; the same again, then 0.0125 is held at min_lr
    assert lrs == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.05, 0.025, 0.025, 0.025, 0.02, 0.02])


def test_reduce_lr_on_plateau_min_delta_counts_tiny_gains_as_plateau():
    lrs = [lr for _, lr in feed(ReduceLROnPlateau(patience=1, min_delta=0.1), [1.0, 0.95, 0.5])]
    assert lrs == pytest.approx([0.1, 0.01, 0.01])


@pytest.mark.parametrize("make, message", [
    (lambda: ReduceLROnPlateau(factor=1.0), r"factor must be in \(0, 1\)"),
    (lambda: EarlyStopping(patience=-1), "patience must be a number >= 0"),
    (lambda: EarlyStopping(mode="up"), "mode must be one of auto, min, max"),
    (lambda: EarlyStopping(monitor="images_per_sec"), "pass mode='min' or mode='max'"),
    (lambda: LearningRateScheduler(0.1), "needs a function"),
])
def test_wrong_arguments_are_one_clear_line(make, message):
    with pytest.raises(CnnlabError, match=message):
        make()


def test_a_monitor_the_run_does_not_log_is_named_with_the_choices(tmp_path, tiny_fit):
    with pytest.raises(CnnlabError, match="monitors 'val_acc', which this run does not log: choose one of loss, "):
        tiny_fit(tmp_path / "r", [EarlyStopping(monitor="val_acc", mode="max")])
    with pytest.raises(CnnlabError, match="must be cnnlab.callbacks.Callback instances, not function"):
        tiny_fit(tmp_path / "r", [lambda epoch, logs: None])


# ---- real fits ------------------------------------------------------------------------------------
def test_early_stopping_stops_a_fit_and_the_run_stays_finished(tmp_path, capsys, tiny_fit):
    plateau = EarlyStopping(monitor="loss", min_delta=10.0, patience=1)  # no epoch improves by 10
    history, _ = tiny_fit(tmp_path / "r", [plateau], epochs=6)
    assert len(history) == 2 and plateau.stopped_epoch == 1
    assert load_checkpoint(tmp_path / "r" / "last.pt")["stop_training"] is True
    again, _ = tiny_fit(tmp_path / "r", [EarlyStopping(monitor="loss", patience=1)], epochs=6)
    assert len(again) == 2
    assert "stopped by a callback after epoch 2: it is finished" in capsys.readouterr().err


class Snapshots(Callback):
    """The model's weights at the end of every epoch."""

    def __init__(self) -> None:
        self.kept: dict[int, dict] = {}

    def on_epoch_end(self, epoch, logs=None):
        self.kept[epoch] = {k: v.clone() for k, v in self.model.state_dict().items()}


def test_restore_best_weights_puts_the_best_epoch_back(tmp_path, tiny_fit):
    snapshots = Snapshots()
    es = EarlyStopping(monitor="val_loss", patience=10, restore_best_weights=True)
    history, model = tiny_fit(tmp_path / "r", [snapshots, es], epochs=3)
    best = snapshots.kept[min(range(3), key=lambda e: history.history["val_loss"][e])]
    saved = load_checkpoint(tmp_path / "r" / "last.pt")["model"]
    assert all(torch.equal(model.state_dict()[k], v) and torch.equal(saved[k], v) for k, v in best.items())


def test_a_batch_callback_can_stop_in_the_middle_of_an_epoch(tmp_path, tiny_fit):
    def stop_at_third_step(batch, logs):
        if batch == 2:
            stopper.trainer.stop_training = True

    stopper = LambdaCallback(on_train_batch_end=stop_at_third_step)
    history, _ = tiny_fit(tmp_path / "r", [stopper], epochs=3)
    assert len(history) == 1 and not math.isnan(history.last("val_loss"))


def test_learning_rate_scheduler_sets_each_epochs_rate(tmp_path, tiny_fit):
    history, _ = tiny_fit(tmp_path / "a", [LearningRateScheduler(lambda epoch, lr: 0.01 * 0.5 ** epoch)], lr=1.0)
    assert history.history["lr"] == pytest.approx([0.01, 0.005, 0.0025, 0.00125])
    history, _ = tiny_fit(tmp_path / "b", [LearningRateScheduler(lambda epoch: 0.1 if epoch < 2 else 0.01)])
    assert history.history["lr"] == pytest.approx([0.1, 0.1, 0.01, 0.01])


class KillAt(Callback):
    """Raise at a global step, as a kill would stop the process."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, batch, logs=None):
        if self.trainer.global_step == self.step:
            raise KeyboardInterrupt


def steering() -> list[Callback]:
    """Callbacks whose decisions depend on their state: halve the rate and stop on a plateau that never ends."""
    return [ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=1, min_delta=10.0),
            EarlyStopping(monitor="val_loss", patience=4, min_delta=10.0)]


def test_a_resumed_run_takes_the_same_callback_decisions_as_an_uninterrupted_one(tmp_path, tiny_fit):
    whole, _ = tiny_fit(tmp_path / "whole", steering(), epochs=8, checkpoint_every=2)
    with pytest.raises(KeyboardInterrupt):
        tiny_fit(tmp_path / "cut", [*steering(), KillAt(4 * 3 + 3)], epochs=8, checkpoint_every=2)  # epoch 4, step 3
    ckpt = load_checkpoint(tmp_path / "cut" / "last.pt")
    assert (ckpt["epoch"], ckpt["step"], ckpt["lr_multiplier"]) == (3, 2, 0.25)
    assert ckpt["callbacks"]["EarlyStopping"]["wait"] == 2
    resumed, _ = tiny_fit(tmp_path / "cut", steering(), epochs=8, checkpoint_every=2)
    assert len(whole) == len(resumed) == 5  # stopped after epoch 5 in both
    assert resumed.history["lr"] == whole.history["lr"] == pytest.approx([1e-3, 1e-3, 5e-4, 2.5e-4, 1.25e-4])
    for key in ("loss", "val_loss", "val_accuracy"):
        assert resumed.history[key] == pytest.approx(whole.history[key], rel=1e-6), key


def test_model_checkpoint_names_files_from_the_epoch_and_metrics(tmp_path, tiny_fit):
    every = ModelCheckpoint("ckpt/e{epoch:02d}-{val_loss:.2f}.pt")
    best = ModelCheckpoint("best-loss.pt", monitor="val_loss", save_best_only=True, verbose=1)
    weights = ModelCheckpoint("w{epoch}.pth", save_weights_only=True)
    history, model = tiny_fit(tmp_path / "r", [every, best, weights], epochs=3)
    names = sorted(p.name for p in (tmp_path / "r" / "ckpt").iterdir())
    assert names == [f"e{e + 1:02d}-{v:.2f}.pt" for e, v in enumerate(history.history["val_loss"])]
    best_epoch = min(range(3), key=lambda e: history.history["val_loss"][e]) + 1
    assert load_checkpoint(tmp_path / "r" / "best-loss.pt")["epoch"] == best_epoch
    state = torch.load(tmp_path / "r" / "w3.pth", weights_only=True)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    with pytest.raises(CnnlabError, match=r"filepath 'x\{val_acc\}.pt' cannot be filled .*\{val_accuracy\}"):
        tiny_fit(tmp_path / "bad", [ModelCheckpoint("x{val_acc}.pt")], epochs=1)


def test_model_checkpoint_of_a_relative_run_dir_writes_inside_it_once(tmp_path, tiny_fit, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tiny_fit(Path("runs/r"), [ModelCheckpoint("ckpt/e{epoch}.pt")], epochs=1)
    assert load_checkpoint(tmp_path / "runs/r/ckpt/e1.pt")["epoch"] == 1
    assert not (tmp_path / "runs/r/runs").exists()


def test_csv_logger_writes_keras_rows_and_appends_across_a_resume(tmp_path, tiny_fit):
    tiny_fit(tmp_path / "r", [CSVLogger("log.csv", append=True)], epochs=2)
    tiny_fit(tmp_path / "r", [CSVLogger("log.csv", append=True)], epochs=3)
    rows = list(csv.DictReader((tmp_path / "r" / "log.csv").open()))
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]
    assert list(rows[0]) == ["epoch", *sorted(["loss", "accuracy", "lr", "seconds", "images_per_sec", "val_loss",
                                                "val_accuracy"])]
    tiny_fit(tmp_path / "w", [CSVLogger("log.csv")], epochs=1)
    assert len((tmp_path / "w" / "log.csv").read_text().splitlines()) == 2


def test_tensorboard_writes_keras_tags_histograms_and_the_graph(tmp_path, tiny_fit):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tiny_fit(tmp_path / "r", [TensorBoard("tb", update_freq=2)], epochs=2)
    runs = {}
    for side in ("train", "validation", "train_batches"):
        acc = EventAccumulator(str(tmp_path / "r" / "tb" / side))
        acc.Reload()
        runs[side] = acc
    assert {"epoch_loss", "epoch_accuracy", "epoch_learning_rate"} <= set(runs["train"].Tags()["scalars"])
    assert [e.step for e in runs["validation"].Scalars("epoch_loss")] == [0, 1]
    assert {"2.weight", "2.bias"} <= set(runs["train"].Tags()["histograms"])
    assert runs["train"].Tags()["graph"]
    assert [e.step for e in runs["train_batches"].Scalars("batch_loss")] == [2, 4, 6, 8]


def test_tensorboard_tags_and_the_missing_package_hint(monkeypatch):
    assert tensorboard_tag("val_loss") == ("validation", "epoch_loss")
    assert tensorboard_tag("tta_val_accuracy") == ("validation", "epoch_tta_accuracy")
    assert tensorboard_tag("lr") == ("train", "epoch_learning_rate")
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(CnnlabError, match=r"needs the tensorboard package: pip install 'cnnlab\[tensorboard\]'"):
        TensorBoard()


def test_lambda_callback_calls_every_hook_in_keras_order(tmp_path, tiny_fit):
    calls = []
    cb = LambdaCallback(on_train_begin=lambda logs: calls.append("train_begin"),
                        on_epoch_begin=lambda epoch, logs: calls.append(f"epoch_begin {epoch}"),
                        on_train_batch_end=lambda batch, logs: calls.append(f"batch {batch}"),
                        on_epoch_end=lambda epoch, logs: calls.append(f"epoch_end {epoch} {sorted(logs)[0]}"),
                        on_train_end=lambda logs: calls.append("train_end"))
    tiny_fit(tmp_path / "r", [cb], epochs=1)
    assert calls == ["train_begin", "epoch_begin 0", "batch 0", "batch 1", "batch 2", "batch 3",
                     "epoch_end 0 accuracy", "train_end"]
