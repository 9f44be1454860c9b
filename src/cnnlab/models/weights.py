"""Pretrained weights as data: a ``Weights`` record per published file, declared beside its network's factory.

The facts (URL, parameter count, input transforms, accuracy) are torchvision's, written as literals from
its weight enums (``torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url`` / ``.meta``, torchvision 0.29)
instead of being read from torchvision at lookup time, because cnnlab's record must say what *cnnlab's*
network needs (its factory keywords; GoogLeNet's input scaling, which torchvision's model applies inside
and cnnlab's does not) and because a torchvision upgrade must not change silently which file a run starts
from (torchvision moved resnet50's DEFAULT from V1 to V2). tests/models/test_weights.py compares every literal
with the installed enums, which keeps them honest.

Files live in torch.hub's cache (``torch.hub.get_dir()/checkpoints``) and are checked against the sha256
prefix their name carries whenever they are used, cached or fresh (torch.hub checks only when it downloads).
"""
from __future__ import annotations

import hashlib
import http.client
import os
import re
import urllib.error
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CnnlabError
from .registry import is_spec_path, list_models, model_info

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_ALIAS = "imagenet"  # pretrained="imagenet" (or True): the model's default entry, its first
TORCHVISION_URL = "https://download.pytorch.org/models/"  # torchvision's download host
HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,})\.[a-z]+$")  # torchvision's "<stem>-<sha256 prefix>.pth"
TORCHVISION_LAYOUT = (("variant", "torchvision"),)  # alexnet's and googlenet's factory keywords for these files
RUN_CHECKPOINTS = ("best.pt", "last.pt")  # a run directory's weights, in order of preference
PretrainedArg = bool | str | os.PathLike | None  # create_model's pretrained=


@dataclass(frozen=True)
class Transforms:
    """How an image is prepared for the weights: resize the short side, centre-crop, normalise a [0, 1] image."""

    resize: int = 256
    crop: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"


@dataclass(frozen=True)
class Weights:
    """One published weights file of a network: where it is, what it needs, what it scores."""

    name: str  # torchvision's member name: IMAGENET1K_V1, IMAGENET1K_V2, ...
    url: str  # its file name ends in the first hex digits of the file's sha256
    num_params: int  # parameters of the network these weights fill (without optional heads)
    acc1: float | None  # published ImageNet-1K top-1 (%, single crop); None: not a classifier's weights
    acc5: float | None
    num_classes: int | None = 1000  # categories of the file's classifier; None: it has no trained classifier
    transforms: Transforms = Transforms()
    model_kwargs: tuple[tuple[str, Any], ...] = ()  # factory keywords giving the layout the file's keys fit
    fresh: tuple[str, ...] = ()  # modules the file holds no trained values for: always left as initialised

    def __post_init__(self) -> None:
        if not HASH_IN_NAME.search(self.file_name):
            raise ValueError(f"weights file name {self.file_name!r} carries no sha256 prefix (name-<hex>.pth)")

    @property
    def file_name(self) -> str:
        """The file's name, as it is kept in torch.hub's cache."""
        return self.url.rsplit("/", 1)[-1]

    @property
    def hash_prefix(self) -> str:
        """The leading hex digits of the file's sha256, from its name."""
        return HASH_IN_NAME.search(self.file_name).group(1)  # type: ignore[union-attr]

    def cache_path(self) -> Path:
        """Where torch.hub keeps the file (``$TORCH_HOME/hub/checkpoints``)."""
        return Path(torch.hub.get_dir()) / "checkpoints" / self.file_name


# ---- files -------------------------------------------------------------------------------------
def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path: Path, weights: Weights) -> None:
    """Refuse a file whose sha256 does not start with the prefix its entry's name carries."""
    if not file_sha256(path).startswith(weights.hash_prefix):
        raise CnnlabError(f"{path} is not the published {weights.file_name} (its sha256 does not start with "
                          f"{weights.hash_prefix}; a corrupt or different file): delete it and run again to "
                          f"fetch {weights.url}")


