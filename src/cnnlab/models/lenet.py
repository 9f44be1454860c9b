"""LeNet-5 (LeCun et al. 1998), as seed 004's layer table gives it."""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ..layers import AvgPool2d, Conv2d, activation
from .base import ZooModel, feature_shape
from .registry import register_model


class LeNet5(ZooModel):
    """LeNet-5 with the paper's layer names: C1 S2 C3 S4 C5 (a conv) F6, and a linear output layer.

    Reproduces seed 004's table (Géron's): 5x5 valid convs, 2x2/2 average pools, tanh after every
    conv *and* pool (the paper squashes its subsampling outputs too), C5 a 5x5 conv to 1x1x120 —
    61,706 parameters at 10 classes. Kept from the classic reading rather than the paper: full C3
    connections, parameter-free pooling and a linear logit layer instead of RBF units (the paper's
    sparse C3 table and trainable subsampling coefficients give 60,000). Seed 001's Keras code differs
    ('same' convs, Dense 120 instead of C5). C5's kernel equals S4's map size, so it stays fully
    connected to S4 for any input size.
    """

    classifier_name = "classifier.output"

    def __init__(self, num_classes: int = 10, in_channels: int = 1, input_size: tuple[int, int] = (32, 32),
                 act: str = "tanh") -> None:
        super().__init__()
        self.num_classes, self.num_features = num_classes, 84
        body = nn.Sequential(OrderedDict(
            c1=Conv2d(in_channels, 6, 5), c1_act=activation(act), s2=AvgPool2d(2), s2_act=activation(act),
            c3=Conv2d(6, 16, 5), c3_act=activation(act), s4=AvgPool2d(2), s4_act=activation(act),
        ))
        s4 = feature_shape(body, in_channels, input_size)
        body.add_module("c5", Conv2d(16, 120, s4[1:]))
        body.add_module("c5_act", activation(act))
        self.features = body
        self.classifier = nn.Sequential(OrderedDict(
            f6=nn.Linear(120, 84), f6_act=activation(act), output=nn.Linear(84, num_classes),
        ))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_pre_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier.f6_act(self.classifier.f6(torch.flatten(x, 1)))


@register_model("lenet5", family="lenet", input_size=(1, 32, 32), num_classes=10,
                source="LeCun et al. 1998 / seeds 001, 004", options=LeNet5)
def lenet5(*, num_classes: int, in_channels: int, input_size: tuple[int, int], **kw) -> nn.Module:
    """LeNet-5 for 32x32 grey digits, tanh throughout, C5 as a convolution."""
    return LeNet5(num_classes, in_channels, input_size, **kw)
