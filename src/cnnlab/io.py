"""Files that survive a kill at any moment: atomic replacement, clean-up of what a killed writer left, and
locks that die with their process.

A write goes to a temporary file in the same directory, is fsynced, then renamed over the target,
so a reader sees either the previous complete file or the new complete file. Used by the engine
(checkpoints, history), the runs layer (config.json, reports, exports) and explain (pictures) alike.
A run directory is written by one process at a time (``run_dir_lock``); downloads share the lock
primitive (``exclusive_lock``).
"""
from __future__ import annotations

import fcntl
import os
import shlex
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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


def _same_file(fd: int, path: Path) -> bool:
    """True if the open descriptor is still the file at ``path`` (not one removed or replaced since)."""
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


@contextmanager
def exclusive_lock(path: Path, unusable: Callable[[OSError], CnnlabError],
                   busy: Callable[[int], None] | None = None) -> Iterator[int]:
    """Hold an exclusive ``flock`` on ``path`` (created, and removed on release); yields its descriptor.

    ``unusable(error)`` is raised when the lock file cannot be created (a read-only folder, say). The
    first time the lock is found taken, ``busy(fd)`` runs: it may raise to give up, or return to wait.
    The kernel drops the lock of a process that dies, even by SIGKILL, so a dead holder never blocks
    anyone. Removing the file on release is safe: a waiter that then holds a lock on the removed file
    sees that the name now refers to another file (or none) and locks again.
    """
    told = False
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise unusable(e) from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if busy and not told:
                    told = True
                    busy(fd)
                fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        if _same_file(fd, path):
            break
        os.close(fd)
    try:
        yield fd
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)


LOCK_NAME = ".lock"  # RUN_DIR/.lock: the pid and command of the process training there


def _command_line() -> str:
    """This process's command as a user would type it (``cnnlab train …``), for the lock's holder line."""
    program = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    program = "cnnlab" if program in ("__main__.py", "cnnlab") else program
    return shlex.join([program, *sys.argv[1:]])[:300]


def make_run_dir(directory: Path) -> Path | None:
    """Create a run directory, or one line saying why it cannot be (a file in the way, no permission).

    Returns the topmost directory it had to create (None when ``directory`` existed), so a run that
    fails before writing anything can leave the disk as it found it (``remove_empty``).
    """
    created = next((p for p in reversed((directory, *directory.parents)) if not p.exists()), None)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise CnnlabError(f"--run-dir {directory} is a file, not a directory: choose another --run-dir") from None
    except NotADirectoryError:
        raise CnnlabError(f"--run-dir {directory} lies under a file, not a directory: choose another "
                          "--run-dir") from None
    except OSError as e:
        raise CnnlabError(f"cannot create --run-dir {directory}: {e.strerror or e}. Choose a directory you "
                          "can write.") from None
    return created


def remove_empty(directory: Path, top: Path) -> None:
    """Remove ``directory`` and its parents up to ``top`` while they are empty."""
    for d in (directory, *directory.parents):
        try:
            d.rmdir()
        except OSError:
            return
        if d == top:
            return


def _holder(fd: int) -> str:
    """``process 1234 (cnnlab train …)`` from a lock file's contents (written once the lock was taken)."""
    pid, _, command = os.pread(fd, 4096, 0).decode("utf-8", "replace").partition("\n")
    return f"process {pid} ({command.strip()})" if pid.strip().isdigit() else "another process"


@contextmanager
def run_dir_lock(directory: str | os.PathLike) -> Iterator[None]:
    """Hold ``RUN_DIR/.lock`` while training there: a second process is refused with one line naming the holder.

    Two runs in one directory would resume from each other's checkpoints and delete each other's
    temporary files; a holder that died (even by SIGKILL) has released the lock already.
    """
    directory = Path(directory)
    created = make_run_dir(directory)

    def refuse(fd: int) -> None:
        raise CnnlabError(f"{directory} is being trained by {_holder(fd)}; wait for it, or choose another --run-dir")

    def unusable(e: OSError) -> CnnlabError:
        return CnnlabError(f"cannot lock --run-dir {directory}: {e.strerror or e}. Choose a directory you can write.")

    try:
        with exclusive_lock(directory / LOCK_NAME, unusable, refuse) as fd:
            _write_holder(fd)
            yield
    finally:
        if created:  # a run that failed before writing anything leaves no empty directory behind
            remove_empty(directory, created)


def _write_holder(fd: int) -> None:
    """Record this process in its lock file (best effort: a full disk must not stop the run it protects)."""
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n{_command_line()}\n".encode(), 0)
    except OSError:
        pass


__all__ = ["LOCK_NAME", "atomic_write_bytes", "atomic_write_text", "exclusive_lock", "make_run_dir", "remove_empty",
           "remove_stale_temps", "run_dir_lock"]
