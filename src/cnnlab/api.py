"""The public functions behind every command: ``cnnlab.train``, ``evaluate``, ``predict``, ``summary``, ``export``,
``plot``, ``show``, ``compare``, ``cross_validate``, ``ngrams``, ``visualize``, ``explainer``, ``import_keras``.

Each takes the CLI command's arguments as keywords (long options with underscores: ``--batch-size`` →
``batch_size``) and returns what the command prints. The CLI parses, calls one of these and prints —
nothing else — so a run started from Python and one started from the shell are the same program.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import CnnlabError

if TYPE_CHECKING:
    from .engine.callbacks import Callback

PathLike = str | os.PathLike
_announced = False  # the CPU-settings line is printed once per process


def run_config(model: str, options: dict[str, Any]):
    """The RunConfig of ``model`` with ``options`` (RunConfig field names; None = unset, as on the CLI)."""
    from .runs.config import RunConfig, option_fields

    known = {name for name, _ in option_fields()}
    unknown = sorted(set(options) - known)
    if unknown:
        raise CnnlabError(f"unknown training option(s) {', '.join(unknown)}: the options are {', '.join(sorted(known))}")
    return RunConfig(model=model, **{k: v for k, v in options.items() if v is not None})


def _announce_cpu_tuning() -> None:
    """Apply cnnlab's CPU settings (what can still be applied) and say, once per process, what they are."""
    global _announced
    from .cpu import tune_cpu
    from .engine import distributed as D

    tuning = tune_cpu()
    if not _announced and D.is_main():
        print(tuning.describe(), file=sys.stderr, flush=True)
    _announced = True


def check_model_name(name: str) -> None:
    """A one-line error (with suggestions) unless ``name`` is a registered model or an existing .cbapd file."""
    from .models.registry import is_spec_path, model_info

    if is_spec_path(name):
        if not Path(name).is_file():
            raise CnnlabError(f"spec file not found: {name} (hint: check the path; specs end in .cbapd)")
    else:
        model_info(name)


def train(model: str, *, run_dir: PathLike | None = None, fresh: bool = False, progress: bool = True,
          callbacks: Sequence[Callback] = (), **options: Any):
    """Train (or resume) ``model`` — a registered name or a .cbapd file — and return its History.

    ``options`` are ``cnnlab train``'s (``dataset="cifar10", epochs=4, batch_size=64``); those left
    out come from the model's recipe, else the course's defaults. ``run_dir`` defaults to
    runs/MODEL-DATASET; running again resumes there unless ``fresh``. ``callbacks`` are Keras'
    (``cnnlab.callbacks``: ``[EarlyStopping(patience=2), TensorBoard()]``).
    """
    from .runs.run import train_run

    check_model_name(model)
    cfg = run_config(model, options)
    _announce_cpu_tuning()
    return train_run(cfg, Path(run_dir) if run_dir else None, fresh=fresh, progress=progress,
                     callbacks=list(callbacks or ()))


def evaluate(run: PathLike, *, split: str | None = None, which: str = "best", data_dir: str | None = None,
             confusion: PathLike | None = None):
    """Loss, accuracy, per-class accuracy and confusion matrix of a trained run on one split (an ``EvalResult``).

    ``split`` (train, val, test, dev) defaults to test — fold K of a ``--fold`` run —, or for a dataset without a test
    split (an image folder, MR) to the run's validation examples (``val``); ``result.split`` says which was used.

    With ``confusion`` the matrix is also drawn to that PNG (``result.confusion_png``).
    """
    from dataclasses import replace

    from .runs.run import evaluate_run

    result = evaluate_run(Path(run), split=split, data_dir=data_dir, which=which)
    if confusion is None:
        return result
    from .explain.plots import plot_confusion_matrix

    return replace(result, confusion_png=plot_confusion_matrix(result.confusion.numpy(), result.classes, confusion))


@dataclass(frozen=True)
class Predictions:
    """The top-k classes of every readable image (or sentence), and the inputs skipped with the reason."""

    predictions: list
    skipped: list
    sentences: bool = False  # the inputs were sentences (a text model), not image files

    def __iter__(self):
        return iter(self.predictions)


def predict(run: PathLike | None = None, images: Sequence[PathLike] = (), *, onnx: PathLike | None = None,
            top_k: int = 3, which: str = "best", file: PathLike | None = None) -> Predictions:
    """Top-k classes with probabilities for image files and folders, from a run (or an exported ``onnx`` model).

    For a text model ``images`` are sentences, and ``file`` a text file of one sentence a line.
    """
    from .runs.predict import onnx_predictor, predict_files, predict_sentences, read_sentences, torch_predictor

    if (run is None) == (onnx is None):
        raise CnnlabError("predict needs a run directory or checkpoint, or an exported model with --onnx (one of them)")
    logits_of, card = onnx_predictor(Path(onnx)) if onnx else torch_predictor(Path(run), which)
    if card.text:
        sentences = [*map(str, images), *(read_sentences(Path(file)) if file else [])]
        return Predictions(predict_sentences(logits_of, card, sentences, top_k), [], sentences=True)
    if file:
        raise CnnlabError("--file holds sentences for a text model; this model classifies images: give image files")
    if not images:
        raise CnnlabError("no images given: cnnlab predict RUN_DIR|CHECKPOINT IMAGE [IMAGE|FOLDER …]")
    return Predictions(*predict_files(logits_of, card, list(images), top_k))


