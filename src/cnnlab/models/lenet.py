"""LeNet-5 (LeCun et al. 1998) and ``ZooModel``, the head API every paper network of the zoo shares.

``ZooModel`` lives here because LeNet is the zoo's first family and every other family file imports
this one; it gives timm-style ``forward_features`` / ``forward_head`` / ``reset_classifier`` so that
transfer learning can replace a head or freeze a backbone without knowing the architecture.
"""
from __future__ import annotations

import copy
from collections import OrderedDict

import torch
from torch import nn

from ..layers import AvgPool2d, Conv2d, activation
from .registry import register_model


class ZooModel(nn.Module):
    """Base of the zoo's networks: ``forward = forward_head(forward_features(x))`` with a swappable head.

    Subclasses set ``classifier_name`` (dotted path of the final ``nn.Linear``), ``num_features``
    (its input width) and ``num_classes``, and implement ``forward_features`` and ``forward_pre_logits``.
    """

    classifier_name: str = "fc"
    num_features: int
    num_classes: int

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone: image batch to the last feature map."""
        raise NotImplementedError

    def forward_pre_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Everything between the feature map and the final linear layer (pooling, hidden FCs)."""
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Feature map to logits, or to the classifier's input with ``pre_logits=True``."""
        x = self.forward_pre_logits(x)
        return x if pre_logits else self.get_classifier()(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        """The final linear layer (``nn.Identity`` after ``reset_classifier(0)``)."""
        return self.get_submodule(self.classifier_name)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the final layer by a fresh ``num_classes``-way linear one (identity for 0)."""
        self.num_classes = num_classes
        like = next(self.parameters())  # the new head lives where the model does
        new = (nn.Linear(self.num_features, num_classes, device=like.device, dtype=like.dtype)
               if num_classes > 0 else nn.Identity())
        self.set_submodule(self.classifier_name, new)


def feature_shape(features: nn.Module, in_channels: int, input_size: tuple[int, int]) -> tuple[int, ...]:
    """(C, H, W) that ``features`` outputs for one image, computed on the meta device (no arithmetic)."""
    probe = copy.deepcopy(features).to("meta").eval()
    with torch.no_grad():
        return tuple(probe(torch.empty(1, in_channels, *input_size, device="meta")).shape[1:])


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
                source="LeCun et al. 1998 / seeds 001, 004")
def lenet5(*, num_classes: int, in_channels: int, input_size: tuple[int, int], **kw) -> nn.Module:
    """LeNet-5 for 32x32 grey digits, tanh throughout, C5 as a convolution."""
    return LeNet5(num_classes, in_channels, input_size, **kw)
