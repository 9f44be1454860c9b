"""One registry of named model factories: ``@register_model``, ``create_model``, ``list_models``.

Naming scheme: paper networks keep the paper's name (``vgg16``, ``resnet50``, ``lenet5``); networks
designed for 32x32 CIFAR inputs end in ``-cifar`` (the course's six: ``baseline-cifar`` ...
``resnet18-cifar``). A path ending in ``.cbapd`` is built from the CBAPD text spec.
Pretrained weights are registered with their model (``weights=``, records from ``models/weights.py``) and
loaded by ``create_model(name, pretrained=...)``.
"""
from __future__ import annotations

import ast
import collections.abc
import difflib
import fnmatch
import inspect
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal

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
    recipe: str | None = None  # training recipe whose defaults `cnnlab train` applies (runs/recipes.py)
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


def typed_options(name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` checked by ``check_options``, with text values (``--model-option KEY=VALUE``) converted to the
    type the factory declares for them: ``"true"`` → True for a bool, ``"0.3"`` → 0.3 for a float …"""
    reserved = [k for k in kwargs if k in (*COMMON_OPTIONS, "pretrained")]
    if reserved:
        raise CnnlabError(f"{reserved[0]} is not a model option: cnnlab sets it from the data and its own options "
                          "(--num-classes / --input for a summary, the dataset and --resize / --pretrained for a run)")
    check_options(name, kwargs)
    hints = option_types(name)
    return {k: parse_option(f"{name} option {k}", v, hints.get(k)) if isinstance(v, str) else v
            for k, v in kwargs.items()}


def option_types(name: str) -> dict[str, Any]:
    """The annotated type of each keyword ``create_model(name, ...)`` takes (those it can resolve)."""
    if is_spec_path(name):
        from ..spec import build, build_spec_file

        sources: list[Callable[..., Any]] = [build, build_spec_file]
    else:
        info = model_info(name)
        sources = [c for c in (info.options, info.factory) if c is not None]
    hints: dict[str, Any] = {}
    for fn in sources:
        target = fn.__init__ if inspect.isclass(fn) else fn
        try:
            hints = typing.get_type_hints(target) | hints
        except (NameError, TypeError):  # an annotation that does not resolve: that keyword stays text
            continue
    return hints


BOOLEAN_TEXT = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}


def parse_option(what: str, text: str, hint: Any) -> Any:
    """``text`` as a value of type ``hint`` (bool, int, float, a Literal's choices, X | None); one clear error."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is None or hint is str or hint is Any:
        return text
    if origin in (typing.Union, types.UnionType):
        if text.lower() == "none" and type(None) in args:
            return None
        for member in (a for a in args if a is not type(None)):
            try:
                return parse_option(what, text, member)
            except CnnlabError:
                continue
        raise CnnlabError(f"{what} cannot be {text!r} (it takes {hint})")
    if origin is Literal:
        if text not in args:
            raise CnnlabError(f"{what} must be one of {', '.join(map(str, args))} (got {text!r})")
        return text
    if hint is bool:
        if text.lower() not in BOOLEAN_TEXT:
            raise CnnlabError(f"{what} takes true or false, not {text!r}")
        return BOOLEAN_TEXT[text.lower()]
    if hint in (int, float):
        try:
            return hint(text)
        except ValueError:
            raise CnnlabError(f"{what} takes {'a whole number' if hint is int else 'a number'}, not {text!r}") from None
    if origin in (tuple, list, collections.abc.Sequence):
        return parse_sequence(what, text, hint)
    try:  # anything else: a Python literal such as {"a": 1}
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        raise CnnlabError(f"{what} takes {hint}, which {text!r} does not spell: set it from Python instead") from None


def parse_sequence(what: str, text: str, hint: Any) -> tuple | list:
    """``3,4,5`` (or ``(3, 4, 5)``, or a single ``3``) as a tuple or list of the hint's item type: kim-cnn's
    windows (``Sequence[int]``), dcnn's folding (``Sequence[bool]``: ``false,true``) …"""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    items = [t.strip() for t in text.strip().strip("()[]").split(",")]
    if items and not items[-1]:  # a trailing comma: (3,)
        items.pop()
    if not items or not all(items):
        raise CnnlabError(f"{what} takes comma-separated values such as 3,4,5, not {text!r}")
    fixed = origin is tuple and args and args[-1] is not Ellipsis
    if fixed and len(items) != len(args):
        raise CnnlabError(f"{what} takes {len(args)} comma-separated values, not {text!r}")
    kinds = args if fixed else [args[0] if args else None] * len(items)
    values = [parse_option(what, t, kind) for t, kind in zip(items, kinds)]
    return values if origin is list else tuple(values)


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


def input_too_small(error: RuntimeError, name: str, size: tuple[int, ...], fix: str) -> CnnlabError | None:
    """The one line for a network whose feature map shrinks to nothing on ``size`` images, (H, W), or sentences,
    (L,) (None for other errors)."""
    if "too small" not in str(error):
        return None
    shown = f"{size[0]}-token sentences" if len(size) == 1 else "x".join(map(str, size)) + " images"
    return CnnlabError(f"{name} cannot take {shown} (a feature map shrinks to nothing): {fix}")


def default_input_size(name: str) -> tuple[int, ...]:
    """(C, H, W) the named network (or spec file) was designed for; (L,) tokens for a text network."""
    if is_spec_path(name):
        from ..spec import load_spec_file

        return load_spec_file(Path(name)).input_size
    return model_info(name).input_size


def _ensure_loaded() -> None:
    """Import the model families so their ``@register_model`` decorators have run."""
    from . import _families  # noqa: F401  (import for side effect: registration)
