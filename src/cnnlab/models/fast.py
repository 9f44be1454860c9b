"""fast-cifar: a small network built to train fast on CIFAR-10 (the ``fast`` recipe's network).

A frozen 2x2 "whitening" convolution (eigenvectors of the training patches' covariance, set from
data before training), then three groups of conv-pool-norm-GELU-conv-norm-GELU with 64, 256 and 256
filters, a global max pool and a bias-free linear head whose logits are divided by its width. The
batch norms keep their scale at 1 (only the shift trains) and follow recent batches closely.
Inputs are [0, 1] images: the per-channel mean/std normalisation lives in the network (buffers set
from the training data), so a checkpoint predicts on raw images without knowing the dataset.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import ZooModel
from .registry import register_model

WIDTHS = (64, 256, 256)  # filters of the three conv groups
STEM_PATCH = 2  # side of the whitening patches (pixels)
BN_MOMENTUM = 0.4  # PyTorch convention: weight of the newest batch in the running statistics
BN_EPS = 1e-12
WHITEN_EPS = 5e-4  # added to the patch-covariance eigenvalues before dividing by their square roots
WHITEN_IMAGES = 5000  # training images used to estimate the patch covariance


class ShiftOnlyBatchNorm(nn.BatchNorm2d):
    """BatchNorm whose scale stays 1: only the shift (bias) is learned."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.weight.requires_grad_(False)


def conv3x3(c_in: int, c_out: int) -> nn.Conv2d:
    """A bias-free 3x3 'same' convolution whose first ``c_in`` filters start as the identity."""
    conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
    with torch.no_grad():
        nn.init.dirac_(conv.weight[:min(c_in, c_out)])
    return conv


class ConvGroup(nn.Sequential):
    """conv → 2x2 max pool → norm → GELU → conv → norm → GELU (pooling early halves the second conv's cost)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(conv3x3(c_in, c_out), nn.MaxPool2d(2), ShiftOnlyBatchNorm(c_out), nn.GELU(),
                         conv3x3(c_out, c_out), ShiftOnlyBatchNorm(c_out), nn.GELU())


def patch_whitening(images: torch.Tensor, patch: int, eps: float = WHITEN_EPS) -> torch.Tensor:
    """Filters that whiten ``patch``x``patch`` patches of ``images`` (N×C×H×W float), and their negatives."""
    c = images.shape[1]
    patches = images.unfold(2, patch, 1).unfold(3, patch, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, c * patch * patch)
    cov = patches.double().T @ patches.double() / len(patches)
    eigenvalues, eigenvectors = torch.linalg.eigh(cov)
    filters = (eigenvectors.T / (eigenvalues + eps).sqrt()[:, None]).reshape(-1, c, patch, patch)
    return torch.cat([filters, -filters]).float()


def scaled_head(width: int, num_classes: int, **factory) -> nn.Linear:
    """The bias-free linear head with unit-std weights (``forward_head`` divides its logits by ``width``)."""
    head = nn.Linear(width, num_classes, bias=False, **factory)
    with torch.no_grad():
        head.weight.div_(head.weight.std())
    return head


class FastCifarNet(ZooModel):
    """Normalise → whitening stem → GELU → three ConvGroups → global max pool → linear head / width.

    The zoo's head API: the features end before the global max pool (the last two layers of ``body``).
    """

    classifier_name = "head"

    def __init__(self, num_classes: int = 10, in_channels: int = 3, widths: tuple[int, ...] = WIDTHS,
                 patch: int = STEM_PATCH) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(1, in_channels, 1, 1))
        self.register_buffer("std", torch.ones(1, in_channels, 1, 1))
        stem_width = 2 * in_channels * patch * patch
        self.stem = nn.Conv2d(in_channels, stem_width, patch)
        self.stem.weight.requires_grad_(False)
        chans = (stem_width, *widths)
        self.body = nn.Sequential(nn.GELU(), *(ConvGroup(a, b) for a, b in zip(chans, chans[1:])),
                                  nn.AdaptiveMaxPool2d(1), nn.Flatten())
        self.num_features, self.num_classes = widths[-1], num_classes
        self.head = scaled_head(widths[-1], num_classes)

    @torch.no_grad()
    def init_from_data(self, images: torch.Tensor) -> None:
        """Set the input normalisation and the whitening filters from (a sample of) uint8 training images."""
        x = images[:WHITEN_IMAGES].float().div(255).to(self.mean.device)
        self.mean.copy_(x.mean((0, 2, 3), keepdim=True))
        self.std.copy_(x.std((0, 2, 3), keepdim=True))
        self.stem.weight.copy_(patch_whitening((x - self.mean) / self.std, self.stem.kernel_size[0]))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        # The bias is added outside the convolution (its frozen weight then needs no weight-gradient
        # pass) and in the convolution's dtype: under bf16 autocast the wide stem output stays bf16.
        x = F.conv2d((x - self.mean) / self.std, self.stem.weight)
        x = x + self.stem.bias.to(x.dtype)[:, None, None]
        return self.body[:-2](x)

    def forward_pre_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.body[-2:](x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Feature map to logits divided by the width (the scale the recipe trains with); pooled features
        with ``pre_logits=True`` or after ``reset_classifier(0)``."""
        x = self.forward_pre_logits(x)
        return x if pre_logits or self.num_classes == 0 else self.head(x) / self.num_features

    def new_classifier(self, num_classes: int, device: torch.device, dtype: torch.dtype) -> nn.Module:
        return scaled_head(self.num_features, num_classes, device=device, dtype=dtype)


@register_model("fast-cifar", family="fast", input_size=(3, 32, 32), num_classes=10, recipe="fast", options=FastCifarNet,
                source="cnnlab's fast CIFAR-10 recipe (whitened patch stem, Muon); after Page 2018, Jordan 2024")
def fast_cifar(*, num_classes: int, in_channels: int, input_size: tuple[int, int], **kw) -> nn.Module:
    """The fast recipe's network; any input size works (global pooling before the head)."""
    del input_size  # the network is size-agnostic
    return FastCifarNet(num_classes, in_channels, **kw)


__all__ = ["FastCifarNet", "fast_cifar", "patch_whitening", "scaled_head"]
