"""Checkpoints that survive a kill at any moment and never execute code when loaded.

Writes go to a temporary file in the same directory, are fsynced, then renamed over the target,
so a reader sees either the previous complete file or the new complete file. Loads use
``torch.load(weights_only=True)``: a checkpoint crafted to run code is refused, not executed.
"""
from __future__ import annotations

import io
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch

from ..errors import CnnlabError
from .faults import fault_point

FORMAT = "cnnlab-checkpoint-v1"


def _fsync_dir(directory: Path) -> None:
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


def atomic_write_bytes(path: Path, data: bytes) -> None:
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


def remove_stale_temps(directory: Path, names: tuple[str, ...]) -> None:
    """Delete the temporary files of writes to ``names`` that a killed process left in ``directory``."""
    for name in names:
        for tmp in Path(directory).glob(f".{name}.*.tmp"):
            tmp.unlink(missing_ok=True)


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Serialise ``state`` (tensors, numbers, strings, lists, dicts) and write it atomically."""
    buf = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buf)
    atomic_write_bytes(path, buf.getvalue())


def _first_line(error: BaseException) -> str:
    """The first line of an exception's message, or its type when the message is empty."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a cnnlab checkpoint without running any pickled code; one clear error for bad files."""
    path = Path(path)
    if not path.is_file():
        raise CnnlabError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CnnlabError(
            f"refusing to load {path}: it contains objects other than tensors and plain data "
            f"(possibly code) [{_first_line(e)[:160]}]. Only load checkpoints you trust, or re-train."
        ) from None
    except Exception as e:  # damaged bytes surface as anything: KeyError, IndexError, struct.error, …
        raise CnnlabError(
            f"{path} is not a readable checkpoint (corrupt or truncated: {_first_line(e)[:120]}). "
            "Use best.pt or last.pt from a finished write, or re-run training."
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CnnlabError(f"{path} is not a cnnlab checkpoint (no '{FORMAT}' marker)")
    return state


def load_model_state(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Load weights, turning shape/key mismatches into one message that names the architecture problem."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    wrong = [(k, tuple(state_dict[k].shape), tuple(v.shape)) for k, v in own.items()
             if k in state_dict and state_dict[k].shape != v.shape]
    if missing or unexpected or wrong:
        detail = (f"{len(missing)} missing, {len(unexpected)} unexpected tensors"
                  + (f"; {wrong[0][0]} has shape {wrong[0][1]} but the model needs {wrong[0][2]}" if wrong else ""))
        raise CnnlabError(
            f"{source} does not fit this model ({detail}): it was saved from another architecture "
            "or class count. Pass the matching model/--num-classes, or start with --fresh."
        )
    model.load_state_dict(state_dict)
