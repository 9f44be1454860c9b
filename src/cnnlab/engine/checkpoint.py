"""Checkpoints that survive a kill at any moment (``io.atomic_write_bytes``) and never execute code when loaded.

Loads use ``torch.load(weights_only=True)``: a checkpoint crafted to run code is refused, not executed.
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import torch

from ..errors import CnnlabError
from ..io import atomic_write_bytes

FORMAT = "cnnlab-checkpoint-v1"


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
