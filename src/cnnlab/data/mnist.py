"""MNIST and Fashion-MNIST from the official IDX gz files."""
from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import CnnlabError
from .download import cache_dir, fetch_mirrors
from .files import open_input
from .imageset import ImageSet

_UBYTE = 0x08
_IDX_TYPES = {0x08: "unsigned bytes", 0x09: "signed bytes", 0x0B: "16-bit integers", 0x0C: "32-bit integers",
              0x0D: "32-bit floats", 0x0E: "64-bit floats"}
IdxFile = tuple[str, str, int]  # file name, md5, size in bytes


@dataclass(frozen=True)
class IdxSource:
    """Mirrors (https first), (file name, md5, byte size) of images and labels per split, classes, cache folder."""

    name: str
    mirrors: tuple[str, ...]
    splits: dict[str, tuple[IdxFile, IdxFile]]
    classes: tuple[str, ...]
    folder: str


def _official_splits(*checks: tuple[str, int]) -> dict[str, tuple[IdxFile, IdxFile]]:
    """The four standard IDX file names with their (md5, size), in the order train images/labels, test images/labels."""
    names = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
             "t10k-labels-idx1-ubyte.gz")
    files = [(name, md5, size) for name, (md5, size) in zip(names, checks, strict=True)]
    return {"train": (files[0], files[1]), "test": (files[2], files[3])}


SOURCES: dict[str, IdxSource] = {
    "mnist": IdxSource(
        name="mnist",
        mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        splits=_official_splits(("f68b3c2dcbeaaa9fbdd348bbdeb94873", 9_912_422),
                                ("d53e105ee54ea40749a09fcbcd1e9432", 28_881),
                                ("9fb629c4189551a2d022fa330f9573f3", 1_648_877),
                                ("ec29112dd5afa0611ce80d1b7f02629c", 4_542)),
        classes=tuple(str(d) for d in range(10)),
        folder="mnist",
    ),
    "fashion-mnist": IdxSource(
        name="fashion-mnist",
        mirrors=("https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
                 "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"),
        splits=_official_splits(("8d4fb7e6c68d591d4c3dfef9ec88bf0d", 26_421_880),
                                ("25c81989df183df01b3e8a0aad5dffbe", 29_515),
                                ("bef4ecab320f06d8554ea6380940ec79", 4_422_102),
                                ("bb300cfdad3c16e7a12a480ee83cd310", 5_148)),
        classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                 "Ankle boot"),
        folder="fashion-mnist",
    ),
}


def load_idx_dataset(name: str, split: str = "train", root: str | Path | None = None,
                     download: bool = True) -> ImageSet:
    """Load MNIST ('mnist') or Fashion-MNIST ('fashion-mnist') as 1×28×28 uint8 images."""
    source = SOURCES[name]
    if split not in source.splits:
        raise CnnlabError(f"unknown split {split!r} for {name}: choose one of {', '.join(source.splits)}")
    folder = (Path(root) if root else cache_dir()) / source.folder
    image_file, label_file = source.splits[split]
    try:
        image_path, label_path = (_obtain(source, folder, f, download) for f in (image_file, label_file))
    except CnnlabError as err:
        raise _naming_every_missing_file(err, source, folder) from None
    images, labels = read_idx(image_path, ndim=3), read_idx(label_path, ndim=1)
    _check_pair(images, labels, len(source.classes), folder / label_file[0])
    return ImageSet(torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)),
                    list(source.classes), f"{name}-{split}")


def missing_files(source: IdxSource, folder: Path) -> list[str]:
    """The dataset's IDX files (all splits: a run reads train and test) that are not in ``folder``."""
    return [name for pair in source.splits.values() for name, _, _ in pair if not (folder / name).is_file()]


def _naming_every_missing_file(err: CnnlabError, source: IdxSource, folder: Path) -> CnnlabError:
    """``err`` (about one file), completed with every other file still missing, so one trip fetches them all."""
    missing = missing_files(source, folder)
    if len(missing) < 2:
        return err
    return CnnlabError(f"{err} — {source.name} needs {len(missing)} files that are not in {folder}: "
                       f"{', '.join(missing)}; download them all from {source.mirrors[0]} and place them there "
                       "(or point --data-dir at a folder that has them)")


def _obtain(source: IdxSource, folder: Path, file: IdxFile, download: bool) -> Path:
    """A verified local copy of one IDX file, downloaded from the mirrors if allowed."""
    filename, md5, size = file
    path = folder / filename
    if not download and not path.is_file():
        raise CnnlabError(f"{source.name} file {path} not found: allow downloading or place it there")
    return fetch_mirrors([m + filename for m in source.mirrors], md5, folder, filename, size=size)


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Decompress and parse one gzipped IDX file of unsigned bytes."""
    try:
        with open_input(path, "delete it and re-run to download it again") as fh, gzip.GzipFile(fileobj=fh) as gz:
            raw = gz.read()
    except (OSError, EOFError, zlib.error) as err:
        raise CnnlabError(f"cannot read {path}: truncated or not gzip ({err}); delete it and re-run") from err
    return parse_idx(raw, ndim, str(path))


def parse_idx(raw: bytes, ndim: int, source: str) -> np.ndarray:
    """Parse IDX bytes (magic 0,0,0x08,ndim; big-endian int32 sizes; uint8 payload), checking sizes."""
    header = 4 + 4 * ndim
    if len(raw) >= 4 and raw[:2] == b"\0\0" and raw[2] != _UBYTE and raw[2] in _IDX_TYPES:
        raise CnnlabError(f"{source} holds {_IDX_TYPES[raw[2]]} (IDX type 0x{raw[2]:02X}), but MNIST-format images "
                          "and labels are unsigned bytes (a float label would be truncated to a wrong class): "
                          "delete it and re-run to download the official file")
    if len(raw) < header or raw[0] != 0 or raw[1] != 0 or raw[2] != _UBYTE or raw[3] != ndim:
        raise CnnlabError(f"{source} is not an unsigned-byte IDX file with {ndim} dimensions "
                          f"(bad magic number {raw[:4].hex()}); delete it and re-run")
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    expected = header + int(np.prod(shape, dtype=np.int64))
    if len(raw) != expected:
        raise CnnlabError(f"{source} holds {len(raw)} bytes but its header {shape} needs {expected}: "
                          "it is truncated or corrupt; delete it and re-run")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _check_pair(images: np.ndarray, labels: np.ndarray, num_classes: int, label_path: Path) -> None:
    """Images and labels agree in count, and labels lie in range."""
    if labels.shape[0] != images.shape[0]:
        raise CnnlabError(f"{label_path} has {labels.shape[0]} labels for {images.shape[0]} images: "
                          "delete the folder and re-run")
    if labels.size and labels.max() >= num_classes:
        raise CnnlabError(f"{label_path} has label {labels.max()} outside 0..{num_classes - 1}: "
                          "delete it and re-run")
