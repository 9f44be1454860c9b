"""From a RunConfig to a finished run, and from a run directory back to a model.

The run directory (runs/MODEL-DATASET by default) holds config.json, last.pt, best.pt and the
history; every checkpoint carries the run card (``card.RunCard``) and the config.
"""
from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..data import ImageSet, canonical_name, dataset_info, load_dataset
from ..data.loader import TensorLoader, downsample, progressive_sides
from ..data.text import TextSet, fold_indices, is_text_dataset, load_text, readable_splits, text_splits
from ..errors import CnnlabError
from ..models import create_model, is_text_model
from ..models.registry import input_too_small
from ..engine import distributed as D
from ..engine.checkpoint import load_checkpoint, load_model_state
from ..engine.evaluate import predict_logits
from ..engine.callbacks import Callback, EarlyStopping, ReduceLROnPlateau, TensorBoard
from ..engine.fit import Trainer
from ..engine.history import History
from ..engine.precision import describe as describe_precision
from ..io import remove_stale_temps, run_dir_lock
from ..models.transfer import backbone_kwargs, build_transfer, load_pretrained, transfer_meta
from .budget import fit_to_budget, resumed_epochs
from .card import Preprocess, RunCard, TextInput
from .config import RunConfig
from .recipes import recipe_hooks

