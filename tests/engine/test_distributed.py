"""`torchrun --nproc-per-node 2 -m cnnlab train` on CPU (gloo): DistributedDataParallel with sharded data.

Two torchrun launches: rank 1 is SIGKILLed inside epoch 2, then the same command resumes the run.
The network has neither BatchNorm nor dropout, so two processes with 8 images each compute what one
process computes with the global batch of 16, up to float rounding: DDP averages the two half-batch
mean gradients where one process takes one full-batch mean, and the per-epoch sums are added in
another order. That rounding (~1e-7 per step) is why the killed-and-resumed two-process history is
compared with an uninterrupted one-process run to a relative 1e-5 (measured: ~1e-8 after 40 Adam
steps); a resume bug (epoch sums, position, optimizer state) shows up orders of magnitude above that.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cnnlab.data import load_dataset
from cnnlab.engine import distributed as D
from cnnlab.engine import load_checkpoint
from cnnlab.runs import run
from cnnlab.runs.config import RunConfig
from cnnlab.errors import CnnlabError
from cnnlab_child import run_cli

FLAT_SPEC = """name: flat
input: 1x32x32
C(4,3,s2,same) A(relu) P(max,2,s2)
F
Dense(classes)
"""
COMPARED = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr")
TORCHRUN = Path(sys.executable).with_name("torchrun")


def train_argv(spec: Path, run_dir: Path) -> list[str]:
    """2 epochs of 20 global batches of 16 (8 per process), last.pt every 4 steps, 49 validation images."""
    return ["train", str(spec), "--dataset", "digits", "--limit-train", "320", "--limit-val", "49",
            "--batch-size", "16", "--eval-batch-size", "16", "--epochs", "2", "--checkpoint-every", "4",
            "--seed", "1", "--no-progress", "--device", "cpu", "--run-dir", str(run_dir)]


def torchrun(argv: list[str], **env: str) -> subprocess.CompletedProcess:
    """Two local processes on a free port, output captured together."""
    return subprocess.run([str(TORCHRUN), "--standalone", "--nproc-per-node", "2", "-m", "cnnlab", *argv],
                          env={**os.environ, "OMP_NUM_THREADS": "1", **env}, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=300)


def history(run_dir: Path) -> dict:
    return json.loads((run_dir / "history.json").read_text())


def assert_close(got: dict, want: dict, rel: float) -> None:
    for key in COMPARED:
        assert got[key] == pytest.approx(want[key], rel=rel, abs=1e-9), key


@pytest.fixture(scope="module")
def spec(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("spec") / "flat.cbapd"
    path.write_text(FLAT_SPEC)
    return path


@pytest.fixture(scope="module")
def killed_then_resumed(tmp_path_factory, spec) -> dict:
    """Two processes; rank 1 is SIGKILLed inside epoch 2 (its step 30 of 40), then the command is re-run."""
    run_dir = tmp_path_factory.mktemp("ddp") / "run"
    killed = torchrun(train_argv(spec, run_dir), CNNLAB_FAULT_AT="step:30@1")
    ckpt = load_checkpoint(run_dir / "last.pt")
    resumed = torchrun(train_argv(spec, run_dir))
    return {"run_dir": run_dir, "killed": killed, "position": (ckpt["epoch"], ckpt["step"]), "resumed": resumed}


def test_a_killed_rank_is_reported_and_last_pt_is_intact(killed_then_resumed):
    killed = killed_then_resumed["killed"]
    out = killed.stdout
    assert killed.returncode != 0
    assert "Root Cause" in out and "rank      : 1" in out and "Signal 9 (SIGKILL)" in out, out
    assert "[rank0]: Traceback" not in out, "rank 0 explains in one line instead"
    assert "cnnlab: error: another process of this torchrun job stopped" in out or "SIGTERM" in out, out
    assert out.count("epoch 1/2:") == 1, "only rank 0 logs"
    assert killed_then_resumed["position"] == (1, 8), "the checkpoint of epoch 2, step 8 loads"


def test_the_rerun_resumes_and_matches_one_process_with_the_same_global_batch(tmp_path, spec, killed_then_resumed):
    resumed = killed_then_resumed["resumed"]
    assert resumed.returncode == 0 and "Resuming" in resumed.stdout and "from epoch 2, step 8" in resumed.stdout, \
        resumed.stdout
    one = run_cli(train_argv(spec, tmp_path / "one"), tmp_path / "one.log")
    assert one.code == 0, one.log
    assert_close(history(killed_then_resumed["run_dir"]), history(tmp_path / "one"), rel=1e-5)


def test_only_rank_0_writes_and_logs(killed_then_resumed):
    run_dir, output = killed_then_resumed["run_dir"], killed_then_resumed["resumed"].stdout
    assert output.count("Training ") == 1 and "× 2 processes" in output
    assert output.count("epoch 2/2:") == 1 and output.count("Done:") == 1
    assert sorted(os.listdir(run_dir)) == ["best.pt", "config.json", "history.csv", "history.json", "last.pt"]
    states = load_checkpoint(run_dir / "last.pt")["rng_ranks"]
    assert len(states) == 2 and not torch.equal(states[0]["torch"], states[1]["torch"]), "each rank has its own RNG"


# ---- the pieces, without launching processes ---------------------------------------------------

def fake_rank(monkeypatch, rank: int, world: int) -> None:
    monkeypatch.setattr(D, "rank", lambda: rank)
    monkeypatch.setattr(D, "world_size", lambda: world)
    monkeypatch.setattr(D, "is_distributed", lambda: world > 1)


def test_each_rank_takes_its_share_of_every_global_batch_and_all_validation_images(monkeypatch):
    digits = load_dataset("digits", "train").subset(40)
    splits = run.Splits(digits, digits.subset(9))
    cfg = RunConfig(batch_size=8, eval_batch_size=4)

    def batches(rank: int, world: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        fake_rank(monkeypatch, rank, world)
        train, val = run.make_loaders(cfg, splits, torch.device("cpu"))
        return [x for x, _ in train], [x for x, _ in val]

    (whole, whole_val), shards = batches(0, 1), [batches(r, 2) for r in (0, 1)]
    for step, batch in enumerate(whole):
        parts = torch.cat([shards[0][0][step], shards[1][0][step]])
        assert len(shards[0][0][step]) == len(batch) // 2
        assert sorted(map(bytes, parts.flatten(1).numpy())) == sorted(map(bytes, batch.flatten(1).numpy()))
    assert sum(len(x) for r in (0, 1) for x in shards[r][1]) == sum(len(x) for x in whole_val) == 9


def test_global_batch_must_split_evenly(monkeypatch):
    digits = load_dataset("digits", "test").subset(8)
    fake_rank(monkeypatch, 0, 3)
    with pytest.raises(CnnlabError, match="--batch-size 16 is the global batch.*3 processes"):
        run.make_loaders(RunConfig(batch_size=16), run.Splits(digits, digits), torch.device("cpu"))


def test_sync_bn_on_cpu_is_a_clear_error(monkeypatch):
    fake_rank(monkeypatch, 0, 2)
    with pytest.raises(CnnlabError, match="--sync-bn needs GPUs"):
        run.wrap_distributed(torch.nn.BatchNorm2d(3), RunConfig(sync_bn=True), torch.device("cpu"))
