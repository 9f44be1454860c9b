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


def onnx_bytes(model: nn.Module, input_shape: tuple[int, int, int]) -> bytes:
    """The eval-mode model as ONNX (input ``images`` N×C×H×W in [0, 1], output ``logits``; batch size free)."""
    model = model.eval().cpu()
    buf = io.BytesIO()
    with warnings.catch_warnings():  # the legacy exporter's deprecation and tracer notes are not the user's concern
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, *input_shape),), buf, dynamo=False, input_names=["images"],
                          output_names=["logits"], dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}})
    return buf.getvalue()


def export_onnx(model: nn.Module, ckpt: dict, path: Path) -> Path:
    """Write the model as ONNX with its description (classes, input size) in the metadata, atomically."""
    from .predict import ONNX_META_KEY

    try:
        import onnx
    except ImportError:
        raise CnnlabError("ONNX export needs the optional extra: pip install 'cnnlab[onnx]' (onnx, onnxruntime)") from None
    proto = onnx.load_from_string(onnx_bytes(model, (ckpt["in_channels"], *ckpt["input_size"])))
    keys = ("model_name", "num_classes", "in_channels", "input_size", "classes", "dataset")
    entry = proto.metadata_props.add()
    entry.key, entry.value = ONNX_META_KEY, json.dumps({k: ckpt[k] for k in keys if k in ckpt})
    path = Path(path)
    atomic_write_bytes(path, proto.SerializeToString())
    return path


def onnx_max_difference(path: Path, model: nn.Module, input_shape: tuple[int, int, int], batch: int = 4) -> float:
    """Largest |onnxruntime − PyTorch| logit difference on a seeded random batch."""
    from .predict import onnx_predictor

    logits_of, _ = onnx_predictor(path)
    x = torch.rand(batch, *input_shape, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        reference = model.eval().cpu()(x)
    return float((logits_of(x) - reference).abs().max())
