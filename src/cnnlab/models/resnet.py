"""ResNet-18/34/50/101/152 (He et al. 2015, Table 1; seeds 001/003): blocks and stage lists as data.

Module names and shapes are torchvision's (``conv1 bn1 relu maxpool layer1..4 avgpool fc``; blocks
``conv1 bn1 conv2 bn2 [conv3 bn3] downsample.{0,1}``), so its ImageNet weights load by name.
Like torchvision, bottlenecks stride on the 3x3 conv by default ("ResNet v1.5", ≈4.1 G multiply-adds
for ResNet-50); ``stride_in_1x1=True`` strides on the first 1x1 as the paper does (3.8 G). Projection
shortcuts (the paper's option B) are used wherever the shape changes. ``BasicBlock``, ``Bottleneck``
and ``make_stage`` also take ``bias`` and ``keras_bn`` so the seed 003 Keras hybrid can reuse them.
"""
from __future__ import annotations

import torch
from torch import nn

from ..layers import BatchNorm2d, Conv2d, GlobalPool2d, MaxPool2d
from .base import ZooModel
from .registry import register_model
from .weights import TORCHVISION_URL as TV, Transforms, Weights


def conv_bn(in_channels: int, out_channels: int, kernel: int, stride: int = 1, bias: bool = False,
            keras_bn: bool = False) -> tuple[Conv2d, nn.BatchNorm2d]:
    """A conv with torchvision's symmetric ``kernel // 2`` padding and the BN that follows it."""
    conv = Conv2d(in_channels, out_channels, kernel, stride, padding=kernel // 2, bias=bias)
    return conv, BatchNorm2d(out_channels, keras=keras_bn)


def projection(in_channels: int, out_channels: int, stride: int, bias: bool, keras_bn: bool) -> nn.Module | None:
    """The 1x1 projection shortcut when a block changes shape, else ``None`` (identity)."""
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(*conv_bn(in_channels, out_channels, 1, stride, bias, keras_bn))


class BasicBlock(nn.Module):
    """Two 3x3 convs plus the shortcut (ResNet-18/34)."""

    expansion = 1

    def __init__(self, in_channels: int, width: int, stride: int = 1, bias: bool = False,
                 keras_bn: bool = False) -> None:
        super().__init__()
        self.conv1, self.bn1 = conv_bn(in_channels, width, 3, stride, bias, keras_bn)
        self.conv2, self.bn2 = conv_bn(width, width, 3, 1, bias, keras_bn)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = projection(in_channels, width, stride, bias, keras_bn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4) plus the shortcut (ResNet-50/101/152)."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int = 1, bias: bool = False,
                 keras_bn: bool = False, stride_in_1x1: bool = False) -> None:
        super().__init__()
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        out_channels = width * self.expansion
        self.conv1, self.bn1 = conv_bn(in_channels, width, 1, s1, bias, keras_bn)
        self.conv2, self.bn2 = conv_bn(width, width, 3, s3, bias, keras_bn)
        self.conv3, self.bn3 = conv_bn(width, out_channels, 1, 1, bias, keras_bn)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = projection(in_channels, out_channels, stride, bias, keras_bn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


Block = type[BasicBlock] | type[Bottleneck]


def make_stage(block: Block, in_channels: int, width: int, blocks: int, stride: int, **block_kw) -> nn.Sequential:
    """``blocks`` residual blocks of one stage; only the first strides (and projects)."""
    out_channels = width * block.expansion
    return nn.Sequential(
        block(in_channels, width, stride, **block_kw),
        *(block(out_channels, width, 1, **block_kw) for _ in range(blocks - 1)),
    )


STAGE_WIDTHS = (64, 128, 256, 512)
STAGE_STRIDES = (1, 2, 2, 2)

ARCHS: dict[str, tuple[Block, tuple[int, int, int, int]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
    "resnet101": (Bottleneck, (3, 4, 23, 3)),
    "resnet152": (Bottleneck, (3, 8, 36, 3)),
}


class ResNet(ZooModel):
    """The ImageNet ResNet: 7x7/2 stem, 3x3/2 max pool, four stages, global average pool, FC."""

    classifier_name = "fc"

    def __init__(self, block: Block, layers: tuple[int, ...], num_classes: int = 1000, in_channels: int = 3,
                 stride_in_1x1: bool = False) -> None:
        super().__init__()
        block_kw = {"stride_in_1x1": stride_in_1x1} if block is Bottleneck else {}
        self.conv1 = Conv2d(in_channels, 64, 7, 2, padding=3, bias=False)
        self.bn1 = BatchNorm2d(64, keras=False)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = MaxPool2d(3, 2, padding=1)
        channels = 64
        for i, (width, blocks, stride) in enumerate(zip(STAGE_WIDTHS, layers, STAGE_STRIDES), start=1):
            self.add_module(f"layer{i}", make_stage(block, channels, width, blocks, stride, **block_kw))
            channels = width * block.expansion
        self.avgpool = GlobalPool2d("avg")
        self.num_classes, self.num_features = num_classes, channels
        self.fc = nn.Linear(channels, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward_pre_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.avgpool(x)


def _resnet(name: str, num_classes: int, in_channels: int, **kw) -> ResNet:
    """The ResNet named in ``ARCHS`` (``input_size`` is free: the head follows a global pool)."""
    block, layers = ARCHS[name]
    return ResNet(block, layers, num_classes, in_channels, **kw)


_SOURCE = "He et al. 2015 / seeds 001, 003"
V2 = Transforms(resize=232)  # torchvision's 2021 recipe evaluates at 232 → 224


@register_model("resnet18", family="resnet", source=_SOURCE, options=ResNet, weights=(
    Weights("IMAGENET1K_V1", TV + "resnet18-f37072fd.pth", 11_689_512, 69.758, 89.078),
))
def resnet18(*, num_classes: int, in_channels: int, input_size: tuple[int, int], **kw) -> nn.Module:
    """ResNet-18: basic blocks 2-2-2-2, 11.7 M params, 1.8 G multiply-adds."""
    return _resnet("resnet18", num_classes, in_channels, **kw)


@register_model("resnet34", family="resnet", source=_SOURCE, options=ResNet, weights=(
    Weights("IMAGENET1K_V1", TV + "resnet34-b627a593.pth", 21_797_672, 73.314, 91.42),
))
def resnet34(*, num_classes: int, in_channels: int, input_size: tuple[int, int], **kw) -> nn.Module:
    """ResNet-34: basic blocks 3-4-6-3, 21.8 M params, 3.6 G multiply-adds."""
    return _resnet("resnet34", num_classes, in_channels, **kw)


@register_model("resnet50", family="resnet", source=_SOURCE, options=ResNet, weights=(
    Weights("IMAGENET1K_V1", TV + "resnet50-0676ba61.pth", 25_557_032, 76.13, 92.862),
    Weights("IMAGENET1K_V2", TV + "resnet50-11ad3fa6.pth", 25_557_032, 80.858, 95.434, transforms=V2),
))
def resnet50(*, num_classes: int, in_channels: int, input_size: tuple[int, int], **kw) -> nn.Module:
    """ResNet-50: bottlenecks 3-4-6-3, 25.6 M params, 4.1 G multiply-adds (3.8 with stride_in_1x1)."""
    return _resnet("resnet50", num_classes, in_channels, **kw)


@register_model("resnet101", family="resnet", source=_SOURCE, options=ResNet, weights=(
    Weights("IMAGENET1K_V1", TV + "resnet101-63fe2227.pth", 44_549_160, 77.374, 93.546),
    Weights("IMAGENET1K_V2", TV + "resnet101-cd907fc2.pth", 44_549_160, 81.886, 95.78, transforms=V2),
))
def resnet101(*, num_classes: int, in_channels: int, input_size: tuple[int, int], **kw) -> nn.Module:
    """ResNet-101: bottlenecks 3-4-23-3, 44.5 M params, 7.8 G multiply-adds (7.6 with stride_in_1x1)."""
    return _resnet("resnet101", num_classes, in_channels, **kw)


@register_model("resnet152", family="resnet", source=_SOURCE, options=ResNet, weights=(
    Weights("IMAGENET1K_V1", TV + "resnet152-394f9c45.pth", 60_192_808, 78.312, 94.046),
    Weights("IMAGENET1K_V2", TV + "resnet152-f82ba261.pth", 60_192_808, 82.284, 96.002, transforms=V2),
))
def resnet152(*, num_classes: int, in_channels: int, input_size: tuple[int, int], **kw) -> nn.Module:
    """ResNet-152: bottlenecks 3-8-36-3, 60.2 M params, 11.6 G multiply-adds (11.3 with stride_in_1x1)."""
    return _resnet("resnet152", num_classes, in_channels, **kw)
