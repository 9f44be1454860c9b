"""The spec's errors, importable by every stage (lexer, parser, nodes, build) without cycles."""
from __future__ import annotations

from ..errors import CnnlabError


class SpecError(CnnlabError):
    """A mistake in a spec, located at ``line:col`` of ``source`` and with a hint to fix it."""

    def __init__(self, source: str, pos: tuple[int, int], problem: str, hint: str) -> None:
        self.source, (self.line, self.col), self.problem, self.hint = source, pos, problem, hint
        super().__init__(f"{source}:{self.line}:{self.col}: {problem} (hint: {hint})")


class _Problem(Exception):
    """A node-level mistake without a position; the caller adds the node's position."""

    def __init__(self, problem: str, hint: str) -> None:
        super().__init__(problem)
        self.problem, self.hint = problem, hint
