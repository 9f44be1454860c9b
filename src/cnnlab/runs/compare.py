"""``cnnlab compare``: train several networks the same way, then one table and one figure for all of them.

Each network trains in ``RUNS_ROOT/<model>-<dataset>`` and resumes there, so an interrupted comparison
continues where it stopped; a run that already finished with the same identity is reused as it is.
The report (``report.md``, ``report.html`` with the curves embedded as base64 PNG, ``curves.png``)
holds, per run: parameters, forward FLOPs per image, final train/val loss and accuracy, best val
accuracy, seconds per epoch and training images per second. The curves are accuracy and loss, or
(``curves="error"``) training and validation error, as in He et al.'s degradation figures.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import CnnlabError
from ..engine.history import History
from ..explain.notebook import block, report_html
from ..io import atomic_write_text
from .config import LENGTH_OR_HARDWARE, RunConfig, fields_with_role
from .run import default_run_dir, load_trained, train_run

HEADER = ("model", "params", "MFLOPs", "epochs", "loss", "accuracy", "val_loss", "val_accuracy",
          "best val_acc", "s/epoch", "img/s")


@dataclass(frozen=True)
class RunStats:
    """One row of the comparison."""

    model: str
    run_dir: str
    params: int
    flops: int  # forward FLOPs per image (2 per multiply-add)
    epochs: int
    loss: float
    accuracy: float
    val_loss: float
    val_accuracy: float
    best_val_accuracy: float
    seconds_per_epoch: float
    images_per_sec: float


def run_dir_for(cfg: RunConfig, runs_root: Path) -> Path:
    """``RUNS_ROOT/<model>-<dataset>``, as ``cnnlab train`` names it under runs/."""
    return Path(runs_root) / default_run_dir(cfg).name


def settings_mismatch(cfg: RunConfig, run_dir: Path) -> list[str]:
    """Settings (run length and hardware aside) on which the run saved in ``run_dir`` differs from ``cfg``."""
    if not (run_dir / "config.json").is_file():
        return []
    saved, wanted = RunConfig.load(run_dir / "config.json").to_dict(), cfg.to_dict()
    return [k for k, v in wanted.items() if k not in fields_with_role(LENGTH_OR_HARDWARE) and saved.get(k) != v]


def is_finished(cfg: RunConfig, run_dir: Path) -> bool:
    """True when ``run_dir`` has a history of at least ``cfg.epochs`` epochs."""
    return (run_dir / "history.json").is_file() and len(History.load(run_dir)) >= cfg.epochs


def reusable(cfg: RunConfig, run_dir: Path, fresh: bool, purpose: str = "compare") -> bool:
    """True when ``run_dir`` holds a finished run of ``cfg`` to reuse; an error when it holds one with other settings."""
    diff = [] if fresh else settings_mismatch(cfg, run_dir)
    if diff:
        raise CnnlabError(f"{run_dir} holds a {cfg.model} run with a different {', '.join(diff)}: pass --fresh to "
                          f"retrain it, or --run-dir to {purpose} elsewhere")
    return not fresh and is_finished(cfg, run_dir)


def train_all(configs: list[RunConfig], runs_root: Path, fresh: bool = False, progress: bool = True) -> list[Path]:
    """Train (resume, or reuse when finished) one run per config under ``runs_root``; their directories."""
    if not configs:
        raise CnnlabError("compare needs at least one model")
    dirs = []
    for i, cfg in enumerate(configs, start=1):
        run_dir = run_dir_for(cfg, runs_root)
        if reusable(cfg, run_dir, fresh):
            print(f"[{i}/{len(configs)}] {cfg.model}: finished run in {run_dir}, reused", file=sys.stderr, flush=True)
        else:
            print(f"[{i}/{len(configs)}] {cfg.model}", file=sys.stderr, flush=True)
            train_run(cfg, run_dir, fresh=fresh, progress=progress)
        dirs.append(run_dir)
    return dirs


def _mean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan


def run_stats(run_dir: Path) -> RunStats:
    """Size, cost and results of one finished (or stopped) run."""
    from ..explain.summary import summarize

    trained = load_trained(run_dir, "last")
    summary = summarize(trained.model, trained.card.input_shape)
    h = History.load(run_dir)
    return RunStats(Path(trained.card.model_name).stem, str(run_dir), summary.total_params, summary.total_flops,
                    len(h), h.last("loss"), h.last("accuracy"), h.last("val_loss"), h.last("val_accuracy"),
                    h.best("val_accuracy"), _mean(h.history["seconds"]), _mean(h.history["images_per_sec"]))


def _num(value: float, digits: int = 4) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def table_rows(stats: list[RunStats]) -> list[list[str]]:
    """Header and one row of display strings per run (shared by the text, Markdown and HTML tables)."""
    body = [[s.model, f"{s.params:,}", f"{s.flops / 1e6:,.1f}", str(s.epochs), _num(s.loss), _num(s.accuracy),
             _num(s.val_loss), _num(s.val_accuracy), _num(s.best_val_accuracy), _num(s.seconds_per_epoch, 1),
             _num(s.images_per_sec, 0)] for s in stats]
    return [list(HEADER), *body]


def text_table(rows: list[list[str]]) -> str:
    """Aligned columns for the terminal: names left, numbers right."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                     for r in rows)


