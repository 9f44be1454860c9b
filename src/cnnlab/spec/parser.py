"""Tokens to a parse tree: the recursive-descent parser of the body, the headers, ``Spec`` and ``parse_spec``."""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import SpecError, _Problem
from .lexer import _HEADER, Token, _strip_comment, _tokens
from .nodes import _LAYER_NAMES, _LAYERS, Node, _ArgError, _read_args


class _Cursor:
    """Walks the body tokens for the recursive-descent parser."""

    def __init__(self, tokens: list[Token], source: str) -> None:
        self.tokens, self.source, self.i = tokens, source, 0

    def peek(self) -> Token | None:
        """The next token without consuming it (None at the end)."""
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def next(self) -> Token:
        """Consume and return the next token."""
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def error(self, pos: tuple[int, int], problem: str, hint: str) -> SpecError:
        """A located error in this cursor's source."""
        return SpecError(self.source, pos, problem, hint)


def _parse_body(cur: _Cursor) -> tuple[tuple[Node, ...], ...]:
    """Stages (split at ``|`` and line breaks) of expanded layer nodes."""
    stages: list[tuple[Node, ...]] = []
    current: list[Node] = []
    while (tok := cur.peek()) is not None:
        if tok.kind in ("nl", "|"):
            cur.next()
            if current:
                stages.append(tuple(current))
            current = []
        else:
            current.extend(_parse_item(cur))
    if current:
        stages.append(tuple(current))
    return tuple(stages)


def _parse_item(cur: _Cursor) -> list[Node]:
    """One layer or bracket group, with its optional ``xN`` repetition."""
    tok = cur.next()
    if tok.kind == "[":
        nodes = _parse_group(cur, tok)
    elif tok.kind == "word":
        nodes = [_parse_layer(cur, tok)]
    elif tok.kind == "]":
        raise cur.error(tok.pos, "unbalanced ']' without a matching '['", "open the group with '['")
    else:
        raise cur.error(tok.pos, f"unexpected {tok.text!r}",
                        "arguments go in parentheses right after a layer name")
    return nodes * _parse_repeat(cur)


def _parse_group(cur: _Cursor, opening: Token) -> list[Node]:
    """Layers up to the ``]`` that closes ``opening``; line breaks inside are spaces."""
    nodes: list[Node] = []
    while (tok := cur.peek()) is not None:
        if tok.kind == "nl":
            cur.next()
        elif tok.kind == "]":
            cur.next()
            if not nodes:
                raise cur.error(opening.pos, "empty bracket group",
                                "put layers inside, e.g. [C(64,3,same) B A(relu)]x2")
            return nodes
        elif tok.kind == "|":
            raise cur.error(tok.pos, "'|' inside a bracket group", "close the group with ']' before '|'")
        else:
            nodes.extend(_parse_item(cur))
    raise cur.error(opening.pos, "unbalanced '[' without a matching ']'", "close the group with ']'")


def _parse_repeat(cur: _Cursor) -> int:
    """The count of a following ``xN`` (1 when there is none)."""
    tok = cur.peek()
    if tok is None or tok.kind != "word" or not re.fullmatch(r"x\d+", tok.text):
        return 1
    cur.next()
    if int(tok.text[1:]) < 1:
        raise cur.error(tok.pos, f"repeat count {tok.text!r} must be at least 1", "write x1 or more, e.g. x2")
    return int(tok.text[1:])


def _parse_args(cur: _Cursor, opening: Token) -> list[Token]:
    """The single-token arguments between ``opening`` ``(`` and its ``)``."""
    args: list[Token] = []
    expect_value = True
    while (tok := cur.peek()) is not None and tok.kind != "nl":
        cur.next()
        if tok.kind == ")":
            if expect_value and args:
                raise cur.error(tok.pos, "empty argument before ')'", "remove the trailing comma")
            return args
        if expect_value and tok.kind == "word":
            args.append(tok)
            expect_value = False
        elif not expect_value and tok.kind == ",":
            expect_value = True
        elif tok.kind == ",":
            raise cur.error(tok.pos, "empty argument", "separate single values by one comma, e.g. C(6,5,same)")
        else:
            raise cur.error(tok.pos, f"unexpected {tok.text!r} in arguments",
                            "separate arguments by commas, e.g. C(6,5,same)")
    raise cur.error(opening.pos, "unbalanced '(' without a matching ')' on its line",
                    "close the arguments with ')' on the same line")


