"""GoogLeNet / Inception v1 (Szegedy et al. 2014, Table 1; seed 004), with optional auxiliary heads.

``variant="paper"`` (default) is the published network: biased convs + ReLU, no batch norm, LRN in the
stem, a 5x5 conv in the third branch; 6,998,552 parameters at 1000 classes without the aux heads.
``variant="torchvision"`` is torchvision's re-implementation (BN after every conv, no LRN, 3x3 where
the paper has 5x5, 6,624,904 parameters) with the same module names and shapes, so its ImageNet weights
load by name. Both pad convs symmetrically (``k // 2``) and pool 3x3/2 with ceil mode, as Caffe and
torchvision do; the aux heads pool adaptively to 4x4 (the paper's 5x5/3 at 224x224), for any input.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
from torch import nn

from ..layers import Conv2d, Dropout, GlobalPool2d, MaxPool2d
from .base import ZooModel
from .registry import register_model
from .weights import TORCHVISION_LAYOUT, TORCHVISION_URL as TV, Transforms, Weights


@dataclass(frozen=True)
class Flavour:
    """What differs between the paper's GoogLeNet and torchvision's."""

    batch_norm: bool
    lrn: bool
    third_branch_kernel: int


FLAVOURS: dict[str, Flavour] = {
    "paper": Flavour(batch_norm=False, lrn=True, third_branch_kernel=5),
    "torchvision": Flavour(batch_norm=True, lrn=False, third_branch_kernel=3),
}

# Table 1: #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj; "maxpool" between the groups.
INCEPTIONS: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("inception3a", (64, 96, 128, 16, 32, 32)),
    ("inception3b", (128, 128, 192, 32, 96, 64)),
    ("maxpool3", ()),
    ("inception4a", (192, 96, 208, 16, 48, 64)),
    ("inception4b", (160, 112, 224, 24, 64, 64)),
    ("inception4c", (128, 128, 256, 24, 64, 64)),
    ("inception4d", (112, 144, 288, 32, 64, 64)),
    ("inception4e", (256, 160, 320, 32, 128, 128)),
    ("maxpool4", ()),
    ("inception5a", (256, 160, 320, 32, 128, 128)),
    ("inception5b", (384, 192, 384, 48, 128, 128)),
)
AUX_AFTER = {"inception4a": "aux1", "inception4d": "aux2"}


class ConvUnit(nn.Module):
    """Conv (+BN, torchvision's eps 1e-3) + ReLU; named ``conv``/``bn`` like torchvision's ``BasicConv2d``."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int = 1,
                 batch_norm: bool = False) -> None:
        super().__init__()
        self.conv = Conv2d(in_channels, out_channels, kernel, stride, padding=kernel // 2, bias=not batch_norm)
        self.bn = nn.BatchNorm2d(out_channels, eps=1e-3) if batch_norm else nn.Identity()
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


def ceil_maxpool(stride: int = 2) -> MaxPool2d:
    """3x3 max pooling as GoogLeNet uses it: stride 2 with ceil mode, or stride 1 keeping the size."""
    return MaxPool2d(3, stride, padding=0 if stride == 2 else 1, ceil_mode=True)


def paper_lrn() -> nn.Module:
    """GoogLeNet's (Caffe) LRN: size 5, α=1e-4 (already per element, as PyTorch counts it), β=0.75."""
    return nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)


class Inception(nn.Module):
    """Four parallel branches (1x1 | 1x1→3x3 | 1x1→5x5 | 3x3 max→1x1) concatenated on channels."""

    def __init__(self, in_channels: int, widths: tuple[int, ...], flavour: Flavour) -> None:
        super().__init__()
        c1, c3r, c3, c5r, c5, pool_proj = widths
        bn, k = flavour.batch_norm, flavour.third_branch_kernel
        self.branch1 = ConvUnit(in_channels, c1, 1, batch_norm=bn)
        self.branch2 = nn.Sequential(ConvUnit(in_channels, c3r, 1, batch_norm=bn), ConvUnit(c3r, c3, 3, batch_norm=bn))
        self.branch3 = nn.Sequential(ConvUnit(in_channels, c5r, 1, batch_norm=bn), ConvUnit(c5r, c5, k, batch_norm=bn))
        self.branch4 = nn.Sequential(ceil_maxpool(1), ConvUnit(in_channels, pool_proj, 1, batch_norm=bn))
        self.out_channels = c1 + c3 + c5 + pool_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class AuxHead(nn.Module):
    """Auxiliary classifier: 4x4 average pool, 1x1 conv 128, FC 1024, dropout 0.7, FC classes."""

    def __init__(self, in_channels: int, num_classes: int, batch_norm: bool) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d((4, 4))
        self.conv = ConvUnit(in_channels, 128, 1, batch_norm=batch_norm)
        self.fc1 = nn.Linear(128 * 4 * 4, 1024)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = Dropout(0.7)
        self.fc2 = nn.Linear(1024, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.conv(self.pool(x)), 1)
        return self.fc2(self.dropout(self.relu(self.fc1(x))))