def download(weights: Weights, path: Path, progress: bool = True) -> None:
    """Fetch an entry's file to ``path``: torch.hub writes a temporary name and renames it after the hash check."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(weights.url, str(path), hash_prefix=weights.hash_prefix, progress=progress)
    except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError) as e:
        reason = getattr(e, "reason", e)
        raise CnnlabError(
            f"cannot download {weights.url} ({reason}). Offline? Fetch that file elsewhere and put it in "
            f"{path.parent} as {path.name} (torch's hub cache, $TORCH_HOME/hub/checkpoints), or pass its path "
            f"as pretrained (--pretrained PATH/TO/{path.name})") from None
    except RuntimeError as e:  # torch.hub's hash check: the bytes served are not the published file
        raise CnnlabError(f"the file downloaded from {weights.url} is not the published {weights.file_name} "
                          f"({e}); nothing was kept: try again later") from None


def read_state_file(path: Path) -> dict[str, torch.Tensor]:
    """A local file's tensors: a plain state dict, or a cnnlab checkpoint's ``"model"`` (weights only, no code)."""
    from ..engine.checkpoint import check_state_dict, read_torch_file

    fix = "pass a state dict saved with torch.save (a .pth file) or a cnnlab run directory"
    state = read_torch_file(path, fix=fix)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    return check_state_dict(state, str(path), fix)


def run_checkpoint(directory: Path) -> Path:
    """A cnnlab run directory's weights: best.pt (its best validation epoch), else last.pt."""
    for name in RUN_CHECKPOINTS:
        if (directory / name).is_file():
            return directory / name
    raise CnnlabError(f"{directory} holds no {' or '.join(RUN_CHECKPOINTS)}: pass a cnnlab run directory, "
                      "a checkpoint or a .pth state dict")


# ---- what pretrained= names ----------------------------------------------------------------------
@dataclass(frozen=True)
class Pretrained:
    """A resolved ``pretrained=``: a declared entry (its file in torch.hub's cache unless ``path`` is given),
    or a local file or run directory."""

    model: str
    weights: Weights | None = None  # the declared entry: its hash, factory keywords and transforms apply
    path: Path | None = None  # a local file or run directory; None: the entry's cached (or downloaded) file

    @property
    def model_kwargs(self) -> dict[str, Any]:
        """Factory keywords the weights need (an entry's layout; none for a local file)."""
        return dict(self.weights.model_kwargs) if self.weights else {}

    def file(self, progress: bool = True) -> Path:
        """The file to read: an entry's is hash-checked (and downloaded into the cache when absent)."""
        if self.path is not None and not self.path.exists():
            raise CnnlabError(f"no weights file or run directory at {self.path}")
        if self.weights is None:
            return run_checkpoint(self.path) if self.path.is_dir() else self.path  # type: ignore[union-attr]
        path = self.path or self.weights.cache_path()
        if self.path is None and not path.exists():
            download(self.weights, path, progress)  # hash-checked while it downloads
        else:
            verify(path, self.weights)
        return path

    def describe(self, path: Path) -> str:
        """Where the weights came from, for messages."""
        return f"{self.model} {self.weights.name} ({path})" if self.weights else str(path)


def declared_weights(model: str) -> tuple[Weights, ...]:
    """The entries registered with a model (none for a .cbapd spec file)."""
    return () if is_spec_path(model) else model_info(model).weights


