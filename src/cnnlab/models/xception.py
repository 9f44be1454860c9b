"""Xception (Chollet 2017; seed 003): entry, middle and exit flows of separable-conv residual blocks.

The layout is the paper's and Keras ``applications.Xception``'s: valid 3x3 stem convs (299 → 149 → 147),
ReLU *before* each separable conv inside a block, Keras BN defaults, TF ``same`` separable convs and
3x3/2 max pools. Keras counts 22,910,480 parameters at 1000 classes (21,066,380 at 100, the seed's
table), which includes 54,528 BN moving statistics: PyTorch ``parameters()`` give 22,855,952.
The seed's own Keras code has the same count but pads the stem ``same`` and activates after each BN
(sep → BN → ReLU); that changes shapes (150x150 after the stem) and behaviour, not parameters.
"""
from __future__ import annotations

import torch
from torch import nn

from ..layers import BatchNorm2d, Conv2d, GlobalPool2d, MaxPool2d, SeparableConv2d
from .base import ZooModel
from .registry import register_model

# (separable-conv widths, stride, ReLU before the first conv) per residual block, entry → exit flow.
BLOCKS: tuple[tuple[tuple[int, ...], int, bool], ...] = (
    ((128, 128), 2, False),
    ((256, 256), 2, True),
    ((728, 728), 2, True),
    *(((728, 728, 728), 1, True),) * 8,
    ((728, 1024), 2, True),
)


class XceptionBlock(nn.Module):
    """([ReLU] SepConv BN) per width, a 3x3/2 max pool when strided, plus an identity or 1x1/2 shortcut."""

    def __init__(self, in_channels: int, widths: tuple[int, ...], stride: int, relu_first: bool) -> None:
        super().__init__()
        self.shortcut = nn.Identity() if stride == 1 else nn.Sequential(
            Conv2d(in_channels, widths[-1], 1, stride, bias=False), BatchNorm2d(widths[-1]))
        layers: list[nn.Module] = []
        for i, width in enumerate(widths):
            if i > 0 or relu_first:
                layers.append(nn.ReLU())  # not in place: the block's input is also the shortcut
            layers += [SeparableConv2d(in_channels, width, 3, bias=False), BatchNorm2d(width)]
            in_channels = width
        if stride > 1:
            layers.append(MaxPool2d(3, stride, padding="same"))
        self.rep = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rep(x) + self.shortcut(x)


class Xception(ZooModel):
    """Xception with a global-average-pool + linear head; module names follow timm's legacy xception."""

    classifier_name = "fc"

    def __init__(self, num_classes: int = 1000, in_channels: int = 3) -> None:
        super().__init__()
        self.conv1, self.bn1 = Conv2d(in_channels, 32, 3, 2, bias=False), BatchNorm2d(32)
        self.conv2, self.bn2 = Conv2d(32, 64, 3, bias=False), BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        channels = 64
        blocks = []
        for widths, stride, relu_first in BLOCKS:
            blocks.append(XceptionBlock(channels, widths, stride, relu_first))
            channels = widths[-1]
        self.blocks = nn.Sequential(*blocks)
        self.conv3, self.bn3 = SeparableConv2d(1024, 1536, 3, bias=False), BatchNorm2d(1536)
        self.conv4, self.bn4 = SeparableConv2d(1536, 2048, 3, bias=False), BatchNorm2d(2048)
        self.global_pool = GlobalPool2d("avg")
        self.num_classes, self.num_features = num_classes, 2048
        self.fc = nn.Linear(2048, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))))
        x = self.blocks(x)
        return self.relu(self.bn4(self.conv4(self.relu(self.bn3(self.conv3(x))))))

    def forward_pre_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.global_pool(x)


@register_model("xception", family="xception", input_size=(3, 299, 299), source="Chollet 2017 / seed 003",
                options=Xception)
def xception(*, num_classes: int, in_channels: int, input_size: tuple[int, int], **kw) -> nn.Module:
    """Xception at 299x299 (any input ≥ 71 works: the head follows a global pool)."""
    return Xception(num_classes, in_channels, **kw)
