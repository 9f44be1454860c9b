"""Looking inside a trained run: its first layer's filters and each conv block's feature maps for one image.

The pictures themselves are drawn by ``explain.plots`` from a module and a tensor; this module finds
them in a run directory.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import CnnlabError
from ..explain.plots import plot_feature_maps, plot_filters
from .predict import read_images
from .run import load_trained


@dataclass(frozen=True)
class Pictures:
    """The PNGs ``visualize_run`` wrote."""

    filters: Path
    feature_maps: list[Path]

    def _repr_html_(self) -> str:
        from ..explain.notebook import block, png_img

        return block(*(png_img(p.read_bytes(), p.stem) for p in (self.filters, *self.feature_maps)))


def feature_body(model: nn.Module) -> tuple[nn.Module, Callable[[torch.Tensor], torch.Tensor] | None]:
    """The module whose blocks to show and how to run an image through them (a transfer model: its backbone)."""
    backbone = getattr(model, "backbone", None)
    if isinstance(backbone, nn.Module) and callable(getattr(model, "forward_features", None)):
        return backbone, model.forward_features
    return model, None


def visualize_run(run: Path, image: Path, out_dir: Path | None = None, which: str = "best",
                  max_maps: int = 64) -> Pictures:
    """filters.png and NN_<block>.png for ``image`` (read as the model reads its inputs) into ``out_dir``."""
    trained = load_trained(run, which)
    if trained.card.text:
        raise CnnlabError(f"{run} is a text model: its filters read word windows, not pixels; see what excites them "
                          f"with `cnnlab ngrams {run}`")
    images, ok, skipped = read_images([Path(image)], trained.card)
    if not ok:
        raise CnnlabError(f"cannot read {skipped[0].path}: {skipped[0].reason}")
    run_dir = Path(run) if Path(run).is_dir() else Path(run).parent
    out = Path(out_dir) if out_dir else run_dir / "plots" / Path(image).stem
    body, forward = feature_body(trained.model)
    maps = plot_feature_maps(body, images[0].float() / 255.0, out, max_maps, forward)
    return Pictures(plot_filters(trained.model, out / "filters.png"), maps)
