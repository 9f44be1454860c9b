"""``ZooModel``: the head API every registered network shares, and a shape probe.

It gives timm-style ``forward_features`` / ``forward_head`` / ``reset_classifier`` so that transfer
learning can replace a head or freeze a backbone without knowing the architecture. The zoo's
networks, the spec networks (so the course's six) and fast-cifar all subclass it.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


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
        new = self.new_classifier(num_classes, like.device, like.dtype) if num_classes > 0 else nn.Identity()
        self.set_submodule(self.classifier_name, new)

    def new_classifier(self, num_classes: int, device: torch.device, dtype: torch.dtype) -> nn.Module:
        """A freshly initialised final layer; a network whose head is built differently overrides it."""
        return nn.Linear(self.num_features, num_classes, device=device, dtype=dtype)


def all_but_last(layers: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """``layers[:-1](x)`` without building a new Sequential: each layer runs as the model's own module, so hooks
    and counters (``explain.summary``'s MACs per layer) see it under its name."""
    for layer in list(layers)[:-1]:
        x = layer(x)
    return x


def feature_shape(features: nn.Module, in_channels: int, input_size: tuple[int, int]) -> tuple[int, ...]:
    """(C, H, W) that ``features`` outputs for one image, computed on the meta device (no arithmetic)."""
    probe = copy.deepcopy(features).to("meta").eval()
    with torch.no_grad():
        return tuple(probe(torch.empty(1, in_channels, *input_size, device="meta")).shape[1:])
