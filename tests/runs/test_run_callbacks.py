"""The callback options of a run: --early-stopping, --reduce-lr-on-plateau [PATIENCE], --monitor, --tensorboard [DIR]."""
from __future__ import annotations

import pytest

import cnnlab
from cnnlab.callbacks import EarlyStopping, LambdaCallback, ReduceLROnPlateau, TensorBoard
from cnnlab.cli import build_parser, main, run_options
from cnnlab.runs.config import RunConfig
from cnnlab.runs.run import config_callbacks

QUICK = ["--epochs", "4", "--limit-train", "64", "--limit-val", "32", "--no-progress"]


def parsed(*flags: str) -> RunConfig:
    """The RunConfig `cnnlab train baseline-cifar FLAGS` builds."""
    return RunConfig(model="baseline-cifar", **run_options(build_parser().parse_args(["train", "baseline-cifar", *flags])))


@pytest.mark.parametrize("flags, field, value", [
    (["--reduce-lr-on-plateau"], "reduce_lr_on_plateau", 10),  # Keras' default patience
    (["--reduce-lr-on-plateau", "3"], "reduce_lr_on_plateau", 3),
    (["--tensorboard"], "tensorboard", "tensorboard"),
    (["--tensorboard", "/tmp/tb"], "tensorboard", "/tmp/tb"),
    (["--early-stopping", "0"], "early_stopping", 0),
    ([], "early_stopping", None),
])
def test_flags_that_may_stand_alone_or_repeat(flags, field, value):
    assert getattr(RunConfig(model="toy", **run_options(build_parser().parse_args(["train", "toy", *flags]))),
                   field) == value


def test_model_option_repeats_into_one_dict_that_the_factory_types():
    given = run_options(build_parser().parse_args(["train", "googlenet", "--model-option", "aux_logits=true",
                                                   "--model-option", "dropout=0.2"]))
    assert given["model_kwargs"] == {"aux_logits": "true", "dropout": "0.2"}
    assert RunConfig(model="googlenet", **given).model_kwargs == {"aux_logits": True, "dropout": 0.2}


def test_the_options_become_keras_callbacks_watching_the_monitor():
    es, plateau, tb = config_callbacks(parsed("--early-stopping", "2", "--reduce-lr-on-plateau", "--monitor",
                                              "val_accuracy", "--tensorboard"))
    assert isinstance(es, EarlyStopping) and (es.monitor, es.mode, es.patience) == ("val_accuracy", "max", 2)
    assert isinstance(plateau, ReduceLROnPlateau) and (plateau.monitor, plateau.patience, plateau.factor) == \
        ("val_accuracy", 10, 0.1)
    assert isinstance(tb, TensorBoard) and tb.log_dir == "tensorboard"
    assert config_callbacks(parsed()) == []
    with pytest.raises(cnnlab.CnnlabError, match="--early-stopping must be >= 0"):
        parsed("--early-stopping", "-1")


def test_a_run_stopped_by_a_callback_is_finished_for_the_cli_too(tmp_path, capsys):
    run = tmp_path / "run"
    stop = LambdaCallback(on_epoch_end=lambda epoch, logs: setattr(stop.trainer, "stop_training", True))
    history = cnnlab.train("baseline-cifar", run_dir=run, epochs=4, limit_train=64, limit_val=32, progress=False,
                           tensorboard="tb", reduce_lr_on_plateau=1, callbacks=[stop])
    assert len(history) == 1 and (run / "tb" / "train").is_dir() and (run / "tb" / "validation").is_dir()
    assert main(["train", "baseline-cifar", *QUICK, "--run-dir", str(run), "--early-stopping", "1"]) == 0
    out, err = capsys.readouterr()
    assert "was stopped by a callback after epoch 1: it is finished" in err and "Done: 1 epoch;" in out


def test_the_callbacks_are_cnnlab_callbacks_as_keras_callbacks_are_keras_callbacks():
    assert cnnlab.callbacks.EarlyStopping is EarlyStopping and "callbacks" in dir(cnnlab)
    assert set(cnnlab.callbacks.__all__) >= {"Callback", "EarlyStopping", "ReduceLROnPlateau", "ModelCheckpoint",
                                            "TensorBoard", "CSVLogger", "LearningRateScheduler", "LambdaCallback"}
