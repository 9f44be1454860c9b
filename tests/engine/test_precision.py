"""fp16 and bf16 autocast, and fp16's gradient scaler: enabled only for fp16, checkpointed, resumed exactly;
``auto`` is bf16 only where the device computes it natively."""
from __future__ import annotations

import json

import pytest
import torch

from cnnlab.engine import load_checkpoint
from cnnlab.engine import precision as P
from cnnlab.engine.precision import autocast, grad_scaler
from cnnlab.errors import CnnlabError

CPU = torch.device("cpu")


@pytest.mark.parametrize("precision, dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16), ("fp32", torch.float32)])
def test_autocast_runs_matmuls_in_the_precisions_dtype(precision, dtype):
    with autocast(CPU, precision):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == dtype


@pytest.fixture
def native(monkeypatch):
    """Pretend the CPU does (an AMX machine) or does not (AVX2 only) compute bf16 natively."""
    def pretend(value: bool) -> None:
        monkeypatch.setattr(P, "native_bf16", lambda device_type: value)
        monkeypatch.setattr(P, "cpu_flags", lambda: frozenset({"avx2", "avx512_bf16", "amx_bf16"} if value else {"avx2"}))
        P.bf16_choice.cache_clear()
    yield pretend
    P.bf16_choice.cache_clear()


@pytest.mark.parametrize("has_bf16, chosen, dtype", [(True, "bf16", torch.bfloat16), (False, "fp32", torch.float32)])
def test_auto_is_bf16_only_on_a_device_that_computes_it_natively(native, has_bf16, chosen, dtype):
    native(has_bf16)
    assert P.resolve("auto", CPU) == chosen and P.resolve("bf16", CPU) == "bf16"  # an explicit choice stays
    with autocast(CPU, "auto"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == dtype
    assert not grad_scaler(CPU, "auto").is_enabled()
    assert P.describe("auto", CPU).startswith(f"auto → {chosen}")
    assert P.fast_matmul_dtype(CPU) == dtype  # Muon's Newton–Schulz: in bf16 only where native


def test_explicit_bf16_on_a_cpu_without_it_is_kept_and_called_slow(native):
    native(False)
    assert "emulated" in P.describe("bf16", CPU) and P.describe("fp32", CPU) == "fp32"


@pytest.mark.parametrize("flags, native_bf16", [
    ({"avx2", "fma"}, False),                              # AMD EPYC (Zen 3), AVX2 only
    ({"avx512f", "avx512bw"}, False),                      # Skylake-SP: AVX-512, bf16 only emulated
    ({"avx512f", "avx512_bf16"}, True),                    # AMD EPYC (Zen 4), Cooper Lake
    ({"avx512_bf16", "amx_bf16", "amx_tile"}, True),       # Sapphire Rapids
    ({"fp", "asimd", "bf16"}, True),                       # Arm with FEAT_BF16 (Graviton 3)
    (set(), False),                                        # no /proc/cpuinfo
])
def test_native_bf16_follows_the_cpus_flags(flags, native_bf16):
    from cnnlab.cpu import native_bf16_cpu

    assert native_bf16_cpu(frozenset(flags), environ={}) is native_bf16


@pytest.mark.parametrize("cap, native_bf16", [("AVX512_CORE", False), ("avx2", False), ("AVX512_CORE_BF16", True),
                                              ("AVX512_CORE_AMX", True), ("ALL", True)])
def test_a_onednn_isa_cap_below_bf16_means_no_native_bf16(cap, native_bf16):
    from cnnlab.cpu import native_bf16_cpu

    flags = frozenset({"avx512f", "avx512_bf16", "amx_bf16"})
    assert native_bf16_cpu(flags, environ={"ONEDNN_MAX_CPU_ISA": cap}) is native_bf16
    assert native_bf16_cpu(flags, environ={"DNNL_MAX_CPU_ISA": cap}) is native_bf16


def test_the_fast_recipe_asks_for_auto():
    from cnnlab.runs.recipes import get_recipe

    assert get_recipe("fast").defaults["precision"] == "auto"


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


def test_without_amx_auto_follows_a_convolution_timed_once_per_machine(native, monkeypatch, tmp_path):
    native(True)
    monkeypatch.setattr(P, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))  # AMD Zen 4: no AMX
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path))
    timings = iter([0.8, 2.5])
    calls = []
    monkeypatch.setattr(P, "time_bf16_against_fp32", lambda: calls.append(1) or next(timings))
    assert P.resolve("auto", CPU) == "fp32" and "0.80× fp32's speed" in P.describe("auto", CPU)
    P.bf16_choice.cache_clear()
    assert P.resolve("auto", CPU) == "fp32" and len(calls) == 1  # the cached measurement, not a second one
    cache = tmp_path / "cpu.json"
    assert list(json.loads(cache.read_text())["bf16_speedup"].values()) == [0.8]
    cache.write_text("{not json")  # damaged: measured again, and the cache rewritten whole
    P.bf16_choice.cache_clear()
    assert P.resolve("auto", CPU) == "bf16" and len(calls) == 2
    assert list(json.loads(cache.read_text())["bf16_speedup"].values()) == [2.5]


def test_the_probe_times_a_real_convolution_step_even_inside_an_evaluation():
    with torch.inference_mode():  # `cnnlab eval` may be the first to ask
        assert P.time_bf16_against_fp32(rounds=1) > 0


def test_the_cache_keeps_other_machines_entries(monkeypatch, tmp_path):
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path))
    (tmp_path / "cpu.json").write_text(json.dumps({"bf16_speedup": {"another CPU": 3.0}}))
    monkeypatch.setattr(P, "time_bf16_against_fp32", lambda: 0.5)
    assert P.measured_bf16_speedup() == 0.5
    assert json.loads((tmp_path / "cpu.json").read_text())["bf16_speedup"] == {"another CPU": 3.0, P.probe_key(): 0.5}
