"""Which CPU settings help: training images/s of cnnlab's engine under each OpenMP setting, side by side.

OpenMP reads ``OMP_WAIT_POLICY`` and ``OMP_PROC_BIND`` once, when torch loads it, so every variant is
a fresh process: ``--rounds`` rounds, each running every (variant, model) once in turn, so that a
drift of the host's speed hits all of them alike. A variant may also name another source tree
(``--before DIR``: a checkout of an older cnnlab, timed with its own ``benchmarks/throughput.py``),
which is how "no speed lost" is shown against the code before a change. Each worker times
an epoch of batch-32 steps (``MODELS``; ``--scale`` for more) of ``throughput.engine_runner`` (the
engine's own epoch loop) after a warm-up epoch, best of ``--repeats``. The CPU (model, torch's capability, BF16/AMX flags) is printed
beside the table, and the 1-minute load average before each round: time on a quiet machine.

    .venv/bin/python benchmarks/cpu_settings.py --rounds 3
    .venv/bin/python benchmarks/cpu_settings.py --before /tmp/cnnlab-before --rounds 3
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from cnnlab.cpu import describe_cpu

HERE = Path(__file__).resolve().parent
SETTINGS = {  # name -> OpenMP environment (None: leave the variable unset)
    "cnnlab default": None,  # whatever cnnlab.tune_cpu() decides for this machine and load
    "passive, pinned": {"OMP_WAIT_POLICY": "PASSIVE", "OMP_PROC_BIND": "true"},
    "libgomp default, pinned": {"OMP_PROC_BIND": "true"},
    "active, pinned": {"OMP_WAIT_POLICY": "ACTIVE", "OMP_PROC_BIND": "true"},
    "libgomp default, unpinned": {"OMP_PROC_BIND": "false"},
}
MODELS = {  # name -> (precision, channels_last, batch-32 steps per timed epoch: about a second each on a quiet host)
    "lenet5-cifar": ("fp32", False, 200), "baseline-cifar": ("fp32", False, 120),
    "inception10-cifar": ("fp32", True, 15), "resnet18-cifar": ("auto", True, 4),
}

WORKER = """
import json, os, sys, time
sys.path.insert(0, {bench!r})
import throughput  # its import applies the tree's own CPU settings (cnnlab.tune_cpu, or the old import-time ones)
import torch
model, precision, cl, steps, repeats = {model!r}, {precision!r}, {cl!r}, {steps!r}, {repeats!r}
run = throughput.engine_runner(model, 32, steps, precision, cl)
run()
rate = max(run() for _ in range(repeats))
print(json.dumps({{"rate": rate, "wait": os.environ.get("OMP_WAIT_POLICY", "unset"),
                  "bind": os.environ.get("OMP_PROC_BIND", "unset"), "threads": torch.get_num_threads()}}))
"""


@dataclass
class Variant:
    """A source tree and an OpenMP environment."""

    name: str
    tree: Path
    env: dict[str, str] | None
    rates: dict[str, list[float]] = field(default_factory=dict)
    seen: dict[str, str] = field(default_factory=dict)  # what the worker reported it ran with


def run_worker(variant: Variant, model: str, scale: float, repeats: int) -> dict:
    """One fresh process timing one model under the variant's tree and environment."""
    precision, cl, steps = MODELS[model]
    steps = max(2, round(steps * scale))
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMP_")}
    env.update(variant.env or {})
    env["PYTHONPATH"] = str(variant.tree / "src")
    code = WORKER.format(bench=str(variant.tree / "benchmarks"), model=model, precision=precision, cl=cl,
                         steps=steps, repeats=repeats)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=variant.tree)
    if out.returncode:
        raise SystemExit(f"error: the {variant.name} worker failed for {model}: {out.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(variants: list[Variant], models: list[str]) -> str:
    """Markdown: median images/s per (variant, model), with the ratio to the first variant."""
    base = variants[0]
    head = "| variant (tree, OpenMP as run) | " + " | ".join(
        f"{m} ({MODELS[m][0]}{', channels_last' if MODELS[m][1] else ''})" for m in models)
    lines = [head + " |", "|---|" + "---|" * len(models)]
    for v in variants:
        cells = []
        for m in models:
            med = statistics.median(v.rates[m])
            ratio = med / statistics.median(base.rates[m])
            cells.append(f"{med:,.0f} img/s ({ratio:.2f}×; rounds {', '.join(f'{r:,.0f}' for r in v.rates[m])})")
        lines.append(f"| {v.name} ({v.seen.get(models[0], '')}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--scale", type=float, default=1.0, help="multiply every model's steps per timed epoch")
    p.add_argument("--repeats", type=int, default=3, help="timed epochs per worker (the best counts)")
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--before", type=Path, help="an older cnnlab checkout, timed as it was (its own settings)")
    a = p.parse_args(argv)
    if min(a.rounds, a.repeats) < 1 or not a.scale > 0:
        p.error("--rounds and --repeats must be at least 1, --scale positive")
    if a.before and not (a.before / "benchmarks" / "throughput.py").is_file():
        p.error(f"--before {a.before} has no benchmarks/throughput.py")
    tree = HERE.parent
    variants = ([Variant("before the change, its defaults", a.before, None)] if a.before else [])
    variants += [Variant(name, tree, SETTINGS[name]) for name in a.settings]
    print(describe_cpu(), flush=True)
    for r in range(a.rounds):
        print(f"round {r + 1}/{a.rounds}: load average {os.getloadavg()[0]:.2f}", file=sys.stderr, flush=True)
        for v in variants:
            for m in a.models:
                got = run_worker(v, m, a.scale, a.repeats)
                v.rates.setdefault(m, []).append(got["rate"])
                v.seen[m] = f"wait {got['wait']}, bind {got['bind']}, {got['threads']} threads"
    print(table(variants, a.models))


if __name__ == "__main__":
    main()
