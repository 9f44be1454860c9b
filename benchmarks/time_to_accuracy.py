"""The fast recipe's held-out accuracy against wall time, beside airbench94's recipe: a table per run and one PNG.

Each run is an ordinary ``cnnlab train fast-cifar`` through the Python API; the clock starts before
the data are read from disk and stops when the final (test-time-augmented) accuracy is known.
Python's and torch's import time is measured separately (a fresh interpreter) and reported, and so
is an fp32 matmul's GFLOP/s just before and after each run: these shared hosts change speed by up to
1.5x from one hour to the next, and the matmul says which kind of hour a run had.

The peer (``airbench_peer.py``, on by default, ``--no-peer`` to skip) is airbench94's recipe as a plain
eager PyTorch loop, run in the same invocation after cnnlab's runs on the same images. Its clock also
starts before the data are read and excludes its own per-epoch evaluation (as airbench times itself;
cnnlab's clock includes its validations). The ratio of wall times is taken at equal accuracy: the
lower of the two final (TTA) accuracies, each run's time being its first point (an epoch end, or the
end with TTA) at or above it.

    .venv/bin/python benchmarks/time_to_accuracy.py --data-dir /work/data/cifar10 --runs epochs=8 budget=5
    .venv/bin/python benchmarks/time_to_accuracy.py --data-dir /work/data/cifar10 \
        --runs epochs=8,progressive_resize=0 epochs=8 epochs=8,val_every=1  # 32 px; the recipe; validating every epoch
"""
from __future__ import annotations

import argparse
import json
import math
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
from cnnlab.cli import positive_int  # noqa: E402
from cnnlab.cpu import describe_cpu  # noqa: E402
from airbench_peer import train_airbench  # noqa: E402  (benchmarks/airbench_peer.py)
from cnnlab.errors import CnnlabError  # noqa: E402
from cnnlab.runs.config import RunConfig  # noqa: E402
from throughput import matmul_gflops  # benchmarks/throughput.py: the same ceiling probe

TARGETS = ((0.90, 4.0), (0.915, 15.0))  # (held-out accuracy, minutes) the recipe must reach (issue 20)


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


def run_spec(text: str) -> dict:
    """``epochs=N`` or ``budget=MINUTES``, then any further ``,FIELD=VALUE`` of ``cnnlab.RunConfig``
    (``epochs=8,progressive_resize=16,val_every=8``) and ``model.KEY=VALUE`` options of fast-cifar (``/`` for
    the commas of a sequence: ``model.widths=128/384/384``), checked before anything trains."""
    given: dict = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        key = "time_budget" if key == "budget" else key
        if key.startswith("model."):
            given.setdefault("model_kwargs", {})[key.removeprefix("model.")] = value.replace("/", ",")
            continue
        try:
            given[key] = int(value)
        except ValueError:
            try:
                given[key] = float(value)
            except ValueError:
                raise argparse.ArgumentTypeError(f"{part!r} in {text!r}: expected FIELD=NUMBER or model.KEY=VALUE") from None
    if ("epochs" in given) == ("time_budget" in given):
        raise argparse.ArgumentTypeError(f"expected epochs=N or budget=MINUTES first, not {text!r}")
    try:
        RunConfig(model="fast-cifar", dataset="cifar10", **given)
    except (CnnlabError, TypeError) as e:
        raise argparse.ArgumentTypeError(f"{text!r}: {e}") from None
    return given


def spec_label(given: dict) -> str:
    """A run's options as the command line wrote them."""
    parts = [f"{'budget' if k == 'time_budget' else k}={v}" for k, v in given.items() if k != "model_kwargs"]
    parts += [f"model.{k}={v.replace(',', '/')}" for k, v in given.get("model_kwargs", {}).items()]
    return ",".join(parts)


def run_one(spec: dict, data_dir: str, seed: int, limit_train: int | None = None) -> Timeline:
    """Train fast-cifar with the options ``spec`` (``run_spec``) and time it."""
    given = dict(spec, **({"limit_train": limit_train} if limit_train else {}))
    line = Timeline(f"fast-cifar {spec_label(spec)}")
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


