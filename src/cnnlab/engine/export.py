"""Weights out of a trained model: the course's weights.txt, and safetensors (tensors only, no code)."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from torch import nn

from .checkpoint import atomic_write_bytes


def weights_txt(model: nn.Module) -> str:
    """Each trainable tensor's name, shape and values in full, as the course's weights.txt prints them."""
    buf = io.StringIO()
    with np.printoptions(threshold=np.inf):
        for name, p in model.named_parameters():
            if p.requires_grad:
                buf.write(f"{name}\n{tuple(p.shape)}\n{p.detach().cpu().numpy()}\n")
    return buf.getvalue()


def weights_safetensors(model: nn.Module, metadata: dict[str, str] | None = None) -> bytes:
    """The full state dict (BN statistics included) as safetensors bytes."""
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return save(tensors, metadata=metadata)


def export_weights(model: nn.Module, fmt: str, path: Path, ckpt: dict | None = None) -> Path:
    """Write ``txt`` or ``safetensors`` weights atomically; safetensors carries the model description."""
    path = Path(path)
    if fmt == "txt":
        data = weights_txt(model).encode()
    else:
        keys = ("model_name", "num_classes", "in_channels", "input_size", "classes")
        meta = {k: json.dumps(ckpt[k]) for k in keys if ckpt and k in ckpt}
        data = weights_safetensors(model, meta)
    atomic_write_bytes(path, data)
    return path
