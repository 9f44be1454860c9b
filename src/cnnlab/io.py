"""Files that survive a kill at any moment: atomic replacement and clean-up of what a killed writer left.

A write goes to a temporary file in the same directory, is fsynced, then renamed over the target,
so a reader sees either the previous complete file or the new complete file. Used by the engine
(checkpoints, history), the runs layer (config.json, reports, exports) and explain (pictures) alike.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import CnnlabError
from .faults import fault_point


def _fsync_dir(directory: Path) -> None:
    """Make a rename inside ``directory`` durable (best effort: some filesystems refuse)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically; on failure the old file is untouched and no temp remains."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise CnnlabError(f"cannot write {path}: {e.strerror or e}. Check that the directory is writable.") from None
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the mode open() would
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        fault_point("write")
        os.replace(tmp, path)
    except BaseException as e:  # also a second Ctrl-C: never leave the temporary file behind
        Path(tmp).unlink(missing_ok=True)
        if not isinstance(e, OSError):
            raise
        raise CnnlabError(
            f"cannot write {path}: {e.strerror or e}; the previous version (if any) is intact. "
            "Free disk space or choose another --run-dir, then re-run to resume."
        ) from None
    _fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """``atomic_write_bytes`` of UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def remove_stale_temps(directory: str | os.PathLike, names: tuple[str, ...]) -> None:
    """Delete the temporary files of writes to ``names`` that a killed process left in ``directory``."""
    for name in names:
        for tmp in Path(directory).glob(f".{name}.*.tmp"):
            tmp.unlink(missing_ok=True)


__all__ = ["atomic_write_bytes", "atomic_write_text", "remove_stale_temps"]
