"""Checked downloads into the data cache: bounded in time and size, resumable, one process per file.

A file is fetched into ``NAME.part`` beside its final name, under an exclusive lock on ``NAME.lock``, and
renamed into place only once its size and md5 are those of the official file. A server that stays silent
for TIMEOUT seconds is given up on; a body that announces or sends more bytes than the official file has
is stopped at once and removed. A ``.part`` left by an interrupted run (network loss, Ctrl-C, SIGKILL) is
resumed with an HTTP Range request by the next run, or started over if the server ignores ranges.
"""
from __future__ import annotations

import glob
import http.client
import os
import posixpath
import re
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlparse

from tqdm import tqdm

from ..errors import CnnlabError
from ..io import exclusive_lock
from .files import checksum_name, file_digest, read_error

DATA_ENV = "CNNLAB_DATA"
TIMEOUT = 30.0  # seconds allowed for connecting and for each read; tests lower it
CHUNK = 1 << 16
_DOWNLOAD_ERRORS = (OSError, http.client.HTTPException, ValueError)
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class TooLarge(Exception):
    """A response that announces or sends more than the official file's size: refused, never kept."""


def cache_dir() -> Path:
    """Where datasets live: $CNNLAB_DATA, else ~/.cache/cnnlab/data."""
    env = os.environ.get(DATA_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "cnnlab" / "data"


def fetch(url: str, md5: str, dest_dir: str | Path, filename: str | None = None, *, size: int,
          progress: bool | None = None) -> Path:
    """Download `url` (`size` bytes, `md5`) to dest_dir/filename unless a verified copy is already there.

    md5: the official hex md5, or a 64-digit sha256 for files whose publishers give only that.

    progress: a tqdm bar on stderr; None shows it only when stderr is a terminal.
    """
    return fetch_mirrors([url], md5, dest_dir, filename or url_filename(url), size=size, progress=progress)


def fetch_mirrors(urls: Sequence[str], md5: str, dest_dir: str | Path, filename: str, *, size: int,
                  progress: bool | None = None) -> Path:
    """Like fetch, trying each mirror in turn; one error naming every attempt if all fail."""
    target = Path(dest_dir) / filename
    if os.path.lexists(target):  # complete: a download only ever renames a verified file into place
        return _reuse(target, md5)
    show = sys.stderr.isatty() if progress is None else progress
    _make_folder(target.parent)
    with _locked(target, show):
        if os.path.lexists(target):  # another process finished it while this one waited
            return _reuse(target, md5)
        _remove_legacy_parts(target)
        failures: list[CnnlabError] = []
        for url in urls:
            try:
                return _download(url, md5, size, target, show)
            except CnnlabError as err:
                failures.append(err)
    if len(failures) == 1:
        raise failures[0]
    raise CnnlabError(f"no mirror could provide {filename}: " + " | ".join(map(str, failures)))


def url_filename(url: str) -> str:
    """The last path component of a URL."""
    name = posixpath.basename(urlparse(url).path)
    if not name:
        raise CnnlabError(f"cannot tell a file name from {url}: pass filename=")
    return name


def part_path(target: Path) -> Path:
    """Where target is downloaded to before it is verified: NAME.part beside it."""
    return target.with_name(target.name + ".part")


def _make_folder(folder: Path) -> None:
    """Create the cache folder, or one line saying why it cannot be."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CnnlabError(f"cannot create the data folder {folder}: {err.strerror}; point --data-dir or "
                          f"{DATA_ENV} at a folder you can write") from err


@contextmanager
def _locked(target: Path, show: bool) -> Iterator[None]:
    """Hold an exclusive lock on NAME.lock (``io.exclusive_lock``), so no two processes write the same NAME.part."""
    def unusable(err: OSError) -> CnnlabError:
        return CnnlabError(f"cannot download into {target.parent}: {err.strerror}; point --data-dir or "
                           f"{DATA_ENV} at a folder you can write")

    def waiting(_fd: int) -> None:
        if show:
            print(f"waiting for another process that is downloading {target.name}", file=sys.stderr)

    with exclusive_lock(target.with_name(target.name + ".lock"), unusable, waiting):
        yield


def _reuse(target: Path, md5: str) -> Path:
    """Return an existing file whose md5 matches; move a corrupt one aside and say so."""
    algorithm = checksum_name(md5)
    try:
        actual = file_digest(target, algorithm)
    except OSError as err:
        raise read_error(target, err, "remove it and re-run to download it again") from err
    if actual == md5:
        return target
    aside = target.with_name(target.name + ".corrupt")
    try:
        os.replace(target, aside)
    except OSError as err:
        raise CnnlabError(f"{target} is corrupt ({algorithm} differs from {md5}) and cannot be moved aside "
                          f"({err.strerror}): delete it, or point --data-dir at another folder") from err
    raise CnnlabError(f"{target} is corrupt ({algorithm} differs from {md5}); it was moved aside to {aside}: "
                      "re-run to download it again")


def _remove_legacy_parts(target: Path) -> None:
    """Delete the randomly named .NAME.*.part files that earlier versions could leave when killed."""
    for stale in target.parent.glob(f".{glob.escape(target.name)}.*.part"):
        stale.unlink(missing_ok=True)


def _download(url: str, md5: str, size: int, target: Path, show: bool) -> Path:
    """Fetch url into NAME.part (resuming it if present), verify size and md5, rename into place."""
    part = part_path(target)
    try:
        _fill(url, part, size, show)
    except TooLarge as err:
        part.unlink(missing_ok=True)
        raise CnnlabError(f"refusing the download of {url}: {err}; it was stopped and removed: "
                          f"download the official file manually and place it at {target}") from None
    except _DOWNLOAD_ERRORS as err:
        if isinstance(err, urllib.error.HTTPError):
            err.close()
            if err.code == 416:  # Range Not Satisfiable: the part is longer than the server's file
                part.unlink(missing_ok=True)
        raise CnnlabError(_offline_message(url, target, err, part)) from err
    algorithm = checksum_name(md5)
    actual = file_digest(part, algorithm)
    if actual != md5:
        part.unlink()
        raise CnnlabError(f"download of {url} has {algorithm} {actual}, expected {md5}; the file was removed: "
                          f"re-run to retry, or download it manually and place it at {target}")
    os.replace(part, target)
    return target


def _fill(url: str, part: Path, size: int, show: bool) -> None:
    """Make part hold the whole `size` bytes from url, appending to what it already has when the server allows."""
    have = _resumable_bytes(part, size)
    if have == size:
        return
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
        start = _resume_offset(response, have, size)
        if start is None:
            part.unlink()
            raise ValueError(f"the server answered a range request with Content-Range "
                             f"{response.headers.get('Content-Range')!r}; the partial file was removed")
        _check_length(response, size - start, size)
        name = part.name.removesuffix(".part")
        with open(part, "r+b" if start else "wb") as out, _bar(name, size, start, show) as bar:
            out.seek(start)
            out.truncate()
            _copy(response, out, size - start, size, bar)
            os.fsync(out.fileno())


def _resumable_bytes(part: Path, size: int) -> int:
    """Bytes of a left-over part to resume from; one that cannot be the start of the file is removed."""
    try:
        have = part.stat().st_size
    except FileNotFoundError:
        return 0
    if have > size:
        part.unlink()
        return 0
    return have


def _resume_offset(response: http.client.HTTPResponse, have: int, size: int) -> int | None:
    """Where the body starts: 0 for a whole file (the server ignored the range), `have` for the 206 Partial
    Content asked for, None for any other range."""
    if response.status != 206:
        return 0
    match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
    if match and int(match[1]) == have and int(match[2]) == size - 1 and match[3] in ("*", str(size)):
        return have
    return None


def _check_length(response: http.client.HTTPResponse, expected: int, size: int) -> None:
    """Refuse a Content-Length other than the bytes still expected (the official size allows no other)."""
    announced = response.length  # http.client's reading of Content-Length; None when absent or chunked
    if announced is not None and announced > expected:
        raise TooLarge(f"the server announces {announced:,} bytes but the official file has {size:,}")
    if announced is not None and announced < expected:
        raise ValueError(f"the server announces {announced:,} bytes but {expected:,} are expected")


def _copy(response: BinaryIO, out: BinaryIO, expected: int, size: int, bar: tqdm) -> None:
    """Copy exactly `expected` bytes; TooLarge as soon as one more arrives, ValueError if fewer do."""
    got = 0
    while chunk := response.read1(min(CHUNK, expected - got + 1)):
        got += len(chunk)
        if got > expected:
            raise TooLarge(f"the server sent more than the {size:,} bytes of the official file")
        out.write(chunk)
        out.flush()
        bar.update(len(chunk))
    if got < expected:
        raise ValueError(f"the connection closed after {got:,} of {expected:,} bytes")


def _bar(name: str, size: int, start: int, show: bool) -> tqdm:
    """A byte progress bar on stderr (a silent one when not shown)."""
    return tqdm(total=size, initial=start, desc=name, unit="B", unit_scale=True, unit_divisor=1024,
                file=sys.stderr, disable=not show, dynamic_ncols=True)


def _offline_message(url: str, target: Path, err: BaseException, part: Path) -> str:
    """One line: what failed, how to resume, and how to get the file without this machine downloading it."""
    reason = getattr(err, "reason", err)
    if isinstance(reason, TimeoutError):
        reason = f"no answer within {TIMEOUT:g} s"
    reason = " ".join(str(reason).split()) or type(err).__name__
    fix = f"download it manually and place it at {target} (or point --data-dir / {DATA_ENV} at a folder that has it)"
    if part.exists():
        fix = f"{part.stat().st_size:,} bytes are kept in {part}: re-run to resume, or {fix}"
    return f"cannot download {url} ({reason}): {fix}"
