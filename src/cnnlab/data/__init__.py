"""Datasets as ImageSets: CIFAR-10/100, MNIST, Fashion-MNIST, embedded digits, image folders."""
from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from ..errors import CnnlabError
from .cifar import load_cifar
from .digits import load_digits_set
from .archive import safe_extract
from .download import cache_dir, fetch
from .folder import load_folder, scan_folder
from .imageset import ImageSet
from .mnist import SOURCES as IDX_SOURCES
from .mnist import load_idx_dataset


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset is without loading it: class count, native (C, H, W), splits, origin."""

    name: str
    num_classes: int
    input_shape: tuple[int, int, int]
    splits: tuple[str, ...]
    source: str
    classes: tuple[str, ...] = ()  # the class names, where they are known without the files


_LOADERS: dict[str, Callable[..., ImageSet]] = {
    "cifar10": partial(load_cifar, "cifar10"),
    "cifar100": partial(load_cifar, "cifar100"),
    "mnist": partial(load_idx_dataset, "mnist"),
    "fashion-mnist": partial(load_idx_dataset, "fashion-mnist"),
    "digits": load_digits_set,
}

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

_INFO: dict[str, DatasetInfo] = {
    "cifar10": DatasetInfo("cifar10", 10, (3, 32, 32), ("train", "test"), "cs.toronto.edu/~kriz (download)",
                           CIFAR10_CLASSES),
    "cifar100": DatasetInfo("cifar100", 100, (3, 32, 32), ("train", "test"),
                            "cs.toronto.edu/~kriz (download; 20 classes with label_mode='coarse')"),
    "mnist": DatasetInfo("mnist", 10, (1, 28, 28), ("train", "test"), "ossci-datasets mirror (download)",
                         IDX_SOURCES["mnist"].classes),
    "fashion-mnist": DatasetInfo("fashion-mnist", 10, (1, 28, 28), ("train", "test"),
                                 "zalando fashion-mnist (download)",
                                 IDX_SOURCES["fashion-mnist"].classes),
    "digits": DatasetInfo("digits", 10, (1, 32, 32), ("train", "test"), "scikit-learn, embedded (no download)",
                          IDX_SOURCES["mnist"].classes),
}

FOLDER_PREFIX = "folder:"


def list_datasets() -> list[str]:
    """Names accepted by load_dataset (besides folder:PATH or a directory path)."""
    return list(_LOADERS)


def canonical_name(name: str) -> str | None:
    """The registered name matching `name` ignoring case, '-' and '_' (e.g. CIFAR_10 → cifar10)."""
    squash = name.strip().lower().replace("-", "").replace("_", "")
    return next((k for k in _LOADERS if k.replace("-", "") == squash), None)


def load_dataset(name: str, split: str = "train", root: str | Path | None = None, download: bool = True,
                 **opts) -> ImageSet:
    """Load a dataset split by name, `folder:PATH` or a directory path."""
    key = canonical_name(name)
    if key is not None:
        loader = _LOADERS[key]
        _check_options(key, loader, opts)
        return _non_empty(loader(split=split, root=root, download=download, **opts), key, split, root)
    folder = _folder_path(name)
    _check_options("an image folder", load_folder, opts)
    return _non_empty(load_folder(folder, split=split, **opts), str(folder), split, folder)


def _non_empty(data: ImageSet, name: str, split: str, root: str | Path | None) -> ImageSet:
    """Refuse a split without images here, in one line, rather than as a division by zero in training."""
    if len(data) == 0:
        where = root if root is not None else cache_dir()
        raise CnnlabError(f"{name} split {split!r} has no images (read from {where}): the files there are "
                          "empty or not the official ones; delete them and re-run to download them again")
    return data


def dataset_info(name: str) -> DatasetInfo:
    """Class count and native input shape; for a folder, scans class folders (no decoding)."""
    key = canonical_name(name)
    if key is not None:
        return _INFO[key]
    folder = _folder_path(name)
    classes, _, _ = scan_folder(folder)
    return DatasetInfo(f"{FOLDER_PREFIX}{folder}", len(classes), (3, 32, 32), ("train", "val"),
                       "local image folder (resized to 32×32 unless size= is given)")


def _folder_path(name: str) -> Path:
    """The directory named by `folder:PATH` or a plain existing directory path, else an error."""
    if name.startswith(FOLDER_PREFIX):
        return Path(name[len(FOLDER_PREFIX):]).expanduser()
    if Path(name).expanduser().is_dir():
        return Path(name).expanduser()
    raise CnnlabError(f"unknown dataset {name!r}: choose one of {', '.join(list_datasets())}, "
                      f"or {FOLDER_PREFIX}PATH for a folder of class subfolders")


def _check_options(what: str, loader: Callable[..., ImageSet], opts: dict) -> None:
    """Reject options the loader does not take, naming the ones it does."""
    accepted = [p for p in inspect.signature(loader).parameters if p not in ("name", "root", "split", "download")]
    unknown = sorted(set(opts) - set(accepted))
    if unknown:
        raise CnnlabError(f"{what} does not take option(s) {', '.join(unknown)}; it takes: "
                          f"{', '.join(accepted) or 'none'}")


__all__ = ["DatasetInfo", "ImageSet", "cache_dir", "dataset_info", "fetch", "list_datasets", "load_dataset",
           "safe_extract"]
