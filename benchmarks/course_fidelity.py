"""The course recipe in cnnlab and in the course's own Keras code, side by side over seeds (issue 15).

For each course network: N seeds of ``cnnlab train NAME --dataset cifar10`` (the course recipe: Adam,
batch 32, no augmentation, validation on the held-out test_batch) and N seeds of the course's Keras
script on the same images in the same order (``keras_side_by_side.py``, run by the Python of a venv
holding the ``keras-bench`` extra). Prints per-epoch held-out accuracy as mean ± sd for both, the
difference, Welch's t and its degrees of freedom, training seconds per epoch of each (validation
excluded on both sides), and end-to-end seconds per run: the whole process of each seed on both sides (cnnlab's
``cnnlab train`` with its start-up, data reading, validations and checkpoints; the Keras script with
TensorFlow's import, data reading and ``model.fit`` with validation), and Keras' ``model.fit`` alone; ``--markdown``
appends the final-epoch table for docs/results.md. ``--keep DIR`` keeps each finished seed of either side and
reuses it when the same network, recipe and seed are asked for again, so a slow network's seeds can be added an
invocation at a time (a seed's seconds are those of the hour it ran in).

    .venv/bin/python benchmarks/course_fidelity.py /work/data/cifar --keras-python /work/kvenv/bin/python \\
        --seeds 1 2 3 --epochs 2 --limit-train 8000

``--keras 2`` (default) runs TF2's Keras 2 (``TF_USE_LEGACY_KERAS=1`` with ``tf_keras``), the Keras the
course was written for. ``--keras 3`` runs Keras 3, where the course's subclassed models (``call(self, x)``
without ``training``) train BatchNormalization in inference mode and without dropout — use ``--form
functional`` there to run the network the course describes.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from cnnlab.cpu import describe_cpu

COURSE = ("baseline-cifar", "lenet5-cifar", "alexnet8-cifar", "vgg16-cifar", "inception10-cifar", "resnet18-cifar")
HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Runs:
    """Per-seed, per-epoch held-out accuracy and seconds of one network in one framework."""

    accuracy: list[list[float]]
    seconds: list[list[float]]
    wall: list[float]  # per seed, end to end: cnnlab's whole `cnnlab train` process, Keras' whole model.fit
    process: list[float]  # per seed, the whole process on both sides (start-up, imports, data, training)

    def epoch(self, e: int) -> list[float]:
        return [a[e] for a in self.accuracy]

    def seconds_per_epoch(self) -> float:
        return statistics.mean(s for run in self.seconds for s in run)

    def wall_per_run(self) -> float:
        return statistics.mean(self.wall)

    def process_per_run(self) -> float:
        return statistics.mean(self.process)


def mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def welch(a: list[float], b: list[float]) -> tuple[float, float]:
    """Welch's t of mean(a) - mean(b) and its Welch–Satterthwaite degrees of freedom (nan when undefined)."""
    (ma, sa), (mb, sb) = mean_sd(a), mean_sd(b)
    va, vb = sa * sa / len(a), sb * sb / len(b)
    if len(a) < 2 or len(b) < 2 or va + vb == 0:
        return math.nan, math.nan
    df = (va + vb) ** 2 / (va * va / (len(a) - 1) + vb * vb / (len(b) - 1))
    return (ma - mb) / math.sqrt(va + vb), df


def thread_env(threads: int) -> dict[str, str]:
    """The environment of a child run: all cores by default (cnnlab's own CPU settings apply), else a cap."""
    env = dict(os.environ)
    if threads < (os.cpu_count() or threads):
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def settings_key(model: str, a: argparse.Namespace) -> str:
    """The folder name of one network's runs under one recipe: a kept seed is reused only under the same one."""
    return f"{model}-epochs{a.epochs}-train{a.limit_train or 'all'}-val{a.limit_val or 'all'}"


