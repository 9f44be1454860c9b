"""Named training recipes: RunConfig defaults plus optional hooks, applied when a model's registry entry names one.

A recipe fills only the fields the user did not set — ``RunConfig`` applies it on construction —
and its hooks are looked up by ``RunConfig.recipe`` when the run starts: ``init_from_data`` prepares
a network from the training images (e.g. a whitening stem) and ``make_optimizer`` builds its
optimizer (e.g. Muon with parameter groups). Test-time augmentation and the time budget are
ordinary RunConfig fields.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
from torch import nn

from ..engine.config import FitConfig
from ..engine.optim import OptimizerFactory, Role, make_muon
from ..errors import CnnlabError

InitHook = Callable[[nn.Module, torch.Tensor], None]


@dataclass(frozen=True)
class Recipe:
    """A named set of RunConfig defaults and the hooks a run of it calls."""

    name: str
    description: str
    defaults: Mapping[str, Any] = field(default_factory=dict)
    init_from_data: InitHook | None = None  # (model, uint8 train images) → None, before training
    make_optimizer: OptimizerFactory | None = None


RECIPES: dict[str, Recipe] = {}


def register_recipe(recipe: Recipe) -> Recipe:
    """Add a recipe to the registry (names are unique)."""
    if recipe.name in RECIPES:
        raise ValueError(f"recipe {recipe.name!r} registered twice")
    from .config import option_fields

    unknown = set(recipe.defaults) - {name for name, _ in option_fields()}
    if unknown:
        raise ValueError(f"recipe {recipe.name!r} sets unknown RunConfig fields {sorted(unknown)}")
    RECIPES[recipe.name] = recipe
    return recipe


def get_recipe(name: str) -> Recipe:
    """The registered recipe ``name``, or a one-line error listing them."""
    if name not in RECIPES:
        raise CnnlabError(f"unknown recipe {name!r}: choose one of {', '.join(sorted(RECIPES))}")
    return RECIPES[name]


def recipe_of_model(model: str) -> Recipe | None:
    """The recipe a registered model names, if any (spec files and unknown names have none)."""
    from ..models.registry import is_spec_path, model_info

    if is_spec_path(model):
        return None
    try:
        info = model_info(model)
    except CnnlabError:  # unknown: creating the model reports it, with suggestions
        return None
    return get_recipe(info.recipe) if info.recipe else None


def recipe_hooks(name: str | None) -> Recipe | None:
    """The recipe whose hooks a run calls (the one its config was built from: ``RunConfig.recipe``)."""
    return get_recipe(name) if name else None


# ---- course-channels-last: the course recipe, with activations in NHWC ----------------------
register_recipe(Recipe(
    name="course-channels-last",
    description="the course recipe (fp32, Adam, batch 32) with channels_last activations: the same "
                "arithmetic up to rounding, 1.4-1.5x faster for inception10-cifar on the CPU",
    defaults=dict(channels_last=True),
))


# ---- fast: CIFAR-10 to 90% held-out accuracy in minutes on two CPU cores ---------------------
FAST_BATCH = 2000  # images per step
FAST_MUON_LR = 0.24  # Muon step for conv filters (scale-free: the update is orthogonalised)
FAST_MUON_MOMENTUM = 0.6
FAST_BIAS_LR = 0.053  # SGD lr of norm shifts and the stem bias, for the loss summed over a batch
FAST_HEAD_LR = 0.67  # SGD lr of the head, for the loss summed over a batch
FAST_DECAY_PER_STEP = 2e-6 * FAST_BATCH  # fraction of each SGD-trained weight decayed per step at full lr
FAST_STEM_BIAS_EPOCHS = 3 / 8  # fraction of the run during which the stem bias trains
FAST_EPOCHS = 8  # 90.04 ± 0.13% held-out (TTA, 3 seeds) in 4.2-5.0 min on 2 AVX512-BF16 EPYC cores (performance.md §0g)
FAST_SMALLEST_SIDE = 16  # progressive resizing from 16 px: 27% less time than 32 px throughout, -0.12 points
FAST_ROLES = (Role("stem.", FAST_BIAS_LR, FAST_STEM_BIAS_EPOCHS), Role("head.", FAST_HEAD_LR),
              Role("", FAST_BIAS_LR))


def init_network_from_data(model: nn.Module, images: torch.Tensor) -> None:
    """Call the network's own ``init_from_data(images)`` (unwrapping DDP)."""
    net = getattr(model, "module", model)
    init = getattr(net, "init_from_data", None)
    if init is None:
        raise CnnlabError(f"{type(net).__name__} has no init_from_data: this recipe needs a network that has")
    init(images)


def fast_optimizer(model: nn.Module, cfg: FitConfig) -> torch.optim.Optimizer:
    """Muon for conv filters; Nesterov SGD for the stem bias (first 3/8 of the run), norm shifts and the head."""
    return make_muon(getattr(model, "module", model), cfg.lr, cfg.momentum, cfg.batch_size, cfg.weight_decay,
                     FAST_ROLES)


register_recipe(Recipe(
    name="fast",
    description="whitened stem + Muon, batch 2000, label smoothing 0.2, shifts and alternating flips, "
                "progressive resizing from 16 px, "
                "bf16 (where the CPU or GPU computes it natively, else fp32) channels-last, flip test-time augmentation "
                "with shifts for the quarter of images it is least sure of, "
                "validation after the last epoch only (--val-every 1 for a curve: about 4.5 s an epoch on 2 cores)",
    defaults=dict(epochs=FAST_EPOCHS, batch_size=FAST_BATCH, optimizer="muon", lr=FAST_MUON_LR,
                  momentum=FAST_MUON_MOMENTUM, weight_decay=FAST_DECAY_PER_STEP / FAST_MUON_LR, schedule="linear", warmup_epochs=0.0,
                  label_smoothing=0.2, augment="shift-altflip", eval_batch_size=FAST_BATCH, precision="auto",
                  channels_last=True, tta="flip-shift-adaptive", progressive_resize=FAST_SMALLEST_SIDE, val_every=0),
    init_from_data=init_network_from_data,
    make_optimizer=fast_optimizer,
))

# ---- he2016-cifar: the CIFAR-10 schedule of He et al. 2016 §4.2 (resnet*-cifar, plain*-cifar) -----
register_recipe(Recipe(
    name="he2016-cifar",
    description="the paper's CIFAR-10 optimiser: SGD with classical momentum 0.9, lr 0.1, weight decay 1e-4, "
                "batch 128, 4-pixel crops and flips (its lr divisions at 32k and 48k steps are left to --schedule)",
    defaults=dict(optimizer="sgd", lr=0.1, momentum=0.9, nesterov=False, weight_decay=1e-4, batch_size=128,
                  augment="crop-flip"),
))

# ---- kim-2014: Kim (2014)'s training of his sentence CNN ---------------------------------------
register_recipe(Recipe(
    name="kim-2014",
    description="Kim 2014's training: Adadelta (rho 0.95, eps 1e-6, lr 1), batch 50, 25 epochs, validation on "
                "the dev split (else 10% of train), max-norm 3 on the output layer (the network's after_step)",
    defaults=dict(dataset="mr", optimizer="adadelta", lr=1.0, momentum=0.95, batch_size=50, epochs=25, val="dev"),
))

__all__ = ["RECIPES", "Recipe", "get_recipe", "recipe_hooks", "recipe_of_model", "register_recipe"]
