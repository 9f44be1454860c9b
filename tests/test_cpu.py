"""cnnlab.cpu: nothing changes on import; tune_cpu applies OpenMP and malloc settings only when called, and
freed large blocks are then reused, not page-faulted in again on the next allocation."""
import json
import os
import platform
import subprocess
import sys

import pytest

# A fresh interpreter: its main thread allocates from glibc's main arena, as a training process does
# (a long test session may have moved the main thread to another arena, where large blocks are always mmap'd).
# It loads what a training process has loaded (cnnlab.runs.run pulls in torchvision): in a bare
# `import torch` process the first 64 MB blocks were still mmap'd afresh.
PROBE = """
import resource, sys, torch
import cnnlab.runs.run
from cnnlab.cpu import keep_freed_memory
applied = keep_freed_memory()
size = 64 << 20
blocks = [torch.ones(size, dtype=torch.uint8) for _ in range(3)]  # a step's activations grow the heap...
del blocks  # ...and are freed at its end
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
torch.ones(size, dtype=torch.uint8)  # the next step's: every page is written
print(int(applied), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(sys.platform != "linux" or platform.libc_ver()[0] != "glibc", reason="glibc malloc tuning")
def test_a_freed_64_mb_block_is_reused_without_page_faults():
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, env=env)
    applied, faults = map(int, out.stdout.split())
    assert applied == 1
    assert faults < (64 << 20) // 4096 // 10  # mmap'd afresh, all 16,384 pages would fault in


TRIM_PROBE = """
import torch
from cnnlab.cpu import keep_freed_memory, trim_freed_memory
keep_freed_memory()
blocks = [torch.ones(64 << 20, dtype=torch.uint8) for _ in range(3)]
del blocks  # kept by the raised thresholds...
print(int(trim_freed_memory()))  # ...and given back: malloc_trim says it released memory
"""


@pytest.mark.skipif(sys.platform != "linux" or platform.libc_ver()[0] != "glibc", reason="glibc malloc tuning")
def test_trim_gives_the_kept_heap_back_and_does_nothing_where_malloc_was_left_alone(monkeypatch):
    from cnnlab import cpu

    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", TRIM_PROBE], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.split() == ["1"]
    monkeypatch.setattr(cpu, "_malloc_applied", False)
    assert cpu.trim_freed_memory() is False


def test_user_malloc_settings_are_left_alone(monkeypatch):
    from cnnlab import cpu

    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    assert cpu._set_malloc_thresholds() is False


IMPORT_PROBE = """
import json, os, sys
before = dict(os.environ)
import cnnlab
names = [cnnlab.create_model, cnnlab.RunConfig, cnnlab.train]  # the lazy names resolve (torch loads here)
import torch
print(json.dumps({"env_same": dict(os.environ) == before, "threads": torch.get_num_threads()}))
"""
THREADS_PROBE = "import torch, json; print(json.dumps({'threads': torch.get_num_threads()}))"


def test_import_cnnlab_changes_no_environment_variable_or_thread_count():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "MALLOC_"))}
    run = lambda code: json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                                 check=True, env=env).stdout)
    with_cnnlab, plain = run(IMPORT_PROBE), run(THREADS_PROBE)
    assert with_cnnlab["env_same"] and with_cnnlab["threads"] == plain["threads"]


def test_import_cnnlab_loads_no_torch():
    code = "import sys, cnnlab; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


@pytest.mark.parametrize("environ,busy,pin,expected", [
    ({}, False, True, {"OMP_PROC_BIND": "true"}),
    ({}, True, True, {"OMP_WAIT_POLICY": "PASSIVE", "OMP_PROC_BIND": "true"}),
    ({}, False, False, {}),  # no AMX: nothing to pin for (pinning cost 6-15% on an AVX512-BF16 EPYC)
    ({}, True, False, {"OMP_WAIT_POLICY": "PASSIVE"}),
    ({"LOCAL_RANK": "0"}, False, True, {}),  # torchrun: processes would pin to the same cores
    ({"OMP_NUM_THREADS": "1"}, True, True, {"OMP_WAIT_POLICY": "PASSIVE"}),
])
def test_openmp_choice_follows_load_launcher_and_cpu(environ, busy, pin, expected):
    from cnnlab.cpu import openmp_choice

    assert openmp_choice(environ, busy, pin) == expected


def test_only_amx_cpus_count_as_amx():
    from cnnlab.cpu import has_amx

    assert has_amx(frozenset({"avx512f", "amx_tile", "amx_bf16"}))
    assert not has_amx(frozenset({"avx2", "avx512f", "avx512_bf16"})) and not has_amx(frozenset())


def test_tune_cpu_keeps_the_users_values_and_reports_what_torch_already_fixed():
    from cnnlab.cpu import tune_cpu

    import torch  # noqa: F401  (loaded: OpenMP has read its settings)

    environ = {"OMP_WAIT_POLICY": "ACTIVE"}
    tuning = tune_cpu(environ, busy=True, pin=True)
    assert environ == {"OMP_WAIT_POLICY": "ACTIVE"} and tuning.kept == {"OMP_WAIT_POLICY": "ACTIVE"}
    assert set(tuning.not_applied) == {"OMP_PROC_BIND"} and "before importing torch" in tuning.describe()


def test_tune_cpu_sets_openmp_before_torch_loads():
    code = ("import json, os, cnnlab; t = cnnlab.tune_cpu(busy=True, pin=True); import torch; "
            "print(json.dumps([t.applied, os.environ.get('OMP_PROC_BIND')]))")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "LOCAL_RANK"))}
    applied, bind = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                              check=True, env=env).stdout)
    assert applied == {"OMP_WAIT_POLICY": "PASSIVE", "OMP_PROC_BIND": "true"} and bind == "true"


def test_busy_means_other_processes_use_most_of_the_cpu_now():
    from cnnlab.cpu import busy_share, cpu_times, machine_is_busy

    assert machine_is_busy(0.9) and not machine_is_busy(0.2)
    busy, total = cpu_times()
    assert 0 <= busy <= total
    share = busy_share(0.05)
    assert share is None or 0.0 <= share <= 1.0


def test_describe_cpu_names_the_capability_the_flags_and_the_bf16_choice(monkeypatch):
    import torch

    from cnnlab import cpu

    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset({"fma", "avx2"}))
    line = cpu.describe_cpu()
    assert f"capability {torch.backends.cpu.get_cpu_capability()}" in line
    assert "flags: avx2;" in line and line.endswith("native bf16: no (auto precision = fp32)")
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset({"avx2", "avx512f", "avx512_bf16"}))
    assert "flags: avx2 avx512f avx512_bf16;" in cpu.describe_cpu() and cpu.describe_cpu().endswith("native bf16: yes")
