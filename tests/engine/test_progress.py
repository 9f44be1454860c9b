"""The progress bar: live in a terminal, a widget in Jupyter, absent from logs (one line per epoch there)."""
from __future__ import annotations

import io
import sys

import pytest

import cnnlab
from cnnlab.engine.progress import bar_style, progress_bar


class Terminal(io.StringIO):
    """A text stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def test_the_style_follows_the_stream(monkeypatch):
    monkeypatch.delitem(sys.modules, "ipykernel.zmqshell", raising=False)
    assert bar_style(io.StringIO()) is None  # a log file or a pipe
    assert bar_style(Terminal()) == "terminal"
    assert bar_style(Terminal(), enabled=False) is None
    monkeypatch.setitem(sys.modules, "ipykernel.zmqshell", object())
    assert bar_style(io.StringIO()) == "notebook"


@pytest.mark.parametrize(("stream", "drawn"), [(Terminal(), True), (io.StringIO(), False)])
def test_a_bar_is_drawn_on_a_terminal_only(monkeypatch, stream, drawn):
    monkeypatch.delitem(sys.modules, "ipykernel.zmqshell", raising=False)
    monkeypatch.setattr(sys, "stderr", stream)
    bar = progress_bar(5, 0, "Epoch 1/2")
    for _ in range(5):
        bar.update(1)
    bar.close()
    assert ("Epoch 1/2" in stream.getvalue() and "5/5" in stream.getvalue()) == drawn
    assert drawn or stream.getvalue() == ""


def test_training_into_a_log_writes_one_line_per_epoch(tmp_path, capfd):
    cnnlab.train("baseline-cifar", epochs=2, limit_train=64, limit_val=32, batch_size=16, run_dir=tmp_path / "run")
    log = capfd.readouterr().err
    assert "\r" not in log and "batch/s" not in log
    assert [line.split(":")[0] for line in log.splitlines() if line.startswith("epoch ")] == ["epoch 1/2", "epoch 2/2"]
