"""Lookahead: the slow copy's schedule, the blend and restart, the average at the end, an exact resume."""
import pytest
import torch
from torch import nn

from cnnlab.engine import load_checkpoint
from cnnlab.engine.lookahead import PER_STEP_DECAY, Lookahead, lookahead_decay
from cnnlab.runs.config import RunConfig

from test_fit import Kill, KillAt, _run, _same_history


def test_the_slow_copy_weighs_nothing_at_the_start_and_the_cube_of_progress_after():
    assert lookahead_decay(0, 100, 5) == 0.0
    assert lookahead_decay(50, 100, 5) == pytest.approx(PER_STEP_DECAY ** 5 / 8)
    assert lookahead_decay(100, 100, 5) == pytest.approx(0.95 ** 5)  # airbench's 0.95 ** 5 every 5 steps


def test_a_due_step_blends_the_weights_and_buffers_into_the_slow_copy_and_restarts_from_it():
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    la = Lookahead(model, period=2, total_steps=4)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.add_(1.0)
    la.after_step(1)  # not due: nothing moves
    assert torch.equal(model[0].weight, start["0.weight"] + 1)
    la.after_step(2)
    d = lookahead_decay(2, 4, 2)
    for name in ("0.weight", "0.bias", "1.running_mean", "1.running_var"):
        expected = d * start[name] + (1 - d) * (start[name] + 1)
        assert torch.allclose(model.state_dict()[name], expected), name
        assert torch.allclose(la.state_dict()[name], expected), name
    assert int(model[1].num_batches_tracked) == 0  # integer state is left alone


def test_the_last_step_ends_on_the_average_even_off_the_period():
    model = nn.Linear(2, 1)
    la = Lookahead(model, period=4, total_steps=6)
    with torch.no_grad():
        model.weight.fill_(2.0)
    la.after_step(6)
    assert torch.equal(model.weight, la.state_dict()["weight"])
    assert not torch.equal(model.weight, torch.full_like(model.weight, 2.0))


def test_a_run_with_lookahead_learns_and_differs_from_one_without(tmp_path):
    plain, _ = _run(tmp_path, "plain", epochs=3)
    averaged, _ = _run(tmp_path, "la", epochs=3, lookahead=2)
    assert averaged.last("val_accuracy") > 0.8  # 4 classes: chance is 0.25
    assert averaged.history["loss"] != plain.history["loss"]
    assert set(load_checkpoint(tmp_path / "la" / "last.pt")["lookahead"]) >= {"0.weight", "1.running_var"}


def test_resume_with_lookahead_matches_uninterrupted(tmp_path):
    whole, _ = _run(tmp_path, "whole", epochs=2, lookahead=4)  # 6 steps an epoch: blends straddle the epoch end
    with pytest.raises(Kill):  # after epoch 2's mid-epoch checkpoint at step 8, a blend behind it
        _run(tmp_path, "killed", epochs=2, checkpoint_every=2, lookahead=4, callbacks=[KillAt(9)])
    assert load_checkpoint(tmp_path / "killed" / "last.pt")["step"] == 2
    resumed, _ = _run(tmp_path, "killed", epochs=2, checkpoint_every=2, lookahead=4)
    _same_history(whole, resumed)


def test_lookahead_is_a_run_option_and_part_of_what_a_run_is():
    assert RunConfig(model="baseline-cifar", lookahead=5).fit_config().lookahead == 5
    assert RunConfig.from_dict({"model": "baseline-cifar"}).lookahead == 0  # runs saved before it trained without
