"""Archive extraction that cannot write outside its folder: plain files and folders only, names checked lexically.

The official CIFAR archives hold nothing but regular files and folders, so nothing else is accepted:
no symlink or hard link (whose targets a resolver such as ``os.path.realpath`` can be made to misjudge,
as in CVE-2025-4517, or that only point outside once a later link exists), no device, FIFO or socket.
Names are judged as text, never by resolving them on disk. Every member is checked before anything is
written; extraction then goes into a fresh staging folder and is moved into place, so a refused,
truncated or corrupt archive leaves nothing behind.
"""
from __future__ import annotations

import os
import re
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ..errors import CnnlabError

MAX_NAME_BYTES = 1024  # a member name, UTF-8 encoded; the official ones are under 40
MAX_PART_BYTES = 255  # one path component (NAME_MAX on Linux)
MAX_DEPTH = 32  # folders in a member path
MAX_MEMBERS = 100_000
MAX_TOTAL_BYTES = 16 << 30  # declared content of all members (CIFAR-100 holds 178 MB)
# what reading a damaged archive raises (zipfile: RuntimeError when encrypted, NotImplementedError for an
# unknown compression), and OSError from the disk
_ARCHIVE_ERRORS = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, OSError, RuntimeError,
                   NotImplementedError)
_KINDS = {tarfile.SYMTYPE: "symlink", tarfile.LNKTYPE: "hardlink", tarfile.CHRTYPE: "chardev",
          tarfile.BLKTYPE: "blockdev", tarfile.FIFOTYPE: "fifo"}
_KIND_TEXT = {"symlink": "is a symbolic link", "hardlink": "is a hard link", "chardev": "is a character device",
              "blockdev": "is a block device", "fifo": "is a named pipe (FIFO)", "socket": "is a socket",
              "other": "is not a regular file or folder"}


@dataclass(frozen=True)
class Member:
    """One archive entry as the checks see it; `open` gives its content (files only)."""

    name: str
    kind: str  # "file", "dir", or one of the refused kinds in _KIND_TEXT
    size: int
    open: Callable[[], IO[bytes]]


class Refused(Exception):
    """An archive member that is not a plain file or folder inside the destination."""


def safe_extract(archive: str | Path, dest: str | Path) -> Path:
    """Extract a .tar/.tar.gz/.tgz/.zip into dest, all or nothing; only plain files and folders inside dest."""
    archive, dest = Path(archive), Path(dest)
    staging: Path | None = None
    try:
        dest.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=dest, prefix=".extract-"))
        with _members(archive) as members:
            for parts, member in plan(members):
                _write(staging, parts, member)
        _move_entries(staging, dest)
    except Refused as err:
        raise CnnlabError(f"refusing to extract {archive}: member {err}; only plain files and folders inside "
                          "are accepted, so this is not a genuine copy: delete it and download it again") from None
    except _ARCHIVE_ERRORS as err:
        raise CnnlabError(failure_message(archive, dest, err)) from err
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    return dest


def failure_message(archive: Path, dest: Path, err: BaseException) -> str:
    """One line for an extraction that failed: a disk or permission error (it has an errno), else a bad archive."""
    if isinstance(err, OSError) and err.errno is not None:
        where = f" ({err.filename})" if err.filename else ""
        return (f"cannot extract {archive} into {dest}: {err.strerror}{where}; nothing was extracted: "
                "free disk space or fix the permissions, then re-run")
    return (f"cannot extract {archive}: it is truncated or corrupt ({err}); "
            "delete it and re-run to download it again")


