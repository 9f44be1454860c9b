"""A pickle loader for CIFAR batches that accepts plain data only and never runs code."""
from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CnnlabError
from .files import open_input, read_error

IMAGE_BYTES = 3 * 32 * 32


def _numpy_globals() -> dict[tuple[str, str], Any]:
    """numpy's array/scalar reconstructors under both their numpy 1 and numpy 2 module names."""
    try:
        from numpy._core import multiarray, numeric
    except ImportError:
        from numpy.core import multiarray, numeric
    found: dict[tuple[str, str], Any] = {}
    for prefix in ("numpy.core", "numpy._core"):
        found[(f"{prefix}.multiarray", "_reconstruct")] = multiarray._reconstruct
        found[(f"{prefix}.multiarray", "scalar")] = multiarray.scalar
        found[(f"{prefix}.numeric", "_frombuffer")] = numeric._frombuffer
    found[("numpy", "ndarray")] = np.ndarray
    found[("numpy", "dtype")] = np.dtype
    return found


def _latin1_encode(text: Any, encoding: str = "latin1", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles of bytes use it (``encode(str, 'latin1')``), and nothing else:
    any other codec (an unknown name, zlib, rot13 …) makes the file refused as corrupt."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise pickle.UnpicklingError(f"_codecs.encode with {encoding!r} is not how bytes are pickled")
    return text.encode("latin-1")


_ALLOWED: dict[tuple[str, str], Any] = {
    **{(module, t.__name__): t for t in (dict, list, tuple, str, bytes, bytearray, int, float)
       for module in ("builtins", "__builtin__")},
    ("_codecs", "encode"): _latin1_encode,
    **_numpy_globals(),
}


class RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler whose only reachable globals are plain containers and numpy array rebuilding."""

    def __init__(self, file: Any, source: str) -> None:
        super().__init__(file, encoding="bytes")
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        """Return an allow-listed global, or refuse the whole file."""
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise CnnlabError(f"refusing to load {self._source}: it contains code (GLOBAL {module}.{name}), "
                              "not just data; delete it and download the official file") from None


def load_pickle(path: str | Path) -> Any:
    """Restricted load of a pickle file (bytes keys kept, as the official CIFAR loader does)."""
    path = Path(path)
    fix = f"delete {path.parent} and re-run to download it again"
    try:
        with open_input(path, fix) as fh:
            return RestrictedUnpickler(fh, str(path)).load()
    except OSError as err:
        raise read_error(path, err, fix) from err
    except (EOFError, pickle.UnpicklingError, ValueError, TypeError, IndexError, KeyError, AttributeError,
            OverflowError, MemoryError, SystemError) as err:  # SystemError: numpy's dtype/array rebuilders on bad state
        raise CnnlabError(f"cannot read {path}: it is truncated or corrupt ({type(err).__name__}: {err}); "
                          f"{fix}") from err


def load_cifar_batch(path: str | Path, label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 N×3072 data, int64 N labels) from one CIFAR batch, validated."""
    return validate_batch(load_pickle(path), label_key, num_classes, Path(path))


def validate_batch(batch: Any, label_key: str, num_classes: int, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Check a batch dict's shape, dtype and label range; CnnlabError naming the file if wrong."""
    def bad(what: str) -> CnnlabError:
        return CnnlabError(f"{path} is not a valid CIFAR batch ({what}): delete {path.parent} "
                           "and re-run to download it again")

    if not isinstance(batch, dict):
        raise bad(f"top level is {type(batch).__name__}, not dict")
    data, labels = get_key(batch, "data"), get_key(batch, label_key)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != IMAGE_BYTES:
        raise bad(f"'data' must be uint8 of shape (N, {IMAGE_BYTES})")
    labels = integer_labels(labels, label_key, bad)
    if labels.shape != (data.shape[0],):
        raise bad(f"'{label_key}' has shape {labels.shape}, expected ({data.shape[0]},)")
    if labels.size and not (0 <= labels.min() and labels.max() < num_classes):
        raise bad(f"'{label_key}' outside 0..{num_classes - 1}")
    return data, labels


def integer_labels(labels: Any, label_key: str, bad: Callable[[str], CnnlabError]) -> np.ndarray:
    """Labels as int64, refusing anything but integers: a float such as 1.7 must not become class 1."""
    try:
        array = np.asarray(labels)
    except (TypeError, ValueError):
        raise bad(f"'{label_key}' is not a list of integers") from None
    if array.size and array.dtype.kind not in "iu":
        raise bad(f"'{label_key}' must be integers, got {array.dtype} values")
    return array.astype(np.int64)


def get_key(d: dict, key: str) -> Any:
    """d[key] for bytes-keyed (official) or str-keyed pickles; None if absent."""
    return d.get(key.encode(), d.get(key))
