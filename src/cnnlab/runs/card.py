"""RunCard: what a trained model is — the network, its input, its classes — stored with its weights.

Every checkpoint holds one under ``"card"``; exports carry it too (safetensors metadata, the ONNX
``cnnlab`` metadata entry), so a model rebuilds and predicts without its dataset. Checkpoints written
before the card existed kept the same keys at their top level; ``RunCard.from_checkpoint`` reads
both. A missing or ill-typed field is one error naming the file and the field.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import CnnlabError

TRANSFER_KEYS = {"hidden": list, "pooling": str, "freeze": bool}


@dataclass(frozen=True)
class Preprocess:
    """How the run's images were prepared before the network saw them."""

    rgb: bool = False
    resize: int | None = None
    label_mode: str = "fine"


@dataclass(frozen=True)
class TextInput:
    """How a text model's sentences become token ids: its vocabulary (id = position; 0 pads, 1 is unknown) and
    the tokenizer that splits them (``data/text.py TOKENIZERS``)."""

    vocabulary: tuple[str, ...]
    tokenizer: str = "kim"


@dataclass(frozen=True)
class RunCard:
    """The network (registered name or spec path, factory kwargs, transfer head), its input and its classes."""

    model_name: str
    num_classes: int
    in_channels: int
    input_size: tuple[int, ...]  # (H, W); (L,) tokens — the longest training sentence — for a text model
    classes: tuple[str, ...]
    dataset: str = ""
    model_kwargs: dict = field(default_factory=dict)
    transfer: dict | None = None  # models.transfer.transfer_meta: hidden widths, pooling, freeze, normalize
    preprocess: Preprocess = field(default_factory=Preprocess)
    text: TextInput | None = None  # set for a network over token ids

    @property
    def input_shape(self) -> tuple[int, ...]:
        """(C, H, W) of one input image; (L,) of one sentence's token ids."""
        return tuple(self.input_size) if self.text else (self.in_channels, *self.input_size)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists, not tuples): what checkpoints and export metadata store."""
        d = asdict(self)
        d["input_size"], d["classes"] = list(self.input_size), list(self.classes)
        if self.text:
            d["text"]["vocabulary"] = list(self.text.vocabulary)
        return d

    @classmethod
    def from_dict(cls, d: Any, source: str = "the model description") -> "RunCard":
        """A card from stored data; one CnnlabError naming ``source`` and the field when something is off."""
        if not isinstance(d, dict):
            raise _bad(source, "the model description", "is not a mapping")
        try:
            card = cls(
                model_name=_typed(d, "model_name", str, source),
                num_classes=_count(d, "num_classes", source),
                in_channels=_count(d, "in_channels", source),
                input_size=_size(d, source),
                classes=_classes(d, source),
                dataset=str(d.get("dataset") or ""),
                model_kwargs=_optional(d, "model_kwargs", dict, source) or {},
                transfer=_transfer(d, source),
                preprocess=_preprocess(d, source),
                text=_text(d, source),
            )
        except KeyError as e:
            raise _bad(source, e.args[0], "is missing") from None
        if len(card.classes) != card.num_classes:
            raise _bad(source, "classes", f"names {len(card.classes)} classes for {card.num_classes} outputs")
        return card

    @classmethod
    def from_checkpoint(cls, ckpt: dict, source: str) -> "RunCard":
        """The card of a checkpoint: under ``"card"``, or at the top level in checkpoints from before the card."""
        if "card" in ckpt:
            return cls.from_dict(ckpt["card"], source)
        if "model_name" not in ckpt:
            raise CnnlabError(f"{source} lacks the model description; it was not written by `cnnlab train`")
        return cls.from_dict(ckpt, source)


def _bad(source: str, name: str, what: str) -> CnnlabError:
    return CnnlabError(f"{source}: {name} {what}; the file is damaged or was not written by cnnlab. "
                       "Use another checkpoint, or re-train.")


def _typed(d: dict, key: str, kind: type, source: str) -> Any:
    value = d[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise _bad(source, key, f"must be a {kind.__name__} (got {type(value).__name__})")
    return value


def _optional(d: dict, key: str, kind: type, source: str) -> Any:
    return None if d.get(key) is None else _typed(d, key, kind, source)


def _count(d: dict, key: str, source: str) -> int:
    value = _typed(d, key, int, source)
    if value < 1:
        raise _bad(source, key, f"must be at least 1 (got {value})")
    return value


def _size(d: dict, source: str) -> tuple[int, ...]:
    value = d["input_size"]
    dims = 1 if d.get("text") else 2
    if (not isinstance(value, (list, tuple)) or len(value) != dims
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)):
        raise _bad(source, "input_size", f"must be {'one positive whole number' if dims == 1 else 'two positive whole numbers'}"
                   f" (got {value!r})")
    return tuple(int(v) for v in value)


def _text(d: dict, source: str) -> TextInput | None:
    spec = _optional(d, "text", dict, source)
    if spec is None:
        return None
    words = spec.get("vocabulary")
    if not isinstance(words, (list, tuple)) or len(words) < 2 or not all(isinstance(w, str) for w in words):
        raise _bad(source, "text.vocabulary", "must be a list of at least two words (padding, unknown)")
    return TextInput(tuple(words), str(spec.get("tokenizer", "kim")))


def _classes(d: dict, source: str) -> tuple[str, ...]:
    value = d["classes"]
    if not isinstance(value, (list, tuple)) or not all(isinstance(c, str) for c in value):
        raise _bad(source, "classes", "must be a list of class names")
    return tuple(value)


def _transfer(d: dict, source: str) -> dict | None:
    spec = _optional(d, "transfer", dict, source)
    if spec is None:
        return None
    for key, kind in TRANSFER_KEYS.items():
        if not isinstance(spec.get(key), kind):
            raise _bad(source, f"transfer.{key}", "is missing or of the wrong type")
    return spec


def _preprocess(d: dict, source: str) -> Preprocess:
    spec = _optional(d, "preprocess", dict, source) or {}
    resize = spec.get("resize")
    if resize is not None and (not isinstance(resize, int) or resize < 1):
        raise _bad(source, "preprocess.resize", f"must be a positive whole number (got {resize!r})")
    return Preprocess(bool(spec.get("rgb", False)), resize, str(spec.get("label_mode", "fine")))


__all__ = ["Preprocess", "RunCard", "TextInput"]
