"""cnnlab: the classic convolutional networks, built, trained and explained on PyTorch.

Importing cnnlab loads nothing heavy and changes no process state (environment, threads, allocator):
the names below are imported on first use. ``cnnlab.tune_cpu()`` applies the CPU settings the CLI
uses; call it before importing torch to get all of them (docs/performance.md).
"""
from __future__ import annotations

import importlib
from typing import Any

from .errors import CnnlabError

_LAZY: dict[str, str] = {
    **{name: "cnnlab.api" for name in ("train", "evaluate", "predict", "summary", "export", "plot", "show",
                                       "compare", "cross_validate", "ngrams", "visualize", "explainer",
                                       "import_keras")},
    **{name: "cnnlab.models" for name in ("create_model", "list_models", "model_info")},
    "tune_cpu": "cnnlab.cpu",
    "RunConfig": "cnnlab.runs.config",
    "History": "cnnlab.engine.history",
}
_SUBMODULES = ("callbacks",)  # cnnlab.callbacks.EarlyStopping … (Keras' keras.callbacks)

__all__ = ["CnnlabError", *_LAZY, *_SUBMODULES]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """Import a public name's module the first time it is used (PEP 562)."""
    if name in _SUBMODULES:
        return importlib.import_module(f"cnnlab.{name}")
    if name not in _LAZY:
        raise AttributeError(f"module 'cnnlab' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | set(_SUBMODULES))
