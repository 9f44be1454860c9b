"""Transfer learning (seed 001): a network's convolutional base under a new Keras-like head.

``TransferModel`` keeps only the part of a backbone that its ``forward_features`` uses (Keras
``include_top=False``), pools the feature map (``none`` = Flatten, ``avg``, ``max``: Keras ``pooling=``),
adds hidden Dense+ReLU layers (``"256,64"``) and a fresh classifier. Any model with ``forward_features``
works as a backbone.

``--pretrained`` goes through the same code as ``create_model(pretrained=...)`` (``models/weights.py``): a
declared weights entry (verified against its hash in torch.hub's cache), a local ``.pth`` or a cnnlab run
directory. cnnlab's VGG-11/13/16/19 and ResNet-18..152 use torchvision's module names and shapes, and so do
GoogLeNet and AlexNet in their ``variant="torchvision"`` layouts (which their entries select): the mapping
from torchvision's state dict is the identity on the backbone's keys, with torchvision's top (classifier,
GoogLeNet's auxiliary heads) left out. tests/models/test_transfer.py checks every architecture key by key and
shape by shape, and compares features numerically with torchvision's models.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..errors import CnnlabError
from ..layers import GlobalPool2d
from .base import ZooModel
from .weights import PretrainedArg, load_pretrained_state, merge_model_kwargs, resolve_pretrained


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
        raise CnnlabError(f"{type(backbone).__name__} has no forward_features(): transfer learning needs a network "
                          "with the head API (every registered network and .cbapd spec has it)")
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


def backbone_kwargs(model_name: str, pretrained: PretrainedArg, model_kwargs: dict | None) -> dict:
    """Factory kwargs: the user's, plus the layout pretrained weights need (a conflict is an error)."""
    return merge_model_kwargs(resolve_pretrained(model_name, pretrained), model_kwargs)


def transfer_meta(model_name: str, pretrained: PretrainedArg, hidden: list[int], pooling: str, freeze: str) -> dict:
    """What a checkpoint stores to rebuild a TransferModel (weights excluded). Inputs are normalised as a
    declared entry's transforms say; weights from an arbitrary local file get no normalisation."""
    source = resolve_pretrained(model_name, pretrained)
    weights = source.weights if source else None
    normalize = [list(weights.transforms.mean), list(weights.transforms.std)] if weights else None
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


def load_pretrained(model: TransferModel, model_name: str, pretrained: PretrainedArg) -> str:
    """Fill a TransferModel's backbone with pretrained weights; returns where they came from."""
    source = resolve_pretrained(model_name, pretrained)
    if source is None:
        raise ValueError(f"load_pretrained needs weights to load, not {pretrained!r}")
    return load_pretrained_state(model.backbone, source)
