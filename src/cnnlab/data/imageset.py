"""ImageSet: a whole dataset as one uint8 tensor plus labels and class names."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import CnnlabError

_RESIZE_CHUNK = 1024


@dataclass
class ImageSet:
    """uint8 N×C×H×W images (CPU, contiguous), int64 labels, class names and a display name."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    name: str

    def __post_init__(self) -> None:
        """Check the contract once so every consumer can rely on it."""
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise CnnlabError(f"{self.name}: images must be uint8 N×C×H×W, got {self.images.dtype} "
                              f"{tuple(self.images.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.shape != (self.images.shape[0],):
            raise CnnlabError(f"{self.name}: labels must be int64 of length {self.images.shape[0]}, got "
                              f"{self.labels.dtype} {tuple(self.labels.shape)}")
        if len(self.labels) and not 0 <= int(self.labels.min()) <= int(self.labels.max()) < len(self.classes):
            raise CnnlabError(f"{self.name}: labels must lie in 0..{len(self.classes) - 1}")
        self.images = self.images.cpu().contiguous()
        self.labels = self.labels.cpu().contiguous()

    unit = "images"

    def __len__(self) -> int:
        """Number of images."""
        return int(self.images.shape[0])

    @property
    def inputs(self) -> torch.Tensor:
        """What the network takes (the uint8 images), named as ``TextSet.inputs`` names its token ids."""
        return self.images

    @property
    def num_classes(self) -> int:
        """Number of classes (including classes with no image in this set)."""
        return len(self.classes)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Per-image shape (C, H, W)."""
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    def subset(self, selection: int | Sequence[int] | torch.Tensor, name: str | None = None) -> ImageSet:
        """The first `selection` images (an int) or the images at the given indices."""
        index = torch.arange(min(selection, len(self))) if isinstance(selection, int) else \
            torch.as_tensor(selection, dtype=torch.int64)
        return ImageSet(self.images[index], self.labels[index], list(self.classes), name or self.name)

    def split(self, fraction: float, seed: int = 0, stratify: bool = True) -> tuple[ImageSet, ImageSet]:
        """Deterministic (rest, fraction) split; stratified keeps class proportions in both parts."""
        second = split_indices(self.labels.numpy(), fraction, seed, stratify)
        mask = np.ones(len(self), dtype=bool)
        mask[second] = False
        first = np.flatnonzero(mask)
        return self.subset(torch.from_numpy(first)), self.subset(torch.from_numpy(second))

    def to_rgb(self) -> ImageSet:
        """Repeat a single channel three times (identity for RGB sets)."""
        channels = self.shape[0]
        if channels == 3:
            return self
        if channels != 1:
            raise CnnlabError(f"{self.name}: cannot convert {channels}-channel images to RGB")
        return ImageSet(self.images.repeat(1, 3, 1, 1), self.labels, list(self.classes), self.name)

    def resize(self, height: int, width: int) -> ImageSet:
        """Resize every image (bilinear, antialiased), batched on uint8 → float → uint8."""
        if (height, width) == self.shape[1:]:
            return self
        return ImageSet(resize_uint8(self.images, height, width), self.labels, list(self.classes), self.name)


def resize_uint8(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bilinear antialiased resize of uint8 N×C×H×W images, in chunks to bound memory."""
    if height < 1 or width < 1:
        raise CnnlabError(f"resize needs a positive size, got {height}×{width}")
    out = torch.empty((images.shape[0], images.shape[1], height, width), dtype=torch.uint8)
    for start in range(0, images.shape[0], _RESIZE_CHUNK):
        chunk = images[start:start + _RESIZE_CHUNK].float()
        scaled = F.interpolate(chunk, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
        out[start:start + _RESIZE_CHUNK] = scaled.round_().clamp_(0, 255).to(torch.uint8)
    return out


def split_indices(labels: np.ndarray, fraction: float, seed: int, stratify: bool) -> np.ndarray:
    """Sorted indices of the `fraction` part: ceil(fraction·N) items, chosen by a seeded RNG."""
    n = len(labels)
    count = math.ceil(round(fraction * n, 6))
    if not 0 < fraction < 1 or not 0 < count < n:
        raise CnnlabError(f"cannot split {n} images with fraction {fraction}: both parts must be non-empty")
    rng = np.random.default_rng(seed)
    if not stratify:
        return np.sort(rng.permutation(n)[:count])
    classes, counts = np.unique(labels, return_counts=True)
    per_class = _allocate(counts, count)
    picked = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, per_class)]
    return np.sort(np.concatenate(picked))


def _allocate(counts: np.ndarray, total: int) -> np.ndarray:
    """Split `total` across groups proportionally to `counts` (largest remainder, exact sum)."""
    exact = counts * total / counts.sum()
    base = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - base), kind="stable")
    base[order[:total - int(base.sum())]] += 1
    return base
