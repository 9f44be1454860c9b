"""Ten thousand fuzz cases: tests/test_fuzz.py with more examples per test, then the outcome of every case.

    .venv/bin/python benchmarks/fuzz.py --cases 10000

Runs pytest on tests/test_fuzz.py with ``CNNLAB_FUZZ_EXAMPLES`` set so that all its tests together run
about ``--cases`` cases (an example of some tests runs two or three: eval, predict and resume of one
damaged checkpoint, say), collects the per-case outcomes the tests record (``CNNLAB_FUZZ_REPORT``) and
prints them as a Markdown table: for each entry point, how many cases ended well (``ok``, ``exit 0``),
how many with one CnnlabError line (``CnnlabError``, ``exit 2``). A traceback, a hang past the
per-case deadline or a write outside the case's folder fails the run, and pytest prints the case.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES_PER_ROUND = 11  # cases one example of every test in tests/test_fuzz.py runs together, on average


def run_fuzz(examples: int, report: Path, extra: list[str]) -> int:
    """pytest on tests/test_fuzz.py with ``examples`` examples per test; its exit code."""
    env = {**os.environ, "CNNLAB_FUZZ_EXAMPLES": str(examples), "CNNLAB_FUZZ_REPORT": str(report),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(ROOT / "tests" / "test_fuzz.py"),
               "-o", "addopts=", *extra]
    return subprocess.run(command, env=env, cwd=ROOT).returncode


def table(counts: dict[str, dict[str, int]]) -> str:
    """Markdown: one row per entry point, the cases and how they ended."""
    rows = ["| entry point | cases | ended well | one CnnlabError line |", "|---|---:|---:|---:|"]
    total = [0, 0, 0]
    for name, outcome in sorted(counts.items()):
        good = outcome.get("ok", 0) + outcome.get("exit 0", 0)
        refused = outcome.get("CnnlabError", 0) + outcome.get("exit 2", 0)
        cases = sum(outcome.values())
        rows.append(f"| {name} | {cases:,} | {good:,} | {refused:,} |")
        total = [total[0] + cases, total[1] + good, total[2] + refused]
    rows.append(f"| **all** | **{total[0]:,}** | **{total[1]:,}** | **{total[2]:,}** |")
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10_000, help="about how many cases in all (default 10,000)")
    parser.add_argument("--report", type=Path, help="also keep the outcome counts as JSON here")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments, e.g. -k onnx")
    a = parser.parse_args()
    examples = max(1, round(a.cases / CASES_PER_ROUND))
    with tempfile.TemporaryDirectory() as tmp:
        report = a.report or Path(tmp) / "fuzz.json"
        report.unlink(missing_ok=True)
        started = time.perf_counter()
        code = run_fuzz(examples, report, a.pytest_args)
        minutes = (time.perf_counter() - started) / 60
        counts = json.loads(report.read_text()) if report.exists() else {}
    print(f"\n{examples} examples per test, {minutes:.1f} min, pytest exit code {code}\n")
    print(table(counts))
    return code


if __name__ == "__main__":
    sys.exit(main())
