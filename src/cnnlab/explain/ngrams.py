"""What a text CNN's filters learned: for each filter, the n-grams of a set of sentences that excite it most.

A filter of width h answers every h-token window of every sentence; listing the windows with the strongest
answers is the standard way to read a sentence CNN (Kim 2014, Kalchbrenner et al. 2014 §5.3). Filters
come in the order of their influence on the output: the L2 norm of their column in the final linear layer
(for Kim's CNN each filter feeds that layer directly), and each is tagged with the class it pushes towards.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import CnnlabError


@dataclass(frozen=True)
class FilterNgrams:
    """One filter: its layer and index, the class its output weights favour, and its top (n-gram, activation)."""

    layer: str
    index: int
    width: int
    favours: str | None
    weight: float  # L2 norm of its weights in the final layer (NaN when the filter does not feed it directly)
    top: list[tuple[str, float]]

    def __str__(self) -> str:
        towards = f" → {self.favours}" if self.favours else ""
        grams = " | ".join(f"{gram!r} {value:.2f}" for gram, value in self.top)
        return f"{self.layer}#{self.index}{towards}: {grams}"


def window_text(tokens: torch.Tensor, vocabulary: Sequence[str], start: int, width: int) -> str:
    """The words of ``tokens`` (one sentence's ids) in the window [start, start + width), padding left out."""
    ids = tokens[max(start, 0):max(start + width, 0)].tolist()
    return " ".join(vocabulary[i] for i in ids if i)


def output_weights(model: nn.Module, filters: int) -> torch.Tensor | None:
    """The final linear layer's weights (classes × filters) when each filter feeds it directly, else None."""
    fc = model.get_classifier() if hasattr(model, "get_classifier") else None
    if isinstance(fc, nn.Linear) and fc.in_features == filters:
        return fc.weight.detach().cpu().float()
    return None


@torch.inference_mode()
def activations(model: nn.Module, tokens: torch.Tensor, batch_size: int = 500) -> list:
    """The model's ``window_activations`` over all sentences, batch by batch, joined per layer (on the CPU)."""
    if not hasattr(model, "window_activations"):
        raise CnnlabError(f"{type(model).__name__} has no filters over token windows: n-grams explain text CNNs "
                          "(kim-cnn, dcnn)")
    model.eval()
    parts = [model.window_activations(tokens[i:i + batch_size]) for i in range(0, len(tokens), batch_size)]
    layers = []
    for i, first in enumerate(parts[0]):
        width = max(p[i].activations.shape[-1] for p in parts)
        acts = torch.cat([torch.nn.functional.pad(p[i].activations, (0, width - p[i].activations.shape[-1]))
                          for p in parts]).float().cpu()
        layers.append((first, acts))
    return layers


def top_windows(acts: torch.Tensor, tokens: torch.Tensor, vocabulary: Sequence[str], width: int, offset: int,
                top: int) -> list[tuple[str, float]]:
    """The ``top`` distinct n-grams with the strongest activation of one filter (``acts``: sentences × positions)."""
    values, order = acts.flatten().sort(descending=True)
    positions = acts.shape[1]
    seen: dict[str, float] = {}
    for value, flat in zip(values.tolist(), order.tolist()):
        if len(seen) == top or value <= 0 and seen:
            break
        gram = window_text(tokens[flat // positions], vocabulary, flat % positions - offset, width)
        if gram and gram not in seen:
            seen[gram] = value
    return list(seen.items())


def top_ngrams(model: nn.Module, tokens: torch.Tensor, vocabulary: Sequence[str], classes: Sequence[str],
               top: int = 5, filters: int | None = 10) -> list[FilterNgrams]:
    """For the ``filters`` most influential filters (all with None), their ``top`` n-grams among ``tokens``."""
    if len(tokens) == 0:
        raise CnnlabError("no sentences to look for n-grams in")
    layers = activations(model, tokens)
    total = sum(acts.shape[1] for _, acts in layers)
    weights = output_weights(model, total)
    result, base = [], 0
    for windows, acts in layers:
        for f in range(acts.shape[1]):
            column = None if weights is None else weights[:, base + f]
            favours = None if column is None else classes[int(column.argmax())]
            strength = float("nan") if column is None else float(column.norm())
            result.append(FilterNgrams(windows.name, f, windows.width, favours, strength,
                                       top_windows(acts[:, f], tokens, vocabulary, windows.width, windows.offset, top)))
        base += acts.shape[1]
    if weights is not None:
        result.sort(key=lambda r: -r.weight)
    return result if filters is None else result[:filters]


__all__ = ["FilterNgrams", "top_ngrams", "window_text"]
