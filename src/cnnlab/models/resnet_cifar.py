"""The CIFAR-10 ResNets and plain nets of He et al. 2016 §4.2 (Table 6, Fig. 6): the degradation experiment.

A 6n+2-layer network: a 3x3 conv with 16 filters, three stages of n blocks (two 3x3 convs each) with
16, 32 and 64 filters on 32x32, 16x16 and 8x8 maps, global average pooling and a 10-way FC. The
ResNet adds an identity shortcut over every block; where a stage halves the map and doubles the
filters the shortcut is the paper's option A: the input subsampled by 2 with the new channels zero,
so the ResNets have exactly as many parameters as their plain counterparts. Layer names follow
``models/resnet.py`` (``conv1 bn1 relu layer1..3 avgpool fc``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import GlobalPool2d
from .base import ZooModel
from .registry import register_model
from .resnet import conv_bn

STAGE_WIDTHS = (16, 32, 64)
STAGE_STRIDES = (1, 2, 2)
BLOCKS_PER_STAGE = {20: 3, 32: 5, 44: 7, 56: 9, 110: 18}  # depth 6n + 2 → n
SOURCE = "He et al. 2016 §4.2, Table 6 / seed 002"


class ZeroPadShortcut(nn.Module):
    """Option A: the identity, subsampled by ``stride`` and zero-padded to ``out_channels`` (no parameters)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.extra, self.stride = out_channels - in_channels, stride

    def extra_repr(self) -> str:
        return f"stride={self.stride}, zero_channels={self.extra}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, ::self.stride, ::self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra)) if self.extra else x


class CifarBlock(nn.Module):
    """conv-BN-ReLU-conv-BN, plus the shortcut when there is one, then ReLU."""

    def __init__(self, in_channels: int, width: int, stride: int, shortcut: bool) -> None:
        super().__init__()
        self.conv1, self.bn1 = conv_bn(in_channels, width, 3, stride)
        self.conv2, self.bn2 = conv_bn(width, width, 3)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = ZeroPadShortcut(in_channels, width, stride) if shortcut else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(out if self.shortcut is None else out + self.shortcut(x))


class CifarResNet(ZooModel):
    """ResNet-(6n+2) of the CIFAR experiments, or its plain counterpart with ``shortcut=False``."""

    classifier_name = "fc"

    def __init__(self, blocks: int, shortcut: bool = True, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.conv1, self.bn1 = conv_bn(in_channels, STAGE_WIDTHS[0], 3)
        self.relu = nn.ReLU(inplace=True)
        channels = STAGE_WIDTHS[0]
        for i, (width, stride) in enumerate(zip(STAGE_WIDTHS, STAGE_STRIDES), start=1):
            stage = [CifarBlock(channels if b == 0 else width, width, stride if b == 0 else 1, shortcut)
                     for b in range(blocks)]
            self.add_module(f"layer{i}", nn.Sequential(*stage))
            channels = width
        self.avgpool = GlobalPool2d("avg")
        self.num_classes, self.num_features = num_classes, channels
        self.fc = nn.Linear(channels, num_classes)
        for m in self.modules():  # He et al. 2015's initialisation, as the paper says
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        return self.layer3(self.layer2(self.layer1(x)))

    def forward_pre_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.avgpool(x)


def _register(depth: int, shortcut: bool) -> None:
    """Register ``resnet<depth>-cifar`` (shortcut) or ``plain<depth>-cifar`` (none)."""
    n = BLOCKS_PER_STAGE[depth]
    name = f"{'resnet' if shortcut else 'plain'}{depth}-cifar"

    def create(*, num_classes: int, in_channels: int, input_size: tuple[int, int]) -> nn.Module:
        del input_size  # any size works: the head follows a global pool
        return CifarResNet(n, shortcut, num_classes, in_channels)

    create.__name__ = create.__qualname__ = name.replace("-", "_")
    create.__doc__ = (f"{'ResNet' if shortcut else 'Plain net'}-{depth}: 3 stages of {n} blocks "
                      f"({'option A shortcuts' if shortcut else 'no shortcuts'}), 16/32/64 filters.")
    register_model(name, family="resnet-cifar", input_size=(3, 32, 32), num_classes=10, source=SOURCE,
                   recipe="he2016-cifar")(create)


for _depth in BLOCKS_PER_STAGE:
    for _shortcut in (False, True):
        _register(_depth, _shortcut)

__all__ = ["BLOCKS_PER_STAGE", "CifarBlock", "CifarResNet", "ZeroPadShortcut"]
