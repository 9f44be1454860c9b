"""An image-folder dataset: root/CLASS/*.{jpg,png,...}, decoded with Pillow and resized."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import CnnlabError
from .files import NotARegularFile, open_regular
from .imageset import ImageSet

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)
# Modes wider than 8 bits and the value that maps to 255 (docs/data.md): 16-bit greyscale, 32-bit integers
# (which Pillow also uses for 16-bit PNG, PGM and TIFF files) on the same 16-bit scale, floats on 0..1.
FULL_SCALE = {"I;16": 65535, "I;16L": 65535, "I;16B": 65535, "I;16N": 65535, "I": 65535, "F": 1.0}
_VIA = {"La": "LA", "LAB": "RGB"}  # modes Pillow cannot convert straight to L or RGB


@dataclass(frozen=True)
class Skipped:
    """A file that was not used, and why."""

    path: str
    reason: str


def display_name(name: str) -> str:
    """A printable form of a file name that may hold non-UTF-8 bytes (surrogate-escaped)."""
    return os.fsencode(name).decode("utf-8", "replace")


def scan_folder(root: str | Path) -> tuple[list[str], list[tuple[str, int]], list[Skipped]]:
    """(class names, (image path, label) pairs, skipped entries) without decoding anything."""
    root = Path(root)
    if not root.is_dir():
        raise CnnlabError(f"image folder {root} does not exist or is not a directory")
    entries = [e for e in os.scandir(root) if not e.name.startswith(".")]
    class_dirs = sorted(e.name for e in entries if e.is_dir())
    classes: list[str] = []
    files: list[tuple[str, int]] = []
    skipped = [Skipped(display_name(e.path), "not inside a class folder") for e in entries if e.is_file()]
    for name in class_dirs:
        images, others = _class_files(root / name)
        skipped += others
        if not images:
            skipped.append(Skipped(display_name(str(root / name)), "class folder has no images; class dropped"))
            continue
        files += [(path, len(classes)) for path in images]
        classes.append(display_name(name))
    return classes, files, skipped


def _class_files(folder: Path) -> tuple[list[str], list[Skipped]]:
    """Image files under one class folder (recursively, sorted) and the non-image files skipped."""
    images, others = [], []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(f for f in filenames if not f.startswith(".")):
            path = os.path.join(dirpath, name)
            if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                images.append(path)
            else:
                others.append(Skipped(display_name(path), "not an image file extension"))
    return images, others


def read_image(path: str, size: tuple[int, int], mode: str) -> np.ndarray:
    """Decode one image with Pillow to `mode` (RGB or L), resize to (H, W); C×H×W uint8.

    Only a regular file is opened (NotARegularFile otherwise): a FIFO would block forever, a device never end.
    """
    with open_regular(path) as fh, Image.open(fh) as img:
        img.load()
        converted = to_8bit(img, mode)
    resized = converted.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    array = np.asarray(resized, dtype=np.uint8)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def skip_reason(err: Exception) -> str:
    """Why an image file was not used, for the list of skipped files."""
    if isinstance(err, NotARegularFile):
        return f"{err.kind}, not a regular file: not opened"
    return f"unreadable image ({type(err).__name__}: {err})"


def to_8bit(img: Image.Image, mode: str) -> Image.Image:
    """img as 8-bit `mode` (L or RGB) by one rule for every Pillow mode (the table in docs/data.md).

    Wide modes are scaled by FULL_SCALE (Pillow's own convert would clip them at 255); every other mode is
    converted as Pillow does, which keeps the colour of transparent pixels and drops alpha.
    """
    if img.mode in FULL_SCALE:
        values = np.nan_to_num(np.asarray(img, dtype=np.float64)) * (255.0 / FULL_SCALE[img.mode])
        img = Image.fromarray(np.rint(np.clip(values, 0, 255)).astype(np.uint8))
    elif img.mode in _VIA:
        img = img.convert(_VIA[img.mode])
    return img.convert(mode)


def read_folder(root: str | Path, size: tuple[int, int] = (32, 32),
                mode: str = "RGB") -> tuple[ImageSet, list[Skipped]]:
    """Every readable image under root as one ImageSet, plus the list of skipped files."""
    if mode not in ("RGB", "L"):
        raise CnnlabError(f"image mode must be RGB or L, got {mode!r}")
    classes, files, skipped = scan_folder(root)
    arrays, labels = [], []
    for path, label in files:
        try:
            arrays.append(read_image(path, size, mode))
            labels.append(label)
        except DECODE_ERRORS as err:
            skipped.append(Skipped(display_name(path), skip_reason(err)))
    if not arrays:
        raise CnnlabError(f"no readable images in {display_name(str(root))}: "
                          f"expected root/CLASS/*.{'|'.join(sorted(e[1:] for e in IMAGE_EXTENSIONS))}")
    images = torch.from_numpy(np.stack(arrays))
    return ImageSet(images, torch.tensor(labels, dtype=torch.int64), classes, f"folder:{display_name(str(root))}"), skipped


def load_folder(root: str | Path, split: str = "train", size: int | tuple[int, int] = 32, mode: str = "RGB",
                val_fraction: float | None = None, seed: int = 0) -> ImageSet:
    """Load an image folder; with val_fraction, 'train' and 'val' are a stratified seeded split."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    _check_split(split, val_fraction)
    images, skipped = read_folder(root, size, mode)
    for item in skipped:
        log.warning("skipped %s: %s", item.path, item.reason)
    if split == "all" or val_fraction is None:
        return images
    train, val = images.split(val_fraction, seed=seed)
    return train if split == "train" else val


def _check_split(split: str, val_fraction: float | None) -> None:
    """A folder has 'all'/'train'; 'val'/'test' exist only when val_fraction carves them out."""
    if split not in ("train", "val", "test", "all"):
        raise CnnlabError(f"unknown split {split!r} for an image folder: choose train, val, test or all")
    if val_fraction is None and split in ("val", "test"):
        raise CnnlabError(f"an image folder has no {split!r} split of its own: pass val_fraction "
                          "(e.g. 0.2), or point at a separate folder")
