"""Transfer learning (seed 001): a network's convolutional base under a new Keras-like head.

``TransferModel`` keeps only the part of a backbone that its ``forward_features`` uses (Keras
``include_top=False``), pools the feature map (``none`` = Flatten, ``avg``, ``max``: Keras ``pooling=``),
adds hidden Dense+ReLU layers (``"256,64"``) and a fresh classifier. Any model with ``forward_features``
works as a backbone.

ImageNet weights come through torchvision's own weights API and cache (``torch.hub.get_dir()/checkpoints``).
cnnlab's VGG-11/13/16/19 and ResNet-18..152 use torchvision's module names and shapes, and so do
GoogLeNet and AlexNet in their ``variant="torchvision"`` layouts (selected automatically with
``pretrained``): the mapping from torchvision's state dict is the identity on the backbone's keys, with
torchvision's top (classifier, GoogLeNet's auxiliary heads) left out. tests/test_transfer.py checks every
architecture key by key and shape by shape, and compares features numerically with torchvision's models.
"""
from __future__ import annotations

import os
import pickle
import urllib.error
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from ..errors import CnnlabError
from ..layers import GlobalPool2d
from .base import ZooModel

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_ALIAS = "imagenet"
IMAGENET_DEFAULT = "IMAGENET1K_V1"  # the original weights, as Keras' applications ship them


@dataclass(frozen=True)
class TorchvisionSource:
    """A cnnlab network's torchvision counterpart: weights enum, factory kwargs giving its layout, input scaling."""

    weights: str
    model_kwargs: tuple[tuple[str, str], ...] = ()
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


_TORCHVISION_LAYOUT = (("variant", "torchvision"),)

# GoogLeNet's weights were ported from Caffe: torchvision's transform_input makes its input (x - 0.5) / 0.5.
TORCHVISION_SOURCES: dict[str, TorchvisionSource] = {
    **{f"vgg{d}": TorchvisionSource(f"VGG{d}_Weights") for d in (11, 13, 16, 19)},
    **{f"resnet{d}": TorchvisionSource(f"ResNet{d}_Weights") for d in (18, 34, 50, 101, 152)},
    "alexnet": TorchvisionSource("AlexNet_Weights", _TORCHVISION_LAYOUT),
    "googlenet": TorchvisionSource("GoogLeNet_Weights", _TORCHVISION_LAYOUT, (0.5,) * 3, (0.5,) * 3),
}


def parse_head(text: str) -> list[int]:
    """Hidden Dense widths of a new head: "256,64" → [256, 64]; "" → [] (classifier only)."""
    parts = [p.strip() for p in text.replace(" ", ",").split(",") if p.strip()]
    try:
        widths = [int(p) for p in parts]
    except ValueError:
        widths = [0]
    if min(widths, default=1) < 1:
        raise CnnlabError(f"--head must be comma-separated positive widths such as 256,64, not {text!r}")
    return widths


class Normalize(nn.Module):
    """(x - mean) / std per channel, the input scaling pretrained weights expect (inputs in [0, 1])."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def pooling_layer(pooling: str) -> nn.Module:
    """Keras' pooling= for include_top=False: none → Flatten, avg / max → global pooling."""
    return nn.Flatten() if pooling == "none" else GlobalPool2d(pooling)


