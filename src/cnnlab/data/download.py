"""Checked downloads into the data cache, and archive extraction that cannot escape its folder."""
from __future__ import annotations

import http.client
import os
import posixpath
import secrets
import shutil
import stat
import tarfile
import tempfile
import urllib.error
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

from torchvision.datasets.utils import calculate_md5, download_url

from ..errors import CnnlabError

DATA_ENV = "CNNLAB_DATA"
_DOWNLOAD_ERRORS = (OSError, http.client.HTTPException, RecursionError, ValueError)
_ARCHIVE_ERRORS = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, OSError)


def cache_dir() -> Path:
    """Where datasets live: $CNNLAB_DATA, else ~/.cache/cnnlab/data."""
    env = os.environ.get(DATA_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "cnnlab" / "data"


def fetch(url: str, md5: str, dest_dir: str | Path, filename: str | None = None) -> Path:
    """Download `url` to dest_dir/filename unless a copy with the right md5 is already there."""
    return fetch_mirrors([url], md5, dest_dir, filename or url_filename(url))


def fetch_mirrors(urls: Sequence[str], md5: str, dest_dir: str | Path, filename: str) -> Path:
    """Like fetch, trying each mirror in turn; one error naming every attempt if all fail."""
    target = Path(dest_dir) / filename
    if target.exists():
        return _reuse(target, md5)
    failures: list[CnnlabError] = []
    for url in urls:
        try:
            return _download(url, md5, target)
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


def _reuse(target: Path, md5: str) -> Path:
    """Return an existing file whose md5 matches; move a corrupt one aside and say so."""
    if calculate_md5(target) == md5:
        return target
    aside = target.with_name(target.name + ".corrupt")
    os.replace(target, aside)
    raise CnnlabError(f"{target} is corrupt (md5 differs from {md5}); it was moved aside to {aside}: "
                      "re-run to download it again")


def _download(url: str, md5: str, target: Path) -> Path:
    """Download to a fresh temporary name beside target, verify md5, rename; never leave a partial file.

    The name must not exist beforehand: torchvision's download_url skips files already present.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.part")
    try:
        download_url(url, str(tmp.parent), filename=tmp.name)
        actual = calculate_md5(tmp)
        if actual != md5:
            raise CnnlabError(f"download of {url} has md5 {actual}, expected {md5}; the file was removed: "
                              f"re-run to retry, or download it manually and place it at {target}")
        os.replace(tmp, target)
        return target
    except _DOWNLOAD_ERRORS as err:
        if isinstance(err, urllib.error.HTTPError):
            err.close()
        raise CnnlabError(_offline_message(url, target, err)) from err
    finally:
        tmp.unlink(missing_ok=True)


def _offline_message(url: str, target: Path, err: BaseException) -> str:
    """One line: what failed, and how to get the file without this machine downloading it."""
    reason = " ".join(str(getattr(err, "reason", err)).split()) or type(err).__name__
    return (f"cannot download {url} ({reason}): download it manually and place it at {target} "
            f"(or point --data-dir / {DATA_ENV} at a folder that has it)")


def safe_extract(archive: str | Path, dest: str | Path) -> Path:
    """Extract a .tar/.tar.gz/.tgz/.zip into dest, all or nothing, refusing members that escape dest."""
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=dest, prefix=".extract-"))
    try:
        _extract_checked(archive, staging)
        _move_entries(staging, dest)
    except _ARCHIVE_ERRORS as err:
        raise CnnlabError(f"cannot extract {archive}: it is truncated or corrupt ({err}); "
                          "delete it and re-run to download it again") from err
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


def _extract_checked(archive: Path, staging: Path) -> None:
    """Validate every member first, then extract into the staging folder."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                _refuse_if_unsafe(archive, info.filename, _zip_kind(info), "")
            zf.extractall(staging)
        return
    with tarfile.open(archive, "r:*") as tf:
        members = tf.getmembers()
        for m in members:
            _refuse_if_unsafe(archive, m.name, _tar_kind(m), m.linkname)
        tf.extractall(staging, members=members, filter="data")


def _move_entries(staging: Path, dest: Path) -> None:
    """Rename each extracted top-level entry into dest; refuse to overwrite existing ones."""
    entries = sorted(staging.iterdir())
    clashes = [e.name for e in entries if (dest / e.name).exists()]
    if clashes:
        raise CnnlabError(f"cannot extract into {dest}: {', '.join(clashes)} already exists there; "
                          "delete it to re-extract")
    for entry in entries:
        os.replace(entry, dest / entry.name)


def _tar_kind(member: tarfile.TarInfo) -> str:
    """'file', 'dir', 'symlink', 'hardlink' or 'special' for a tar member."""
    if member.issym():
        return "symlink"
    if member.islnk():
        return "hardlink"
    if member.isdir():
        return "dir"
    return "file" if member.isfile() else "special"


def _zip_kind(info: zipfile.ZipInfo) -> str:
    """'file', 'dir', 'symlink' or 'special' for a zip member, from its Unix mode bits."""
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return "symlink"
    if info.is_dir():
        return "dir"
    return "special" if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR) else "file"


def _refuse_if_unsafe(archive: Path, name: str, kind: str, linkname: str) -> None:
    """Raise CnnlabError if a member could write, or point, outside the extraction folder."""
    reason = unsafe_member_reason(name, kind, linkname)
    if reason:
        raise CnnlabError(f"refusing to extract {archive}: member {name!r} {reason}; "
                          "the archive is not a genuine copy, delete it")


def unsafe_member_reason(name: str, kind: str, linkname: str = "") -> str | None:
    """Why an archive member is unsafe (absolute, `..`, escaping link, device), or None if safe."""
    if kind == "special":
        return "is a device, fifo or other special file"
    if _escapes(name):
        return "has an absolute path or climbs out with '..'"
    if kind == "symlink" and (_is_absolute(linkname) or
                              _escapes(posixpath.join(posixpath.dirname(name), linkname))):
        return f"is a symlink pointing outside ({linkname!r})"
    if kind == "hardlink" and _escapes(linkname):
        return f"is a hard link pointing outside ({linkname!r})"
    return None


def _is_absolute(path: str) -> bool:
    """True for POSIX, Windows-drive and backslash absolute paths."""
    return path.startswith(("/", "\\")) or (len(path) > 1 and path[1] == ":")


def _escapes(path: str) -> bool:
    """True if a member path is absolute or normalises to somewhere above its root."""
    if not path or _is_absolute(path):
        return True
    return ".." in posixpath.normpath(path.replace("\\", "/")).split("/")
