"""Checkpoints that survive a kill at any moment (``io.atomic_write_bytes``), are checked when loaded and never
execute code.

Loads use ``torch.load(weights_only=True)``: a checkpoint crafted to run code is refused, not executed.
Before it, every record's CRC-32 is verified, and after it every floating tensor must be finite, so a
flipped bit on disk is reported instead of evaluating or resuming from damaged weights.
"""
from __future__ import annotations

import io
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

import torch

from ..data.files import open_regular, read_error
from ..errors import CnnlabError, first_line
from ..io import atomic_write_bytes

FORMAT = "cnnlab-checkpoint-v1"


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Serialise ``state`` (tensors, numbers, strings, lists, dicts) and write it atomically."""
    buf = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buf)
    atomic_write_bytes(path, buf.getvalue())


USE_ANOTHER = "use the other checkpoint (best.pt/last.pt) or re-train"
NOT_TORCH = "not written by torch.save"


def _refused_object(error: pickle.UnpicklingError) -> str:
    """What a weights-only load refused (``posix.system``, say), without torch's advice to load unsafely."""
    found = re.search(r"GLOBAL ([\w.]+)", str(error))
    return f"it imports {found[1]}" if found else f"{first_line(error, 80).rstrip('.')}"


def _damage(fh: BinaryIO) -> str | None:
    """Why a torch file is damaged (a record's CRC-32, the zip structure), or None when it looks intact.

    torch.save writes a zip archive with a CRC-32 per record; reading every record checks them all.
    Files in torch's legacy format (a bare pickle) carry no checksum; anything else is not a torch file.
    """
    head = fh.read(4)
    fh.seek(0)
    if not zipfile.is_zipfile(fh):
        if head.startswith(b"PK"):
            return "corrupt or truncated: its zip archive has no end record"
        return None if head.startswith(b"\x80") else NOT_TORCH
    try:
        bad = zipfile.ZipFile(fh).testzip()
    except (zipfile.BadZipFile, EOFError, ValueError, OSError) as e:
        return f"corrupt or truncated: {first_line(e, 100)}"
    return f"CRC mismatch in {bad}" if bad else None


def non_finite(obj: Any, where: str = "") -> str | None:
    """The key path of the first floating tensor holding NaN or infinity inside ``obj`` (None when all are finite)."""
    if isinstance(obj, torch.Tensor):
        finite = not obj.is_floating_point() or bool(obj.isfinite().all())
        return None if finite else where or "a tensor"
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else ()
    for key, value in items:
        bad = non_finite(value, f"{where}.{key}" if where else str(key))
        if bad:
            return bad
    return None


def read_torch_file(path: Path, map_location: str | torch.device = "cpu", fix: str = USE_ANOTHER) -> Any:
    """Load a ``torch.save`` file, never running code from it, after checking that it is intact.

    One CnnlabError naming the file, and ending in ``fix``, for every way it can be unusable: missing,
    unreadable (permission, a directory or device), damaged (a record's CRC-32, truncation, a tensor
    holding NaN or infinity — ``save`` never writes one) or holding objects other than plain data.
    """
    path = Path(path)
    try:
        with open_regular(path) as fh:
            damage = _damage(fh)
            if damage is None:
                fh.seek(0)
                state = torch.load(fh, map_location=map_location, weights_only=True)
    except OSError as e:
        raise read_error(path, e, fix) from None
    except pickle.UnpicklingError as e:
        raise CnnlabError(f"refusing to load {path}: it contains objects other than tensors and plain data "
                          f"({_refused_object(e)}), possibly code, and cnnlab never runs code from a file. "
                          "Only load checkpoints you trust, or re-train.") from None
    except Exception as e:  # damaged bytes surface as anything: KeyError, IndexError, struct.error, …
        damage = f"corrupt or truncated: {first_line(e, 120)}"
    if damage is None and (bad := non_finite(state)):
        damage = f"{bad} holds NaN or infinity"
    if damage == NOT_TORCH:
        raise CnnlabError(f"{path} is not a checkpoint or weights file (torch.save writes a zip archive, and this "
                          f"is neither that nor torch's older format): {fix}")
    if damage:
        raise CnnlabError(f"{path} is damaged ({damage}): {fix}")
    return state


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A cnnlab checkpoint, checked and loaded without running code (``read_torch_file``), with its format marker."""
    state = read_torch_file(path, map_location)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CnnlabError(f"{path} is not a cnnlab checkpoint (no '{FORMAT}' marker)")
    return state


def check_fields(ckpt: dict, fields: dict[str, type | tuple[type, ...]], source: str) -> None:
    """Refuse a checkpoint one of whose ``fields`` is missing or of another type (it is damaged or foreign)."""
    for key, kind in fields.items():
        value = ckpt.get(key)
        if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _types(kind)):
            raise CnnlabError(f"{source} is damaged ({key} is {'missing' if value is None else 'of the wrong type'}): "
                              f"{USE_ANOTHER}")


def _types(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def check_state_dict(state: Any, source: str, fix: str = USE_ANOTHER) -> dict[str, torch.Tensor]:
    """``state`` when it maps names to tensors, as a model's weights do; one line naming ``source`` otherwise."""
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise CnnlabError(f"{source} does not hold a model's weights (a mapping of names to tensors): {fix}")
    return state


def load_model_state(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Load weights, turning shape/key mismatches into one message that names the architecture problem."""
    check_state_dict(state_dict, source)
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
