"""The embedded default dataset: scikit-learn's 8×8 digits, as 1×32×32 uint8, no network needed."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from ..errors import CnnlabError
from .imageset import ImageSet, resize_uint8

SIZE = 32
TEST_FRACTION = 0.2
SPLIT_SEED = 0


@lru_cache(maxsize=1)
def _full() -> ImageSet:
    """All 1,797 digits: 0..16 scaled to 0..255, bilinearly upsampled 8×8 → 32×32."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    pixels = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    images = resize_uint8(torch.from_numpy(pixels).unsqueeze(1), SIZE, SIZE)
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    return ImageSet(images, labels, [str(d) for d in range(10)], "digits")


def load_digits_set(split: str = "train", root: str | Path | None = None, download: bool = True) -> ImageSet:
    """Fixed stratified 80/20 split (seed 0): 1,437 train and 360 test images; root/download unused."""
    parts = dict(zip(("train", "test"), _full().split(TEST_FRACTION, seed=SPLIT_SEED)))
    if split not in parts:
        raise CnnlabError(f"unknown split {split!r} for digits: choose train or test")
    chosen = parts[split]
    return ImageSet(chosen.images, chosen.labels, list(chosen.classes), f"digits-{split}")
