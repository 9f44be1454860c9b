"""Networks the course builds from the classics rather than a paper: seed 003's two hybrids and
seed 004's small tflearn CIFAR net. All three are Keras/TFLearn code, so they use Keras BN defaults and
Glorot initialisation (``layers.keras_init_``); counts are Keras counts (BN moving statistics included).
"""
from __future__ import annotations

import torch
from torch import nn

from ..layers import BatchNorm2d, Conv2d, Dropout, GlobalPool2d, MaxPool2d, keras_init_
from .base import ZooModel, all_but_last, feature_shape
from .resnet import Bottleneck, make_stage
from .registry import register_model
from .vgg import VGG

# Seed 003 "AlexNet + VGG": widths of the 3x3 convs per stage; each stage ends max 2x2/2 → BN.
ALEXNET_VGG_STAGES: tuple[tuple[int, ...], ...] = ((64,), (128,), (256, 256), (512, 512), (512, 512))

# Seed 003 "AlexNet + VGG + ResNet": ResNet-50's bottleneck stages (width, blocks, stride).
HYBRID_RESNET_STAGES: tuple[tuple[int, int, int], ...] = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))


def alexnet_vgg_features(in_channels: int) -> nn.Sequential:
    """VGG-style 3x3 stages behind an AlexNet-style strided first conv (3x3/2 valid), BN after each pool."""
    layers: list[nn.Module] = []
    for widths in ALEXNET_VGG_STAGES:
        for width in widths:
            stride, padding = (1, "same") if layers else (2, "valid")
            layers += [Conv2d(in_channels, width, 3, stride, padding), nn.ReLU(inplace=True)]
            in_channels = width
        layers += [MaxPool2d(2, 2), BatchNorm2d(in_channels)]
    return nn.Sequential(*layers)


class HybridResNet(ZooModel):
    """Seed 003 "AlexNet + VGG + ResNet": three 3x3 convs (VGG) as stem, 3x3/2 max pool (AlexNet),
    then ResNet-50's bottleneck stages as printed: biased convs, stride on the first 1x1."""

    classifier_name = "fc"

    def __init__(self, num_classes: int = 100, in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(
            nn.ZeroPad2d(1), Conv2d(in_channels, 64, 3), Conv2d(64, 64, 3), Conv2d(64, 64, 3),
            BatchNorm2d(64), nn.ReLU(inplace=True), nn.ZeroPad2d(1),
        )
        self.maxpool = MaxPool2d(3, 2)
        channels = 64
        for i, (width, blocks, stride) in enumerate(HYBRID_RESNET_STAGES, start=1):
            stage = make_stage(Bottleneck, channels, width, blocks, stride, bias=True, keras_bn=True,
                               stride_in_1x1=True)
            self.add_module(f"layer{i}", stage)
            channels = width * Bottleneck.expansion
        self.avgpool = GlobalPool2d("avg")
        self.num_classes, self.num_features = num_classes, channels
        self.fc = nn.Linear(channels, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.conv1(x))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward_pre_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.avgpool(x)


class TFLearnCifar(ZooModel):
    """Seed 004's tflearn net: conv32 → max2 → conv64 → conv64 → max2 → FC512 → dropout → FC classes
    (tflearn's defaults: ``same`` 3x3 convs with bias, 2x2/2 ``same`` pools; its dropout 0.5 is keep-prob)."""

    classifier_name = "classifier.3"

    def __init__(self, num_classes: int = 10, in_channels: int = 3, input_size: tuple[int, int] = (32, 32)) -> None:
        super().__init__()
        self.features = nn.Sequential(
            Conv2d(in_channels, 32, 3, padding="same"), nn.ReLU(inplace=True), MaxPool2d(2, padding="same"),
            Conv2d(32, 64, 3, padding="same"), nn.ReLU(inplace=True),
            Conv2d(64, 64, 3, padding="same"), nn.ReLU(inplace=True), MaxPool2d(2, padding="same"),
        )
        c, h, w = feature_shape(self.features, in_channels, input_size)
        self.num_classes, self.num_features = num_classes, 512
        self.classifier = nn.Sequential(
            nn.Linear(c * h * w, 512), nn.ReLU(inplace=True), Dropout(0.5), nn.Linear(512, num_classes),
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_pre_logits(self, x: torch.Tensor) -> torch.Tensor:
        return all_but_last(self.classifier, torch.flatten(x, 1))


@register_model("alexnet-vgg", family="hybrid", num_classes=100, source="seed 003 (AlexNet + VGG)", options=VGG)
def alexnet_vgg(*, num_classes: int, in_channels: int, input_size: tuple[int, int], **kw) -> nn.Module:
    """Seed 003's AlexNet+VGG as its code prints it: 45,295,844 Keras params at 100 classes.

    The seed's results table says 45,295,884; the printed layers give ...844 exactly (every layer
    checked) and no layer of that code accounts for a difference of 40, so the table's figure is read as a
    transcription slip (844 → 884).
    """
    return keras_init_(VGG(alexnet_vgg_features(in_channels), num_classes, in_channels, input_size, **kw))


@register_model("alexnet-vgg-resnet", family="hybrid", num_classes=100, source="seed 003 (AlexNet + VGG + ResNet)",
                options=HybridResNet)
def alexnet_vgg_resnet(*, num_classes: int, in_channels: int, input_size: tuple[int, int], **kw) -> nn.Module:
    """Seed 003's AlexNet+VGG+ResNet: 23,858,788 Keras params at 100 classes."""
    return keras_init_(HybridResNet(num_classes, in_channels, **kw))


@register_model("tflearn-cifar", family="tflearn", input_size=(3, 32, 32), num_classes=10,
                source="seed 004 (tflearn CIFAR-10 example)", options=TFLearnCifar)
def tflearn_cifar(*, num_classes: int, in_channels: int, input_size: tuple[int, int], **kw) -> nn.Module:
    """Seed 004's small tflearn CIFAR-10 network, 2,159,114 params at 10 classes."""
    return keras_init_(TFLearnCifar(num_classes, in_channels, input_size, **kw))
