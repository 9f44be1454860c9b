"""Checked downloads into the data cache."""
from __future__ import annotations

import http.client
import os
import posixpath
import secrets
import urllib.error
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

from torchvision.datasets.utils import calculate_md5, download_url

from ..errors import CnnlabError

DATA_ENV = "CNNLAB_DATA"
_DOWNLOAD_ERRORS = (OSError, http.client.HTTPException, RecursionError, ValueError)


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
