"""The ``cnnlab`` command: a thin shell over the Python API (every command is a function you can call)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Sequence

from .errors import CnnlabError

Handler = Callable[[argparse.Namespace], int | None]


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
def add_train_args(p: argparse.ArgumentParser) -> None:
    from .data.loader import AUGMENTS
    from .engine.config import OPTIMIZERS, PRECISIONS, SCHEDULES, RunConfig

    d = RunConfig()
    p.add_argument("model", help="registered name (see `cnnlab models`) or a .cbapd spec file")
    p.add_argument("--dataset", default=d.dataset,
                   help="digits (embedded, no download), cifar10, cifar100, mnist, fashion-mnist, or an image folder "
                        f"(default: {d.dataset})")
    p.add_argument("--data-dir", help="where datasets are cached/extracted (default: $CNNLAB_DATA or ~/.cache/cnnlab/data)")
    p.add_argument("--run-dir", type=Path, help="where checkpoints and history go (default: runs/MODEL-DATASET)")
    p.add_argument("--epochs", type=positive_int, default=d.epochs)
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
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every, metavar="STEPS",
                   help="also save last.pt every STEPS steps inside an epoch (0: at epoch ends)")
    p.add_argument("--limit-train", type=positive_int, help="use only the first N training images")
    p.add_argument("--limit-val", type=positive_int, help="use only the first N validation images")
    p.add_argument("--device", default=d.device, help="auto (CUDA when present), cpu, cuda, cuda:1 …")
    p.add_argument("--fresh", action="store_true", help="start over instead of resuming from RUN_DIR/last.pt")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (one line per epoch)")


def config_from_args(a: argparse.Namespace):
    from .engine.config import RunConfig

    return RunConfig(model=a.model, dataset=a.dataset, data_dir=a.data_dir, epochs=a.epochs, batch_size=a.batch_size,
                     optimizer=a.optimizer, lr=a.lr, momentum=a.momentum, weight_decay=a.weight_decay,
                     schedule=a.schedule, warmup_epochs=a.warmup_epochs, label_smoothing=a.label_smoothing,
                     augment=a.augment, val=a.val, val_every=a.val_every, seed=a.seed,
                     eval_batch_size=a.eval_batch_size, precision=a.precision, channels_last=a.channels_last,
                     checkpoint_every=a.checkpoint_every, limit_train=a.limit_train, limit_val=a.limit_val,
                     device=a.device)


def cmd_train(a: argparse.Namespace) -> int:
    from .engine import distributed as D
    from .engine.run import default_run_dir, train

    cfg = config_from_args(a).validate()
    run_dir = a.run_dir or default_run_dir(cfg)
    history = train(cfg, run_dir, fresh=a.fresh, progress=not a.no_progress)
    if D.is_main():
        best = history.best("val_accuracy")
        print(f"Done: {len(history)} epochs; best val_accuracy {best:.4f}; final val_accuracy "
              f"{history.last('val_accuracy'):.4f}. Run directory: {run_dir}\n"
              f"Next: cnnlab plot {run_dir} · cnnlab eval {run_dir} · cnnlab export-weights {run_dir}")
    return 0


def cmd_eval(a: argparse.Namespace) -> int:
    from .engine.run import evaluate_run

    r = evaluate_run(a.run, split=a.split, data_dir=a.data_dir, which=a.which)
    print(f"{r.checkpoint} on {r.split} ({r.count:,} images): loss {r.loss:.4f} - accuracy {r.accuracy:.4f}")
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
        print(f"{n:<{width}}  {info.family:<10} {c}x{h}x{w:<4} {info.num_classes:>5} classes  {info.source}")
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


# ---- parser ------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cnnlab", description="Build, train and explain the classic CNNs.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(handler=handler)
        return p

    add_train_args(command("train", cmd_train, "train a network (re-running resumes from RUN_DIR/last.pt)"))

    p = command("eval", cmd_eval, "loss, accuracy and per-class accuracy of a trained run")
    p.add_argument("run", help="run directory or checkpoint file")
    p.add_argument("--split", default="test", choices=("train", "test"))
    p.add_argument("--which", default="best", choices=("best", "last"))
    p.add_argument("--data-dir")
    p.add_argument("--confusion", type=Path, metavar="PNG", help="also draw the confusion matrix")

    p = command("models", cmd_models, "list the registered networks")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'resnet*'")

    p = command("summary", cmd_summary, "Keras-style table: output shapes, params, multiply-adds, receptive field")
    p.add_argument("model", help="registered name or .cbapd spec file")
    p.add_argument("--input", type=parse_shape, help="CxHxW (default: the network's own)")
    p.add_argument("--num-classes", type=positive_int)

    p = command("plot", cmd_plot, "the course figure: train/val accuracy and loss per epoch (PNG)")
    p.add_argument("run", help="run directory")
    p.add_argument("--out", type=Path)

    p = command("export-weights", cmd_export_weights, "write the trained weights as weights.txt or safetensors")
    p.add_argument("run", help="run directory or checkpoint file")
    p.add_argument("--format", choices=("txt", "safetensors"), default="txt")
    p.add_argument("--which", default="best", choices=("best", "last"))
    p.add_argument("--out", type=Path)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: user errors become one line on stderr (exit 2), Ctrl-C exits 130."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from .engine.fit import TrainingInterrupted

    try:
        return args.handler(args) or 0
    except TrainingInterrupted as e:
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