@contextmanager
def _members(archive: Path) -> Iterator[Iterator[Member]]:
    """The members of a zip or (compressed) tar, read lazily."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            yield (Member(i.filename, _zip_kind(i), i.file_size, lambda i=i: zf.open(i)) for i in zf.infolist())
        return
    with tarfile.open(archive, "r:*") as tf:
        yield (Member(m.name, _tar_kind(m), m.size, lambda m=m: tf.extractfile(m)) for m in tf)


def _tar_kind(member: tarfile.TarInfo) -> str:
    """'file', 'dir' or the refused kind of a tar member."""
    if member.isreg():
        return "file"
    return "dir" if member.isdir() else _KINDS.get(member.type, "other")


def _zip_kind(info: zipfile.ZipInfo) -> str:
    """'file', 'dir' or the refused kind of a zip member, from its Unix mode bits (0 when made elsewhere)."""
    if info.is_dir():
        return "dir"
    kind = stat.S_IFMT(info.external_attr >> 16)
    return {0: "file", stat.S_IFREG: "file", stat.S_IFLNK: "symlink", stat.S_IFCHR: "chardev",
            stat.S_IFBLK: "blockdev", stat.S_IFIFO: "fifo", stat.S_IFSOCK: "socket"}.get(kind, "other")


def plan(members: Iterator[Member]) -> list[tuple[tuple[str, ...], Member]]:
    """(path parts, member) for every member, in order, once all have passed; Refused names the first that fails."""
    files: set[tuple[str, ...]] = set()
    dirs: set[tuple[str, ...]] = set()
    planned, total = [], 0
    for count, member in enumerate(members, 1):
        parts = member_parts(member.name, member.kind)
        total += member.size
        if count > MAX_MEMBERS or total > MAX_TOTAL_BYTES:
            raise Refused(f"{shown(member.name)} takes the archive past {MAX_MEMBERS:,} members or "
                          f"{MAX_TOTAL_BYTES >> 30} GiB")
        _check_clash(member.name, parts, member.kind == "dir", files, dirs)
        if parts:
            planned.append((parts, member))
    return planned


def member_parts(name: str, kind: str) -> tuple[str, ...]:
    """The path components a member may be written to, judged as text; Refused if it is not allowed."""
    reason = _kind_or_name_problem(name, kind)
    if reason:
        raise Refused(f"{shown(name)} {reason}")
    parts = tuple(p for p in re.split(r"[/\\]", name) if p not in ("", "."))
    if not parts and kind != "dir":
        raise Refused(f"{shown(name)} has an empty name")
    if len(parts) > MAX_DEPTH:
        raise Refused(f"{shown(name)} is nested deeper than {MAX_DEPTH} folders")
    return parts


def _kind_or_name_problem(name: str, kind: str) -> str | None:
    """Why a member's kind or name is not allowed, or None."""
    if kind not in ("file", "dir"):
        return _KIND_TEXT.get(kind, _KIND_TEXT["other"])
    if "\0" in name:
        return "has a NUL byte in its name"
    if name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name):
        return "has an absolute path"
    parts = re.split(r"[/\\]", name)
    if ".." in parts:
        return "climbs out with '..'"
    if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        return f"has a name longer than {MAX_NAME_BYTES} bytes"
    if any(len(p.encode("utf-8", "surrogateescape")) > MAX_PART_BYTES for p in parts):
        return f"has a path component longer than {MAX_PART_BYTES} bytes"
    return None


def _check_clash(name: str, parts: tuple[str, ...], is_dir: bool, files: set, dirs: set) -> None:
    """Refuse a second member of the same file name, or one that puts a file where a folder is (or under a file)."""
    parents = {parts[:i] for i in range(1, len(parts))}
    if parents & files:
        raise Refused(f"{shown(name)} lies under a file of the archive")
    if parts in files or (not is_dir and parts in dirs):
        raise Refused(f"{shown(name)} appears twice")
    dirs.update(parents)
    (dirs if is_dir else files).add(parts)


def shown(name: str, limit: int = 80) -> str:
    """A member name for a one-line message: repr (so control characters show), cut to `limit`."""
    text = repr(name)
    return text if len(text) <= limit else f"{text[:limit - 12]}…' ({len(name)} chars)"


def _write(staging: Path, parts: tuple[str, ...], member: Member) -> None:
    """Create one folder, or one new file with the member's bytes, under staging (which holds no links)."""
    path = staging.joinpath(*parts)
    if member.kind == "dir":
        path.mkdir(parents=True, exist_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    with os.fdopen(fd, "wb") as out, member.open() as src:
        shutil.copyfileobj(src, out, 1 << 20)


def _move_entries(staging: Path, dest: Path) -> None:
    """Rename each extracted top-level entry into dest; refuse to overwrite existing ones."""
    entries = sorted(staging.iterdir())
    clashes = [e.name for e in entries if os.path.lexists(dest / e.name)]
    if clashes:
        raise CnnlabError(f"cannot extract into {dest}: {', '.join(clashes)} already exists there; "
                          "delete it to re-extract")
    for entry in entries:
        os.replace(entry, dest / entry.name)
