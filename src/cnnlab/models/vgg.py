"""VGG configurations A, A-LRN, B, C, D, E (Simonyan & Zisserman 2014, Table 1; seeds 001/003/004).

Each configuration is written once, in the paper's own notation, and parsed into layers.
Module names match torchvision's ``VGG`` (``features.<i>``, ``avgpool``, ``classifier.{0,3,6}``), so
its ImageNet weights for vgg11/13/16/19 load by name. Differences: A-LRN's LRN and C's 1x1 convs take
their own ``features`` slots (torchvision has neither network), and the dense head is sized from
``input_size`` (Keras' Flatten → Dense) with ``avgpool`` adapting any other input to that grid; at
224x224 that is torchvision's 7x7 exactly.
"""
from __future__ import annotations

import torch
from torch import nn

from ..layers import Conv2d, Dropout, MaxPool2d
from .alexnet import krizhevsky_lrn
from .base import ZooModel, all_but_last, feature_shape
from .registry import register_model
from .weights import TORCHVISION_URL as TV, Transforms, Weights

CFGS: dict[str, str] = {
    "A": "conv3-64 maxpool conv3-128 maxpool conv3-256 conv3-256 maxpool "
         "conv3-512 conv3-512 maxpool conv3-512 conv3-512 maxpool",
    "A-LRN": "conv3-64 LRN maxpool conv3-128 maxpool conv3-256 conv3-256 maxpool "
             "conv3-512 conv3-512 maxpool conv3-512 conv3-512 maxpool",
    "B": "conv3-64 conv3-64 maxpool conv3-128 conv3-128 maxpool conv3-256 conv3-256 maxpool "
         "conv3-512 conv3-512 maxpool conv3-512 conv3-512 maxpool",
    "C": "conv3-64 conv3-64 maxpool conv3-128 conv3-128 maxpool conv3-256 conv3-256 conv1-256 maxpool "
         "conv3-512 conv3-512 conv1-512 maxpool conv3-512 conv3-512 conv1-512 maxpool",
    "D": "conv3-64 conv3-64 maxpool conv3-128 conv3-128 maxpool conv3-256 conv3-256 conv3-256 maxpool "
         "conv3-512 conv3-512 conv3-512 maxpool conv3-512 conv3-512 conv3-512 maxpool",
    "E": "conv3-64 conv3-64 maxpool conv3-128 conv3-128 maxpool "
         "conv3-256 conv3-256 conv3-256 conv3-256 maxpool conv3-512 conv3-512 conv3-512 conv3-512 maxpool "
         "conv3-512 conv3-512 conv3-512 conv3-512 maxpool",
}


def make_features(cfg: str, in_channels: int = 3) -> nn.Sequential:
    """Layers of a configuration string: ``conv<k>-<c>`` (+ReLU), ``LRN``, ``maxpool`` (2x2/2)."""
    layers: list[nn.Module] = []
    for token in cfg.split():
        if token == "maxpool":
            layers.append(MaxPool2d(2, 2))
        elif token == "LRN":
            layers.append(krizhevsky_lrn())
        else:
            kernel, channels = (int(v) for v in token.removeprefix("conv").split("-"))
            layers += [Conv2d(in_channels, channels, kernel, padding="same"), nn.ReLU(inplace=True)]
            in_channels = channels
    return nn.Sequential(*layers)