def summary(model: str, *, input: tuple[int, ...] | None = None, num_classes: int | None = None,
            depth: int | None = None, model_kwargs: dict[str, Any] | None = None):
    """The Keras-style table of a network (a ``Summary``; print it): shapes, parameters, MACs and FLOPs, receptive
    field. ``input`` is (C, H, W), or (L,) tokens for a text network (its receptive field is then in tokens).
    ``depth`` collapses modules below it; ``model_kwargs`` are the factory's keywords (text values are typed by it:
    ``{"stride_in_1x1": "true"}``, ``{"windows": "3,4,5"}``)."""
    from .explain.summary import summarize
    from .models import create_model, default_input_size, is_text_model
    from .models.registry import input_too_small, typed_options

    shape = tuple(input or default_input_size(model))
    kwargs = typed_options(model, model_kwargs or {})
    text = is_text_model(model)
    if text and len(shape) != 1:
        raise CnnlabError(f"{model} reads token ids: give --input as a sentence length L, e.g. --input 56")
    if not text and len(shape) != 3:
        raise CnnlabError(f"{model} reads images: give --input as CxHxW, e.g. --input 3x32x32")
    image = {} if text else {"in_channels": shape[0], "input_size": shape[1:]}
    try:
        net = create_model(model, num_classes=num_classes, **image, **kwargs)
        return summarize(net, shape, depth=depth)
    except RuntimeError as e:
        fix = "pass a longer --input, e.g. 56" if text else "pass a larger --input, e.g. 3x32x32"
        too_small = input_too_small(e, model, shape if text else shape[1:], fix)
        if too_small is None:
            raise
        raise too_small from None


@dataclass(frozen=True)
class Exported:
    """A written export: its path and format; for ONNX, how far onnxruntime's logits are from PyTorch's."""

    path: Path
    format: str
    max_difference: float | None = None


EXPORT_FORMATS = ("onnx", "txt", "safetensors")


def export(run: PathLike, *, format: str = "onnx", out: PathLike | None = None, which: str = "best") -> Exported:
    """Write a trained run as ONNX (needs the [onnx] extra), the course's weights.txt, or safetensors."""
    from .runs.export import export_onnx, export_weights, onnx_max_difference
    from .runs.run import load_trained

    if format not in EXPORT_FORMATS:
        raise CnnlabError(f"unknown export format {format!r}: choose one of {', '.join(EXPORT_FORMATS)}")
    trained = load_trained(Path(run), which)
    base = trained.path.parent
    default = {"onnx": "model.onnx", "txt": "weights.txt", "safetensors": "weights.safetensors"}[format]
    path = Path(out) if out else base / default
    if format != "onnx":
        return Exported(export_weights(trained.model, format, path, trained.card), format)
    written = export_onnx(trained.model, trained.card, path)
    return Exported(written, format, onnx_max_difference(written, trained.model, trained.card))


def plot(run: PathLike, *, out: PathLike | None = None):
    """The course figure (train/val accuracy and loss per epoch) of a run, saved as a PNG (default
    RUN/curves.png); returns a ``Plot``: its ``figure`` and ``path`` (a notebook shows it inline)."""
    from .engine.history import History
    from .explain.plots import drawn, history_figure

    run = Path(run)
    if not (run / "history.json").exists():
        raise CnnlabError(f"{run} has no history.json: pass a run directory written by `cnnlab train`")
    history = History.load(run)
    if not len(history):
        raise CnnlabError(f"{run / 'history.json'} holds no finished epoch yet: plot it once an epoch has ended")
    return drawn(history_figure(history.to_dict()), out or run / "curves.png")


SHOW_MAX = 256  # images in one grid: beyond this the tiles are too small to read


