"""``cnnlab cv``: K-fold cross-validation as Kim (2014) reported MR — one run per fold, each scored on its fold.

Fold K of ``folds`` (stratified, fixed: ``run.FOLD_SEED``) is the run's test split; the run trains on the
other folds, validates as its ``--val`` says (Kim's recipe: a seeded 10% of them, the dev set) and keeps
``best.pt`` by that validation accuracy; the fold's accuracy is ``best.pt`` on fold K, which the run never
chose anything on. Each fold trains in ``RUNS_ROOT/<model>-<dataset>-foldK`` and resumes there, so an
interrupted cross-validation continues where it stopped; finished folds are reused. ``--only`` trains the
folds it names, and the summary counts every fold already finished there with the same settings, so folds
run in several invocations add up to one cross-validation.
"""
from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ..errors import CnnlabError
from ..io import atomic_write_text
from .compare import is_finished, reusable, settings_mismatch
from .config import RunConfig
from .run import default_run_dir, evaluate_run, train_run


@dataclass(frozen=True)
class FoldResult:
    """One fold: where it trained, and best.pt's accuracy on its held-out fold."""

    fold: int
    run_dir: str
    accuracy: float
    count: int


@dataclass(frozen=True)
class CrossValidation:
    """The folds run so far and their mean and standard deviation (of the fold accuracies)."""

    model: str
    dataset: str
    folds: int
    results: tuple[FoldResult, ...]
    summary_path: Path

    @property
    def mean(self) -> float:
        return statistics.fmean(r.accuracy for r in self.results)

    @property
    def std(self) -> float:
        return statistics.stdev(r.accuracy for r in self.results) if len(self.results) > 1 else 0.0

    def table(self) -> str:
        """One line per fold, then the mean."""
        lines = [f"fold {r.fold:>2}: {r.accuracy:.4f} ({r.count:,} held out)  {r.run_dir}" for r in self.results]
        scope = "" if len(self.results) == self.folds else f" ({len(self.results)} of {self.folds} folds)"
        return "\n".join(lines + [f"{self.model} on {self.dataset}, {self.folds}-fold cross-validation{scope}: "
                                  f"{self.mean:.4f} ± {self.std:.4f}"])


def fold_dir(cfg: RunConfig, runs_root: Path) -> Path:
    """``RUNS_ROOT/<model>-<dataset>-foldK``."""
    return Path(runs_root) / f"{default_run_dir(cfg).name}-fold{cfg.fold}"


def run_fold(cfg: RunConfig, runs_root: Path, fresh: bool, progress: bool) -> FoldResult:
    """Train (resume, or reuse when finished) one fold, then score its best.pt on the held-out fold."""
    run_dir = fold_dir(cfg, runs_root)
    if not reusable(cfg, run_dir, fresh, "cross-validate"):
        train_run(cfg, run_dir, fresh=fresh, progress=progress)
    result = evaluate_run(run_dir, split="test", which="best")
    print(f"fold {cfg.fold}/{cfg.folds}: {result.accuracy:.4f} on {result.count:,} held-out examples",
          file=sys.stderr, flush=True)
    return FoldResult(cfg.fold, str(run_dir), result.accuracy, result.count)


def finished_elsewhere(cfg: RunConfig, runs_root: Path, picked: Sequence[int]) -> list[int]:
    """Folds outside ``picked`` that an earlier invocation finished with these settings: the summary counts them."""
    others = (replace(cfg, fold=k) for k in range(1, cfg.folds + 1) if k not in picked)
    return [c.fold for c in others
            if is_finished(c, fold_dir(c, runs_root)) and not settings_mismatch(c, fold_dir(c, runs_root))]


def cross_validate(cfg: RunConfig, runs_root: Path = Path("runs"), only: Sequence[int] | None = None,
                   fresh: bool = False, progress: bool = True) -> CrossValidation:
    """Run every fold of ``cfg.folds`` (or the folds in ``only``) and write ``cv.json`` beside their run directories,
    counting the folds finished there before."""
    if cfg.fold is not None:
        raise CnnlabError("cv runs every fold itself: leave out --fold (use --only K,K,… for some folds)")
    picked = sorted(set(only or range(1, cfg.folds + 1)))
    if picked[0] < 1 or picked[-1] > cfg.folds:
        raise CnnlabError(f"--only names folds 1 to {cfg.folds} (got {', '.join(map(str, picked))})")
    trained = {k: run_fold(replace(cfg, fold=k), runs_root, fresh, progress) for k in picked}
    earlier = {k: run_fold(replace(cfg, fold=k), runs_root, False, progress)
               for k in finished_elsewhere(cfg, runs_root, picked)}
    results = tuple(r for _, r in sorted({**trained, **earlier}.items()))
    summary = Path(runs_root) / f"{default_run_dir(cfg).name}-cv.json"
    cv = CrossValidation(cfg.model, cfg.dataset, cfg.folds, results, summary)
    atomic_write_text(summary, json.dumps({"model": cv.model, "dataset": cv.dataset, "folds": cv.folds,
                                           "mean_accuracy": cv.mean, "std_accuracy": cv.std,
                                           "results": [asdict(r) for r in results]}, indent=2) + "\n")
    return cv


__all__ = ["CrossValidation", "FoldResult", "cross_validate"]