def _unknown_layer(cur: _Cursor, tok: Token) -> SpecError:
    """The error for a name that is no layer, with the likeliest fix."""
    glued = re.fullmatch(r"(\w+?)x(\d+)", tok.text)
    if glued and glued[1].lower() in _LAYERS:
        hint = f"separate the repeat from the name: {glued[1]} x{glued[2]}"
    else:
        close = difflib.get_close_matches(tok.text.lower(), [n.lower() for n in _LAYER_NAMES], n=1, cutoff=0.4)
        names = {n.lower(): n for n in _LAYER_NAMES}
        suggestion = f"did you mean {names[close[0]]}? " if close else ""
        hint = f"{suggestion}layers are {', '.join(_LAYER_NAMES)}"
    return cur.error(tok.pos, f"unknown layer {tok.text!r}", hint)


def _parse_layer(cur: _Cursor, name: Token) -> Node:
    """A layer name with its optional parenthesised arguments, as a checked node."""
    entry = _LAYERS.get(name.text.lower())
    if entry is None:
        raise _unknown_layer(cur, name)
    cls, preset = entry
    parens = (tok := cur.peek()) is not None and tok.kind == "("
    args = _parse_args(cur, cur.next()) if parens else []
    label = name.text + (f"({','.join(a.text for a in args)})" if parens else "")
    try:
        values = _read_args(cls.SIG, args, name.text)
    except _ArgError as exc:
        raise cur.error(exc.tok.pos if exc.tok else name.pos, exc.problem, exc.hint) from None
    node = cls(pos=name.pos, label=label, **preset, **values)
    try:
        node.check()
    except _Problem as exc:
        raise cur.error(name.pos, exc.problem, exc.hint) from None
    return node


# ------------------------------------------------------------------------------------------ headers


@dataclass(frozen=True)
class Spec:
    """A parsed CBAPD spec: metadata from the headers and the body's stages of layer nodes."""

    stages: tuple[tuple[Node, ...], ...]
    input_size: tuple[int, int, int]  # C, H, W
    num_classes: int | None = None
    name: str = "spec"
    source: str = "<spec>"

    @property
    def nodes(self) -> tuple[Node, ...]:
        """All layers in order, stages concatenated."""
        return tuple(node for stage in self.stages for node in stage)


def _header_value(key: str, value: str, pos: tuple[int, int], source: str) -> Any:
    """The typed value of one header line."""
    if key == "name":
        if not value:
            raise SpecError(source, pos, "empty name", "write e.g. 'name: my-net'")
        return value
    if key == "input":
        match = re.fullmatch(r"(\d+)\s*x\s*(\d+)\s*x\s*(\d+)", value)
        if not match or min(int(g) for g in match.groups()) < 1:
            raise SpecError(source, pos, f"input must be CxHxW, got {value!r}", "write e.g. 'input: 3x32x32'")
        return tuple(int(g) for g in match.groups())
    if key == "classes":
        if not re.fullmatch(r"\d+", value) or int(value) < 1:
            raise SpecError(source, pos, f"classes must be a positive whole number, got {value!r}",
                            "write e.g. 'classes: 10'")
        return int(value)
    raise SpecError(source, pos, f"unknown header {key!r}", "headers are name:, input:, classes:")


def parse_spec(text: str, source: str = "<spec>") -> Spec:
    """Parse CBAPD text into a :class:`Spec`; ``source`` names it in error messages."""
    headers: dict[str, Any] = {}
    tokens: list[Token] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = _strip_comment(raw)
        header = _HEADER.match(line)
        if header is None:
            tokens.extend(_tokens(line, lineno, source))
            continue
        key, pos = header[1].lower(), (lineno, header.start(1) + 1)
        if key in headers:
            raise SpecError(source, pos, f"header {key!r} given twice", "keep one")
        headers[key] = _header_value(key, header[2].strip(), pos, source)
    stages = _parse_body(_Cursor(tokens, source))
    if not stages:
        raise SpecError(source, (1, 1), "the spec has no layers", "write layers such as C(6,5,same) B A(relu)")
    if "input" not in headers:
        raise SpecError(source, (1, 1), "missing 'input:' header", "add e.g. 'input: 3x32x32' (C x H x W)")
    default_name = Path(source).stem if not source.startswith("<") else "spec"
    return Spec(stages, headers["input"], headers.get("classes"), headers.get("name", default_name), source)