def cnnlab_runs(model: str, a: argparse.Namespace, work: Path) -> Runs:
    """Each seed as a user runs it: ``python -m cnnlab train`` in a fresh process; its history.json.

    A seed whose run finished in ``work`` before (``--keep``) is read back, not trained again."""
    accuracy, seconds, wall = [], [], []
    for seed in a.seeds:
        run = work / "cnnlab" / settings_key(model, a) / f"seed{seed}"
        done = run / "fidelity.json"
        if not done.exists():
            cmd = [sys.executable, "-m", "cnnlab", "train", model, "--dataset", "cifar10", "--data-dir",
                   str(a.data_dir), "--epochs", str(a.epochs), "--seed", str(seed), "--run-dir", str(run), "--fresh",
                   "--no-progress"]
            for flag, value in (("--limit-train", a.limit_train), ("--limit-val", a.limit_val)):
                cmd += [flag, str(value)] if value else []
            start = time.perf_counter()
            subprocess.run(cmd, check=True, env=thread_env(a.threads), stdout=subprocess.DEVNULL)
            done.write_text(json.dumps({"wall": time.perf_counter() - start}))
        history = json.loads((run / "history.json").read_text())
        accuracy.append(history["val_accuracy"])
        seconds.append(history["seconds"])
        wall.append(json.loads(done.read_text())["wall"])
    return Runs(accuracy, seconds, wall, wall)


def keras_runs(model: str, a: argparse.Namespace, work: Path) -> tuple[Runs, str]:
    """Each seed not kept in ``work`` in its own timed process of the Keras venv (``keras_side_by_side.py
    --json``), as cnnlab's seeds run, then kept as its own file; also the TensorFlow version."""
    kept = work / f"keras{a.keras}-{a.form}" / settings_key(model, a)
    kept.mkdir(parents=True, exist_ok=True)
    env = thread_env(a.threads)
    if a.keras == 2:
        env["TF_USE_LEGACY_KERAS"] = "1"
    for seed in (s for s in a.seeds if not (kept / f"seed{s}.json").exists()):
        out = kept / "last-invocation.json"
        cmd = [str(a.keras_python), str(HERE / "keras_side_by_side.py"), str(a.data_dir), "--model", model,
               "--form", a.form, "--limit-train", str(a.limit_train or 10**9), "--epochs", str(a.epochs),
               "--threads", str(a.threads), "--json", str(out), "--seeds", str(seed)]
        cmd += ["--limit-val", str(a.limit_val)] if a.limit_val else []
        start = time.perf_counter()
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
        process = time.perf_counter() - start
        result = json.loads(out.read_text())
        (kept / f"seed{seed}.json").write_text(json.dumps({**result["runs"][str(seed)], "process": process,
                                                           "tensorflow": result["tensorflow"]}))
        out.unlink()
    runs = [json.loads((kept / f"seed{s}.json").read_text()) for s in a.seeds]
    return Runs([r["val_accuracy"] for r in runs], [r["seconds"] for r in runs], [r["wall"] for r in runs],
                [r.get("process", math.nan) for r in runs]), runs[0]["tensorflow"]


def pct(m: float, sd: float) -> str:
    return f"{100 * m:.2f} ± {100 * sd:.2f}"


