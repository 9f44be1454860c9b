"""Training images/s per model and batch size: cnnlab's engine against an everyday PyTorch loop (and Keras).

Every variant of every model is measured in turn, round after round (interleaved), so load from
other processes hits all of them alike; the table reports the median and best round, the train
GFLOP/s that implies, and its share of an fp32 matmul's GFLOP/s two ways: of the best matmul of
the whole run (the ceiling), and, round by round, of the matmul timed just before that round (the
host's speed at that moment: these machines drift by up to 2x within an hour). Then the ratios to
the everyday loop and to Keras. Variants:

- ``everyday``: torch DataLoader over a Dataset of uint8 tensors with per-image torchvision
  transforms (random crop with 4-pixel zero padding, flip), eager NCHW fp32, Adam.
- ``cnnlab fp32``: cnnlab's Trainer and TensorLoader (whole-tensor batching and augmentation), fp32 NCHW
  (the course recipe's numerics).
- ``cnnlab fp32-cl``: the same with channels_last.
- ``cnnlab bf16-cl``: bf16 autocast and channels_last (``--precision bf16 --channels-last``; the fast-cifar
  recipe's default, opt-in for the course networks, whose recipe is fp32).
- text networks (``--models kim-cnn dcnn``): sentences of SST-2's lengths (mean 19, at most 56 tokens) over a
  16,000-word vocabulary, Kim's Adadelta (rho 0.95) and max-norm. ``everyday``: a DataLoader over per-sentence
  id tensors padded per batch (``pad_sequence``), ``torch.optim.Adadelta``, the max-norm applied by hand;
  ``cnnlab fp32`` / ``cnnlab bf16``: the Trainer over one padded id tensor (each batch cut to its longest
  sentence) with cnnlab's row-lazy Adadelta.
- ``keras``: the course's own TensorFlow/Keras code (``keras_course.py``: the same layers, ``model.fit``
  with Adam on images divided by 255 up front, no augmentation, as the course trains), when
  tensorflow-cpu is installed (``pip install -e '.[keras-bench]'``); timed from the end of its first
  batch, so Keras's per-``fit`` setup is not counted against it.

    .venv/bin/python benchmarks/throughput.py --models baseline-cifar lenet5-cifar --batch-sizes 32 --rounds 5
"""
from __future__ import annotations

import argparse
import functools
import math
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import cnnlab

cnnlab.tune_cpu()  # the CLI's CPU settings, before torch loads (cnnlab.cpu)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from cnnlab.cli import positive_int  # noqa: E402
from cnnlab.cpu import describe_cpu  # noqa: E402
from cnnlab.data.loader import TensorLoader  # noqa: E402
from cnnlab.engine import FitConfig, Trainer  # noqa: E402
from cnnlab.errors import CnnlabError  # noqa: E402
from cnnlab.models import create_model, is_text_model  # noqa: E402

MATMUL_N = 2048  # side of the square fp32 matmul that measures the ceiling
COURSE_MODELS = ("baseline-cifar", "lenet5-cifar", "alexnet8-cifar", "vgg16-cifar", "inception10-cifar",
                 "resnet18-cifar")
ENGINE_VARIANTS = {"cnnlab fp32": ("fp32", False), "cnnlab fp32-cl": ("fp32", True), "cnnlab bf16-cl": ("bf16", True)}
TEXT_VARIANTS = {"cnnlab fp32": ("fp32", False), "cnnlab bf16": ("bf16", False)}
VOCAB = 16_000  # words of the fake sentences (SST-2's training vocabulary is about 14,800)
KIM_ADADELTA = dict(lr=1.0, rho=0.95, eps=1e-6)

Runner = Callable[[], float]  # runs one round, returns images/s


@dataclass
class Result:
    """Images/s of every round of one (model, batch size, variant)."""

    model: str
    batch: int
    variant: str
    rates: list[float] = field(default_factory=list)
    beside: list[float] = field(default_factory=list)  # matmul GFLOP/s measured just before each round

    @property
    def median(self) -> float:
        return statistics.median(self.rates)

    def share_of_beside(self, gflop_per_image: float) -> float:
        """Median over rounds of this round's train GFLOP/s over the matmul's measured just before it."""
        return statistics.median(r * gflop_per_image / m for r, m in zip(self.rates, self.beside))

    @property
    def best(self) -> float:
        return max(self.rates)