class VGG(ZooModel):
    """A conv stack (``features``) under the paper's 4096-4096 head (dropout 0.5), giving logits."""

    classifier_name = "classifier.6"

    def __init__(self, features: nn.Sequential, num_classes: int = 1000, in_channels: int = 3,
                 input_size: tuple[int, int] = (224, 224), dropout: float = 0.5) -> None:
        super().__init__()
        self.num_classes, self.num_features = num_classes, 4096
        self.features = features
        c, h, w = feature_shape(self.features, in_channels, input_size)
        self.avgpool = nn.AdaptiveAvgPool2d((h, w))
        self.classifier = nn.Sequential(
            nn.Linear(c * h * w, 4096), nn.ReLU(inplace=True), Dropout(dropout),
            nn.Linear(4096, 4096), nn.ReLU(inplace=True), Dropout(dropout),
            nn.Linear(4096, num_classes),
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_pre_logits(self, x: torch.Tensor) -> torch.Tensor:
        return all_but_last(self.classifier, torch.flatten(self.avgpool(x), 1))


def _vgg(cfg: str, num_classes: int, in_channels: int, input_size: tuple[int, int], **kw) -> VGG:
    """The VGG of configuration ``cfg`` (a key of ``CFGS``)."""
    return VGG(make_features(CFGS[cfg], in_channels), num_classes, in_channels, input_size, **kw)


_SOURCE = "Simonyan & Zisserman 2014 / seed 001"
# The SSD authors' VGG16 features, trained with the paper's own input scaling (0-255 images minus the mean);
# torchvision ships no trained classifier with them.
FEATURES_ONLY = Transforms(mean=(0.48235, 0.45882, 0.40784), std=(1 / 255,) * 3)


@register_model("vgg11", family="vgg", source=_SOURCE, options=VGG, weights=(
    Weights("IMAGENET1K_V1", TV + "vgg11-8a719046.pth", 132_863_336, 69.02, 88.628),
))
def vgg11(*, num_classes: int, in_channels: int, input_size: tuple[int, int], **kw) -> nn.Module:
    """VGG configuration A, 11 weight layers."""
    return _vgg("A", num_classes, in_channels, input_size, **kw)


@register_model("vgg11-lrn", family="vgg", source=_SOURCE, options=VGG)
def vgg11_lrn(*, num_classes: int, in_channels: int, input_size: tuple[int, int], **kw) -> nn.Module:
    """VGG configuration A-LRN: A with local response normalisation after the first conv."""
    return _vgg("A-LRN", num_classes, in_channels, input_size, **kw)


@register_model("vgg13", family="vgg", source=_SOURCE, options=VGG, weights=(
    Weights("IMAGENET1K_V1", TV + "vgg13-19584684.pth", 133_047_848, 69.928, 89.246),
))
def vgg13(*, num_classes: int, in_channels: int, input_size: tuple[int, int], **kw) -> nn.Module:
    """VGG configuration B, 13 weight layers."""
    return _vgg("B", num_classes, in_channels, input_size, **kw)


@register_model("vgg16-c", family="vgg", source=_SOURCE, options=VGG)
def vgg16_c(*, num_classes: int, in_channels: int, input_size: tuple[int, int], **kw) -> nn.Module:
    """VGG configuration C: 16 weight layers, the last conv of stages 3-5 being 1x1."""
    return _vgg("C", num_classes, in_channels, input_size, **kw)


@register_model("vgg16", family="vgg", source=_SOURCE, options=VGG, weights=(
    Weights("IMAGENET1K_V1", TV + "vgg16-397923af.pth", 138_357_544, 71.592, 90.382),
    Weights("IMAGENET1K_FEATURES", TV + "vgg16_features-amdegroot-88682ab5.pth", 138_357_544, None, None,
            num_classes=None, transforms=FEATURES_ONLY, fresh=("classifier",)),
))
def vgg16(*, num_classes: int, in_channels: int, input_size: tuple[int, int], **kw) -> nn.Module:
    """VGG configuration D, the usual VGG16."""
    return _vgg("D", num_classes, in_channels, input_size, **kw)


@register_model("vgg19", family="vgg", source=_SOURCE, options=VGG, weights=(
    Weights("IMAGENET1K_V1", TV + "vgg19-dcbb9e9d.pth", 143_667_240, 72.376, 90.876),
))
def vgg19(*, num_classes: int, in_channels: int, input_size: tuple[int, int], **kw) -> nn.Module:
    """VGG configuration E, the usual VGG19."""
    return _vgg("E", num_classes, in_channels, input_size, **kw)