def show(dataset: str = "digits", *, n: int = 16, split: str = "train", out: PathLike | None = None,
         data_dir: str | None = None):
    """The first ``n`` images of a dataset split in a grid, each titled with its class (the course's
    ``plt.imshow(x_train[0])``); a ``Plot``, saved to ``out`` when given."""
    from .data import canonical_name, load_dataset
    from .data.text import is_text_dataset
    from .explain.plots import drawn, samples_figure

    if not 1 <= n <= SHOW_MAX:
        raise CnnlabError(f"n must be between 1 and {SHOW_MAX} images (got {n})")
    if canonical_name(dataset) is None and is_text_dataset(dataset):
        raise CnnlabError(f"{dataset} holds sentences and show draws images: train a text network on it (kim-cnn, "
                          "dcnn), then see its sentences with `cnnlab eval` and `cnnlab ngrams`")
    data = load_dataset(dataset, split, root=data_dir)
    shown = data.subset(n)
    c, h, w = data.shape
    title = f"{dataset} {split}: {len(shown)} of {len(data):,} images ({c}x{h}x{w})"
    return drawn(samples_figure(shown.images, shown.labels.tolist(), data.classes, title), out)


def compare(models: Sequence[str], *, out: PathLike = "report", run_dir: PathLike = "runs", fresh: bool = False,
            progress: bool = True, curves: str = "accuracy-loss", **options: Any):
    """Train several networks alike (each resumes), then write report.md, report.html and curves.png (a ``Report``).

    ``curves``: accuracy and loss per run, or ``"error"``: training and validation error (1 − accuracy).
    """
    from .runs.compare import compare as compare_runs

    if not models:
        raise CnnlabError("compare needs at least one model")
    for name in models:  # every name before any training: a typo in the last must not cost the first runs
        check_model_name(name)
    configs = [run_config(m, options) for m in models]
    _announce_cpu_tuning()
    return compare_runs(configs, Path(out), Path(run_dir), fresh=fresh, progress=progress, curves=curves)


def cross_validate(model: str, *, folds: int = 10, only: Sequence[int] | None = None, run_dir: PathLike = "runs",
                   fresh: bool = False, progress: bool = True, **options: Any):
    """K-fold cross-validation as Kim (2014) reported MR: one run per fold (resumable), each fold's best.pt scored
    on that fold; returns a ``CrossValidation`` (per-fold accuracies, mean, std; also written to a cv.json)."""
    from .runs.cv import cross_validate as run_folds

    check_model_name(model)
    cfg = run_config(model, {**options, "folds": folds})
    _announce_cpu_tuning()
    return run_folds(cfg, Path(run_dir), only, fresh, progress)


def ngrams(run: PathLike, *, split: str = "val", top: int = 5, filters: int | None = 10, which: str = "best",
           data_dir: str | None = None):
    """For a text run's most influential filters, the ``top`` n-grams of a split that excite each most
    (a list of ``FilterNgrams``; ``filters=None`` for every filter)."""
    from dataclasses import replace

    from .explain.ngrams import top_ngrams
    from .runs.run import eval_split, load_trained

    trained = load_trained(Path(run), which)
    if not trained.card.text:
        raise CnnlabError(f"{run} is an image model: n-grams explain text models (cnnlab visualize shows image filters)")
    cfg = trained.config if data_dir is None else replace(trained.config, data_dir=data_dir)
    data = eval_split(cfg, split).with_vocabulary(trained.card.text.vocabulary)
    return top_ngrams(trained.model, data.tokens, trained.card.text.vocabulary, trained.card.classes, top, filters)


def visualize(run: PathLike, image: PathLike, *, out: PathLike | None = None, which: str = "best",
              max_maps: int = 64):
    """PNGs of a run's first-layer filters and each conv block's feature maps for ``image`` (a ``Pictures``)."""
    from .runs.visualize import visualize_run

    return visualize_run(Path(run), Path(image), Path(out) if out else None, which, max_maps)


def explainer(run: PathLike, images: Sequence[PathLike] = (), *, out: PathLike | None = None, which: str = "best",
              count: int = 4, max_maps: int = 16, max_mb: float = 9.0):
    """One self-contained HTML page explaining a run (an ``ExplainerPage``; in a notebook it shows inline).

    Its layers, each layer's maps for ``images`` (else ``count`` validation images), one unit's arithmetic on
    the real numbers, and its curves and confusion matrix; written to ``out`` (default RUN_DIR/explainer.html).
    """
    from .runs.explainer import explainer_run

    return explainer_run(Path(run), list(images), Path(out) if out else None, which, count, max_maps, max_mb)


def import_keras(model: str, weights: PathLike, *, out: PathLike, classes: Sequence[str] | None = None,
                 dataset: str | None = "cifar10", input: tuple[int, int, int] | None = None):
    """Weights saved by Keras (``save_weights``) into ``model``, written as the run directory ``out`` (``Imported``)."""
    from .runs.keras import import_keras as import_into_run

    return import_into_run(model, weights, out, classes, dataset, input)


__all__ = ["EXPORT_FORMATS", "Exported", "Predictions", "SHOW_MAX", "check_model_name", "compare", "cross_validate",
           "evaluate", "explainer", "export", "import_keras", "ngrams", "plot", "predict", "run_config", "show",
           "summary", "train", "visualize"]
