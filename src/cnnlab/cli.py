"""The ``cnnlab`` command: a thin shell over the Python API (every command is a function you can call)."""
from __future__ import annotations

import argparse
import io
import math
import sys
from pathlib import Path
from typing import Callable, NoReturn, Sequence

from .errors import CnnlabError

Handler = Callable[[argparse.Namespace], int | None]


class Parser(argparse.ArgumentParser):
    """argparse whose usage mistakes are one ``cnnlab: error:`` line, like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"cnnlab: error: {message} (see `{self.prog} --help`)\n")


def parse_shape(text: str) -> tuple[int, int, int]:
    """``3x32x32`` (or ``3,32,32``) → (3, 32, 32)."""
    parts = text.lower().replace(",", "x").replace("×", "x").split("x")
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        dims = ()
    if len(dims) != 3 or min(dims) < 1:
        raise argparse.ArgumentTypeError(f"expected CxHxW such as 3x32x32, not {text!r}")
    return dims  # type: ignore[return-value]


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (got {value})")
    return value


# ---- train / eval ------------------------------------------------------------------------------
def add_train_args(p: argparse.ArgumentParser, many: bool = False) -> None:
    from .data.loader import AUGMENTS
    from .engine.config import FREEZE, LABEL_MODES, OPTIMIZERS, POOLINGS, PRECISIONS, SCHEDULES, TTAS, RunConfig

    d = RunConfig()
    if many:
        p.add_argument("models", nargs="+", metavar="model", help="registered names or .cbapd spec files")
    else:
        p.add_argument("model", help="registered name (see `cnnlab models`) or a .cbapd spec file")
    p.add_argument("--dataset", default=d.dataset,
                   help="digits (embedded, no download), cifar10, cifar100, mnist, fashion-mnist, or an image folder "
                        f"(default: {d.dataset})")
    p.add_argument("--data-dir", help="where datasets are cached/extracted (default: $CNNLAB_DATA or ~/.cache/cnnlab/data)")
    p.add_argument("--run-dir", type=Path, help="parent of the run directories (default: runs)" if many else
                   "where checkpoints and history go (default: runs/MODEL-DATASET)")
    p.add_argument("--rgb", action="store_true", help="repeat a grayscale channel three times (MNIST → RGB)")
    p.add_argument("--resize", type=positive_int, metavar="N", help="resize images to NxN (e.g. 32 for VGG16 on MNIST)")
    p.add_argument("--label-mode", choices=LABEL_MODES, default=d.label_mode,
                   help="CIFAR-100: fine (100 classes) or coarse (20 superclasses)")
    p.add_argument("--pretrained", metavar="imagenet|NAME|PATH",
                   help="start the backbone from torchvision's ImageNet weights (or a weights name such as "
                        "IMAGENET1K_V2, or a local .pth state dict); implies a new head")
    p.add_argument("--freeze", choices=FREEZE, default=d.freeze, help="backbone: train only the new head")
    p.add_argument("--head", metavar="W1,W2", help='hidden Dense widths of a new head, e.g. "256,64" (Keras '
                                                    "include_top=False + Dense layers); \"\" for the classifier only")
    p.add_argument("--pooling", choices=POOLINGS, default=d.pooling,
                   help="new head's input: none (flatten the feature map), avg or max (global pooling)")
    p.add_argument("--epochs", type=positive_int, default=d.epochs,
                   help=f"(default: {d.epochs}; a model with a recipe, such as fast-cifar, takes every unset option "
                        "from its recipe)")
    p.add_argument("--batch-size", type=positive_int, default=d.batch_size)
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=d.optimizer)
    p.add_argument("--lr", type=float, help="learning rate (default: adam 1e-3, sgd 0.01)")
    p.add_argument("--momentum", type=float, default=d.momentum)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--schedule", choices=SCHEDULES, default=d.schedule)
    p.add_argument("--warmup-epochs", type=float, default=d.warmup_epochs)
    p.add_argument("--label-smoothing", type=float, default=d.label_smoothing)
    p.add_argument("--augment", choices=AUGMENTS, default=d.augment)
    p.add_argument("--val", default=d.val, help="'test' (the course's validation_data) or a fraction of train, e.g. 0.1")
    p.add_argument("--val-every", type=positive_int, default=d.val_every)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--eval-batch-size", type=positive_int, default=d.eval_batch_size)
    p.add_argument("--precision", choices=PRECISIONS, default=d.precision)
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction,
                   help="NHWC memory layout (faster convolutions with bf16 on CPUs and GPUs)")
    p.add_argument("--tta", choices=TTAS, default=d.tta,
                   help="test-time augmentation of the final evaluation: flips, or flips and 1-pixel shifts")
    p.add_argument("--time-budget", type=float, metavar="MINUTES",
                   help="choose the epochs so that the run (data loading to final accuracy) fits MINUTES")
    p.add_argument("--sync-bn", action="store_true",
                   help="under torchrun on GPUs: BatchNorm statistics over the global batch (SyncBatchNorm)")
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every, metavar="STEPS",
                   help="also save last.pt every STEPS steps inside an epoch (0: at epoch ends)")
    p.add_argument("--limit-train", type=positive_int, help="use only the first N training images")
    p.add_argument("--limit-val", type=positive_int, help="use only the first N validation images")
    p.add_argument("--device", default=d.device, help="auto (CUDA when present), cpu, cuda, cuda:1 …")
    p.add_argument("--fresh", action="store_true", help="start over instead of resuming from RUN_DIR/last.pt")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (one line per epoch)")
    # Unset options stay None: a model's recipe, else RunConfig's (course) default, fills them (config_from_args).
    p.set_defaults(**{name: None for name in RunConfig.__dataclass_fields__ if name != "model"})


def config_from_args(a: argparse.Namespace, model: str | None = None):
    """RunConfig from the options given; the others from the model's recipe or the course defaults."""
    from .engine.config import RunConfig
    from .engine.recipes import config_for

    given = {name: getattr(a, name) for name in RunConfig.__dataclass_fields__
             if name != "model" and getattr(a, name, None) is not None}
    return config_for(model or a.model, given)