def dense_head(in_features: int, hidden: list[int]) -> nn.Sequential:
    """Dense(w) + ReLU for each hidden width, as the course's Dense(256, relu), Dense(64, relu)."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_features, width), nn.ReLU(inplace=True)]
        in_features = width
    return nn.Sequential(*layers)


class TransferModel(ZooModel):
    """Backbone features (top removed) → pooling → hidden Dense layers → classifier, giving logits.

    A frozen backbone has no trainable parameters and stays in eval mode, so its batch-norm statistics
    do not move either (Keras' ``trainable = False``).
    """

    classifier_name = "classifier"

    def __init__(self, backbone: nn.Module, feature_shape: tuple[int, int, int], num_classes: int,
                 hidden: list[int], pooling: str = "none", freeze: bool = False,
                 normalize: tuple[tuple[float, ...], tuple[float, ...]] | None = None) -> None:
        super().__init__()
        c, h, w = feature_shape
        self.normalize = Normalize(*normalize) if normalize else nn.Identity()
        self.backbone = backbone
        self.pool = pooling_layer(pooling)
        self.head = dense_head(c * h * w if pooling == "none" else c, hidden)
        self.num_features = hidden[-1] if hidden else (c * h * w if pooling == "none" else c)
        self.num_classes = num_classes
        self.classifier = nn.Linear(self.num_features, num_classes)
        self.frozen = freeze
        if freeze:
            self.backbone.requires_grad_(False)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(self.normalize(x))

    def forward_pre_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(x))

    def train(self, mode: bool = True) -> "TransferModel":
        super().train(mode)
        if self.frozen:
            self.backbone.eval()
        return self


def probe_backbone(backbone: nn.Module, in_channels: int, input_size: tuple[int, int]) -> tuple[set[str], tuple[int, int, int]]:
    """Names of the direct children ``forward_features`` calls, and its output (C, H, W); ``backbone`` on meta."""
    if not callable(getattr(backbone, "forward_features", None)):
        raise CnnlabError(f"{type(backbone).__name__} has no forward_features(): transfer learning needs a zoo "
                          "network (vgg16, resnet50, googlenet, …), not a .cbapd spec")
    backbone.eval()  # batch-norm refuses a batch of one 1x1 map in training mode
    called: set[str] = set()
    handles = [child.register_forward_hook(lambda *_, n=name: called.add(n))
               for name, child in backbone.named_children()]
    try:
        with torch.no_grad():
            out = backbone.forward_features(torch.empty(1, in_channels, *input_size, device="meta"))
    finally:
        for h in handles:
            h.remove()
    if out.dim() != 4:
        raise CnnlabError(f"{type(backbone).__name__}.forward_features gives shape {tuple(out.shape)}, not a feature map")
    return called, tuple(int(d) for d in out.shape[1:])  # type: ignore[return-value]


def remove_top(backbone: nn.Module, keep: set[str]) -> nn.Module:
    """Delete the direct children outside ``keep`` (the classifier and anything else forward_features skips)."""
    for name in [n for n, _ in backbone.named_children() if n not in keep]:
        delattr(backbone, name)
    return backbone


def backbone_kwargs(model_name: str, pretrained: str | None, model_kwargs: dict | None) -> dict:
    """Factory kwargs: the user's, plus the torchvision layout pretrained weights need (a conflict is an error)."""
    kwargs = dict(model_kwargs or {})
    source = TORCHVISION_SOURCES.get(model_name)
    if not pretrained or source is None:
        return kwargs
    for key, value in source.model_kwargs:
        if kwargs.setdefault(key, value) != value:
            raise CnnlabError(f"pretrained {model_name} weights need {key}={value!r}, not {kwargs[key]!r}")
    return kwargs


def transfer_meta(model_name: str, pretrained: str | None, hidden: list[int], pooling: str, freeze: str) -> dict:
    """What a checkpoint stores to rebuild a TransferModel (weights excluded)."""
    source = TORCHVISION_SOURCES.get(model_name)
    normalize = [list(source.mean), list(source.std)] if pretrained and source else None
    return {"hidden": list(hidden), "pooling": pooling, "freeze": freeze == "backbone", "normalize": normalize,
            "pretrained": pretrained}


def build_transfer(factory: Callable[[], nn.Module], spec: dict, num_classes: int, in_channels: int,
                   input_size: tuple[int, int]) -> TransferModel:
    """The backbone ``factory`` makes, top removed, under the head ``spec`` (from transfer_meta) describes."""
    with torch.device("meta"):
        used, shape = probe_backbone(factory(), in_channels, input_size)
    normalize = spec.get("normalize")
    if normalize and in_channels != len(normalize[0]):
        raise CnnlabError(f"pretrained weights read {len(normalize[0])} channels but the images have {in_channels}: "
                          "add --rgb to repeat a grayscale channel")
    return TransferModel(remove_top(factory(), used), shape, num_classes, list(spec["hidden"]), spec["pooling"],
                         spec["freeze"], tuple(map(tuple, normalize)) if normalize else None)


# ---- weights -----------------------------------------------------------------------------------
def torchvision_weights(model_name: str, name: str):
    """The torchvision weights enum member ``name`` ("imagenet" = IMAGENET1K_V1) for a cnnlab network."""
    import torchvision

    source = TORCHVISION_SOURCES.get(model_name)
    if source is None:
        raise CnnlabError(f"torchvision has no pretrained weights for {model_name!r} (it has: "
                          f"{', '.join(TORCHVISION_SOURCES)}); pass --pretrained PATH to a .pth state dict instead")
    enum = getattr(torchvision.models, source.weights)
    member = IMAGENET_DEFAULT if name.lower() == IMAGENET_ALIAS else name
    if member not in enum.__members__:
        raise CnnlabError(f"unknown weights {name!r} for {model_name}: use imagenet, "
                          f"{', '.join(enum.__members__)}, or a path to a .pth file")
    return enum[member]


def cache_file(weights) -> Path:
    """Where torch.hub keeps the file of a torchvision weights entry."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)


def fetch_torchvision_state(weights) -> dict[str, torch.Tensor]:
    """torchvision's state dict through its weights API (cache first, download otherwise); offline → CnnlabError."""
    target = cache_file(weights)
    try:
        return weights.get_state_dict(progress=True, check_hash=True, weights_only=True)
    except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
        reason = getattr(e, "reason", e)
        raise CnnlabError(
            f"cannot download {weights.url} ({reason}). Offline? Fetch that file elsewhere and put it in "
            f"{target.parent} as {target.name} (torch's hub cache, $TORCH_HOME/hub/checkpoints), or pass "
            f"--pretrained PATH/TO/{target.name}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError) as e:
        raise CnnlabError(f"{target} is not a readable weights file ({str(e).splitlines()[0][:120]}): "
                          "delete it and try again") from None


def read_state_file(path: Path) -> dict[str, torch.Tensor]:
    """A local .pth: a plain state dict, or a cnnlab checkpoint's model weights (tensors only, no code)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, OSError) as e:
        raise CnnlabError(f"cannot read weights from {path}: {str(e).splitlines()[0][:160]}") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CnnlabError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    return state


def pretrained_state(model_name: str, pretrained: str) -> tuple[dict[str, torch.Tensor], str]:
    """(state dict, where it came from) for ``--pretrained`` NAME or PATH."""
    path = Path(pretrained).expanduser()
    if path.suffix in (".pth", ".pt") or path.exists():
        if not path.is_file():
            raise CnnlabError(f"no weights file at {path}")
        return read_state_file(path), str(path)
    weights = torchvision_weights(model_name, pretrained)
    return fetch_torchvision_state(weights), f"torchvision {weights} ({cache_file(weights)})"


def load_backbone_state(backbone: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load the backbone's tensors from ``state`` by name; extra entries (the original top) are ignored."""
    own = backbone.state_dict()
    missing = [k for k in own if k not in state]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
             if k in state and state[k].shape != v.shape]
    if missing or wrong:
        first = f"first missing: {missing[0]}" if missing else f"first mismatch: {wrong[0]}"
        raise CnnlabError(f"{source} does not fit this backbone ({len(missing)} missing, {len(wrong)} of the wrong "
                          f"shape; {first})")
    backbone.load_state_dict({k: state[k] for k in own})


def load_pretrained(model: TransferModel, model_name: str, pretrained: str) -> str:
    """Fill a TransferModel's backbone with pretrained weights; returns where they came from."""
    state, source = pretrained_state(model_name, pretrained)
    load_backbone_state(model.backbone, state, source)
    return source
