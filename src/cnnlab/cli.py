"""The ``cnnlab`` command: it parses, calls one public function of ``cnnlab.api`` and prints — nothing else."""
from __future__ import annotations

import argparse
import io
import math
import os
import sys
from pathlib import Path
from typing import Callable, NoReturn, Sequence

from .errors import CnnlabError

Handler = Callable[[argparse.Namespace], int | None]


class Parser(argparse.ArgumentParser):
    """argparse whose usage mistakes are one ``cnnlab: error:`` line, like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"cnnlab: error: {message} (see `{self.prog} --help`)\n")


MAX_CHANNELS, MAX_SIDE = 64, 1024  # an --input beyond them would not fit one image's activations in memory
MAX_TOKENS = 10_000  # a text network's --input L: far beyond any sentence set's longest (SST-2: 56 tokens)
MAX_CLASSES = 100_000  # ImageNet-21k has 21,841


def parse_shape(text: str) -> tuple[int, ...]:
    """``3x32x32`` (or ``3,32,32``) → (3, 32, 32), at most MAX_CHANNELS channels and MAX_SIDE pixels a side; a
    single ``56`` → (56,), a text network's sentence length in tokens (at most MAX_TOKENS)."""
    parts = text.lower().replace(",", "x").replace("×", "x").split("x")
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        dims = ()
    if len(dims) not in (1, 3) or min(dims) < 1:
        raise argparse.ArgumentTypeError(f"expected CxHxW such as 3x32x32, not {text!r} (for a text network: a "
                                         "sentence length L in tokens, such as 56)")
    if len(dims) == 1 and dims[0] > MAX_TOKENS:
        raise argparse.ArgumentTypeError(f"at most {MAX_TOKENS:,} tokens a sentence, not {text!r}")
    if len(dims) == 3 and (dims[0] > MAX_CHANNELS or max(dims[1:]) > MAX_SIDE):
        raise argparse.ArgumentTypeError(f"at most {MAX_CHANNELS} channels and {MAX_SIDE} pixels a side, not {text!r}")
    return dims


def parse_image_shape(text: str) -> tuple[int, int, int]:
    """``parse_shape`` for an image network only: CxHxW."""
    dims = parse_shape(text)
    if len(dims) != 3:
        raise argparse.ArgumentTypeError(f"expected CxHxW such as 3x32x32, not {text!r}")
    return dims  # type: ignore[return-value]


def class_count(text: str) -> int:
    """A number of classes: a whole number in [1, MAX_CLASSES]."""
    value = positive_int(text)
    if value > MAX_CLASSES:
        raise argparse.ArgumentTypeError(f"at most {MAX_CLASSES:,} classes (got {value})")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (got {value})")
    return value


def whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None


def number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, not {text!r}") from None


