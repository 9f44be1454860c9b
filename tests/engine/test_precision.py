"""fp16 and bf16 autocast, and fp16's gradient scaler: enabled only for fp16, checkpointed, resumed exactly."""
from __future__ import annotations

import pytest
import torch

from cnnlab.engine import load_checkpoint
from cnnlab.engine.precision import autocast, grad_scaler
from cnnlab.errors import CnnlabError

CPU = torch.device("cpu")


@pytest.mark.parametrize("precision, dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16), ("fp32", torch.float32)])
def test_autocast_runs_matmuls_in_the_precisions_dtype(precision, dtype):
    with autocast(CPU, precision):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == dtype


def test_only_fp16_scales_the_loss():
    assert grad_scaler(CPU, "fp16").is_enabled()
    assert not grad_scaler(CPU, "bf16").is_enabled() and not grad_scaler(CPU, "fp32").is_enabled()
    assert grad_scaler(CPU, "fp32").state_dict() == {}


def test_a_device_without_autocast_is_refused_in_one_line(monkeypatch):
    monkeypatch.setattr(torch.amp, "is_autocast_available", lambda device_type: False)
    with pytest.raises(CnnlabError, match="--precision fp16 needs autocast, which PyTorch does not offer on cpu"):
        autocast(CPU, "fp16")


def test_fp16_checkpoints_the_scaler_and_resumes_exactly(tmp_path, tiny_fit):
    whole, _ = tiny_fit(tmp_path / "whole", epochs=3, precision="fp16")
    tiny_fit(tmp_path / "split", epochs=1, precision="fp16")
    scaler = load_checkpoint(tmp_path / "split" / "last.pt")["scaler"]
    assert scaler["scale"] > 0 and {"growth_factor", "_growth_tracker"} <= set(scaler)
    resumed, _ = tiny_fit(tmp_path / "split", epochs=3, precision="fp16")
    assert resumed.history["val_loss"] == pytest.approx(whole.history["val_loss"], rel=1e-6)
    assert load_checkpoint(tmp_path / "whole" / "last.pt")["scaler"] == \
        load_checkpoint(tmp_path / "split" / "last.pt")["scaler"]
    assert resumed.history["loss"][-1] < resumed.history["loss"][0]  # the scaled steps do train
