"""io: atomic writes' neighbours — the run-directory lock and the refusal of run directories that cannot be."""
from __future__ import annotations

import os

import pytest
import torch

from cnnlab.errors import CnnlabError
from cnnlab.io import LOCK_NAME, exclusive_lock, run_dir_lock
from cnnlab.runs import run


def test_a_locked_run_dir_names_its_holder_and_is_free_again_after_release(tmp_path):
    with run_dir_lock(tmp_path / "run"):
        holder = (tmp_path / "run" / LOCK_NAME).read_text()
        assert holder.startswith(f"{os.getpid()}\n")
        with pytest.raises(CnnlabError, match=rf"run is being trained by process {os.getpid()} \(.+\); wait for it, "
                                              "or choose another --run-dir"):
            with run_dir_lock(tmp_path / "run"):
                pass
    assert not (tmp_path / "run" / LOCK_NAME).exists()
    with run_dir_lock(tmp_path / "run"):
        pass


def test_a_lock_file_left_by_a_dead_process_is_taken_over(tmp_path):
    (tmp_path / LOCK_NAME).write_text("999999\ncnnlab train x\n")  # no flock on it: its holder is gone
    with run_dir_lock(tmp_path):
        assert (tmp_path / LOCK_NAME).read_text().startswith(f"{os.getpid()}\n")


@pytest.mark.parametrize("layout,words", [
    ("file", "is a file, not a directory: choose another --run-dir"),
    ("under", "lies under a file, not a directory: choose another --run-dir"),
])
def test_a_run_dir_that_is_a_file_or_lies_under_one_is_one_line(tmp_path, layout, words):
    (tmp_path / "f").write_text("x")
    target = tmp_path / "f" if layout == "file" else tmp_path / "f" / "run"
    with pytest.raises(CnnlabError, match=words):
        with run_dir_lock(target):
            pass


def test_a_busy_callback_may_wait_instead_of_refusing(tmp_path):
    calls = []

    def unusable(e):
        return CnnlabError(str(e))

    with exclusive_lock(tmp_path / "x.lock", unusable) as fd:
        assert fd >= 0
    assert not (tmp_path / "x.lock").exists()
    with pytest.raises(CnnlabError, match="No such file"):
        with exclusive_lock(tmp_path / "missing" / "x.lock", unusable, calls.append):
            pass
    assert calls == []


def test_under_torchrun_only_rank_0_locks_and_every_rank_stops_when_it_could_not(tmp_path, monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(run.D, "rank", lambda: 1)
    with run.training_lock(tmp_path, cpu):
        assert not (tmp_path / LOCK_NAME).exists(), "rank 1 takes no lock"
    monkeypatch.setattr(run.D, "any_rank", lambda flag, device: True)  # rank 0 reported that it was refused
    with pytest.raises(CnnlabError, match="rank 1 stops: rank 0 could not lock"):
        with run.training_lock(tmp_path, cpu):
            pass