def cmd_train(a: argparse.Namespace) -> int:
    from .engine import distributed as D
    from .engine.run import default_run_dir, train

    cfg = config_from_args(a).validate()
    run_dir = a.run_dir or default_run_dir(cfg)
    history = train(cfg, run_dir, fresh=a.fresh, progress=not a.no_progress)
    if D.is_main():
        best = history.best("val_accuracy")
        tta = history.last("tta_val_accuracy")
        print(f"Done: {len(history)} epochs; best val_accuracy {best:.4f}; final val_accuracy "
              f"{history.last('val_accuracy'):.4f}" + ("" if math.isnan(tta) else f" ({tta:.4f} with {cfg.tta} "
                                                       "test-time augmentation)") + f". Run directory: {run_dir}\n"
              f"Next: cnnlab plot {run_dir} · cnnlab eval {run_dir} · cnnlab export-weights {run_dir}")
    return 0


def cmd_eval(a: argparse.Namespace) -> int:
    from .engine.run import evaluate_run

    r = evaluate_run(a.run, split=a.split, data_dir=a.data_dir, which=a.which)
    print(f"{r.checkpoint} on {r.split} ({r.count:,} images): loss {r.loss:.4f} - accuracy {r.accuracy:.4f}"
          + ("" if r.tta == "none" else f" (test-time augmentation: {r.tta})"))
    width = max(len(c) for c in r.classes)
    for name, acc in zip(r.classes, r.per_class_accuracy()):
        print(f"  {name:<{width}}  {acc:.4f}")
    if a.confusion:
        from .explain.plots import plot_confusion_matrix

        out = plot_confusion_matrix(r.confusion.numpy(), r.classes, a.confusion)
        print(f"confusion matrix → {out}")
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
        c, h, w = info.input_size
        print(f"{n:<{width}}  {info.family:<10} {f'{c}x{h}x{w}':<10} {info.num_classes:>5} classes  {info.source}")
    return 0


def cmd_summary(a: argparse.Namespace) -> int:
    from .explain.summary import summarize
    from .models import create_model, default_input_size

    c, h, w = a.input or default_input_size(a.model)
    model = create_model(a.model, num_classes=a.num_classes, in_channels=c, input_size=(h, w))
    print(summarize(model, (c, h, w)))
    return 0


def cmd_plot(a: argparse.Namespace) -> int:
    from .engine.history import History
    from .explain.plots import plot_history

    run = Path(a.run)
    if not (run / "history.json").exists():
        raise CnnlabError(f"{run} has no history.json: pass a run directory written by `cnnlab train`")
    out = plot_history(History.load(run).to_dict(), a.out or run / "curves.png")
    print(f"accuracy and loss curves → {out}")
    return 0


def cmd_import_keras(a: argparse.Namespace) -> int:
    from .explain.keras_import import keras_to_run

    path, matched = keras_to_run(a.model, a.weights, a.out, a.dataset, a.data_dir)
    print(f"{len(matched)} Keras layers loaded into {a.model} → {path}\n"
          f"Next: cnnlab eval {a.out} · cnnlab predict {a.out} IMAGE")
    return 0


def cmd_export_weights(a: argparse.Namespace) -> int:
    from .engine.export import export_weights
    from .engine.run import load_trained

    model, ckpt = load_trained(Path(a.run), a.which)
    out = export_weights(model, a.format, a.out or _default_export_path(Path(a.run), a.format), ckpt)
    print(f"{a.format} weights → {out}")
    return 0


def _default_export_path(run: Path, fmt: str) -> Path:
    base = run if run.is_dir() else run.parent
    return base / ("weights.txt" if fmt == "txt" else "weights.safetensors")