def report(model: str, ours: Runs, keras: Runs) -> list[str]:
    """One line per epoch: both means ± sd, the difference in points, Welch's t (df)."""
    lines = [f"\n{model}: held-out accuracy % (mean ± sd over {len(ours.accuracy)} seeds)",
             f"{'epoch':>5}  {'cnnlab':>15}  {'Keras':>15}  {'diff':>6}  {'Welch t (df)':>13}"]
    for e in range(len(ours.accuracy[0])):
        a, b = ours.epoch(e), keras.epoch(e)
        t, df = welch(a, b)
        diff = 100 * (statistics.mean(a) - statistics.mean(b))
        lines.append(f"{e + 1:>5}  {pct(*mean_sd(a)):>15}  {pct(*mean_sd(b)):>15}  {diff:>+6.2f}  "
                     f"{t:>6.2f} ({df:4.1f})")
    lines.append("final epoch per seed: cnnlab " + ", ".join(f"{100 * v:.2f}" for v in ours.epoch(-1)) +
                 "; Keras " + ", ".join(f"{100 * v:.2f}" for v in keras.epoch(-1)))
    lines.append(f"training s/epoch: cnnlab {ours.seconds_per_epoch():.1f}, Keras {keras.seconds_per_epoch():.1f} "
                 f"(Keras / cnnlab {keras.seconds_per_epoch() / ours.seconds_per_epoch():.2f}x)")
    lines.append(f"end to end s/run: cnnlab {ours.process_per_run():.1f} (the whole `cnnlab train` process: start-up, "
                 f"data, validation, checkpoints), Keras {keras.process_per_run():.1f} (the whole process: start-up, "
                 f"TensorFlow, data, model.fit with validation) (Keras / cnnlab "
                 f"{keras.process_per_run() / ours.process_per_run():.2f}x); Keras' model.fit alone "
                 f"{keras.wall_per_run():.1f} ({keras.wall_per_run() / ours.process_per_run():.2f}x)")
    return lines


def markdown_row(model: str, ours: Runs, keras: Runs) -> str:
    a, b = ours.epoch(-1), keras.epoch(-1)
    (ma, sa), (mb, sb) = mean_sd(a), mean_sd(b)
    t, df = welch(a, b)
    ok = ma >= mb - 0.005 or ma >= mb - sb
    return (f"| {model} | {pct(ma, sa)} | {pct(mb, sb)} | {100 * (ma - mb):+.2f} | {t:.2f} ({df:.1f}) | "
            f"{ours.seconds_per_epoch():.1f} | {keras.seconds_per_epoch():.1f} | {'yes' if ok else '**no**'} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data_dir", type=Path, help="holds cifar-10-batches-py")
    p.add_argument("--keras-python", type=Path, required=True, help="python of a venv with cnnlab[keras-bench]")
    p.add_argument("--models", nargs="+", default=list(COURSE), choices=COURSE)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--limit-train", type=int, help="the first N training images (default: all)")
    p.add_argument("--limit-val", type=int, help="validate on the first N held-out images (default: all 10,000)")
    p.add_argument("--keras", type=int, choices=(2, 3), default=2)
    p.add_argument("--form", choices=("subclassed", "functional"), default="subclassed")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--markdown", action="store_true", help="also print the final-epoch table for docs/results.md")
    p.add_argument("--keep", type=Path, help="keep every finished seed here and reuse it when the same network, "
                   "recipe and seed are asked for again (default: a temporary folder)")
    a = p.parse_args()
    if not a.keras_python.exists():
        sys.exit(f"course_fidelity: no {a.keras_python}: make a venv with `pip install -e '.[keras-bench]'`")
    print(f"machine: {describe_cpu()}")
    images = f"the first {a.limit_train:,}" if a.limit_train else "all"
    held_out = f"the first {a.limit_val:,} of" if a.limit_val else "all of"
    print(f"recipe: course (Adam, batch 32, no augmentation), {a.epochs} epochs, {images} training images, "
          f"{held_out} the held-out test_batch; seeds {a.seeds}; Keras {a.keras} {a.form}; {a.threads} threads "
          "each, one run at a time")
    rows = []
    with tempfile.TemporaryDirectory(prefix="fidelity-") as tmp:
        work = a.keep or Path(tmp)
        for model in a.models:
            ours = cnnlab_runs(model, a, work)
            keras, tf_version = keras_runs(model, a, work)
            print("\n".join(report(model, ours, keras)), flush=True)
            rows.append(markdown_row(model, ours, keras))
    if a.markdown:
        print(f"\n| network | cnnlab final % | Keras {a.keras} (TF {tf_version}) final % | diff | Welch t (df) | "
              "cnnlab s/epoch | Keras s/epoch | within 0.5 pt or 1 sd |")
        print("|---|---|---|---|---|---|---|---|")
        print("\n".join(rows))


if __name__ == "__main__":
    main()
