"""Fit loop: it learns, resumes exactly (epoch ends and mid-epoch), keeps best/last, fails cleanly."""
import importlib
import json
import math
import os
import pickle

import pytest
import torch
from torch import nn

from cnnlab.callbacks import Callback
from cnnlab.data.loader import TensorLoader
from cnnlab.engine import FitConfig, History, fit, load_checkpoint
from cnnlab.engine.checkpoint import save_checkpoint
from cnnlab.engine.optim import lr_factor
from cnnlab.errors import CnnlabError
from cnnlab.io import atomic_write_bytes
from cnnlab.runs.config import RunConfig
from cnnlab.runs.run import identity_check


def _toy_data(n=256, seed=0):
    """Class = which horizontal band is bright: learnable in a few steps, unchanged by left-right flips."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (n,), generator=g)
    images = torch.randint(0, 60, (n, 1, 8, 8), generator=g, dtype=torch.uint8)
    for i, c in enumerate(labels.tolist()):
        images[i, 0, c * 2:(c + 1) * 2, :] += 180
    return images, labels


def _toy_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.2),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 16, 4))


def _run(tmp_path, name, epochs=3, checkpoint_every=0, check_resume=None, callbacks=(), **cfg_kw):
    images, labels = _toy_data()
    cfg = FitConfig(epochs=epochs, batch_size=32, checkpoint_every=checkpoint_every, **cfg_kw)
    train = TensorLoader(images[:192], labels[:192], 32, augment="flip", seed=cfg.seed)
    val = TensorLoader(images[192:], labels[192:], 64, shuffle=False)
    return fit(_toy_model(), train, val, cfg, tmp_path / name, progress=False, check_resume=check_resume,
               callbacks=callbacks), cfg


def test_fit_learns_and_writes_run_files(tmp_path):
    history, _ = _run(tmp_path, "a", epochs=4)
    assert isinstance(history, History) and len(history) == 4
    assert history.last("val_accuracy") > 0.9 and history.history["loss"][-1] < history.history["loss"][0]
    run = tmp_path / "a"
    assert {"best.pt", "last.pt", "history.json", "history.csv"} <= set(os.listdir(run))
    assert json.loads((run / "history.json").read_text())["epoch"] == [1, 2, 3, 4]
    assert (run / "history.csv").read_text().splitlines()[0].startswith("epoch,loss,accuracy,val_loss,val_accuracy")
    assert load_checkpoint(run / "last.pt")["epoch"] == 4


@pytest.mark.parametrize("val_every, validated", [(1, [1, 2, 3, 4, 5]), (2, [2, 4, 5]), (0, [5])])
def test_val_every_validates_on_its_epochs_and_always_after_the_last(tmp_path, val_every, validated):
    history, _ = _run(tmp_path, f"v{val_every}", epochs=5, val_every=val_every)
    rows = history.history
    assert [e for e, acc in zip(rows["epoch"], rows["val_accuracy"]) if not math.isnan(acc)] == validated
    assert load_checkpoint(tmp_path / f"v{val_every}" / "best.pt")["epoch"] in validated


def _same_history(h1: History, h2: History) -> None:
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert h1.history[key] == pytest.approx(h2.history[key], rel=1e-6, abs=1e-7), key


def test_resume_after_stopping_at_an_epoch_end_matches_uninterrupted(tmp_path):
    whole, _ = _run(tmp_path, "whole", epochs=3)
    _run(tmp_path, "split", epochs=1)
    resumed, _ = _run(tmp_path, "split", epochs=3)
    _same_history(whole, resumed)


class Kill(Exception):
    """Stands for the process dying in the middle of a run."""


class KillAt(Callback):
    """Dies after global step ``step``, past whatever checkpoint the run wrote before it."""

    def __init__(self, step: int) -> None:
        super().__init__()
        self.at = step

    def on_train_batch_end(self, batch, logs=None):
        if self.trainer.global_step == self.at:
            raise Kill


def test_resume_from_a_mid_epoch_checkpoint_matches_uninterrupted(tmp_path):
    whole, _ = _run(tmp_path, "whole", epochs=2)
    with pytest.raises(Kill):  # epoch 2, after the mid-epoch checkpoint at its step 2
        _run(tmp_path, "killed", epochs=2, checkpoint_every=2, callbacks=[KillAt(9)])
    ckpt = load_checkpoint(tmp_path / "killed" / "last.pt")
    assert (ckpt["epoch"], ckpt["step"]) == (1, 2)
    resumed, _ = _run(tmp_path, "killed", epochs=2, checkpoint_every=2)
    _same_history(whole, resumed)


def test_nan_loss_stops_with_a_hint_and_keeps_last_good_checkpoint(tmp_path):
    _run(tmp_path, "nan", epochs=1)
    before = (tmp_path / "nan" / "last.pt").read_bytes()
    with pytest.raises(CnnlabError, match=r"loss became nan at epoch 2.*lower --lr"):
        _run(tmp_path, "nan", epochs=2, lr=1e30)
    assert (tmp_path / "nan" / "last.pt").read_bytes() == before


def test_checkpoint_with_code_is_refused_not_executed(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    torch.save({"format": "cnnlab-checkpoint-v1", "x": Evil()}, path)
    with pytest.raises(CnnlabError, match="refusing to load"):
        load_checkpoint(path)
    assert not marker.exists()
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(CnnlabError):
        load_checkpoint(plain)
    assert not marker.exists()


def test_truncated_checkpoint_gives_one_clear_error(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(1000)}})
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(CnnlabError, match="corrupt or truncated"):
        load_checkpoint(path)


def test_unwritable_run_dir_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(CnnlabError, match="cannot write .*writable"):
        atomic_write_bytes(blocker / "run" / "last.pt", b"1")


def test_failed_atomic_write_leaves_previous_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "last.pt"
    atomic_write_bytes(target, b"old")

    def disk_full(*_a, **_k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(CnnlabError, match="No space left on device.*previous version"):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["last.pt"]


@pytest.mark.parametrize("schedule", ["constant", "cosine", "onecycle"])
def test_lr_schedules_are_pure_functions_of_the_step(schedule):
    values = [lr_factor(s, 100, schedule, warmup=10) for s in range(100)]
    assert values[0] == pytest.approx(0.1) and max(values) <= 1.0 + 1e-9
    if schedule != "constant":
        assert values[-1] < 0.05
    assert all(math.isfinite(v) for v in values)


@pytest.mark.parametrize("field,value,msg", [("epochs", 0, "--epochs"), ("batch_size", -1, "--batch-size"),
                                             ("lr", -0.1, "--lr"), ("val", "1.5", "--val"), ("optimizer", "rms", "--optimizer")])
def test_invalid_config_values_are_named(field, value, msg):
    with pytest.raises(CnnlabError, match=msg):
        RunConfig(**{field: value})


def test_resuming_with_a_different_recipe_is_refused(tmp_path):
    def run_config(optimizer):
        return {"config": RunConfig(model="toy", optimizer=optimizer).to_dict()}

    images, labels = _toy_data()
    train = TensorLoader(images[:192], labels[:192], 32)
    fit(_toy_model(), train, None, FitConfig(epochs=1), tmp_path / "r", run_config("adam"), progress=False)
    check = identity_check(RunConfig(model="toy", optimizer="sgd"), tmp_path / "r")
    with pytest.raises(CnnlabError, match="different optimizer.*--fresh"):
        fit(_toy_model(), train, None, FitConfig(epochs=2, optimizer="sgd"), tmp_path / "r", progress=False,
            check_resume=check)


def test_divergence_in_the_first_epoch_does_not_cite_a_last_pt_that_does_not_exist(tmp_path):
    with pytest.raises(CnnlabError, match=r"became (nan|inf|non-finite).* at epoch 1, step \d+: training stopped, no "
                                          r"checkpoint had been written yet\. Try a lower --lr") as caught:
        _run(tmp_path, "first", epochs=1, lr=1e30)
    assert "last.pt" not in str(caught.value) and not (tmp_path / "first" / "last.pt").exists()


def test_finite_weights_that_overflow_in_validation_are_divergence_not_a_saved_best(tmp_path, monkeypatch):
    import sys

    monkeypatch.setattr(sys.modules["cnnlab.engine.fit"], "evaluate_metrics", lambda *a, **k: {"val_loss": math.nan, "val_accuracy": 0.0})
    with pytest.raises(CnnlabError, match=r"validation loss became nan at epoch 1, step 6: training stopped, no "
                                          "checkpoint had been written yet"):
        _run(tmp_path, "val", epochs=1)
    assert not (tmp_path / "val" / "best.pt").exists()


class _GlobalPoolNet(nn.Module):
    """Takes any image side (global pooling), recording the side of every batch, training or not."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.head, self.sides = nn.Conv2d(1, 8, 3, padding=1), nn.Linear(8, 4), []

    def forward(self, x):
        self.sides.append((self.training, x.shape[-1]))
        return self.head(self.conv(x).relu().mean((2, 3)))


def test_progressive_resizing_trains_each_epoch_at_its_side_and_validates_at_full_size(tmp_path, monkeypatch):
    images, labels = _toy_data()
    images = images.repeat_interleave(2, 2).repeat_interleave(2, 3)  # 16x16
    trims = []
    monkeypatch.setattr(importlib.import_module("cnnlab.engine.fit"), "trim_freed_memory", lambda: trims.append(1))
    cfg = FitConfig(epochs=4, batch_size=64, progressive_resize=8)
    net = _GlobalPoolNet()
    history = fit(net, TensorLoader(images[:192], labels[:192], 64), TensorLoader(images[192:], labels[192:], 64,
                  shuffle=False), cfg, tmp_path / "p", progress=False)
    trained = [side for training, side in net.sides if training]
    assert trained == [8] * 3 + [12] * 3 + [16] * 6  # 4 epochs: 8, 12, then full size for the last two
    assert {side for training, side in net.sides if not training} == {16}  # validation at full size
    assert len(trims) == 3 and len(history) == 4  # the heap is trimmed once per change of side
