"""Opening input files: regular files only, so a named pipe or a device can never block or flood a reader."""
from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import BinaryIO

from ..errors import CnnlabError

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


class NotARegularFile(OSError):
    """Raised instead of opening a directory, FIFO, device or socket: reading one would fail, hang or never end."""

    def __init__(self, path: str | os.PathLike, kind: str) -> None:
        super().__init__(f"{os.fspath(path)} is {kind}, not a regular file")
        self.kind = kind


def kind_of(mode: int) -> str:
    """'a directory', 'a named pipe (FIFO)', … for a non-regular st_mode."""
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def open_regular(path: str | os.PathLike) -> BinaryIO:
    """Open a regular file for reading; NotARegularFile for anything else.

    The type is checked before opening (opening a FIFO blocks until a writer comes) and again on the
    opened descriptor, which is opened non-blocking, so a file swapped for a FIFO in between cannot hang.
    """
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise NotARegularFile(path, kind_of(mode))
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotARegularFile(path, kind_of(mode))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def open_input(path: Path, fix: str) -> BinaryIO:
    """open_regular, with any failure to open turned into read_error's one line ending in `fix`."""
    try:
        return open_regular(path)
    except OSError as err:
        raise read_error(path, err, fix) from err


def file_md5(path: str | os.PathLike) -> str:
    """Hex md5 of a regular file, read in 1 MiB blocks."""
    return file_digest(path, "md5")


def checksum_name(expected: str) -> str:
    """The algorithm of a hex checksum by its length: md5 (32 digits) or sha256 (64, where only that is published)."""
    return "sha256" if len(expected) == 64 else "md5"


def file_digest(path: str | os.PathLike, algorithm: str) -> str:
    """Hex digest (``md5`` or ``sha256``) of a regular file, read in 1 MiB blocks."""
    digest = hashlib.new(algorithm, usedforsecurity=False)
    with open_regular(path) as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_error(path: Path, err: OSError, fix: str) -> CnnlabError:
    """One line for an input file that could not be opened or read: which file, what is wrong, then `fix`."""
    if isinstance(err, FileNotFoundError):
        return CnnlabError(f"{path} is missing: {fix}")
    if isinstance(err, PermissionError):
        return CnnlabError(f"cannot read {path}: permission denied: make it readable (chmod u+r), or {fix}")
    if isinstance(err, NotARegularFile):
        return CnnlabError(f"cannot read {path}: it is {err.kind}, not a regular file: {fix}")
    return CnnlabError(f"cannot read {path}: {err.strerror or err}: {fix}")
