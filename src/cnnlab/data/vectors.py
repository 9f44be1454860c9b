"""Pretrained word vectors from a local file, for the words of a vocabulary only.

Formats: word2vec binary (``.bin``: a ``COUNT DIM`` header line, then per word its UTF-8 bytes, a space and
DIM little-endian float32), and text, one ``word v1 … vDIM`` a line (GloVe, or word2vec's text format with
its ``COUNT DIM`` header). The file is streamed, so a 3.6 GB GoogleNews file needs memory for the
vocabulary's vectors only.
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from ..errors import CnnlabError
from .files import open_regular, read_error

CHUNK = 1 << 22


@dataclass(frozen=True)
class WordVectors:
    """Vectors for a vocabulary (rows of unknown words are zero) and which words the file had."""

    vectors: torch.Tensor  # float32 vocab × dim
    found: torch.Tensor  # bool, vocab
    path: Path

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def describe(self) -> str:
        """``12,345 of 18,765 words (65.8%) from PATH (300-dimensional)``."""
        n, total = int(self.found.sum()), len(self.found)
        return f"{n:,} of {total:,} words ({100 * n / max(total, 1):.1f}%) from {self.path} ({self.dim}-dimensional)"


def _header(line: bytes) -> tuple[int, int] | None:
    """(count, dim) of a ``COUNT DIM`` header line, else None."""
    parts = line.split()
    if len(parts) == 2 and all(p.isdigit() for p in parts):
        return int(parts[0]), int(parts[1])
    return None


def _binary_entries(fh: BinaryIO, dim: int, source: Path) -> Iterator[tuple[str, np.ndarray]]:
    """(word, vector) pairs of a word2vec binary body, read in large chunks."""
    width = 4 * dim
    buf, pos = b"", 0
    while True:
        space = buf.find(b" ", pos)
        while space < 0 or len(buf) < space + 1 + width:
            more = fh.read(CHUNK)
            if not more:
                if buf[pos:].strip():
                    raise CnnlabError(f"{source} ends inside a vector: the word2vec file is truncated")
                return
            buf, pos = buf[pos:] + more, 0
            space = buf.find(b" ", pos)
        word = buf[pos:space].strip().decode("utf-8", "replace")
        yield word, np.frombuffer(buf, dtype="<f4", count=dim, offset=space + 1)
        pos = space + 1 + width


def _text_entries(lines: Iterator[bytes], dim: int | None, source: Path) -> Iterator[tuple[str, np.ndarray]]:
    """(word, vector) pairs of text lines ``word v1 … vD``; every line must have the first line's D."""
    for number, line in enumerate(lines, start=1):
        parts = line.rstrip().split(b" ")
        if len(parts) < 2:
            continue
        dim = dim or len(parts) - 1
        if len(parts) - 1 != dim:
            raise CnnlabError(f"{source} line {number}: {len(parts) - 1} numbers where the file has {dim}")
        try:
            vector = np.array(parts[1:], dtype=np.float32)
        except ValueError:
            raise CnnlabError(f"{source} line {number}: not a word followed by numbers") from None
        yield parts[0].decode("utf-8", "replace"), vector


def read_word_vectors(path: str | os.PathLike, vocabulary: Sequence[str]) -> WordVectors:
    """The vectors of ``vocabulary``'s words found in a word2vec (.bin) or text vectors file."""
    path = Path(path).expanduser()
    index = {w: i for i, w in enumerate(vocabulary)}
    try:
        fh = open_regular(path)
    except OSError as err:
        raise read_error(path, err, "pass --word-vectors a word2vec .bin or GloVe .txt file that exists") from err
    with fh:
        first = fh.readline()
        header = _header(first)
        if path.suffix.lower() == ".bin":
            if header is None:
                raise CnnlabError(f"{path} has no 'COUNT DIM' header line: it is not a word2vec binary file")
            entries = _binary_entries(fh, header[1], path)
        else:
            lines = iter(fh) if header else _prepend(first, fh)
            entries = _text_entries(lines, header[1] if header else None, path)
        vectors, found = _collect(entries, index, len(vocabulary))
    if vectors is None:
        raise CnnlabError(f"{path} holds no word vectors")
    return WordVectors(vectors, found, path)


def _prepend(first: bytes, rest: BinaryIO) -> Iterator[bytes]:
    yield first
    yield from rest


def _collect(entries: Iterator[tuple[str, np.ndarray]], index: dict[str, int],
             size: int) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Keep the vectors of indexed words (the first occurrence of each)."""
    vectors: torch.Tensor | None = None
    found = torch.zeros(size, dtype=torch.bool)
    for word, vector in entries:
        if vectors is None:
            vectors = torch.zeros(size, len(vector))
        row = index.get(word)
        if row is not None and not found[row]:
            vectors[row] = torch.from_numpy(vector.copy())
            found[row] = True
    return vectors, found


__all__ = ["WordVectors", "read_word_vectors"]
