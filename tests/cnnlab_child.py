"""Run ``cnnlab`` commands in real child processes that start in milliseconds, for the fault tests.

A forkserver imports torch and cnnlab once (and runs no tensor op, so forking stays safe); every
child forked from it is a genuine separate process that runs ``cnnlab.cli.main`` and can be killed
with a real SIGKILL, by ``CNNLAB_FAULT_AT`` from inside or by the test from outside.
"""
from __future__ import annotations

import multiprocessing
import os
import resource
import sys
from dataclasses import dataclass
from pathlib import Path

_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload(["torch", "sklearn.datasets", "cnnlab.cli", "cnnlab.runs.run", "cnnlab_child"])


@dataclass
class Outcome:
    """How a child ended: exit code (negative: killed by that signal) and what it printed."""

    code: int
    log: str


def _child(argv: list[str], env: dict[str, str], log: str, max_file_bytes: int | None) -> None:
    """Child body: the CLI with extra environment, output to ``log``, optionally a real file-size limit."""
    os.environ.update(env)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.stdout = open(1, "w", buffering=1, encoding="utf-8", closefd=False)
    sys.stderr = open(2, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)
    if max_file_bytes is not None:  # writes past it fail with EFBIG (Python ignores SIGXFSZ)
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))
    import torch
    from cnnlab.cli import main

    torch.set_num_threads(1)  # tiny models: one thread is fastest, and every run computes the same way
    code = main(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def start_cli(argv: list[str], log: Path, env: dict[str, str] | None = None,
              max_file_bytes: int | None = None) -> multiprocessing.Process:
    """Start ``cnnlab ARGV`` in a forked child and return at once."""
    proc = _CONTEXT.Process(target=_child, args=(list(argv), dict(env or {}), str(log), max_file_bytes))
    proc.start()
    return proc


def run_cli(argv: list[str], log: Path, env: dict[str, str] | None = None, kill_after: float | None = None,
            max_file_bytes: int | None = None, timeout: float = 120) -> Outcome:
    """Run ``cnnlab ARGV`` in a forked child; SIGKILL it after ``kill_after`` seconds if still running."""
    proc = start_cli(argv, log, env, max_file_bytes)
    proc.join(kill_after if kill_after is not None else timeout)
    if proc.is_alive():
        proc.kill()
        proc.join()
        if kill_after is None:
            raise TimeoutError(f"cnnlab {' '.join(argv)} still running after {timeout} s")
    return Outcome(proc.exitcode, Path(log).read_text(errors="replace"))