# ---- prediction, ONNX, pictures, comparison ----------------------------------------------------
def cmd_predict(a: argparse.Namespace) -> int:
    from .engine.predict import format_prediction, onnx_predictor, predict_files, torch_predictor

    if a.onnx:
        (logits_of, spec), images = onnx_predictor(a.onnx), a.inputs
    else:
        (logits_of, spec), images = torch_predictor(Path(a.inputs[0]), a.which), a.inputs[1:]
    if not images:
        raise CnnlabError("no images given: cnnlab predict RUN_DIR|CHECKPOINT IMAGE [IMAGE|FOLDER …]")
    predictions, skipped = predict_files(logits_of, spec, images, a.top_k)
    for s in skipped:
        print(f"cnnlab: skipped {s.path}: {s.reason}", file=sys.stderr)
    for p in predictions:
        print(format_prediction(p))
    return 0


def cmd_export(a: argparse.Namespace) -> int:
    from .engine.export import export_onnx, onnx_max_difference
    from .engine.run import load_trained

    model, ckpt = load_trained(Path(a.run), a.which)
    base = Path(a.run) if Path(a.run).is_dir() else Path(a.run).parent
    out = export_onnx(model, ckpt, a.out or base / "model.onnx")
    diff = onnx_max_difference(out, model, (ckpt["in_channels"], *ckpt["input_size"]))
    print(f"ONNX model → {out} (onnxruntime agrees with PyTorch to {diff:.1e})\nNext: cnnlab predict --onnx {out} IMAGE")
    return 0


def cmd_visualize(a: argparse.Namespace) -> int:
    from .explain.visualize import visualize_run

    pictures = visualize_run(Path(a.run), a.image, a.out, a.which, a.max_maps)
    print(f"first-layer filters → {pictures.filters}")
    for path in pictures.feature_maps:
        print(f"feature maps → {path}")
    return 0


def cmd_compare(a: argparse.Namespace) -> int:
    from .engine.compare import compare

    configs = [config_from_args(a, model=m) for m in a.models]
    report = compare(configs, a.out, a.run_dir or Path("runs"), fresh=a.fresh, progress=not a.no_progress)
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

    add_train_args(command("train", cmd_train, "train a network (re-running resumes from RUN_DIR/last.pt)"))

    p = command("eval", cmd_eval, "loss, accuracy and per-class accuracy of a trained run")
    p.add_argument("run", help="run directory or checkpoint file")
    p.add_argument("--split", default="test", choices=("train", "val", "test"),
                   help="val: the images the run validated on (the test split, or its --val fraction)")
    p.add_argument("--which", default="best", choices=("best", "last"))
    p.add_argument("--data-dir")
    p.add_argument("--confusion", type=Path, metavar="PNG", help="also draw the confusion matrix")

    p = command("models", cmd_models, "list the registered networks")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'resnet*'")

    p = command("summary", cmd_summary, "Keras-style table: output shapes, params, multiply-adds, receptive field")
    p.add_argument("model", help="registered name or .cbapd spec file")
    p.add_argument("--input", type=parse_shape, help="CxHxW (default: the network's own)")
    p.add_argument("--num-classes", type=positive_int)

    add_explain_parsers(command("explain", cmd_explain, "the course's formulas, worked with your numbers"))

    p = command("plot", cmd_plot, "the course figure: train/val accuracy and loss per epoch (PNG)")
    p.add_argument("run", help="run directory")
    p.add_argument("--out", type=Path)

    p = command("import-keras", cmd_import_keras,
                "load weights saved by Keras (.weights.h5 / .h5) into the matching network, as a run directory")
    p.add_argument("model", help="the cnnlab network that matches the Keras model, e.g. baseline-cifar")
    p.add_argument("weights", type=Path, help="file written by Keras' model.save_weights")
    p.add_argument("--dataset", default="cifar10", help="names the classes and the input shape (default: cifar10)")
    p.add_argument("--data-dir")
    p.add_argument("--out", type=Path, required=True, help="run directory to write best.pt into")

    p = command("export-weights", cmd_export_weights, "write the trained weights as weights.txt or safetensors")
    p.add_argument("run", help="run directory or checkpoint file")
    p.add_argument("--format", choices=("txt", "safetensors"), default="txt")
    p.add_argument("--which", default="best", choices=("best", "last"))
    p.add_argument("--out", type=Path)

    p = command("predict", cmd_predict, "top-k classes with probabilities for image files or folders")
    p.add_argument("inputs", nargs="+", metavar="RUN|IMAGE",
                   help="run directory or checkpoint, then images and folders (with --onnx: images and folders only)")
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

    p = command("compare", cmd_compare, "train several networks alike (each resumes) and write a comparison report")
    add_train_args(p, many=True)
    p.add_argument("--out", type=Path, default=Path("report"), help="report directory (default: report)")
    return parser


def printable_names() -> None:
    """Print non-UTF-8 file names as escapes instead of failing, whatever the locale's strictness."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper) and stream.errors == "strict":
            stream.reconfigure(errors="backslashreplace")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: user errors become one line on stderr (exit 2), Ctrl-C exits 130."""
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
    except KeyboardInterrupt:
        print("cnnlab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
