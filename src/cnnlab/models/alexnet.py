"""AlexNet (Krizhevsky, Sutskever & Hinton 2012) as one tower: the seed 004 layer table, 62.4 M params.

227x227x3 → 96·11x11/4 valid → LRN → 3x3/2 max → 256·5x5 same → LRN → 3x3/2 max → 384·3x3 → 384·3x3
→ 256·3x3 → 3x3/2 max → 6x6x256 → FC 4096 → FC 4096 → FC classes. The paper split conv2/4/5 over two
GPUs (groups=2: 60,965,224 params); this is the single-GPU reading counted as 62,378,344.
Module names follow torchvision (``features``, ``avgpool``, ``classifier``). torchvision's ``alexnet`` is
the later "one weird trick" 64-192-384-256-256 variant without LRN (conv1 padded by 2, 224x224 input);
``variant="torchvision"`` builds that one, with the same indices and shapes, so its ImageNet weights load.
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from ..layers import Conv2d, Dropout, MaxPool2d
from .base import ZooModel, all_but_last, feature_shape
from .registry import register_model
from .weights import TORCHVISION_LAYOUT, TORCHVISION_URL as TV, Weights


def krizhevsky_lrn() -> nn.LocalResponseNorm:
    """The 2012 paper's LRN: n=5, α=1e-4, β=0.75, k=2 (PyTorch divides α by n, hence 5·1e-4)."""
    return nn.LocalResponseNorm(5, alpha=5 * 1e-4, beta=0.75, k=2.0)


def paper_features(in_channels: int) -> nn.Sequential:
    """The 2012 paper's conv stack: 96-256-384-384-256, valid 11x11/4 first conv, LRN after conv1/conv2."""
    return nn.Sequential(
        Conv2d(in_channels, 96, 11, 4), nn.ReLU(inplace=True), krizhevsky_lrn(), MaxPool2d(3, 2),
        Conv2d(96, 256, 5, padding="same"), nn.ReLU(inplace=True), krizhevsky_lrn(), MaxPool2d(3, 2),
        Conv2d(256, 384, 3, padding="same"), nn.ReLU(inplace=True),
        Conv2d(384, 384, 3, padding="same"), nn.ReLU(inplace=True),
        Conv2d(384, 256, 3, padding="same"), nn.ReLU(inplace=True), MaxPool2d(3, 2),
    )


def torchvision_features(in_channels: int) -> nn.Sequential:
    """torchvision's conv stack: 64-192-384-256-256, first conv padded by 2, no LRN."""
    return nn.Sequential(
        Conv2d(in_channels, 64, 11, 4, padding=2), nn.ReLU(inplace=True), MaxPool2d(3, 2),
        Conv2d(64, 192, 5, padding="same"), nn.ReLU(inplace=True), MaxPool2d(3, 2),
        Conv2d(192, 384, 3, padding="same"), nn.ReLU(inplace=True),
        Conv2d(384, 256, 3, padding="same"), nn.ReLU(inplace=True),
        Conv2d(256, 256, 3, padding="same"), nn.ReLU(inplace=True), MaxPool2d(3, 2),
    )


FEATURES = {"paper": paper_features, "torchvision": torchvision_features}


class AlexNet(ZooModel):
    """Single-tower AlexNet with overlapping 3x3/2 max pooling (LRN after conv1/conv2 in the paper variant)."""

    classifier_name = "classifier.6"

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, input_size: tuple[int, int] = (227, 227),
                 dropout: float = 0.5, variant: Literal["paper", "torchvision"] = "paper") -> None:
        super().__init__()
        self.num_classes, self.num_features = num_classes, 4096
        self.features = FEATURES[variant](in_channels)
        c, h, w = feature_shape(self.features, in_channels, input_size)
        self.avgpool = nn.AdaptiveAvgPool2d((h, w))
        self.classifier = nn.Sequential(
            Dropout(dropout), nn.Linear(c * h * w, 4096), nn.ReLU(inplace=True),
            Dropout(dropout), nn.Linear(4096, 4096), nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_pre_logits(self, x: torch.Tensor) -> torch.Tensor:
        return all_but_last(self.classifier, torch.flatten(self.avgpool(x), 1))


@register_model("alexnet", family="alexnet", input_size=(3, 227, 227), source="Krizhevsky et al. 2012 / seed 004",
                options=AlexNet, weights=(
    Weights("IMAGENET1K_V1", TV + "alexnet-owt-7be5be79.pth", 61_100_840, 56.522, 79.066,
            model_kwargs=TORCHVISION_LAYOUT),
))
def alexnet(*, num_classes: int, in_channels: int, input_size: tuple[int, int], **kw) -> nn.Module:
    """AlexNet at 227x227, single tower, LRN, 62.4 M parameters at 1000 classes; kwarg ``variant="torchvision"``."""
    return AlexNet(num_classes, in_channels, input_size, **kw)