RUN_FILES = ("last.pt", "best.pt", "history.json", "history.csv", "config.json")


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` is CUDA when present, else CPU; under torchrun each process takes its own GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = D.local_device(torch.device(name))
    except RuntimeError:
        raise CnnlabError(f"unknown --device {name!r}: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise CnnlabError(f"--device {name} needs a CUDA GPU and driver, and none is usable here: use --device cpu")
        torch.cuda.set_device(device)
    return device


def default_run_dir(cfg: RunConfig) -> Path:
    """runs/<model>-<dataset>, the analogue of the course's ./checkpoint/<Model>.ckpt."""
    model = Path(cfg.model).stem if cfg.model.endswith(".cbapd") else cfg.model
    dataset = Path(cfg.dataset).name if "/" in cfg.dataset else cfg.dataset
    return Path("runs") / f"{model}-{dataset}"


Data = ImageSet | TextSet
DEV_FRACTION = 0.1  # Kim 2014: "for datasets without a standard dev set we randomly select 10% of the training data"
FOLD_SEED = 0  # the folds of --fold are the same whatever the run's --seed, so runs with other seeds compare


@dataclass
class Splits:
    """The training examples and the validation examples a run uses, with the class names."""

    train: Data
    val: Data


def is_folder(dataset: str) -> bool:
    """True when ``dataset`` names an image folder rather than a built-in dataset."""
    return canonical_name(dataset) is None


def check_modality(cfg: RunConfig) -> None:
    """A text network needs a sentence dataset and an image network an image one; one line naming the fix."""
    text_model = is_text_model(cfg.model)
    if text_model and not is_text_dataset(cfg.dataset):
        raise CnnlabError(f"{cfg.model} classifies sentences: --dataset mr, sst2, trec, a file of labelled lines "
                          f"(LABEL sentence, .tsv, .csv) or a folder of class folders of .txt files (got {cfg.dataset!r})")
    if not text_model and canonical_name(cfg.dataset) is None and is_text_dataset(cfg.dataset):
        raise CnnlabError(f"{cfg.dataset} holds sentences but {cfg.model} classifies images: train a text network "
                          "on it (kim-cnn, dcnn)")
    if text_model and (cfg.transfer or cfg.rgb or cfg.resize or cfg.augment != "none"):
        raise CnnlabError(f"{cfg.model} reads token ids: the image options (--pretrained, --head, --freeze, --pooling, "
                          "--rgb, --resize, --augment) do not apply")
    if cfg.word_vectors and not text_model:
        raise CnnlabError(f"--word-vectors fills a text network's embeddings; {cfg.model} has none")


def load_split(cfg: RunConfig, split: str) -> Data:
    """One split of the run's dataset: sentences for a text network; else images with their label mode,
    converted to RGB and resized as the run asks."""
    if is_text_model(cfg.model):
        return load_text(cfg.dataset, split, root=cfg.data_dir)
    opts: dict = {"label_mode": cfg.label_mode} if cfg.label_mode != "fine" else {}
    if cfg.resize and is_folder(cfg.dataset):
        opts["size"] = cfg.resize  # decode straight at the final size
    data = load_dataset(cfg.dataset, split, root=cfg.data_dir, **opts)
    data = data.to_rgb() if cfg.rgb else data
    return data.resize(cfg.resize, cfg.resize) if cfg.resize else data


def run_split(cfg: RunConfig, split: str) -> Data:
    """``train`` or ``test`` as the run sees them: with ``--fold K``, the other folds and fold K of the train split."""
    if not cfg.fold:
        return load_split(cfg, split)
    data = load_split(cfg, "train")
    fold = fold_indices(data.labels.numpy(), cfg.folds, cfg.fold, FOLD_SEED)
    return data.subset(fold) if split == "test" else data.subset(np.setdiff1d(np.arange(len(data)), fold))


def has_dev_split(cfg: RunConfig) -> bool:
    """True when the dataset comes with a dev split of its own (SST-2)."""
    return is_text_dataset(cfg.dataset) and "dev" in text_splits(cfg.dataset)


def dev_part(cfg: RunConfig, train: Data) -> tuple[Data, Data]:
    """(train, dev): the dataset's dev split, else a stratified, seeded 10% of train as Kim held out."""
    if has_dev_split(cfg):
        return train, load_split(cfg, "dev")
    return train.split(DEV_FRACTION, seed=cfg.seed)


def load_splits(cfg: RunConfig) -> Splits:
    """Train and validation sets: the test split (course behaviour; fold K with --fold), the dev split, or a
    fraction carved from train. A text run's vocabulary is that of its training part."""
    check_modality(cfg)
    frac = cfg.val_fraction()
    if is_folder(cfg.dataset) and not is_text_dataset(cfg.dataset):
        dataset_info(cfg.dataset)  # neither a dataset name nor a folder: the error lists the datasets
        if cfg.val == "test" and not cfg.fold:
            raise CnnlabError(f"the image folder {cfg.dataset} has no test split: pass --val 0.2 to validate on a "
                              "stratified 20% of it")
    train = run_split(cfg, "train")
    if cfg.val == "test":
        val = run_split(cfg, "test")
    elif cfg.val == "dev":
        train, val = dev_part(cfg, train)
    else:
        train, val = train.split(frac, seed=cfg.seed)
        check_every_class_trains(cfg, train, val)
    if cfg.limit_train:
        train = train.subset(cfg.limit_train)
    if cfg.limit_val:
        val = val.subset(cfg.limit_val)
    if isinstance(train, TextSet):
        train = train.with_vocabulary()
        val = val.with_vocabulary(train.vocabulary)
    return Splits(train, val)


def check_every_class_trains(cfg: RunConfig, train: Data, val: Data) -> None:
    """Refuse a --val fraction that leaves a class with no training example (a class of one image, say); a class
    the data has no example of at all (TREC's ABBR in a small file) is not the fraction's doing."""
    k = len(train.classes)
    in_train, in_val = torch.bincount(train.labels, minlength=k), torch.bincount(val.labels, minlength=k)
    starved = ((in_train == 0) & (in_val > 0)).nonzero()
    if not len(starved):
        return
    c = int(starved[0])
    total = int(in_val[c])
    one, many = train.unit.removesuffix("s"), train.unit  # image(s), sentence(s)
    raise CnnlabError(f"--val {cfg.val} of {cfg.dataset} leaves class {train.classes[c]!r} without a training {one} "
                      f"(it has {total} in all): add {many} of it, or lower --val")


def eval_split(cfg: RunConfig, split: str) -> Data:
    """The examples of one split as the run defined them: train, test (fold K with --fold), dev, or val."""
    if split == "val":
        return load_splits(cfg).val
    if split == "dev":
        return dev_part(cfg, run_split(cfg, "train"))[1]
    return run_split(cfg, split)


def make_loaders(cfg: RunConfig, splits: Splits, device: torch.device) -> tuple[TensorLoader, TensorLoader]:
    """Training loader (shuffled, augmented; each rank takes its share of every global batch) and evaluation
    loader (each rank evaluates every world-th image, none left out)."""
    rank, world = D.rank(), D.world_size()
    if cfg.batch_size % world:
        raise CnnlabError(f"--batch-size {cfg.batch_size} is the global batch: it must split evenly over the "
                          f"{world} processes (try {cfg.batch_size // world * world or world})")
    common = dict(device=device, channels_last=cfg.channels_last)
    train = TensorLoader(splits.train.inputs, splits.train.labels, cfg.batch_size // world, shuffle=True,
                         augment=cfg.augment, seed=cfg.seed, rank=rank, world_size=world, **common)
    val = TensorLoader(splits.val.inputs[rank::world], splits.val.labels[rank::world], cfg.eval_batch_size,
                       shuffle=False, **common)
    return train, val


def wrap_distributed(model: nn.Module, cfg: RunConfig, device: torch.device) -> nn.Module:
    """DistributedDataParallel under torchrun (SyncBatchNorm first with --sync-bn); the model itself otherwise."""
    if not D.is_distributed():
        return model
    if cfg.sync_bn:
        if device.type == "cpu":
            raise CnnlabError("--sync-bn needs GPUs: PyTorch's SyncBatchNorm has no CPU kernel (without it each "
                              "process normalises its own share of the batch)")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def make_card(cfg: RunConfig, data: Data) -> RunCard:
    """What the run's checkpoints carry to rebuild its model and name its classes without the dataset."""
    if isinstance(data, TextSet):
        return RunCard(model_name=cfg.model, num_classes=len(data.classes), in_channels=1,
                       input_size=(int(data.tokens.shape[1]),), classes=tuple(data.classes), dataset=cfg.dataset,
                       model_kwargs=dict(cfg.model_kwargs or {}), text=TextInput(data.vocabulary, data.tokenizer))
    c, h, w = data.images.shape[1:]
    transfer = transfer_meta(cfg.model, cfg.pretrained, cfg.head_widths(), cfg.pooling, cfg.freeze) \
        if cfg.transfer else None
    return RunCard(model_name=cfg.model, num_classes=len(data.classes), in_channels=int(c), input_size=(int(h), int(w)),
                   classes=tuple(data.classes), dataset=cfg.dataset,
                   model_kwargs=backbone_kwargs(cfg.model, cfg.pretrained, cfg.model_kwargs), transfer=transfer,
                   preprocess=Preprocess(cfg.rgb, cfg.resize, cfg.label_mode))


def build_model(card: RunCard) -> nn.Module:
    """The network a run card describes (a backbone under a new head for transfer), freshly initialised."""
    vocab = {"vocab_size": len(card.text.vocabulary)} if card.text else {}

    def factory() -> nn.Module:
        return create_model(card.model_name, num_classes=card.num_classes, in_channels=card.in_channels,
                            input_size=card.input_size, **vocab, **card.model_kwargs)

    try:
        if card.transfer:
            return build_transfer(factory, card.transfer, card.num_classes, card.in_channels, card.input_size)
        return factory()
    except RuntimeError as e:
        fix = "use longer sentences" if card.text else "use larger inputs, e.g. --resize 32"
        too_small = input_too_small(e, card.model_name, card.input_size, fix)
        if too_small is None:
            raise
        raise too_small from None


def progressive_plan(cfg: RunConfig, model: nn.Module, train: Data, device: torch.device) -> list[int] | None:
    """Each epoch's training image side under ``--progressive-resize`` (None without it), after checking that
    the data are images and that the network takes the smallest side (a flattening head does not)."""
    if not cfg.progressive_resize:
        return None
    if isinstance(train, TextSet):
        raise CnnlabError(f"--progressive-resize resizes images, and {cfg.dataset} holds sentences: drop the option")
    full = min(train.inputs.shape[-2:])
    sides = progressive_sides(cfg.epochs, full, cfg.progressive_resize)
    x = downsample(torch.zeros(1, *train.inputs.shape[1:], device=device), min(sides))
    was_training = model.training
    try:
        with torch.inference_mode():
            model.eval()(x)
    except RuntimeError as e:
        size = tuple(x.shape[-2:])
        too_small = input_too_small(e, cfg.model, size, f"raise --progressive-resize above {cfg.progressive_resize}")
        raise too_small or CnnlabError(
            f"{cfg.model} cannot train on {size[0]}x{size[1]} images (its head expects the full "
            f"{train.inputs.shape[-2]}x{train.inputs.shape[-1]} feature map): --progressive-resize needs a network "
            "that pools globally, such as fast-cifar or the resnets") from None
    finally:
        model.train(was_training)
    return sides


def parameter_counts(model: nn.Module) -> str:
    """``N parameters``, with the trainable count when part of the model is frozen."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return f"{total:,} parameters" + (f" ({trainable:,} trainable)" if trainable != total else "")


def start_fresh(run_dir: Path) -> None:
    """Remove a previous run's files (only cnnlab's own) so training starts from scratch."""
    for name in RUN_FILES:
        (run_dir / name).unlink(missing_ok=True)
    shutil.rmtree(run_dir / "plots", ignore_errors=True)  # `cnnlab visualize` output of the old weights


def identity_check(cfg: RunConfig, run_dir: Path):
    """A resume check: refuse a ``last.pt`` saved by a run with other identity settings (model, data, seed …)."""
    def check(ckpt: dict) -> None:
        saved = ckpt.get("config")
        diff = RunConfig.from_dict(saved).identity_mismatch(cfg) if isinstance(saved, dict) else ["configuration"]
        if diff:
            raise CnnlabError(f"{run_dir} holds a run with a different {', '.join(diff)}; pass --fresh to start "
                              "over there, or --run-dir to train elsewhere.")

    return check


def config_callbacks(cfg: RunConfig) -> list[Callback]:
    """The callbacks the run's options ask for (--early-stopping, --reduce-lr-on-plateau, --tensorboard)."""
    callbacks: list[Callback] = []
    if cfg.early_stopping is not None:
        callbacks.append(EarlyStopping(cfg.monitor, patience=cfg.early_stopping, verbose=1))
    if cfg.reduce_lr_on_plateau is not None:
        callbacks.append(ReduceLROnPlateau(cfg.monitor, patience=cfg.reduce_lr_on_plateau, verbose=1))
    if cfg.tensorboard is not None:
        callbacks.append(TensorBoard(cfg.tensorboard))
    return callbacks


@contextmanager
def training_lock(run_dir: Path, device: torch.device) -> Iterator[None]:
    """Rank 0 holds ``run_dir``'s lock (``io.run_dir_lock``) for the whole run; every rank stops if it could not."""
    refused: CnnlabError | None = None
    with ExitStack() as held:
        if D.is_main():
            try:
                held.enter_context(run_dir_lock(run_dir))
            except CnnlabError as e:
                refused = e
        if D.any_rank(refused is not None, device):
            raise refused or CnnlabError(f"rank {D.rank()} stops: rank 0 could not lock {run_dir} (see its message)")
        yield


def train_run(cfg: RunConfig, run_dir: Path | None = None, fresh: bool = False, progress: bool = True,
              callbacks: Sequence[Callback] = ()) -> History:
    """Train (or resume) the run ``cfg`` describes in ``run_dir`` (default: runs/MODEL-DATASET); returns its History.

    ``callbacks`` (``cnnlab.callbacks``) run after those the options ask for. The directory is locked for
    the whole run: a second process training there is refused with one line.
    """
    started = time.perf_counter()
    callbacks = [*config_callbacks(cfg), *callbacks]
    run_dir = Path(run_dir) if run_dir else default_run_dir(cfg)
    device = pick_device(cfg.device)
    D.init_from_env(device)
    with training_lock(run_dir, device):
        return _train_locked(cfg, run_dir, device, started, fresh, progress, callbacks)


def _train_locked(cfg: RunConfig, run_dir: Path, device: torch.device, started: float, fresh: bool, progress: bool,
                  callbacks: Sequence[Callback]) -> History:
    """``train_run`` once the run directory is this process's: clean up, load, build, resume, fit."""
    if fresh and D.is_main():
        start_fresh(run_dir)
    if D.is_main():
        remove_stale_temps(run_dir, RUN_FILES)
    D.barrier()
    splits = D.main_first(lambda: load_splits(cfg))
    card = make_card(cfg, splits.train)
    torch.manual_seed(cfg.seed)
    model = build_model(card)
    recipe = recipe_hooks(cfg.recipe)
    if recipe and recipe.init_from_data:
        recipe.init_from_data(model, splits.train.inputs)
    if isinstance(splits.train, TextSet) and not (run_dir / "last.pt").exists():
        load_vectors(model, cfg, splits.train.vocabulary)
    if cfg.pretrained and not (run_dir / "last.pt").exists():
        source = load_pretrained(model, cfg.model, cfg.pretrained)
        if D.is_main():
            print(f"Backbone weights: {source}", file=sys.stderr, flush=True)
    model = model.to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model = wrap_distributed(model, cfg, device)
    if D.rank():
        torch.manual_seed(D.rank_seed(cfg.seed))
    train_loader, val_loader = make_loaders(cfg, splits, device)
    optimizer_factory = recipe.make_optimizer if recipe else None
    if cfg.time_budget:
        epochs = resumed_epochs(cfg, run_dir)
        cfg = replace(cfg, epochs=epochs) if epochs else fit_to_budget(
            cfg, D.unwrap(model), train_loader, val_loader, time.perf_counter() - started, optimizer_factory)
    sides = progressive_plan(cfg, D.unwrap(model), splits.train, device)
    if D.is_main():
        unit = splits.train.unit
        print(f"Training {cfg.model} on {cfg.dataset}: {len(splits.train):,} train / {len(splits.val):,} "
              f"validation {unit}, {card.num_classes} classes, {parameter_counts(model)}, device {device}"
              + ("" if cfg.precision == "fp32" else f", precision {describe_precision(cfg.precision, device)}")
              + (f" × {D.world_size()} processes" if D.is_distributed() else "")
              + f" → {run_dir}", file=sys.stderr, flush=True)
        if sides:
            print(f"Progressive resizing: training image side per epoch {' '.join(map(str, sides))} "
                  "(validation at full size)", file=sys.stderr, flush=True)
    trainer = Trainer(model, train_loader, val_loader, cfg.fit_config(), run_dir,
                      {"card": card.to_dict(), "config": cfg.to_dict()}, callbacks, progress, optimizer_factory)
    trainer.resume(identity_check(cfg, run_dir))
    if D.is_main():
        cfg.save(run_dir / "config.json")
    history = trainer.fit()
    history.run_dir = run_dir
    return history


def load_vectors(model: nn.Module, cfg: RunConfig, vocabulary: tuple[str, ...]) -> None:
    """Fill a text network's embeddings from ``--word-vectors``; its variant must want them (Kim's static,
    non-static, multichannel) and the file must exist."""
    variant = getattr(model, "variant", None)
    if variant is not None and variant != "rand" and not cfg.word_vectors:
        raise CnnlabError(f"{cfg.model} variant {variant} starts from pretrained vectors: pass --word-vectors PATH "
                          "(a word2vec .bin or GloVe .txt file), or --model-option variant=rand")
    if not cfg.word_vectors:
        return
    if variant == "rand":
        raise CnnlabError(f"{cfg.model} variant rand uses random vectors only: pass --model-option "
                          "variant=static (or non-static, multichannel) to start from --word-vectors")
    from ..data.vectors import read_word_vectors

    vectors = read_word_vectors(cfg.word_vectors, vocabulary)
    model.load_word_vectors(vectors.vectors, vectors.found)
    if D.is_main():
        print(f"Word vectors: {vectors.describe()}", file=sys.stderr, flush=True)


def resolve_checkpoint(path: Path, which: str = "best") -> Path:
    """A run directory means its best.pt (or last.pt when no validation ran); a file is itself."""
    path = Path(path)
    if path.is_dir():
        for name in (f"{which}.pt", "last.pt"):
            if (path / name).exists():
                return path / name
        raise CnnlabError(f"{path} holds no checkpoint (best.pt / last.pt): train there first")
    if not path.exists():
        raise CnnlabError(f"no run directory or checkpoint at {path}")
    return path


@dataclass(frozen=True)
class Trained:
    """A trained model rebuilt from a checkpoint: the module (eval mode), its card, its run config, the file."""

    model: nn.Module
    card: RunCard
    config: RunConfig
    path: Path


def load_trained(path: Path, which: str = "best", device: str = "cpu") -> Trained:
    """Rebuild the model of a run directory or checkpoint file and load its weights."""
    ckpt_path = resolve_checkpoint(path, which)
    ckpt = load_checkpoint(ckpt_path, map_location=device)
    card = RunCard.from_checkpoint(ckpt, str(ckpt_path))
    model = build_model(card).to(device)
    load_model_state(model, ckpt.get("model"), str(ckpt_path))
    model.eval()
    return Trained(model, card, saved_config(ckpt, card, str(ckpt_path)), ckpt_path)


def saved_config(ckpt: dict, card: RunCard, source: str) -> RunConfig:
    """The RunConfig a checkpoint was trained with (one rebuilt from its card when it has none)."""
    saved = ckpt.get("config")
    if saved is None:
        return RunConfig(model=card.model_name, dataset=card.dataset or "digits", rgb=card.preprocess.rgb,
                         resize=card.preprocess.resize, label_mode=card.preprocess.label_mode)
    if not isinstance(saved, dict):
        raise CnnlabError(f"{source}: its run configuration is damaged; use another checkpoint, or re-train")
    try:
        return RunConfig.from_dict(saved)
    except (CnnlabError, TypeError) as e:
        raise CnnlabError(f"{source}: its run configuration does not load ({e}); use another checkpoint, or re-train") from None


@dataclass
class EvalResult:
    """Loss, accuracy, per-class accuracy and the confusion matrix (rows: true class), with every image's verdict."""

    loss: float
    accuracy: float
    classes: list[str]
    confusion: torch.Tensor
    checkpoint: str
    split: str
    count: int
    tta: str = "none"  # test-time augmentation the run's config asks for (RunConfig.tta)
    confusion_png: Path | None = None  # where the confusion matrix was drawn, when asked
    labels: torch.Tensor | None = None  # int64 true class of each evaluated example, in split order
    predicted: torch.Tensor | None = None  # int64 predicted class of each evaluated example
    unit: str = "images"  # what was counted: images or sentences

    def per_class_accuracy(self) -> list[float]:
        totals = self.confusion.sum(1).clamp(min=1)
        return (self.confusion.diag() / totals).tolist()

    def _repr_html_(self) -> str:
        from ..explain.notebook import eval_html

        title = f"{self.checkpoint} on {self.split} ({self.count:,} {self.unit})"
        return eval_html(title, self.loss, self.accuracy, self.classes, self.confusion.numpy())


def has_test_split(cfg: RunConfig) -> bool:
    """True when the run has a test split: fold K of a --fold run, else the dataset's own (the built-in image sets',
    TREC's, SST-2's when its file is there); an image folder, MR and a file or folder of sentences have none."""
    if cfg.fold:
        return True
    if is_text_dataset(cfg.dataset):
        return "test" in readable_splits(cfg.dataset, cfg.data_dir)
    return not is_folder(cfg.dataset)


def default_split(trained: Trained, data_dir: str | None = None) -> str:
    """The split a run is evaluated on unless asked: test, or for a dataset without one (an image folder, MR
    without --fold) the examples it validated on."""
    saved = trained.config
    cfg = replace(saved, dataset=trained.card.dataset or saved.dataset, data_dir=data_dir or saved.data_dir)
    return "test" if has_test_split(cfg) else "val"


def evaluation_data(trained: Trained, split: str | None = None, data_dir: str | None = None) -> Data:
    """The examples of one split (train, test, dev, or val: those the run validated on) of a run's dataset, whole;
    by default ``default_split``."""
    card, saved = trained.card, trained.config
    cfg = replace(saved, dataset=card.dataset or saved.dataset, data_dir=data_dir or saved.data_dir,
                  limit_train=None, limit_val=None)
    split = split or default_split(trained, data_dir)
    if split == "test" and is_folder(cfg.dataset) and not is_text_dataset(cfg.dataset) and not cfg.fold:
        raise CnnlabError(f"the image folder {cfg.dataset} has no test split: use --split val (the part held out "
                          "for validation) or --split train")
    data = eval_split(cfg, split)
    if card.text:
        data = data.with_vocabulary(card.text.vocabulary)
    elif tuple(data.images.shape[1:]) != card.input_shape:
        raise CnnlabError(f"{split} images are {tuple(data.images.shape[1:])}, the model expects {card.input_shape}")
    return data


def evaluate_trained(trained: Trained, data: Data, split: str, batch_size: int = 500) -> EvalResult:
    """Loss, accuracy and confusion matrix of a loaded run on ``data`` (its test-time augmentation included)."""
    loader = TensorLoader(data.inputs, data.labels, batch_size, shuffle=False)
    logits, labels = predict_logits(trained.model, loader, tta=trained.config.tta)
    loss = torch.nn.functional.cross_entropy(logits, labels).item()
    pred = logits.argmax(1)
    k = trained.card.num_classes
    confusion = torch.bincount(labels * k + pred, minlength=k * k).view(k, k)
    return EvalResult(loss, (pred == labels).float().mean().item(), list(trained.card.classes), confusion,
                      str(trained.path), split, len(labels), trained.config.tta, labels=labels, predicted=pred,
                      unit=data.unit)


def evaluate_run(path: Path, split: str | None = None, data_dir: str | None = None, which: str = "best",
                 batch_size: int = 500) -> EvalResult:
    """Evaluate a trained run on a split (train, test — fold K for a --fold run —, dev, or val: the examples it
    validated on) of its dataset; by default the test split, for a dataset without one (an image folder) the run's
    own validation examples."""
    trained = load_trained(path, which)
    split = split or default_split(trained, data_dir)
    return evaluate_trained(trained, evaluation_data(trained, split, data_dir), split, batch_size)


__all__ = ["EvalResult", "Splits", "Trained", "build_model", "default_run_dir", "default_split", "eval_split",
           "evaluate_run", "evaluate_trained", "evaluation_data", "has_test_split", "load_splits", "load_trained",
           "make_card", "make_loaders", "pick_device", "resolve_checkpoint", "train_run"]