def fake_cifar(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """n random uint8 32x32 RGB images and labels (throughput does not depend on the pixels)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8), torch.randint(0, 10, (n,), generator=g)


def fake_sentences(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """n random sentences as right-padded int64 ids (lengths 3..56, mean about 19, as SST-2's) and labels."""
    g = torch.Generator().manual_seed(seed)
    lengths = (torch.randn(n, generator=g) * 9 + 19).round().clamp(3, 56).long()
    ids = torch.randint(2, VOCAB, (n, int(lengths.max())), generator=g)
    ids[torch.arange(ids.shape[1]) >= lengths[:, None]] = 0
    return ids, torch.randint(0, 2, (n,), generator=g)


def fake_inputs(model_name: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """What the network takes: CIFAR-sized images, or sentences for a text network."""
    return fake_sentences(n) if is_text_model(model_name) else fake_cifar(n)


def bench_model(model_name: str):
    """The network, with the vocabulary of the fake sentences for a text network."""
    return create_model(model_name, vocab_size=VOCAB) if is_text_model(model_name) else create_model(model_name)


@functools.cache
def train_gflop_per_image(model_name: str) -> float:
    """Forward + backward GFLOP per image or sentence (matmul/conv FLOPs, as FlopCounterMode counts them)."""
    model = bench_model(model_name)
    x = fake_sentences(64)[0] if is_text_model(model_name) else torch.rand(2, 3, 32, 32)
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), torch.zeros(len(x), dtype=torch.long)).backward()
    return counter.get_total_flops() / len(x) / 1e9


@functools.cache
def _matmul_operands(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two random n×n fp32 matrices, multiplied once as a warm-up; made once per run."""
    a, b = torch.rand(n, n), torch.rand(n, n)
    a @ b
    return a, b


def matmul_gflops(n: int = MATMUL_N, repeats: int = 2) -> float:
    """GFLOP/s of an n×n fp32 matmul: the best of ``repeats``."""
    a, b = _matmul_operands(n)
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


class PerImageDataset(Dataset):
    """The everyday way: one uint8 image at a time through torchvision transforms."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        from torchvision.transforms import v2

        self.images, self.labels = images, labels
        self.transform = v2.Compose([v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip(),
                                     v2.ToDtype(torch.float32, scale=True)])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(self.images[i]), self.labels[i]


def everyday_runner(model_name: str, batch: int, steps: int) -> Runner:
    """A plain loop: DataLoader with per-image transforms, eager NCHW fp32, Adam, loss.item() per step."""
    torch.manual_seed(0)
    model = create_model(model_name).train()
    opt = torch.optim.Adam(model.parameters(), 1e-3, eps=1e-7)
    images, labels = fake_cifar(batch * steps)
    loader = DataLoader(PerImageDataset(images, labels), batch_size=batch, shuffle=True, num_workers=0)
    return plain_loop(model, opt, loader, batch * steps)


def plain_loop(model: torch.nn.Module, opt: torch.optim.Optimizer, loader: DataLoader, count: int,
               after_step: Callable[[], None] | None = None) -> Runner:
    """One epoch of the everyday loop (forward, loss, zero_grad, backward, step, loss.item()) as a runner."""
    def run() -> float:
        t0 = time.perf_counter()
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if after_step:
                with torch.no_grad():
                    after_step()
            loss.item()
        return count / (time.perf_counter() - t0)

    return run


def everyday_text_runner(model_name: str, batch: int, steps: int) -> Runner:
    """A plain text loop: DataLoader over per-sentence id tensors padded per batch, torch's Adadelta, max-norm by hand."""
    from torch.nn.utils.rnn import pad_sequence

    torch.manual_seed(0)
    model = bench_model(model_name).train()
    opt = torch.optim.Adadelta(model.parameters(), **KIM_ADADELTA)
    ids, labels = fake_sentences(batch * steps)
    sentences = [row[row != 0] for row in ids]

    def collate(items: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        return pad_sequence([x for x, _ in items], batch_first=True), torch.stack([y for _, y in items])

    loader = DataLoader(list(zip(sentences, labels)), batch_size=batch, shuffle=True, collate_fn=collate)
    return plain_loop(model, opt, loader, batch * steps, model.after_step)


def engine_runner(model_name: str, batch: int, steps: int, precision: str, channels_last: bool) -> Runner:
    """cnnlab's own epoch loop (``Trainer.train_epoch``) over ``steps`` batches: crop-flip augmentation for images;
    Kim's Adadelta for sentences."""
    torch.manual_seed(0)
    text = is_text_model(model_name)
    cfg = FitConfig(batch_size=batch, precision=precision, **(dict(optimizer="adadelta", lr=1.0, momentum=0.95)
                                                              if text else {}))
    model = bench_model(model_name)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    inputs, labels = fake_inputs(model_name, batch * steps)
    loader = TensorLoader(inputs, labels, batch, augment="none" if text else "crop-flip", channels_last=channels_last)
    trainer = Trainer(model, loader, None, cfg, Path(tempfile.mkdtemp()), progress=False)

    def run() -> float:
        trainer.seek(0)  # the same epoch every round; the constant schedule keeps the learning rate flat
        t0 = time.perf_counter()
        trainer.train_epoch()
        return batch * steps / (time.perf_counter() - t0)

    return run


def keras_runner(model_name: str, batch: int, steps: int) -> Runner | None:
    """The course's Keras code training on the same number of images; None without tensorflow."""
    try:
        import tensorflow as tf
        from keras_course import BUILDERS, course_model
    except ImportError:
        return None
    if model_name not in BUILDERS:
        return None
    tf.keras.utils.set_random_seed(0)
    model = course_model(model_name)
    images, labels = fake_cifar(batch * steps)
    x, y = images.permute(0, 2, 3, 1).numpy().astype("float32") / 255, labels.numpy()

    class Clock(tf.keras.callbacks.Callback):
        def on_train_batch_end(self, batch_index: int, logs: dict | None = None) -> None:
            self.stop = time.perf_counter()
            if batch_index == 0:
                self.start = self.stop

    def run() -> float:
        clock = Clock()
        model.fit(x, y, batch_size=batch, epochs=1, verbose=0, shuffle=True, callbacks=[clock])
        return batch * (steps - 1) / (clock.stop - clock.start)

    return run


def runners(model_name: str, batch: int, steps: int) -> Iterator[tuple[str, Runner]]:
    """Every available variant for one model and batch size."""
    if is_text_model(model_name):
        yield "everyday", everyday_text_runner(model_name, batch, steps)
        for name, (precision, cl) in TEXT_VARIANTS.items():
            yield name, engine_runner(model_name, batch, steps, precision, cl)
        return
    keras = keras_runner(model_name, batch, steps)
    if keras is not None:
        yield "keras", keras
    yield "everyday", everyday_runner(model_name, batch, steps)
    for name, (precision, cl) in ENGINE_VARIANTS.items():
        yield name, engine_runner(model_name, batch, steps, precision, cl)


def steps_for(gflop: float, batch: int, seconds: float = 2.0, assumed_gflops: float = 150.0) -> int:
    """Steps that take about ``seconds`` at ``assumed_gflops`` (at least 3, at most 200)."""
    return max(3, min(200, round(seconds * assumed_gflops / max(gflop * batch, 1e-9))))


def measure(models: list[str], batches: list[int], rounds: int) -> tuple[list[Result], list[float]]:
    """All results and the matmul GFLOP/s of every round, interleaved."""
    cases, results = [], []
    for m in models:
        gflop = train_gflop_per_image(m)
        for b in batches:
            for name, run in runners(m, b, steps_for(gflop, b)):
                run()  # warm-up: allocations, oneDNN primitives
                res = Result(m, b, name)
                cases.append((res, run))
                results.append(res)
    ceiling = []
    for r in range(rounds):
        beside = []
        for res, run in cases:
            beside.append(matmul_gflops())  # the host's speed right now: it drifts by 2x within an hour
            res.beside.append(beside[-1])
            res.rates.append(run())
        ceiling.append(max(beside))
        print(f"after round {r + 1}/{rounds}:\n{table(results, max(ceiling))}", file=sys.stderr, flush=True)
    return results, ceiling


def table(results: list[Result], ceiling: float) -> str:
    """Markdown table: images/s (median, best), GFLOP/s, % of the ceiling and of the matmul beside, ratios."""
    gflop = {m: train_gflop_per_image(m) for m in {r.model for r in results}}
    everyday = {(r.model, r.batch): r.median for r in results if r.variant == "everyday"}
    keras = {(r.model, r.batch): r.median for r in results if r.variant == "keras"}
    lines = [f"fp32 matmul ceiling (best of rounds): {ceiling:.0f} GFLOP/s", "",
             "| model | batch | variant | img/s median | img/s best | GFLOP/s (median) | % of ceiling | % of matmul beside "
             "| × everyday | × keras |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        gfs = r.median * gflop[r.model]
        vs_keras = f"{r.median / keras[(r.model, r.batch)]:.2f}" if (r.model, r.batch) in keras else "–"
        lines.append(f"| {r.model} | {r.batch} | {r.variant} | {r.median:,.0f} | {r.best:,.0f} | {gfs:.1f} | "
                     f"{100 * gfs / ceiling:.0f}% | {100 * r.share_of_beside(gflop[r.model]):.0f}% | "
                     f"{r.median / everyday[(r.model, r.batch)]:.2f} | {vs_keras} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(COURSE_MODELS))
    p.add_argument("--batch-sizes", nargs="+", type=positive_int, default=[32])
    p.add_argument("--rounds", type=positive_int, default=5)
    p.add_argument("--threads", type=positive_int, help="torch intra-op threads (default: torch's choice)")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    try:
        results, ceiling = measure(a.models, a.batch_sizes, a.rounds)
    except CnnlabError as e:
        p.exit(2, f"error: {e}\n")
    print(describe_cpu())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; matmul GFLOP/s per round: "
          + ", ".join(f"{c:.0f}" for c in ceiling))
    if "tensorflow" in sys.modules:
        print(f"tensorflow {sys.modules['tensorflow'].__version__} (the keras rows)")
    print(table(results, max(ceiling)))


if __name__ == "__main__":
    main()
