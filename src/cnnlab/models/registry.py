"""One registry of named model factories: ``@register_model``, ``create_model``, ``list_models``.

Naming scheme: paper networks keep the paper's name (``vgg16``, ``resnet50``, ``lenet5``); networks
designed for 32x32 CIFAR inputs end in ``-cifar`` (the course's six: ``baseline-cifar`` ...
``resnet18-cifar``). A path ending in ``.cbapd`` is built from the CBAPD text spec.
Pretrained weights are registered with their model (``weights=``, records from ``models/weights.py``) and
loaded by ``create_model(name, pretrained=...)``.
"""
from __future__ import annotations

import difflib
import fnmatch
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from torch import nn

from ..errors import CnnlabError

if TYPE_CHECKING:
    from .weights import PretrainedArg, Weights

Factory = Callable[..., nn.Module]
COMMON_OPTIONS = ("num_classes", "in_channels", "input_size")  # what create_model passes every factory


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about a name: its factory and its natural input."""

    name: str
    factory: Factory
    family: str
    input_size: tuple[int, ...] = (3, 224, 224)  # C, H, W the network was designed for; (L,) tokens for text
    num_classes: int = 1000
    source: str = ""  # paper or course reference
    tags: tuple[str, ...] = field(default_factory=tuple)
    recipe: str | None = None  # training recipe whose defaults `cnnlab train` applies (engine/recipes.py)
    weights: tuple[Weights, ...] = ()  # pretrained weights it can load; the first is the default
    options: Callable[..., Any] | None = None  # what the factory forwards its extra keywords to


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(
    name: str | None = None,
    *,
    family: str,
    input_size: tuple[int, int, int] = (3, 224, 224),
    num_classes: int = 1000,
    source: str = "",
    tags: tuple[str, ...] = (),
    recipe: str | None = None,
    weights: tuple[Weights, ...] = (),
    options: Callable[..., Any] | None = None,
) -> Callable[[Factory], Factory]:
    """Register ``fn(num_classes=, in_channels=, input_size=, **kw) -> nn.Module`` under a name.

    ``weights``: the pretrained files the network loads, its default first. ``options``: the class (or
    function) ``fn`` passes ``**kw`` to, whose keyword parameters are then the options ``create_model``
    accepts; a factory with ``**kw`` and no ``options`` has its extra keywords passed on unchecked.
    """

    def deco(fn: Factory) -> Factory:
        key = name or fn.__name__.replace("_", "-")
        if key in _REGISTRY:
            raise ValueError(f"model name {key!r} registered twice")
        _REGISTRY[key] = ModelInfo(key, fn, family, input_size, num_classes, source, tags, recipe, weights, options)
        return fn

    return deco


def list_models(pattern: str = "*", family: str | None = None, pretrained: bool = False) -> list[str]:
    """Registered names matching a shell-style wildcard (``"resnet*"``), sorted; with ``pretrained``, only
    those that have weights."""
    _ensure_loaded()
    return sorted(
        n for n, info in _REGISTRY.items()
        if fnmatch.fnmatch(n, pattern) and (family is None or info.family == family)
        and (info.weights or not pretrained)
    )


def model_info(name: str) -> ModelInfo:
    """The registry entry for ``name``; a clear error with suggestions when it is unknown."""
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, _REGISTRY, n=3, cutoff=0.5)
        close += [n for n in _REGISTRY if n.startswith(name + "-") and n not in close]
        hint = f" Did you mean {', '.join(repr(c) for c in close[:3])}?" if close else ""
        raise CnnlabError(
            f"unknown model {name!r}.{hint} Run `cnnlab models` to list them, "
            "or pass a path to a .cbapd spec file."
        ) from None


def is_spec_path(name: str) -> bool:
    """True when ``name`` names a CBAPD spec file rather than a registered model."""
    return name.endswith(".cbapd")


def create_model(
    name: str,
    num_classes: int | None = None,
    in_channels: int | None = None,
    input_size: tuple[int, int] | None = None,
    pretrained: PretrainedArg = False,
    **kwargs: Any,
) -> nn.Module:
    """Build a network by registered name or ``.cbapd`` path; unset arguments take its defaults.

    ``input_size`` (H, W) matters only for networks whose dense head depends on it (Flatten → Dense).
    ``pretrained`` fills the network after building it: ``True`` or ``"imagenet"`` loads the model's default
    entry of ``model_info(name).weights``, a name (``"IMAGENET1K_V2"``) that entry, and a path a ``.pth`` state
    dict, a cnnlab checkpoint or a run directory (its best.pt, else last.pt). An entry also sets the factory
    keywords its layout needs (``variant="torchvision"`` for alexnet and googlenet), is downloaded into
    torch.hub's cache and is hash-checked each time it is used. With a ``num_classes`` other than the
    weights' the classifier stays freshly initialised and everything else loads (timm's behaviour).
    """
    from .weights import load_pretrained_state, merge_model_kwargs, resolve_pretrained

    check_options(name, kwargs)
    source = resolve_pretrained(name, pretrained)
    model = _build(name, num_classes, in_channels, input_size, merge_model_kwargs(source, kwargs))
    if source is not None:
        load_pretrained_state(model, source)
    return model


def _build(name: str, num_classes: int | None, in_channels: int | None, input_size: tuple[int, int] | None,
           kwargs: dict[str, Any]) -> nn.Module:
    """The freshly initialised network of a registered name or spec file."""
    if is_spec_path(name):
        from ..spec import build_spec_file

        return build_spec_file(
            Path(name), num_classes=num_classes, in_channels=in_channels, input_size=input_size, **kwargs
        )
    info = model_info(name)
    c, size = (1, info.input_size) if is_text_model(name) else (info.input_size[0], info.input_size[1:])
    return info.factory(
        num_classes=num_classes if num_classes is not None else info.num_classes,
        in_channels=in_channels if in_channels is not None else c,
        input_size=tuple(input_size) if input_size is not None else size,
        **kwargs,
    )


def is_text_model(name: str) -> bool:
    """True for a registered network over token ids (its input size is a sentence length, ``(L,)``)."""
    return not is_spec_path(name) and len(model_info(name).input_size) == 1


def check_options(name: str, kwargs: dict[str, Any]) -> None:
    """Refuse a keyword the network does not take, naming those it does."""
    accepted = accepted_options(name)
    unknown = [k for k in kwargs if accepted is not None and k not in accepted]
    if unknown:
        s = "s" if len(unknown) > 1 else ""
        raise CnnlabError(f"{name} takes no option{s} {', '.join(map(repr, unknown))} "
                          f"(it takes: {', '.join(accepted)})")


def accepted_options(name: str) -> tuple[str, ...] | None:
    """Keywords ``create_model(name, ...)`` takes, read from the signatures of its factory and of what the
    factory forwards ``**kw`` to; None when a factory forwards them somewhere undeclared."""
    if is_spec_path(name):
        from ..spec import build, build_spec_file

        factory, options = build_spec_file, build
    else:
        info = model_info(name)
        factory, options = info.factory, info.options
    own, forwards = keyword_parameters(factory)
    if forwards and options is None:
        return None
    extra = [p for p in keyword_parameters(options)[0] if p not in COMMON_OPTIONS] if forwards else []
    return (*extra, "pretrained", *(p for p in own if p not in extra))


def keyword_parameters(fn: Callable[..., Any]) -> tuple[list[str], bool]:
    """Names ``fn`` can take by keyword with a default (or keyword-only), and whether it takes ``**kwargs``."""
    params = inspect.signature(fn).parameters.values()
    named = [p.name for p in params if p.kind is p.KEYWORD_ONLY
             or (p.kind is p.POSITIONAL_OR_KEYWORD and p.default is not p.empty)]
    return named, any(p.kind is p.VAR_KEYWORD for p in params)


def default_input_size(name: str) -> tuple[int, ...]:
    """(C, H, W) the named network (or spec file) was designed for; (L,) tokens for a text network."""
    if is_spec_path(name):
        from ..spec import load_spec_file

        return load_spec_file(Path(name)).input_size
    return model_info(name).input_size


def _ensure_loaded() -> None:
    """Import the model families so their ``@register_model`` decorators have run."""
    from . import _families  # noqa: F401  (import for side effect: registration)
