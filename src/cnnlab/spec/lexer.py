"""Text to tokens: a CBAPD body line becomes words and punctuation; ``#`` comments and headers are told apart."""
from __future__ import annotations

import re
from typing import Iterator, NamedTuple

from .errors import SpecError


class Token(NamedTuple):
    """One lexeme: kind is ``word``, ``nl`` or the punctuation itself."""

    kind: str
    text: str
    pos: tuple[int, int]


_TOKEN = re.compile(r"(?P<skip>\s+)|(?P<punct>[()\[\],|])|(?P<word>[\w.+-]+)")
_HEADER = re.compile(r"\s*([A-Za-z_]\w*)\s*:(.*)")


def _strip_comment(line: str) -> str:
    """The line without its ``#`` comment."""
    return line.split("#", 1)[0]


def _tokens(line: str, lineno: int, source: str) -> Iterator[Token]:
    """The tokens of one body line, then an end-of-line token."""
    col = 0
    while col < len(line):
        match = _TOKEN.match(line, col)
        if match is None:
            raise SpecError(source, (lineno, col + 1), f"unexpected character {line[col]!r}",
                            "layers look like C(6,5,same); use # for comments")
        if match.lastgroup != "skip":
            kind = "word" if match.lastgroup == "word" else match[0]
            yield Token(kind, match[0], (lineno, col + 1))
        col = match.end()
    yield Token("nl", "", (lineno, len(line) + 1))
