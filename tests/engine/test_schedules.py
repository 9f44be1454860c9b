"""Keras' decays as learning-rate schedules: the exact formulas, their options, and a run that follows them."""
from __future__ import annotations

import pytest

from cnnlab.engine.optim import Decay, decay_of, lr_factor
from cnnlab.engine.config import FitConfig
from cnnlab.errors import CnnlabError
from cnnlab.runs.config import RunConfig


def test_inverse_time_is_keras_sgd_decay():
    d = Decay(decay=1e-3)
    assert [lr_factor(s, 10_000, "inverse-time", decay=d) for s in (0, 1, 1000, 5000)] == \
        pytest.approx([1.0, 1 / 1.001, 0.5, 1 / 6])


def test_step_decay_drops_by_gamma_every_step_size():
    d = Decay(step_size=30, gamma=0.5)
    assert [lr_factor(s, 1000, "step", decay=d) for s in (0, 29, 30, 59, 60, 95)] == [1, 1, 0.5, 0.5, 0.25, 0.125]


def test_exponential_decay_is_keras_exponential_decay():
    d = Decay(decay_rate=0.96, decay_steps=100)
    assert [lr_factor(s, 1000, "exponential", decay=d) for s in (0, 50, 100, 250)] == \
        pytest.approx([1.0, 0.96 ** 0.5, 0.96, 0.96 ** 2.5])


def test_decays_start_after_the_warm_up():
    d = Decay(decay=0.1)
    assert [lr_factor(s, 100, "inverse-time", warmup=4, decay=d) for s in (0, 3, 4, 14)] == \
        pytest.approx([0.25, 1.0, 1.0, 0.5])


def test_step_size_is_given_in_epochs_and_counted_in_steps():
    cfg = FitConfig(schedule="step", step_size=2.5, gamma=0.5)
    assert decay_of(cfg, steps_per_epoch=10).step_size == 25
    with pytest.raises(CnnlabError, match="the step schedule needs step_size"):
        decay_of(FitConfig(schedule="step"), 10)


def test_decay_alone_selects_the_inverse_time_schedule_as_keras_sgd_decay_does():
    cfg = RunConfig(optimizer="sgd", lr=0.01, decay=1e-3)
    assert (cfg.schedule, cfg.fit_config().decay) == ("inverse-time", 1e-3)
    assert RunConfig(model="fast-cifar", decay=1e-3).schedule == "inverse-time"  # over the recipe's linear


@pytest.mark.parametrize("options, message", [
    (dict(schedule="step"), "--schedule step needs --step-size"),
    (dict(schedule="exponential"), "--schedule exponential needs --decay-steps"),
    (dict(schedule="inverse-time"), "--schedule inverse-time needs --decay"),
    (dict(schedule="cosine", decay=1e-3), "--decay belongs to --schedule inverse-time, but this run's schedule is cosine"),
    (dict(gamma=0.5), "--gamma belongs to --schedule step"),
    (dict(schedule="step", step_size=1, decay_rate=0.5), "--decay-rate belongs to --schedule exponential"),
    (dict(schedule="step", step_size=1, gamma=2.0), r"--gamma must be in \(0, 1\]"),
])
def test_schedule_options_that_cannot_work_are_one_line(options, message):
    with pytest.raises(CnnlabError, match=message):
        RunConfig(**options)


def test_a_run_follows_the_step_schedule(tmp_path):
    import cnnlab

    history = cnnlab.train("baseline-cifar", run_dir=tmp_path / "r", progress=False, epochs=3, limit_train=64,
                           limit_val=32, batch_size=32, schedule="step", step_size=1, gamma=0.5)
    assert history.history["lr"] == pytest.approx([1e-3, 5e-4, 2.5e-4])


def test_sgd_momentum_is_nesterov_unless_asked_classical_as_the_he2016_recipe_asks():
    import torch

    from cnnlab.engine.optim import make_optimizer
    from cnnlab.runs.recipes import get_recipe

    model = torch.nn.Linear(3, 2)
    nesterov = make_optimizer(model, FitConfig(optimizer="sgd", lr=0.1, momentum=0.9))
    classical = make_optimizer(model, FitConfig(optimizer="sgd", lr=0.1, momentum=0.9, nesterov=False))
    assert nesterov.param_groups[0]["nesterov"] and not classical.param_groups[0]["nesterov"]
    assert not make_optimizer(model, FitConfig(optimizer="sgd", lr=0.1, momentum=0.0)).param_groups[0]["nesterov"]
    assert get_recipe("he2016-cifar").defaults["nesterov"] is False  # the paper's "momentum of 0.9"
    assert RunConfig(model="resnet20-cifar", nesterov=False).fit_config().nesterov is False