def resolve_pretrained(model: str, pretrained: PretrainedArg) -> Pretrained | None:
    """What ``pretrained=`` names for ``model`` (None for False / None / ""), without reading any file."""
    if not pretrained:
        return None
    if pretrained is True:
        pretrained = IMAGENET_ALIAS
    if not isinstance(pretrained, (str, os.PathLike)):
        raise CnnlabError(f"pretrained must be True, a weights name or a path, not {pretrained!r}")
    text = os.fspath(pretrained)
    key = IMAGENET_ALIAS if text.lower() == IMAGENET_ALIAS else text
    entries = declared_weights(model)
    named = {w.name: w for w in entries} | ({IMAGENET_ALIAS: entries[0]} if entries else {})
    if key in named:
        return Pretrained(model, named[key])
    path = Path(text).expanduser()
    if key != IMAGENET_ALIAS and (path.exists() or path.suffix in (".pth", ".pt") or len(path.parts) > 1):
        return Pretrained(model, next((w for w in entries if w.file_name == path.name), None), path)
    raise weights_error(model, text, entries)


def weights_error(model: str, name: str, entries: Sequence[Weights]) -> CnnlabError:
    """The error for a weights name the model has no entry of: its names, or the models that have weights."""
    if not entries:
        return CnnlabError(f"{model} has no pretrained weights (the models that have them: "
                           f"{', '.join(list_models(pretrained=True))}); pass a path to a .pth state dict or a "
                           "cnnlab run directory instead")
    return CnnlabError(f"unknown weights {name!r} for {model}: use {IMAGENET_ALIAS}, "
                       f"{', '.join(w.name for w in entries)}, or a path to a .pth file or a cnnlab run directory")


def merge_model_kwargs(source: Pretrained | None, kwargs: dict[str, Any] | None) -> dict[str, Any]:
    """The user's factory keywords plus those the weights' layout needs; a conflict is an error."""
    merged = dict(kwargs or {})
    for key, value in (source.model_kwargs if source else {}).items():
        if merged.setdefault(key, value) != value:
            raise CnnlabError(f"pretrained {source.model} weights need {key}={value!r}, not {merged[key]!r}")
    return merged


# ---- loading -----------------------------------------------------------------------------------
def class_score_keys(model: nn.Module) -> set[str]:
    """Parameter names of the layers giving class scores: each nn.Linear with ``model.num_classes`` outputs
    (the classifier, and GoogLeNet's auxiliary ones)."""
    n = getattr(model, "num_classes", None)
    return {f"{name}.{p}" for name, m in model.named_modules() if isinstance(m, nn.Linear) and m.out_features == n
            for p, _ in m.named_parameters(recurse=False)}


def keys_left_fresh(model: nn.Module, state: dict[str, torch.Tensor], weights: Weights | None) -> set[str]:
    """Keys that keep their initial values: class-score layers the file sizes for another number of classes
    (or lacks), and the modules an entry declares untrained."""
    own = model.state_dict()
    heads = {k for k in class_score_keys(model) if k not in state or state[k].shape != own[k].shape}
    untrained = tuple(weights.fresh if weights else ())
    return heads | {k for k in own if any(k == m or k.startswith(m + ".") for m in untrained)}


def load_matching(model: nn.Module, state: dict[str, torch.Tensor], source: str, fresh: Collection[str] = ()) -> None:
    """Copy ``state``'s tensors into ``model`` by name, except the ``fresh`` keys. Entries the model lacks
    (a removed top, GoogLeNet's auxiliary heads) are ignored; any other missing or mis-shaped key is an error."""
    own = {k: v for k, v in model.state_dict().items() if k not in fresh}
    missing = [k for k in own if k not in state]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
             if k in state and state[k].shape != v.shape]
    if missing or wrong:
        first = f"first missing: {missing[0]}" if missing else f"first mismatch: {wrong[0]}"
        raise CnnlabError(f"{source} does not fit this network ({len(missing)} missing, {len(wrong)} of the wrong "
                          f"shape; {first})")
    model.load_state_dict({k: state[k] for k in own}, strict=False)


def load_pretrained_state(model: nn.Module, source: Pretrained, progress: bool = True) -> str:
    """Fill ``model`` from the weights ``source`` names (see ``keys_left_fresh``); returns where they came from."""
    path = source.file(progress)
    state = read_state_file(path)
    label = source.describe(path)
    load_matching(model, state, label, keys_left_fresh(model, state, source.weights))
    return label