def markdown_table(rows: list[list[str]]) -> str:
    """A GitHub-flavoured Markdown table, numbers right-aligned."""
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "|".join([":---"] + ["---:"] * (len(rows[0]) - 1)) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows[1:]])


def describe(base: RunConfig) -> str:
    """One line naming the shared training settings."""
    return (f"dataset {base.dataset}, {base.epochs} epoch(s), batch {base.batch_size}, {base.optimizer} "
            f"lr {base.base_lr:g}, augment {base.augment}, validation {base.val}"
            + (f", first {base.limit_train} training images" if base.limit_train else ""))


CURVE_TITLES = {"accuracy-loss": "accuracy and loss of every run",
                "error": "training and validation error of every run"}


def markdown_report(rows: list[list[str]], settings: str, curves: str, view: str = "accuracy-loss") -> str:
    """report.md: settings, table, and the overlaid curves."""
    return (f"# Comparison\n\n{settings}.\n\n{markdown_table(rows)}\n\nMFLOPs: forward floating-point operations per "
            f"image (2 per multiply-add). s/epoch and img/s: training time, averaged over epochs.\n\n"
            f"![{CURVE_TITLES[view]}]({curves})\n")


def html_report(rows: list[list[str]], settings: str, png: bytes) -> str:
    """report.html: a self-contained page (the curves PNG inlined as base64)."""
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>cnnlab comparison</title>"
            "<style>body{font-family:sans-serif;margin:2em}</style></head><body>"
            f"{block('<h1>Comparison</h1>', report_html(rows, settings, png))}</body></html>\n")


@dataclass(frozen=True)
class Report:
    """What ``write_report`` wrote, and the table it printed from (a notebook shows table and curves)."""

    markdown: Path
    html: Path
    curves: Path
    table: str
    rows: tuple[tuple[str, ...], ...] = ()
    settings: str = ""

    def _repr_html_(self) -> str:
        return block("<b>Comparison</b>", report_html(self.rows, self.settings, self.curves.read_bytes()))


def write_report(run_dirs: list[Path], base: RunConfig, out_dir: Path, curves: str = "accuracy-loss") -> Report:
    """Write report.md, report.html and curves.png (``curves``: accuracy-loss or error) for these runs."""
    from ..explain.plots import plot_runs

    stats = [run_stats(d) for d in run_dirs]
    rows = table_rows(stats)
    out_dir = Path(out_dir)
    histories = {s.model: History.load(Path(s.run_dir)).to_dict() for s in stats}
    png = plot_runs(histories, out_dir / "curves.png", curves)
    settings = describe(base)
    md, page = out_dir / "report.md", out_dir / "report.html"
    atomic_write_text(md, markdown_report(rows, settings, png.name, curves))
    atomic_write_text(page, html_report(rows, settings, png.read_bytes()))
    return Report(md, page, png, text_table(rows), tuple(map(tuple, rows)), settings)


def compare(configs: list[RunConfig], out_dir: Path, runs_root: Path = Path("runs"), fresh: bool = False,
            progress: bool = True, curves: str = "accuracy-loss") -> Report:
    """Train every run (resuming each), then write the comparison report; the first config names the settings."""
    from ..explain.plots import check_curves

    check_curves(curves)  # before any training, not after hours of it
    return write_report(train_all(configs, runs_root, fresh, progress), configs[0], out_dir, curves)
