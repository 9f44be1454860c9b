"""Prediction: image files → the model's channels and input size → top-k classes with softmax probabilities.

Images are decoded with Pillow, converted to the model's channel count (L or RGB), resized to its input
size and scaled to [0, 1], as training saw them. A file that cannot be read is reported and skipped.
The same code serves a PyTorch checkpoint and an exported ONNX model (through onnxruntime).
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.files import read_error
from ..data.folder import DECODE_ERRORS, IMAGE_EXTENSIONS, Skipped, read_image
from ..errors import CnnlabError, first_line
from ..spec.build import MAX_ELEMENTS  # values one tensor may hold per input: the bound spec networks obey too
from .card import RunCard

ONNX_META_KEY = "cnnlab"  # ONNX metadata_props key holding the model description as JSON
REEXPORT = "export it again with `cnnlab export RUN_DIR --onnx`"  # the fix for any damaged or foreign ONNX file
Logits = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Prediction:
    """The top-k (class, probability) pairs of one image, most likely first."""

    path: str
    top: list[tuple[str, float]]


def image_files(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """Files as given; folders expanded to the image files under them (recursively, sorted)."""
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            files += sorted(p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                            and not any(part.startswith(".") for part in p.relative_to(item).parts))
        else:
            files.append(item)
    return files


def read_images(files: Sequence[Path], card: RunCard) -> tuple[torch.Tensor, list[Path], list[Skipped]]:
    """uint8 N×C×H×W of the readable files, those files, and the skipped ones with the reason."""
    mode = {1: "L", 3: "RGB"}.get(card.in_channels)
    if mode is None:
        raise CnnlabError(f"the model reads {card.in_channels}-channel images; only 1 (grayscale) or 3 (RGB) can be decoded")
    arrays, ok, skipped = [], [], []
    for path in files:
        try:
            arrays.append(read_image(str(path), card.input_size, mode))
            ok.append(path)
        except FileNotFoundError:
            skipped.append(Skipped(str(path), "no such file"))
        except DECODE_ERRORS as err:
            skipped.append(Skipped(str(path), f"not a readable image ({type(err).__name__}: {err})"))
    images = torch.from_numpy(np.stack(arrays)) if arrays else torch.empty(0, *card.input_shape, dtype=torch.uint8)
    return images, ok, skipped


def top_k(logits: torch.Tensor, classes: Sequence[str], k: int) -> list[list[tuple[str, float]]]:
    """Softmax over the logits, then the k most probable classes of each row."""
    probs = torch.softmax(logits.float(), dim=1)
    values, indices = probs.topk(min(k, probs.shape[1]), dim=1)
    return [[(classes[i], float(v)) for v, i in zip(vs, ix)] for vs, ix in zip(values.tolist(), indices.tolist())]


def predict_files(logits_of: Logits, card: RunCard, inputs: Sequence[str | os.PathLike], k: int = 3,
                  batch_size: int = 64) -> tuple[list[Prediction], list[Skipped]]:
    """Top-k predictions of every readable image among ``inputs``; an error only when none is readable."""
    files = image_files(inputs)
    images, ok, skipped = read_images(files, card)
    if not ok:
        raise CnnlabError(f"none of the {len(files)} input(s) could be read as an image"
                          + (f" (first: {skipped[0].path}: {skipped[0].reason})" if skipped else ""))
    logits = torch.cat([logits_of(images[i:i + batch_size].float().div_(255.0))
                        for i in range(0, len(images), batch_size)])
    return [Prediction(str(p), top) for p, top in zip(ok, top_k(logits, card.classes, k))], skipped


def sentence_ids(sentences: Sequence[str], card: RunCard) -> torch.Tensor:
    """Token ids of sentences as the run's training saw them: its tokenizer, its vocabulary (unknown → ``<unk>``)."""
    from ..data.text import encode, tokenize

    return encode([tokenize(s, card.text.tokenizer) for s in sentences], card.text.vocabulary)[0]


def read_sentences(path: Path) -> list[str]:
    """The non-blank lines of a UTF-8 text file, one sentence each."""
    from ..data.text import read_text, text_lines

    return [line.strip() for line in text_lines(read_text(Path(path))) if line.strip()]


def predict_sentences(logits_of: Logits, card: RunCard, sentences: Sequence[str], k: int = 3,
                      batch_size: int = 256) -> list[Prediction]:
    """Top-k predictions of each sentence (its text stands where an image's path would)."""
    if not card.text:
        raise CnnlabError("this model classifies images: give image files or folders, not sentences")
    if not sentences:
        raise CnnlabError('no sentences given: cnnlab predict RUN "a sentence" […] or --file SENTENCES.txt')
    logits = torch.cat([logits_of(sentence_ids(sentences[i:i + batch_size], card))
                        for i in range(0, len(sentences), batch_size)])
    return [Prediction(s, top) for s, top in zip(sentences, top_k(logits, card.classes, k))]


def torch_predictor(run: Path, which: str = "best") -> tuple[Logits, RunCard]:
    """Logits function and input description of a trained run directory or checkpoint."""
    from .run import load_trained

    if Path(run).suffix.lower() in IMAGE_EXTENSIONS and not Path(run).is_dir():
        raise CnnlabError(f"{run} is an image: give the run directory or checkpoint first "
                          "(cnnlab predict RUN_DIR IMAGE …), or an exported model with --onnx MODEL.onnx")
    trained = load_trained(run, which)

    @torch.inference_mode()
    def logits_of(x: torch.Tensor) -> torch.Tensor:
        return trained.model(x)

    return logits_of, trained.card