def key_value(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` → (KEY, VALUE); the model's factory types VALUE (``models.registry.typed_options``)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip() or not key.strip().isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE such as stride_in_1x1=true, not {text!r}")
    return key.strip(), value.strip()


def comma_list(text: str) -> list[str]:
    """``a,b,c`` → ["a", "b", "c"] (spaces around names dropped)."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated names, not {text!r}")
    return names


def fold_list(text: str) -> list[int]:
    """``1,2,3`` → [1, 2, 3]."""
    try:
        folds = [int(n) for n in comma_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected fold numbers such as 1,2,3, not {text!r}") from None
    if min(folds) < 1:
        raise argparse.ArgumentTypeError(f"folds are numbered from 1 (got {text!r})")
    return folds


# ---- train / compare: options generated from RunConfig's fields -------------------------------
RUN_DIR_HELP = "where checkpoints and history go (default: runs/MODEL-DATASET)"


def add_run_options(p: argparse.ArgumentParser) -> None:
    """One ``--long-option`` per RunConfig option field, from its metadata; unset options stay None."""
    from .runs.config import cli_options, flag

    for name, opt in cli_options():
        kw: dict = {"dest": name, "default": None, "help": _help(opt.help, opt.default)}
        if opt.type is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif opt.type is dict:  # a repeatable KEY=VALUE
            kw.update(action="append", type=key_value, metavar=opt.metavar)
        else:
            kw["type"] = {int: positive_int if opt.low == 1 else whole_number, float: number}.get(opt.type, str)
            kw.update({k: v for k, v in (("choices", opt.choices), ("metavar", opt.metavar), ("nargs", opt.nargs),
                                         ("const", opt.const)) if v is not None})
        p.add_argument(flag(name), **kw)
    p.add_argument("--fresh", action="store_true", help="start over instead of resuming from RUN_DIR/last.pt")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar (one line per epoch)")


def _help(text: str, default: object) -> str:
    shown = "unset" if default is None else default
    return f"{text} (default: {shown}, or the model's recipe)" if text else f"(default: {shown}, or the model's recipe)"


def run_options(a: argparse.Namespace) -> dict:
    """The RunConfig options given on the command line (unset ones stay out: recipe or course defaults fill them)."""
    from .runs.config import cli_options

    given = {name: getattr(a, name) for name, _ in cli_options() if getattr(a, name) is not None}
    return {name: dict(value) if isinstance(value, list) else value for name, value in given.items()}


def cmd_train(a: argparse.Namespace) -> int:
    from . import api
    from .engine import distributed as D
    from .engine.callbacks import epochs

    history = api.train(a.model, run_dir=a.run_dir, fresh=a.fresh, progress=a.progress, **run_options(a))
    if D.is_main():
        run_dir = history.run_dir
        best, tta = history.best("val_accuracy"), history.last("tta_val_accuracy")
        print(f"Done: {epochs(len(history))}; best val_accuracy {best:.4f}; final val_accuracy "
              f"{history.last('val_accuracy'):.4f}" + ("" if math.isnan(tta) else " (with test-time augmentation: "
                                                       f"{tta:.4f})") + f". Run directory: {run_dir}\n"
              f"Next: cnnlab plot {run_dir} · cnnlab eval {run_dir} · cnnlab export-weights {run_dir}")
    return 0


def cmd_eval(a: argparse.Namespace) -> int:
    from . import api

    r = api.evaluate(a.run, split=a.split, which=a.which, data_dir=a.data_dir, confusion=a.confusion)
    print(f"{r.checkpoint} on {r.split} ({r.count:,} {r.unit}): loss {r.loss:.4f} - accuracy {r.accuracy:.4f}"
          + ("" if r.tta == "none" else f" (test-time augmentation: {r.tta})"))
    width = max(len(c) for c in r.classes)
    for name, acc in zip(r.classes, r.per_class_accuracy()):
        print(f"  {name:<{width}}  {acc:.4f}")
    if r.confusion_png:
        print(f"confusion matrix → {r.confusion_png}")
    return 0


# ---- looking at models and runs ----------------------------------------------------------------
def cmd_models(a: argparse.Namespace) -> int:
    from .models import list_models, model_info

    names = list_models(a.pattern)
    if not names:
        raise CnnlabError(f"no model matches {a.pattern!r}")
    width = max(len(n) for n in names)
    for n in names:
        info = model_info(n)
        shape = f"{info.input_size[0]} tokens" if len(info.input_size) == 1 else "x".join(map(str, info.input_size))
        print(f"{n:<{width}}  {info.family:<10} {shape:<10} {info.num_classes:>5} classes  {info.source}")
    return 0


def cmd_summary(a: argparse.Namespace) -> int:
    from . import api

    print(api.summary(a.model, input=a.input, num_classes=a.num_classes, depth=a.depth,
                      model_kwargs=dict(a.model_option or ())))
    return 0


def cmd_plot(a: argparse.Namespace) -> int:
    from . import api

    print(f"accuracy and loss curves → {api.plot(a.run, out=a.out).path}")
    return 0


def cmd_show(a: argparse.Namespace) -> int:
    from . import api

    out = a.out or Path(f"{Path(a.dataset).name}-{a.split}.png")
    shown = api.show(a.dataset, n=a.n, split=a.split, out=out, data_dir=a.data_dir)
    print(f"{a.split} images of {a.dataset} → {shown.path}")
    return 0


def cmd_import_keras(a: argparse.Namespace) -> int:
    from . import api

    imported = api.import_keras(a.model, a.weights, out=a.out, classes=a.classes, dataset=a.dataset, input=a.input)
    print(f"{len(imported.matched)} Keras layers loaded into {a.model} → {imported.checkpoint}\n"
          f"Next: cnnlab eval {a.out} · cnnlab predict {a.out} IMAGE")
    return 0


def cmd_export_weights(a: argparse.Namespace) -> int:
    from . import api

    print(f"{a.format} weights → {api.export(a.run, format=a.format, out=a.out, which=a.which).path}")
    return 0


# ---- prediction, ONNX, pictures, comparison ----------------------------------------------------
def cmd_predict(a: argparse.Namespace) -> int:
    from . import api
    from .runs.predict import format_prediction

    run, items = (None, a.inputs) if a.onnx else (a.inputs[0], a.inputs[1:])
    result = api.predict(run, items, onnx=a.onnx, top_k=a.top_k, which=a.which, file=a.file)
    for s in result.skipped:
        print(f"cnnlab: skipped {s.path}: {s.reason}", file=sys.stderr)
    for p in result.predictions:
        print(format_prediction(p, quoted=result.sentences))
    return 0


def cmd_cv(a: argparse.Namespace) -> int:
    from . import api

    options = run_options(a)
    folds = options.pop("folds", 10)
    cv = api.cross_validate(a.model, folds=folds, only=a.only, run_dir=a.run_dir or Path("runs"), fresh=a.fresh,
                            progress=a.progress, **options)
    print(cv.table())
    print(f"per-fold results → {cv.summary_path}")
    return 0


def cmd_ngrams(a: argparse.Namespace) -> int:
    from . import api

    for f in api.ngrams(a.run, split=a.split, top=a.top, filters=None if a.filters == 0 else a.filters,
                        which=a.which, data_dir=a.data_dir):
        print(f)
    return 0


def cmd_export(a: argparse.Namespace) -> int:
    from . import api

    e = api.export(a.run, format="onnx", out=a.out, which=a.which)
    print(f"ONNX model → {e.path} (onnxruntime agrees with PyTorch to {e.max_difference:.1e})\n"
          f"Next: cnnlab predict --onnx {e.path} IMAGE|SENTENCE")
    return 0


def cmd_visualize(a: argparse.Namespace) -> int:
    from . import api

    pictures = api.visualize(a.run, a.image, out=a.out, which=a.which, max_maps=a.max_maps)
    print(f"first-layer filters → {pictures.filters}")
    for path in pictures.feature_maps:
        print(f"feature maps → {path}")
    return 0


def cmd_explainer(a: argparse.Namespace) -> int:
    from . import api

    page = api.explainer(a.run, a.images, out=a.out, which=a.which, count=a.count, max_maps=a.max_maps,
                         max_mb=a.max_mb)
    for s in page.skipped:
        print(f"cnnlab: skipped {s.path}: {s.reason}", file=sys.stderr)
    print(f"explainer page → {page.path} ({page.size / 1e6:.1f} MB; {page.images} images, "
          f"{page.layers_pictured} of {page.layers} layers pictured, {page.layers_explained} explained unit by unit). "
          "Open it in any browser: it needs no network.")
    return 0


def cmd_compare(a: argparse.Namespace) -> int:
    from . import api

    report = api.compare(a.models, out=a.out, run_dir=a.run_dir or Path("runs"), fresh=a.fresh, progress=a.progress,
                         curves=a.curves, **run_options(a))
    print(report.table)
    print(f"report → {report.markdown} · {report.html} · curves {report.curves}")
    return 0


# ---- explain: the course's formulas -------------------------------------------------------------
def parse_padding(text: str) -> str | int:
    """``same``, ``valid`` or an explicit whole number of pixels."""
    if text in ("same", "valid"):
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"padding must be same, valid or a whole number, not {text!r}") from None


def parse_layer(text: str) -> tuple[int, ...]:
    """``k``, ``k/s`` or ``k/s/d`` → (kernel, stride, dilation) for the receptive-field formula."""
    try:
        parts = tuple(int(p) for p in text.split("/"))
    except ValueError:
        parts = ()
    if not 1 <= len(parts) <= 3 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"layer must look like k, k/s or k/s/d (e.g. 3/2), not {text!r}")
    return (*parts, 1, 1)[:3]


def cmd_explain(a: argparse.Namespace) -> int:
    from .explain import formulas as f

    worked = {
        "conv": lambda: f.conv_output(a.input, a.kernel, a.stride, a.padding, a.dilation),
        "receptive-field": lambda: f.receptive_field(a.layers),
        "params": lambda: f.dense_params(a.sizes),
        "compare-kernels": lambda: f.compare_kernels(a.input),
        "conv-example": f.conv_example,
    }[a.topic]()
    print(worked.explain())
    return 0


def add_explain_parsers(p: argparse.ArgumentParser) -> None:
    topics = p.add_subparsers(dest="topic", required=True, metavar="TOPIC")
    t = topics.add_parser("conv", help="output size of a convolution or pooling (the course's formula)")
    t.add_argument("--input", type=positive_int, required=True, help="input width/height n")
    t.add_argument("--kernel", type=positive_int, required=True)
    t.add_argument("--stride", type=positive_int, default=1)
    t.add_argument("--padding", type=parse_padding, default="valid", help="same, valid or pixels")
    t.add_argument("--dilation", type=positive_int, default=1)
    t = topics.add_parser("receptive-field", help="receptive field of stacked layers, e.g. 3 3 (two 3x3 convs)")
    t.add_argument("layers", nargs="*", type=parse_layer, default=[(3, 1, 1), (3, 1, 1)], metavar="k[/s[/d]]")
    t = topics.add_parser("params", help="parameters of a fully connected net (default: the course's 784-128-10)")
    t.add_argument("sizes", nargs="*", type=positive_int, default=[784, 128, 10])
    t = topics.add_parser("compare-kernels", help="two 3x3 convolutions vs one 5x5: parameters and compute")
    t.add_argument("--input", type=positive_int, default=28, help="input width/height x")
    topics.add_parser("conv-example", help="the course's worked 3x3 convolution example (answer: 1)")


# ---- parser ------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="cnnlab", description="Build, train and explain the classic CNNs.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(handler=handler)
        return p

    p = command("train", cmd_train, "train a network (re-running resumes from RUN_DIR/last.pt)")
    p.add_argument("model", help="registered name (see `cnnlab models`) or a .cbapd spec file")
    p.add_argument("--run-dir", type=Path, help=RUN_DIR_HELP)
    add_run_options(p)

    p = command("eval", cmd_eval, "loss, accuracy and per-class accuracy of a trained run")
    p.add_argument("run", help="run directory or checkpoint file")
    p.add_argument("--split", choices=("train", "val", "test", "dev"),
                   help="val: the examples the run validated on (the test split, or its --val fraction); test: fold "
                        "K for a --fold run; dev: the dataset's dev split (else the 10%% of train --val dev holds "
                        "out); default: test, or val for a dataset without a test split (an image folder, say)")
    p.add_argument("--which", default="best", choices=("best", "last"))
    p.add_argument("--data-dir")
    p.add_argument("--confusion", type=Path, metavar="PNG", help="also draw the confusion matrix")

    p = command("models", cmd_models, "list the registered networks")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'resnet*'")

    p = command("summary", cmd_summary, "Keras-style table: output shapes, params, multiply-adds, receptive field")
    p.add_argument("model", help="registered name or .cbapd spec file")
    p.add_argument("--input", type=parse_shape, help="CxHxW, or tokens L for a text network (default: the network's "
                                                      "own)")
    p.add_argument("--num-classes", type=class_count)
    p.add_argument("--depth", type=positive_int, help="one row per module at this depth (default: every layer)")
    p.add_argument("--model-option", action="append", type=key_value, metavar="KEY=VALUE",
                   help="a keyword of the model's factory, e.g. stride_in_1x1=true for the paper's ResNet-50 "
                        "(3.8 G multiply-adds) or windows=3,4,5 for kim-cnn; repeatable")

    add_explain_parsers(command("explain", cmd_explain, "the course's formulas, worked with your numbers"))

    p = command("plot", cmd_plot, "the course figure: train/val accuracy and loss per epoch (PNG)")
    p.add_argument("run", help="run directory")
    p.add_argument("--out", type=Path)

    p = command("show", cmd_show, "a grid of a dataset's first images, each titled with its class (PNG)")
    p.add_argument("dataset", help="digits, cifar10, cifar100, mnist, fashion-mnist or an image folder")
    p.add_argument("-n", "--n", type=positive_int, default=16, help="how many images (default: 16)")
    p.add_argument("--split", default="train", help="train or test (an image folder: train, all of its images)")
    p.add_argument("--data-dir", help="where datasets are cached/extracted")
    p.add_argument("--out", type=Path, help="default: DATASET-SPLIT.png")

    p = command("import-keras", cmd_import_keras,
                "load weights saved by Keras (.weights.h5 / .h5) into the matching network, as a run directory")
    p.add_argument("model", help="the cnnlab network that matches the Keras model, e.g. baseline-cifar")
    p.add_argument("weights", type=Path, help="file written by Keras' model.save_weights")
    p.add_argument("--classes", type=comma_list, metavar="NAME,NAME,…", help="the class names, in the model's order")
    p.add_argument("--dataset", default="cifar10", help="else the class names of this built-in dataset, read offline "
                                                        "(default: cifar10)")
    p.add_argument("--input", type=parse_image_shape, help="CxHxW (default: the network's own)")
    p.add_argument("--out", type=Path, required=True, help="run directory to write best.pt into")

    p = command("export-weights", cmd_export_weights, "write the trained weights as weights.txt or safetensors")
    p.add_argument("run", help="run directory or checkpoint file")
    p.add_argument("--format", choices=("txt", "safetensors"), default="txt")
    p.add_argument("--which", default="best", choices=("best", "last"))
    p.add_argument("--out", type=Path)

    p = command("predict", cmd_predict, "top-k classes with probabilities for image files or folders, or sentences")
    p.add_argument("inputs", nargs="+", metavar="RUN|IMAGE|SENTENCE",
                   help="run directory or checkpoint, then images and folders — or, for a text model, sentences "
                        "(with --onnx: the images or sentences only)")
    p.add_argument("--file", type=Path, metavar="SENTENCES.txt", help="text model: also each line of this file")
    p.add_argument("--top-k", type=positive_int, default=3)
    p.add_argument("--onnx", type=Path, metavar="MODEL.onnx", help="predict with an exported ONNX model (onnxruntime)")
    p.add_argument("--which", default="best", choices=("best", "last"))

    p = command("export", cmd_export, "write the trained model as ONNX (needs the [onnx] extra)")
    p.add_argument("run", help="run directory or checkpoint file")
    p.add_argument("--onnx", action="store_true", required=True, help="ONNX format (the only one so far)")
    p.add_argument("--out", type=Path, help="default: RUN_DIR/model.onnx")
    p.add_argument("--which", default="best", choices=("best", "last"))

    p = command("visualize", cmd_visualize, "PNGs of the first layer's filters and each conv block's feature maps")
    p.add_argument("run", help="run directory or checkpoint file")
    p.add_argument("image", type=Path)
    p.add_argument("--out", type=Path, help="default: RUN_DIR/plots/IMAGE_NAME")
    p.add_argument("--max-maps", type=positive_int, default=64, help="channels shown per block")
    p.add_argument("--which", default="best", choices=("best", "last"))

    p = command("explainer", cmd_explainer, "one self-contained HTML page that explains a trained run: every layer's "
                "maps for a few images, one unit's arithmetic, its curves and confusion matrix")
    p.add_argument("run", help="run directory or checkpoint file")
    p.add_argument("images", nargs="*", type=Path, metavar="IMAGE", help="images or folders to show (default: "
                   "--count images of the validation split)")
    p.add_argument("--out", type=Path, metavar="PAGE.html", help="default: RUN_DIR/explainer.html")
    p.add_argument("--count", type=positive_int, default=4, help="validation images shown when none are given")
    p.add_argument("--max-maps", type=positive_int, default=16, help="feature maps pictured per layer")
    p.add_argument("--max-mb", type=number, default=9.0, help="page size cap in MB: later layers are listed "
                   "without pictures (default: 9)")
    p.add_argument("--which", default="best", choices=("best", "last"))

    p = command("cv", cmd_cv, "K-fold cross-validation (Kim 2014's MR protocol): a run per fold, its best.pt scored "
                              "on the held-out fold; mean and spread")
    p.add_argument("model", help="registered name or .cbapd spec file")
    p.add_argument("--run-dir", type=Path, help="parent of the fold run directories (default: runs)")
    p.add_argument("--only", type=fold_list, metavar="K,K,…", help="run only these folds (e.g. 1,2,3)")
    add_run_options(p)

    p = command("ngrams", cmd_ngrams, "text model: the n-grams of a split that excite each filter most")
    p.add_argument("run", help="run directory or checkpoint file")
    p.add_argument("--top", type=positive_int, default=5, help="n-grams per filter")
    p.add_argument("--filters", type=whole_number, default=10,
                   help="how many filters, most influential first (0: all)")
    p.add_argument("--split", default="val", choices=("train", "val", "test", "dev"))
    p.add_argument("--which", default="best", choices=("best", "last"))
    p.add_argument("--data-dir")

    p = command("compare", cmd_compare, "train several networks alike (each resumes) and write a comparison report")
    p.add_argument("models", nargs="+", metavar="model", help="registered names or .cbapd spec files")
    p.add_argument("--run-dir", type=Path, help="parent of the run directories (default: runs)")
    add_run_options(p)
    p.add_argument("--out", type=Path, default=Path("report"), help="report directory (default: report)")
    p.add_argument("--curves", default="accuracy-loss", metavar="accuracy-loss|error",
                   help="the figure: accuracy and loss, or training and validation error (1 - accuracy) as in "
                        "He et al. 2016 (default: accuracy-loss)")
    return parser


def printable_names() -> None:
    """Print non-UTF-8 file names as escapes instead of failing, whatever the locale's strictness."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper) and stream.errors == "strict":
            stream.reconfigure(errors="backslashreplace")


def os_problem(error: OSError) -> str:
    """``cannot use PATH: File name too long; …`` for an operating-system error that reached the command line."""
    name = os.fsdecode(error.filename) if error.filename is not None else ""
    shown = name if len(name) <= 100 else name[:60] + "…" + name[-30:]
    return (f"cannot use {shown or 'a file'}: {error.strerror or error}; check that the path exists, is short enough "
            "and is readable (and writable where output goes)")


def out_of_memory(error: BaseException) -> bool:
    """True for MemoryError and for torch's allocation failures (CPU and CUDA), which are RuntimeErrors."""
    text = str(error)
    return isinstance(error, MemoryError) or "can't allocate memory" in text or "out of memory" in text.lower()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: user errors become one line on stderr (exit 2), Ctrl-C exits 130.

    The CPU settings are applied first, before anything loads torch (``cpu.tune_cpu``).
    """
    from .cpu import tune_cpu

    tune_cpu()
    printable_names()
    parser = build_parser()
    args = parser.parse_args(argv)
    from .engine.fit import TrainingInterrupted

    try:
        return args.handler(args) or 0
    except TrainingInterrupted as e:
        from .engine.distributed import is_main

        if is_main():  # under torchrun every rank stopped at the same step; one says so
            print(f"cnnlab: {e}", file=sys.stderr)
        return 130
    except CnnlabError as e:
        print(f"cnnlab: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a path the system refuses where cnnlab has no more specific word (too long a name, …)
        print(f"cnnlab: error: {os_problem(e)}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as e:  # the allocator's refusal, wherever a size came from
        if not out_of_memory(e):
            raise
        print(f"cnnlab: error: out of memory ({str(e).strip()[:120] or type(e).__name__}): use a smaller --batch-size, "
              "--eval-batch-size, --resize or --input", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cnnlab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