def run_peer(data_dir: str, seed: int, limit_train: int | None = None) -> Timeline:
    """airbench94's recipe on the same training and held-out images, timed from reading them."""
    import torch

    from cnnlab.data import load_dataset
    from cnnlab.engine.precision import resolve

    bf16 = resolve("auto", torch.device("cpu")) == "bf16"
    line = Timeline(f"airbench94 peer ({'bf16' if bf16 else 'fp32'} channels_last)")
    before = max(matmul_gflops() for _ in range(3))
    t0 = time.perf_counter()
    train = load_dataset("cifar10", "train", root=data_dir, download=False)
    test = load_dataset("cifar10", "test", root=data_dir, download=False)
    read = time.perf_counter() - t0

    def on_epoch_end(_epoch: int, seconds: float, accuracy: float) -> None:
        line.seconds.append(read + seconds)
        line.accuracy.append(accuracy)

    n = limit_train or len(train)
    line.final_tta, evaluating = train_airbench(train.images[:n], train.labels[:n], test.images, test.labels, bf16,
                                                seed, on_epoch_end=on_epoch_end)
    line.total_seconds, line.epochs = time.perf_counter() - t0 - evaluating, len(line.seconds)
    line.matmul_gflops = (before, max(matmul_gflops() for _ in range(3)))
    return line


def seconds_to(line: Timeline, target: float) -> float:
    """When the run first reached ``target``: at an epoch end, else with its final TTA (inf if never)."""
    points = list(zip(line.seconds, line.accuracy)) + [(line.total_seconds, line.final_tta)]
    return next((t for t, a in points if a >= target), float("inf"))


def ratio_line(ours: Timeline, peer: Timeline) -> str:
    """The peer's wall time over ours at the lower of the two final accuracies."""
    target = min(ours.final_tta, peer.final_tta)
    mine, theirs = seconds_to(ours, target), seconds_to(peer, target)
    return (f"at {100 * target:.2f}% held-out: {ours.label} {mine / 60:.2f} min, {peer.label} {theirs / 60:.2f} min "
            f"→ {theirs / mine:.2f}× (finals {100 * ours.final_tta:.2f}% and {100 * peer.final_tta:.2f}%)")


def table(lines: list[Timeline], imports: float, load: tuple[float, float, float]) -> str:
    """Markdown: per-epoch accuracy and minutes for each run, then the final result against the targets."""
    out = [f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; interpreter + imports: {imports:.1f} s", ""]
    for ln in lines:
        out += [f"### {ln.label}: {ln.epochs} epochs, final {ln.final_tta:.4f} with TTA in {ln.total_seconds / 60:.2f} min",
                "", f"fp32 2048² matmul just before / after the run: {ln.matmul_gflops[0]:.0f} / "
                f"{ln.matmul_gflops[1]:.0f} GFLOP/s (the host's speed around the run)", "",
                "| epoch | minutes | held-out accuracy (no TTA) |", "|---|---|---|"]
        out += [f"| {i + 1} | {s / 60:.2f} | {'not validated' if math.isnan(a) else f'{a:.4f}'} |"
                for i, (s, a) in enumerate(zip(ln.seconds, ln.accuracy))]
        out.append("")
    return "\n".join(out)


def plot(lines: list[Timeline], path: Path) -> Path:
    """Accuracy against minutes for every run (cnnlab's and the peer's) and the two targets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for ln in lines:
        t = [s / 60 for s in ln.seconds]
        ax.plot(t, ln.accuracy, "o-", label=ln.label)
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
    p.add_argument("--runs", nargs="+", type=run_spec, default=["epochs=8", "budget=5"],
                   help="epochs=N or budget=MINUTES, then ,FIELD=VALUE of RunConfig (e.g. epochs=8,progressive_resize=16)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("docs/images/time_to_accuracy.png"))
    p.add_argument("--no-peer", dest="peer", action="store_false", help="skip airbench94's recipe")
    p.add_argument("--limit-train", type=positive_int, help="only the first N training images, for both (a quick check)")
    a = p.parse_args(argv)
    print(describe_cpu(), flush=True)
    load = os.getloadavg()
    imports = import_seconds()
    lines = []
    for spec in a.runs:
        try:
            lines.append(run_one(spec, a.data_dir, a.seed, a.limit_train))
        except CnnlabError as e:
            p.exit(2, f"error: {e}\n")
        print(table(lines[-1:], imports, load), flush=True)
    ours = list(lines)
    if a.peer:
        lines.append(run_peer(a.data_dir, a.seed, a.limit_train))
        print(table(lines[-1:], imports, load), flush=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    print(table(lines, imports, load))
    for line in ours if a.peer else ():
        print(ratio_line(line, lines[-1]))
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}; plot → {plot(lines, a.out)}")
    print(json.dumps([vars(ln) for ln in lines]))


if __name__ == "__main__":
    main()
