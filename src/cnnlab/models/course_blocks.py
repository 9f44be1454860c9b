"""The course's composite blocks: ConvBNRelu, InceptionBlk and ResnetBlock (CBAPD ``Inception`` / ``Res``).

Module names are the course's own (``c1 b1 a1 c2 b2 down_c1 down_b1 a2``, ``c2_1`` ...): checkpoints
and ``explain.keras_import`` find the weights by these names, so they must not change.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from .. import layers


def conv_bn_relu(in_channels: int, out_channels: int, kernel: int, stride: int = 1,
                 bias: bool = True) -> nn.Sequential:
    """The course's ConvBNRelu: a ``same`` conv, Keras BatchNorm and ReLU."""
    return nn.Sequential(OrderedDict(
        conv=layers.Conv2d(in_channels, out_channels, kernel, stride, "same", bias=bias),
        bn=layers.BatchNorm2d(out_channels),
        relu=nn.ReLU(),
    ))


class InceptionBlock(nn.Module):
    """The course's InceptionBlk: 1x1 | 1x1→3x3 | 1x1→5x5 | 3x3 max-pool→1x1, concatenated."""

    def __init__(self, in_channels: int, ch: int, stride: int = 1) -> None:
        super().__init__()
        self.c1 = conv_bn_relu(in_channels, ch, 1, stride)
        self.c2_1 = conv_bn_relu(in_channels, ch, 1, stride)
        self.c2_2 = conv_bn_relu(ch, ch, 3)
        self.c3_1 = conv_bn_relu(in_channels, ch, 1, stride)
        self.c3_2 = conv_bn_relu(ch, ch, 5)
        self.p4_1 = layers.MaxPool2d(3, 1, "same")
        self.c4_2 = conv_bn_relu(in_channels, ch, 1, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = [self.c1(x), self.c2_2(self.c2_1(x)), self.c3_2(self.c3_1(x)), self.c4_2(self.p4_1(x))]
        return torch.cat(branches, dim=1)


class ResBlock(nn.Module):
    """The course's ResnetBlock: relu(BN(conv(relu(BN(conv(x))))) + shortcut), bias-free convs."""

    def __init__(self, in_channels: int, filters: int, stride: int = 1) -> None:
        super().__init__()
        self.c1 = layers.Conv2d(in_channels, filters, 3, stride, "same", bias=False)
        self.b1 = layers.BatchNorm2d(filters)
        self.a1 = nn.ReLU()
        self.c2 = layers.Conv2d(filters, filters, 3, 1, "same", bias=False)
        self.b2 = layers.BatchNorm2d(filters)
        self.residual_path = stride != 1 or in_channels != filters
        if self.residual_path:
            self.down_c1 = layers.Conv2d(in_channels, filters, 1, stride, "same", bias=False)
            self.down_b1 = layers.BatchNorm2d(filters)
        self.a2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.b2(self.c2(self.a1(self.b1(self.c1(x)))))
        residual = self.down_b1(self.down_c1(x)) if self.residual_path else x
        return self.a2(y + residual)


__all__ = ["InceptionBlock", "ResBlock", "conv_bn_relu"]
