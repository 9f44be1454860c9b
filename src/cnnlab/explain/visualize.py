"""Looking inside a trained run: its first layer's filters and each conv block's feature maps for one image."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .plots import plot_feature_maps, plot_filters


@dataclass(frozen=True)
class Pictures:
    """The PNGs ``visualize_run`` wrote."""

    filters: Path
    feature_maps: list[Path]


def feature_body(model: nn.Module) -> tuple[nn.Module, Callable[[torch.Tensor], torch.Tensor] | None]:
    """The module whose blocks to show and how to run an image through them (a transfer model: its backbone)."""
    backbone = getattr(model, "backbone", None)
    if isinstance(backbone, nn.Module) and callable(getattr(model, "forward_features", None)):
        return backbone, model.forward_features
    return model, None


def visualize_run(run: Path, image: Path, out_dir: Path | None = None, which: str = "best",
                  max_maps: int = 64) -> Pictures:
    """filters.png and NN_<block>.png for ``image`` (read as the model reads its inputs) into ``out_dir``."""
    from ..engine.predict import ModelInput, read_images
    from ..engine.run import load_trained
    from ..errors import CnnlabError

    model, ckpt = load_trained(run, which)
    images, ok, skipped = read_images([Path(image)], ModelInput.from_meta(ckpt))
    if not ok:
        raise CnnlabError(f"cannot read {skipped[0].path}: {skipped[0].reason}")
    run_dir = Path(run) if Path(run).is_dir() else Path(run).parent
    out = Path(out_dir) if out_dir else run_dir / "plots" / Path(image).stem
    body, forward = feature_body(model)
    maps = plot_feature_maps(body, images[0].float() / 255.0, out, max_maps, forward)
    return Pictures(plot_filters(model, out / "filters.png"), maps)
