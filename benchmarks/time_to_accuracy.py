"""The fast recipe's held-out accuracy against wall time: a table per run and one PNG.

Each run is an ordinary ``cnnlab train fast-cifar`` through the Python API; the clock starts before
the data are read from disk and stops when the final (test-time-augmented) accuracy is known.
Python's and torch's import time is measured separately (a fresh interpreter) and reported, and so
is an fp32 matmul's GFLOP/s just before and after each run: these shared hosts change speed by up to
1.5x from one hour to the next, and the matmul says which kind of hour a run had.

    .venv/bin/python benchmarks/time_to_accuracy.py --data-dir /work/data/cifar10 --runs epochs=8 budget=5
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import cnnlab

cnnlab.tune_cpu()  # the CLI's CPU settings, before torch loads (cnnlab.cpu)

from cnnlab.callbacks import LambdaCallback  # noqa: E402
from cnnlab.cpu import describe_cpu  # noqa: E402
from cnnlab.errors import CnnlabError  # noqa: E402
from throughput import matmul_gflops  # benchmarks/throughput.py: the same ceiling probe

# airbench94 (Muon variant) in eager fp32 PyTorch on these machines, from the issue: 8 epochs in
# 23.2 minutes, then test-time augmentation; epoch ends are spread evenly over the training time.
ANCHOR_MINUTES = 23.2
ANCHOR_ACCURACY = (0.490, 0.536, 0.774, 0.776, 0.851, 0.867, 0.879, 0.887, 0.8995)
TARGETS = ((0.85, 5.0), (0.90, 13.0))  # (held-out accuracy, minutes) the recipe must reach


@dataclass
class Timeline:
    """Wall seconds and held-out accuracy at every epoch end of one run."""

    label: str
    seconds: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    final_tta: float = float("nan")
    total_seconds: float = 0.0
    epochs: int = 0
    matmul_gflops: tuple[float, float] = (float("nan"), float("nan"))  # host speed just before and after


def import_seconds() -> float:
    """Seconds a fresh interpreter needs to import cnnlab's CLI (torch included)."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import cnnlab.cli, cnnlab.runs.run"], check=True)
    return time.perf_counter() - t0


def run_spec(text: str) -> str:
    """``epochs=N`` (N ≥ 1) or ``budget=MINUTES`` (> 0), checked before anything trains."""
    key, _, value = text.partition("=")
    try:
        ok = int(value) >= 1 if key == "epochs" else key == "budget" and float(value) > 0
    except ValueError:
        ok = False
    if not ok:
        raise argparse.ArgumentTypeError(f"expected epochs=N (N ≥ 1) or budget=MINUTES (> 0), not {text!r}")
    return text


def run_one(spec: str, data_dir: str, seed: int) -> Timeline:
    """Train fast-cifar as ``spec`` says (``epochs=N`` or ``budget=MINUTES``) and time it."""
    key, value = spec.split("=")
    given = {"epochs": int(value)} if key == "epochs" else {"time_budget": float(value)}
    line = Timeline(spec)
    before = max(matmul_gflops() for _ in range(3))
    t0 = time.perf_counter()

    def on_epoch_end(_epoch: int, row: dict) -> None:
        line.seconds.append(time.perf_counter() - t0)
        line.accuracy.append(row.get("val_accuracy", float("nan")))
        line.final_tta = row.get("tta_val_accuracy", line.final_tta)

    with tempfile.TemporaryDirectory() as run_dir:
        history = cnnlab.train("fast-cifar", dataset="cifar10", data_dir=data_dir, seed=seed, run_dir=Path(run_dir),
                               fresh=True, progress=False, callbacks=[LambdaCallback(on_epoch_end=on_epoch_end)], **given)
    line.total_seconds, line.epochs = time.perf_counter() - t0, len(history)
    line.matmul_gflops = (before, max(matmul_gflops() for _ in range(3)))
    return line


def table(lines: list[Timeline], imports: float, load: tuple[float, float, float]) -> str:
    """Markdown: per-epoch accuracy and minutes for each run, then the final result against the targets."""
    out = [f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; interpreter + imports: {imports:.1f} s", ""]
    for ln in lines:
        out += [f"### {ln.label}: {ln.epochs} epochs, final {ln.final_tta:.4f} with TTA in {ln.total_seconds / 60:.2f} min",
                "", f"fp32 2048² matmul just before / after the run: {ln.matmul_gflops[0]:.0f} / "
                f"{ln.matmul_gflops[1]:.0f} GFLOP/s (the issue's quiet-machine ceiling: 295)", "",
                "| epoch | minutes | held-out accuracy (no TTA) |", "|---|---|---|"]
        out += [f"| {i + 1} | {s / 60:.2f} | {a:.4f} |" for i, (s, a) in enumerate(zip(ln.seconds, ln.accuracy))]
        out.append("")
    return "\n".join(out)


def plot(lines: list[Timeline], path: Path) -> Path:
    """Accuracy against minutes for every run, the airbench anchor and the two targets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    anchor_t = [ANCHOR_MINUTES * (i + 1) / 8 for i in range(8)] + [ANCHOR_MINUTES]
    ax.plot(anchor_t, ANCHOR_ACCURACY, "o--", color="grey", label="airbench94 fp32 eager (issue's anchor)")
    for ln in lines:
        t = [s / 60 for s in ln.seconds]
        ax.plot(t, ln.accuracy, "o-", label=f"fast-cifar {ln.label}")
        ax.plot([ln.total_seconds / 60], [ln.final_tta], "*", markersize=12, color=ax.lines[-1].get_color())
    for acc, minutes in TARGETS:
        ax.plot([minutes], [acc], "rx", markersize=10)
        ax.axhline(acc, color="red", lw=0.5, ls=":")
    ax.set(xlabel="wall time from reading the data (minutes)", ylabel="held-out accuracy",
           title="CIFAR-10 time to accuracy on 2 CPU cores (★ = final, with TTA; × = goals)", ylim=(0.4, 0.95))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--runs", nargs="+", type=run_spec, default=["epochs=8", "budget=5"], help="epochs=N or budget=MINUTES")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("docs/images/time_to_accuracy.png"))
    a = p.parse_args(argv)
    print(describe_cpu(), flush=True)
    load = os.getloadavg()
    imports = import_seconds()
    lines = []
    for spec in a.runs:
        try:
            lines.append(run_one(spec, a.data_dir, a.seed))
        except CnnlabError as e:
            p.exit(2, f"error: {e}\n")
        print(table(lines[-1:], imports, load), flush=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    print(table(lines, imports, load))
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}; plot → {plot(lines, a.out)}")
    print(json.dumps([vars(ln) for ln in lines]))


if __name__ == "__main__":
    main()
