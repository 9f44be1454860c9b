"""CIFAR-10 and CIFAR-100 from the official python archives, or an already extracted copy."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import CnnlabError
from .archive import safe_extract
from .download import cache_dir, fetch, url_filename
from .imageset import ImageSet
from .safe_pickle import get_key, load_cifar_batch, load_pickle


@dataclass(frozen=True)
class CifarSource:
    """Where one CIFAR variant comes from and how its extracted folder is laid out."""

    name: str
    url: str
    md5: str
    size: int  # bytes of the official archive: a download is cut off past it
    folder: str
    splits: dict[str, tuple[str, ...]]
    meta: str
    label_keys: dict[str, tuple[str, str]]


SOURCES: dict[str, CifarSource] = {
    "cifar10": CifarSource(
        name="cifar10",
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
        size=170_498_071,
        folder="cifar-10-batches-py",
        splits={"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)},
        meta="batches.meta",
        label_keys={"fine": ("labels", "label_names")},
    ),
    "cifar100": CifarSource(
        name="cifar100",
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85",
        size=169_001_437,
        folder="cifar-100-python",
        splits={"train": ("train",), "test": ("test",)},
        meta="meta",
        label_keys={"fine": ("fine_labels", "fine_label_names"),
                    "coarse": ("coarse_labels", "coarse_label_names")},
    ),
}


def load_cifar(name: str, split: str = "train", root: str | Path | None = None, download: bool = True,
               label_mode: str = "fine") -> ImageSet:
    """Load CIFAR-10 ('cifar10') or CIFAR-100 ('cifar100', label_mode fine|coarse) as an ImageSet."""
    source = SOURCES[name]
    files = _choose(source.splits, split, "split")
    label_key, names_key = _choose(source.label_keys, label_mode, "label_mode")
    folder = ensure_folder(source, Path(root) if root else cache_dir(), download)
    classes = read_classes(folder / source.meta, names_key)
    parts = [load_cifar_batch(folder / f, label_key, len(classes)) for f in files]
    data = np.concatenate([d for d, _ in parts])
    labels = np.concatenate([y for _, y in parts])
    images = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())
    return ImageSet(images, torch.from_numpy(labels), classes, f"{name}-{split}")


def _choose(table: dict, key: str, what: str):
    """table[key], or a CnnlabError listing the valid keys."""
    if key not in table:
        raise CnnlabError(f"unknown {what} {key!r}: choose one of {', '.join(table)}")
    return table[key]


def find_folder(root: Path, source: CifarSource) -> Path | None:
    """The extracted batches folder: root itself or root/<official folder name>."""
    for candidate in (root, root / source.folder):
        if (candidate / source.meta).is_file():
            return candidate
    return None


def ensure_folder(source: CifarSource, root: Path, download: bool) -> Path:
    """An extracted copy if one exists; else extract the archive, verified, downloading it if allowed."""
    folder = find_folder(root, source)
    if folder is not None:
        return folder
    if not download and not (root / url_filename(source.url)).is_file():
        raise CnnlabError(f"{source.name} not found: expected {root / source.folder}/{source.meta}; "
                          f"allow downloading or place the extracted {source.folder} folder in {root}")
    safe_extract(fetch(source.url, source.md5, root, size=source.size), root)
    folder = find_folder(root, source)
    if folder is None:
        raise CnnlabError(f"{source.url} did not contain {source.folder}/{source.meta}: it is not the "
                          f"official archive; delete it from {root} and re-run")
    return folder


def read_classes(meta_path: Path, names_key: str) -> list[str]:
    """Class names from a CIFAR meta file (bytes or str entries)."""
    meta = load_pickle(meta_path)
    names = get_key(meta, names_key) if isinstance(meta, dict) else None
    if not isinstance(names, list) or not names or not all(isinstance(n, (bytes, str)) for n in names):
        raise CnnlabError(f"{meta_path} has no '{names_key}' list: delete {meta_path.parent} and re-run "
                          "to download it again")
    return [n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in names]
