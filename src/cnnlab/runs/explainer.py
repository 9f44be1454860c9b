"""``cnnlab explainer RUN [IMAGE …]``: a trained run's interactive page — its network, a few images through it, and
its training story (history, the validation split's confusion matrix with a few images of each cell).

This module finds those things in a run directory; ``explain.explainer`` builds the page from the module and
tensors alone.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from ..data import ImageSet
from ..data.folder import Skipped
from ..engine.history import History
from ..errors import CnnlabError
from ..explain.explainer import MAX_BYTES, MAX_MAPS, THUMBS_PER_CELL, ExplainerPage, Story, build_page
from .predict import image_files, read_images
from .run import Trained, evaluate_trained, evaluation_data, load_trained

THUMB_SIDE = 48  # larger validation images are shrunk to this for the confusion-matrix gallery


def pick_images(labels: torch.Tensor, count: int) -> list[int]:
    """``count`` image indices: the first image of each class in class order, then the next of each, and so on."""
    seen: dict[int, int] = {}
    ranks = []
    for i, y in enumerate(labels.tolist()):
        ranks.append((seen.get(y, 0), y, i))
        seen[y] = seen.get(y, 0) + 1
    return [i for _, _, i in sorted(ranks)[:count]]


def cell_examples(labels: torch.Tensor, predicted: torch.Tensor, per_cell: int = THUMBS_PER_CELL
                  ) -> dict[tuple[int, int], list[int]]:
    """The first ``per_cell`` image indices of every (true, predicted) cell of the confusion matrix."""
    cells: dict[tuple[int, int], list[int]] = {}
    for i, cell in enumerate(zip(labels.tolist(), predicted.tolist())):
        kept = cells.setdefault(cell, [])
        if len(kept) < per_cell:
            kept.append(i)
    return cells


def thumbnails(images: torch.Tensor, side: int = THUMB_SIDE) -> torch.Tensor:
    """uint8 images, shrunk (antialiased) to fit ``side`` pixels when larger."""
    h, w = images.shape[-2:]
    if max(h, w) <= side:
        return images
    size = (max(1, round(h * side / max(h, w))), max(1, round(w * side / max(h, w))))
    small = F.interpolate(images.float(), size=size, mode="bilinear", antialias=True, align_corners=False)
    return small.round().clamp(0, 255).to(torch.uint8)


def training_story(trained: Trained, run_dir: Path, data: ImageSet | None, note: str) -> Story:
    """The run's history and its validation split's confusion matrix, with a few images per cell."""
    history = History.load(run_dir).to_dict() if (run_dir / "history.json").exists() else None
    if data is None:
        return Story(history, note=note)
    result = evaluate_trained(trained, data, "val")
    cells = cell_examples(result.labels, result.predicted)
    kept = sorted({i for ids in cells.values() for i in ids})
    position = {i: n for n, i in enumerate(kept)}
    return Story(history, result.confusion, "val", result.accuracy,
                 {cell: [position[i] for i in ids] for cell, ids in cells.items()},
                 thumbnails(data.images[kept]), note)


def validation_images(trained: Trained) -> tuple[ImageSet | None, str]:
    """The run's validation split, or None and the reason it cannot be read."""
    try:
        return evaluation_data(trained, "val"), ""
    except CnnlabError as e:
        return None, f"no training story: the validation split could not be read ({e})"


def chosen_images(trained: Trained, images: Sequence[str | os.PathLike], data: ImageSet | None, count: int,
                  note: str) -> tuple[torch.Tensor, list[str], list[int | None], list[Skipped]]:
    """uint8 inputs, their names, true classes and the unreadable files: the given ones, else ``count`` validation
    images."""
    if images:
        files = image_files(images)
        pixels, ok, skipped = read_images(files, trained.card)
        if not ok:
            raise CnnlabError(f"none of the {len(files)} image(s) could be read"
                              + (f" (first: {skipped[0].path}: {skipped[0].reason})" if skipped else ""))
        return pixels, [p.name for p in ok], [None] * len(ok), skipped
    if data is None:
        raise CnnlabError(f"{note.removeprefix('no training story: ')}: pass image files to explain instead")
    picked = pick_images(data.labels, count)
    labels = data.labels[picked].tolist()
    return data.images[picked], [f"{data.name} #{i} ({data.classes[y]})" for i, y in zip(picked, labels)], labels, []


def explainer_run(run: Path, images: Sequence[str | os.PathLike] = (), out: Path | None = None, which: str = "best",
                  count: int = 4, max_maps: int = MAX_MAPS, max_mb: float = MAX_BYTES / 1e6) -> ExplainerPage:
    """Build and write the explainer page of a run (default: RUN_DIR/explainer.html)."""
    if count < 1 or max_maps < 1 or max_mb <= 0:
        raise CnnlabError("explainer needs --count, --max-maps and --max-mb above 0")
    trained = load_trained(Path(run), which)
    if trained.card.text:
        raise CnnlabError(f"{run} is a text model: the explainer pictures image networks; see what excites its "
                          f"filters with `cnnlab ngrams {run}`, and score it with `cnnlab eval {run}`")
    run_dir = trained.path.parent
    data, note = validation_images(trained)
    pixels, names, labels, skipped = chosen_images(trained, images, data, count, note)
    card = trained.card
    title = f"{card.model_name} · {card.dataset or 'unknown data'} · {run_dir.name}/{trained.path.name}"
    page = build_page(trained.model, pixels.float() / 255.0, names, card.classes, labels=labels,
                      story=training_story(trained, run_dir, data, note), title=title, max_maps=max_maps,
                      max_bytes=int(max_mb * 1e6))
    return replace(page.save(Path(out) if out else run_dir / "explainer.html"), skipped=tuple(skipped))


__all__ = ["cell_examples", "chosen_images", "explainer_run", "pick_images", "thumbnails", "training_story"]
