"""Weights out of a trained model: the course's weights.txt, safetensors (tensors only, no code), and ONNX."""
from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import CnnlabError
from ..io import atomic_write_bytes
from .card import RunCard
from .predict import ONNX_META_KEY


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


def export_weights(model: nn.Module, fmt: str, path: Path, card: RunCard | None = None) -> Path:
    """Write ``txt`` or ``safetensors`` weights atomically; safetensors carries the run card (``cnnlab`` key)."""
    path = Path(path)
    if fmt == "txt":
        data = weights_txt(model).encode()
    else:
        data = weights_safetensors(model, {ONNX_META_KEY: json.dumps(card.to_dict())} if card else None)
    atomic_write_bytes(path, data)
    return path


def example_input(card: RunCard, batch: int = 1, generator: torch.Generator | None = None) -> torch.Tensor:
    """A batch the model takes: random [0, 1] images, or random word ids of the card's sentence length."""
    if card.text:
        return torch.randint(1, len(card.text.vocabulary), (batch, *card.input_shape), generator=generator)
    return torch.rand(batch, *card.input_shape, generator=generator)


def onnx_bytes(model: nn.Module, card: RunCard) -> bytes:
    """The eval-mode model as ONNX, output ``logits``: input ``images`` N×C×H×W in [0, 1] (batch size free), or
    ``tokens`` N×L int64 word ids (batch size and sentence length free)."""
    model = model.eval().cpu()
    name, axes = ("tokens", {0: "batch", 1: "length"}) if card.text else ("images", {0: "batch"})
    buf = io.BytesIO()
    with warnings.catch_warnings():  # the legacy exporter's deprecation and tracer notes are not the user's concern
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example_input(card),), buf, dynamo=False, input_names=[name],
                          output_names=["logits"], dynamic_axes={name: axes, "logits": {0: "batch"}})
    return buf.getvalue()


def export_onnx(model: nn.Module, card: RunCard, path: Path) -> Path:
    """Write the model as ONNX with its run card (classes, input size …) in the metadata, atomically."""
    try:
        import onnx
    except ImportError:
        raise CnnlabError("ONNX export needs the optional extra: pip install 'cnnlab[onnx]' (onnx, onnxruntime)") from None
    proto = onnx.load_from_string(onnx_bytes(model, card))
    entry = proto.metadata_props.add()
    entry.key, entry.value = ONNX_META_KEY, json.dumps(card.to_dict())
    path = Path(path)
    atomic_write_bytes(path, proto.SerializeToString())
    return path


def onnx_max_difference(path: Path, model: nn.Module, card: RunCard, batch: int = 4) -> float:
    """Largest |onnxruntime − PyTorch| logit difference on a seeded random batch."""
    from .predict import onnx_predictor

    logits_of, _ = onnx_predictor(path)
    x = example_input(card, batch, torch.Generator().manual_seed(0))
    with torch.inference_mode():
        reference = model.eval().cpu()(x)
    return float((logits_of(x) - reference).abs().max())
