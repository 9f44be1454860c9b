"""A run directory from weights trained in Keras: ``cnnlab import-keras`` / ``cnnlab.import_keras``.

No dataset is needed: the class names come from ``classes`` (given), else from the named dataset's
known names (no download), else from the network's class count ("0", "1", …); the input shape is
``input`` or the network's own. The result is an ordinary run directory (``best.pt`` with its run
card), so ``eval``, ``predict``, ``export`` and ``explain`` take it like any trained run.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..data import canonical_name, dataset_info
from ..engine.checkpoint import save_checkpoint
from ..errors import CnnlabError
from ..explain.keras_import import load_keras_weights
from ..models import default_input_size
from .card import RunCard
from .config import RunConfig
from .run import build_model


@dataclass(frozen=True)
class Imported:
    """Where the imported weights went, and which cnnlab layer took which Keras layer."""

    checkpoint: Path
    matched: list[tuple[str, str]]


def class_names(model: str, classes: Sequence[str] | None, dataset: str | None) -> tuple[str, ...]:
    """The given names; else the built-in dataset's; else "0" … "N-1" for the network's default class count."""
    if classes:
        return tuple(classes)
    if dataset:
        key = canonical_name(dataset)
        if key is None:
            raise CnnlabError(f"--dataset {dataset!r} names no built-in dataset: pass --classes NAME,NAME,… instead")
        known = dataset_info(key).classes
        if known:
            return known
        raise CnnlabError(f"the class names of {key} are read from its files: pass --classes NAME,NAME,… instead")
    from ..models import model_info
    from ..models.registry import is_spec_path

    count = 10 if is_spec_path(model) else model_info(model).num_classes
    return tuple(str(i) for i in range(count))


def import_keras(model: str, weights: str | os.PathLike, out: str | os.PathLike, classes: Sequence[str] | None = None,
                 dataset: str | None = "cifar10", input: tuple[int, int, int] | None = None) -> Imported:
    """Load Keras weights into ``model`` and write ``out/best.pt``, so cnnlab's commands can use them."""
    names = class_names(model, classes, dataset)
    c, h, w = input or default_input_size(model)
    card = RunCard(model_name=model, num_classes=len(names), in_channels=c, input_size=(h, w), classes=names,
                   dataset=canonical_name(dataset) or "" if dataset else "")
    net = build_model(card)
    matched = load_keras_weights(net, weights, card.input_shape)
    cfg = RunConfig(model=model, dataset=card.dataset or "digits")
    path = Path(out) / "best.pt"
    save_checkpoint(path, {"model": net.state_dict(), "card": card.to_dict(), "config": cfg.to_dict(),
                           "imported_from": str(weights)})
    return Imported(path, matched)


__all__ = ["Imported", "class_names", "import_keras"]