class GoogLeNetOutputs(NamedTuple):
    """Training-mode output when aux heads are on (torchvision's order): main, aux after 4d, after 4a."""

    logits: torch.Tensor
    aux_logits2: torch.Tensor
    aux_logits1: torch.Tensor


AUX_LOSS_WEIGHT = 0.3  # the paper adds each auxiliary head's loss weighted by 0.3


class GoogLeNet(ZooModel):
    """Inception v1. With ``aux_logits=True`` a training-mode forward returns ``GoogLeNetOutputs`` and
    ``aux_loss_weights`` tells the engine to add 0.3 x each aux loss (``engine.loss``); in eval mode it
    always returns plain logits."""

    classifier_name = "fc"

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, aux_logits: bool = False,
                 variant: Literal["paper", "torchvision"] = "paper", dropout: float = 0.4) -> None:
        super().__init__()
        flavour = FLAVOURS[variant]
        bn, lrn = flavour.batch_norm, (paper_lrn if flavour.lrn else nn.Identity)
        self.conv1 = ConvUnit(in_channels, 64, 7, 2, batch_norm=bn)
        self.maxpool1 = ceil_maxpool()
        self.lrn1 = lrn()
        self.conv2 = ConvUnit(64, 64, 1, batch_norm=bn)
        self.conv3 = ConvUnit(64, 192, 3, batch_norm=bn)
        self.lrn2 = lrn()
        self.maxpool2 = ceil_maxpool()
        self._order = ["conv1", "maxpool1", "lrn1", "conv2", "conv3", "lrn2", "maxpool2"]
        channels = 192
        for name, widths in INCEPTIONS:
            module = Inception(channels, widths, flavour) if widths else ceil_maxpool()
            channels = module.out_channels if widths else channels
            self.add_module(name, module)
            self._order.append(name)
            if aux_logits and name in AUX_AFTER:
                self.add_module(AUX_AFTER[name], AuxHead(channels, num_classes, bn))
        self.aux_logits = aux_logits
        self.aux_loss_weights = (AUX_LOSS_WEIGHT,) * len(AUX_AFTER) if aux_logits else ()
        self.avgpool = GlobalPool2d("avg")
        self.dropout = Dropout(dropout)
        self.num_classes, self.num_features = num_classes, channels
        self.fc = nn.Linear(channels, num_classes)

    def _body(self, x: torch.Tensor, aux_out: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Stem and inception stack; appends aux-head logits to ``aux_out`` when given."""
        for name in self._order:
            x = getattr(self, name)(x)
            if aux_out is not None and name in AUX_AFTER:
                aux_out.append(getattr(self, AUX_AFTER[name])(x))
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._body(x)

    def forward_pre_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.avgpool(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor | GoogLeNetOutputs:
        if not (self.aux_logits and self.training):
            return super().forward(x)
        aux: list[torch.Tensor] = []
        logits = self.forward_head(self._body(x, aux))
        return GoogLeNetOutputs(logits, aux[1], aux[0])

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the main head and, when present, both auxiliary heads' last layers."""
        super().reset_classifier(num_classes)
        for aux_name in AUX_AFTER.values() if self.aux_logits else ():
            aux = getattr(self, aux_name)
            fc1 = aux.fc1
            aux.fc2 = (nn.Linear(fc1.out_features, num_classes, device=fc1.weight.device, dtype=fc1.weight.dtype)
                       if num_classes > 0 else nn.Identity())


# Ported from Caffe, these weights read (x - 0.5) / 0.5 of a [0, 1] image. torchvision's GoogLeNet takes
# ImageNet-normalised input and rescales it inside (transform_input); cnnlab's has no such layer, so its record
# states the scaling itself. The file also holds the auxiliary heads, used with aux_logits=True.
@register_model("googlenet", family="googlenet", source="Szegedy et al. 2014 / seed 004", options=GoogLeNet,
                weights=(
    Weights("IMAGENET1K_V1", TV + "googlenet-1378be20.pth", 6_624_904, 69.778, 89.53,
            transforms=Transforms(mean=(0.5,) * 3, std=(0.5,) * 3), model_kwargs=TORCHVISION_LAYOUT),
))
def googlenet(*, num_classes: int, in_channels: int, input_size: tuple[int, int], **kw) -> nn.Module:
    """GoogLeNet (Inception v1); kwargs ``aux_logits=True``, ``variant="torchvision"``."""
    return GoogLeNet(num_classes, in_channels, **kw)
