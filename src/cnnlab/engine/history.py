"""Keras-like History: per-epoch metrics, saved as history.json and history.csv after every epoch."""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from ..data.files import open_regular, read_error
from ..errors import CnnlabError
from ..io import atomic_write_bytes

COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds", "images_per_sec",
           "tta_val_loss", "tta_val_accuracy")  # tta_*: the final epoch's test-time-augmented evaluation


class History:
    """``history.history["val_accuracy"]`` as in Keras; epochs without validation hold NaN."""

    def __init__(self, history: dict[str, list[float]] | None = None) -> None:
        self.history: dict[str, list[float]] = {c: list((history or {}).get(c, [])) for c in COLUMNS}
        self.run_dir: Path | None = None  # where the run that made it lives (set by the runs layer)

    def __len__(self) -> int:
        return len(self.history["epoch"])

    def append(self, **row: float) -> None:
        for c in COLUMNS:
            self.history[c].append(float(row.get(c, math.nan)))

    def last(self, key: str) -> float:
        return self.history[key][-1] if self.history[key] else math.nan

    def best(self, key: str = "val_accuracy") -> float:
        vals = [v for v in self.history[key] if not math.isnan(v)]
        return max(vals) if vals else math.nan

    def _repr_html_(self) -> str:
        from ..explain.notebook import history_html

        return history_html(self.to_dict())

    def to_dict(self) -> dict[str, list[float]]:
        return {c: list(v) for c, v in self.history.items()}

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(COLUMNS)
        for i in range(len(self)):
            w.writerow(["" if math.isnan(v) else f"{v:.6g}" for v in (self.history[c][i] for c in COLUMNS)])
        return buf.getvalue()

    def save(self, run_dir: Path) -> None:
        """Write history.json (NaN as null) and history.csv, each atomically."""
        clean = {c: [None if math.isnan(v) else v for v in vals] for c, vals in self.history.items()}
        atomic_write_bytes(run_dir / "history.json", (json.dumps(clean, indent=1) + "\n").encode())
        atomic_write_bytes(run_dir / "history.csv", self.to_csv().encode())

    @classmethod
    def from_dict(cls, raw: Any, source: str) -> "History":
        """A History from stored data (NaN as None allowed); one CnnlabError naming ``source`` when it is not one."""
        problem = _problem(raw)
        if problem:
            raise CnnlabError(f"{source} is damaged ({problem}): re-run training to rewrite it from last.pt")
        rows = len(raw.get("epoch", []))
        return cls({c: [math.nan if v is None else float(v) for v in raw.get(c) or [None] * rows] for c in COLUMNS})

    @classmethod
    def load(cls, run_dir: Path) -> "History":
        """RUN_DIR/history.json, checked: a damaged or foreign file is one line naming it."""
        path = Path(run_dir) / "history.json"
        try:
            with open_regular(path) as fh:
                raw = json.loads(fh.read().decode("utf-8"))
        except OSError as e:
            raise read_error(path, e, "pass a run directory written by `cnnlab train`") from None
        except ValueError as e:  # not UTF-8, or not JSON
            raise CnnlabError(f"{path} is damaged (not JSON: {str(e)[:80]}): re-run training to rewrite it "
                              "from last.pt") from None
        return cls.from_dict(raw, str(path))


def _problem(raw: Any) -> str | None:
    """What keeps ``raw`` from being a history: not a mapping, a column that is not a list of numbers, ragged."""
    if not isinstance(raw, dict):
        return "not a mapping of column names to lists"
    lengths = set()
    for column in COLUMNS:
        values = raw.get(column, [])
        if not isinstance(values, list) or not all(v is None or _is_number(v) for v in values):
            return f"{column!r} is not a list of numbers"
        if values:
            lengths.add(len(values))
    if len(lengths) > 1 or (lengths and len(raw.get("epoch", [])) not in lengths):
        return "its columns have different lengths"
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