def import_onnxruntime():
    """onnxruntime, or a clear error naming the optional extra."""
    try:
        import onnxruntime
    except ImportError:
        raise CnnlabError("ONNX needs the optional extra: pip install 'cnnlab[onnx]' (onnx, onnxruntime)") from None
    return onnxruntime


def onnx_predictor(path: Path) -> tuple[Logits, RunCard]:
    """Logits function (onnxruntime, CPU) and input description of a model written by ``cnnlab export --onnx``."""
    ort = import_onnxruntime()
    if not Path(path).is_file():
        raise CnnlabError(f"no ONNX model at {path}")
    try:
        data = Path(path).read_bytes()  # read once: onnxruntime and ONNX's shape inference take the same bytes
    except OSError as e:
        raise read_error(Path(path), e, REEXPORT) from None
    try:
        session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types for bad files
        raise CnnlabError(f"{path} is not a loadable ONNX model ({first_line(e)})") from None
    try:
        meta = session.get_modelmeta().custom_metadata_map.get(ONNX_META_KEY)
    except UnicodeDecodeError:
        raise CnnlabError(f"{path}: its metadata is damaged (not UTF-8 text); {REEXPORT}") from None
    if meta is None:
        raise CnnlabError(f"{path} lacks cnnlab's model description (class names, input size): export it with "
                          "`cnnlab export RUN_DIR --onnx`")
    try:
        card = RunCard.from_dict(json.loads(meta), str(path))
    except ValueError:
        raise CnnlabError(f"{path}: its cnnlab model description is not valid JSON; {REEXPORT}") from None
    check_onnx_shapes(session, card, path)
    check_onnx_sizes(data, card, path)
    name = session.get_inputs()[0].name

    def logits_of(x: torch.Tensor) -> torch.Tensor:
        try:
            return torch.from_numpy(session.run(None, {name: x.numpy()})[0])
        except Exception as e:  # onnxruntime's own types (InvalidArgument, Fail, RuntimeException)
            raise CnnlabError(f"{path} failed on a {'x'.join(map(str, x.shape[1:]))} input ({first_line(e)}): it is "
                              f"damaged or not the network its description names; {REEXPORT}") from None

    return logits_of, card


def check_onnx_shapes(session, card: RunCard, path: Path) -> None:
    """Refuse an ONNX model whose input or output does not have the shape its cnnlab description states (a text
    network's input is batch × length, of any length)."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    shape = _dims(inputs[0].shape)[1:] if len(inputs) == 1 else None
    input_fits = shape is not None and (len(shape) == 1 if card.text else shape == list(card.input_shape))
    fits = input_fits and len(outputs) == 1 and _dims(outputs[0].shape)[1:] in ([card.num_classes], [None])
    if not fits:
        described = "sentences of token ids" if card.text else f"{'x'.join(map(str, card.input_shape))} images"
        raise CnnlabError(f"{path}: its network (inputs {[i.shape for i in inputs]}, outputs "
                          f"{[o.shape for o in outputs]}) does not match its cnnlab description "
                          f"({described}, {card.num_classes} classes); {REEXPORT}")




def check_onnx_sizes(data: bytes, card: RunCard, path: Path) -> None:
    """Refuse a model whose tensors for one input would be absurdly large or negative (a damaged pad or reshape
    constant, say) before onnxruntime tries to allocate or compute them: ONNX's own shape inference, constants
    propagated, on a batch of one (one text example of 64 tokens). A size it cannot work out is not checked."""
    import onnx
    from onnx import shape_inference

    try:
        model = onnx.load_from_string(data)
        first = model.graph.input[0].type.tensor_type.shape.dim
        for dim, size in zip(first, (1, 64) if card.text else (1,)):
            dim.dim_value = size
        inferred = shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    except Exception as e:  # onnx raises its own types (ValidationError, InferenceError, DecodeError)
        raise CnnlabError(f"{path}: ONNX cannot work out its tensors' shapes ({first_line(e)}); {REEXPORT}") from None
    for info in (*inferred.graph.value_info, *inferred.graph.output):
        dims = [d.dim_value if d.HasField("dim_value") else None for d in info.type.tensor_type.shape.dim]
        elements = math.prod(d for d in dims if d is not None)
        if elements > MAX_ELEMENTS or any(d < 0 for d in dims if d is not None):
            raise CnnlabError(f"{path}: its tensor {info.name!r} would be {dims} for one input, which no "
                              f"network of cnnlab makes (damaged?); {REEXPORT}")


def _dims(shape: Sequence) -> list[int | None]:
    """An ONNX shape with its symbolic dimensions (the batch, say) as None."""
    return [d if isinstance(d, int) else None for d in shape]


def format_prediction(p: Prediction, quoted: bool = False) -> str:
    """``path  7 0.912  1 0.050  2 0.010``: one line per image (a sentence is written as a JSON string)."""
    return (json.dumps(p.path) if quoted else p.path) + "  " + "  ".join(f"{name} {prob:.3f}" for name, prob in p.top)
