"""The peer for cnnlab's ``kim-cnn``: Kim (2014)'s CNN-rand trained as his Theano code (``conv_net_sentence.py``,
``conv_net_classes.py``, ``process_data.py``) trains it, written as a plain PyTorch loop — no cnnlab engine,
optimiser, model or loader. cnnlab is imported only to read the files, tokenise them as it does and pick
the same held-out sentences (``fold_indices`` with ``run.FOLD_SEED``), so that beside a ``cnnlab train kim-cnn``
run only the network and its training differ. It exists to tell whether cnnlab's TREC accuracy (83.2% on a
held-out fold, docs/results.md, against Kim's 91.2% on the official test set) is cnnlab's doing or the protocol's.

What it keeps from Kim's code:

* the vocabulary is every word of every sentence of the data set (train and held-out, as process_data.py),
  each with its own random 300-d vector uniform in ±0.25; id 0 is padding, a zero row set back to zero
  after every update (his ``set_zero``);
* every sentence is ``max(widths) - 1`` padding ids, its words, then padding up to ``max_l + 2·pad``
  (``get_idx_from_sent``; max_l is the data set's longest sentence);
* the network: per width 3, 4, 5 a convolution of 100 filters h×300 over the whole padded sentence, ReLU,
  max over all positions (all-padding windows included), dropout 0.5 on the 300 features as his
  MLPDropout does it (a mask without rescaling in training, the output weights × 0.5 at test), a linear
  softmax layer; conv weights uniform ±√(6/(fan_in + fan_out)) with fan_in = h·300 and fan_out =
  100·h·300/(L − h + 1) (his pool size), conv biases and the output layer zero;
* Adadelta (rho 0.95, eps 1e-6, lr 1) over every parameter, the embedding included, on the mean
  cross-entropy of batches of 50; after each update every output unit's weights rescaled to norm ≤ 3
  (his ``col_norms`` with ``sqr_norm_lim=9``);
* his batching: the training sentences extended to a multiple of 50 with randomly chosen extra copies,
  shuffled once; the last 10% of the batches (``round(0.9·n_batches)`` train) are the dev set; each
  epoch visits the training batches in a new random order; 25 epochs;
* his result: the test accuracy of the epoch whose dev accuracy is best, ``>=`` as his code compares, so
  the last such epoch on ties (cnnlab's best.pt keeps the first; that one is printed too).

``--like-cnnlab`` swaps single pieces of Kim's training for cnnlab's, to find which one a difference between
the two comes from: ``init`` (Glorot-uniform over the convolution's own fans: cnnlab's ``conv_init=glorot``,
its default before session 11), ``vocab`` (the vocabulary of the training sentences only, every other word
one shared random ``<unk>`` vector), ``padding`` (the max skips windows of pure padding, floored at 0) and
``shuffle`` (the sentences reshuffled into new batches every epoch).

    .venv/bin/python benchmarks/kim_peer.py --dataset trec --data-dir ../shared/data/text --fold 1 --seeds 0 1 2
    .venv/bin/python benchmarks/kim_peer.py --dataset mr --data-dir ../shared/data/text --fold 1 --seeds 0 1 2
    .venv/bin/python benchmarks/kim_peer.py --dataset sst2 --data-dir ../shared/data/text --seeds 0 1 2
"""
from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.cli import positive_int
from cnnlab.data.text import fold_indices, load_text
from cnnlab.errors import CnnlabError
from cnnlab.runs.run import FOLD_SEED

WIDTHS = (3, 4, 5)
MAPS = 100
DIM = 300
RANDOM_RANGE = 0.25
DROPOUT = 0.5
BATCH = 50
TRAIN_SHARE = 0.9
MAX_NORM = 3.0  # sqrt(sqr_norm_lim = 9)
RHO, EPS = 0.95, 1e-6
CNNLAB_CHOICES = ("init", "vocab", "padding", "shuffle")  # --like-cnnlab: cnnlab's way instead of Kim's


@dataclass
class Corpus:
    """The sentences a run trains and is tested on, as token lists with int labels, and the whole data set's."""

    train: list[list[str]]
    train_labels: list[int]
    test: list[list[str]]
    test_labels: list[int]
    every: list[list[str]]  # all the sentences of the data set: the vocabulary and max_l come from them
    classes: list[str]
    protocol: str


def read_corpus(dataset: str, data_dir: str, fold: int | None, folds: int) -> Corpus:
    """The training and held-out sentences exactly as a cnnlab run has them (``--fold K`` or SST-2's dev split)."""
    if dataset == "sst2":
        train, test = (load_text("sst2", split, root=data_dir, download=False) for split in ("train", "dev"))
        return Corpus(train.sentences, train.labels.tolist(), test.sentences, test.labels.tolist(),
                      train.sentences + test.sentences, train.classes,
                      "trained on stsa.binary.train, tested on stsa.binary.dev")
    data = load_text(dataset, "train", root=data_dir, download=False)
    held = set(fold_indices(data.labels.numpy(), folds, fold, FOLD_SEED).tolist())
    labels = data.labels.tolist()
    rest = [i for i in range(len(data)) if i not in held]
    return Corpus([data.sentences[i] for i in rest], [labels[i] for i in rest],
                  [data.sentences[i] for i in sorted(held)], [labels[i] for i in sorted(held)], data.sentences,
                  data.classes, f"fold {fold} of {folds} held out (cnnlab's fold_indices, seed {FOLD_SEED})")


class Vocabulary(dict):
    """Word → id from 1 (0 is padding), in order of first appearance; a word it lacks is ``unknown`` (None: none lacks)."""

    unknown: int | None = None

    def __missing__(self, word: str) -> int:
        if self.unknown is None:
            raise KeyError(word)
        return self.unknown


def vocabulary(sentences: Sequence[Sequence[str]], with_unknown: bool = False) -> Vocabulary:
    """Every word of ``sentences`` → its id; ``with_unknown`` adds one id, last, that every other word shares."""
    index = Vocabulary()
    for sentence in sentences:
        for word in sentence:
            index.setdefault(word, len(index) + 1)
    if with_unknown:
        index.unknown = len(index) + 1
    return index


def vocab_size(index: Vocabulary) -> int:
    """Rows of the embedding: padding, the words, and the shared unknown vector if there is one."""
    return len(index) + 1 + (index.unknown is not None)


def encode(sentences: Sequence[Sequence[str]], index: Vocabulary, max_l: int, pad: int) -> torch.Tensor:
    """Kim's ``get_idx_from_sent``: ``pad`` zeros, the word ids, zeros up to ``max_l + 2·pad`` (int64 N×L)."""
    ids = np.zeros((len(sentences), max_l + 2 * pad), dtype=np.int64)
    for row, sentence in enumerate(sentences):
        ids[row, pad:pad + len(sentence)] = [index[w] for w in sentence]
    return torch.from_numpy(ids)


class KimNet(nn.Module):
    """Embedding → conv h×300 per width → ReLU → max over every position → Kim's dropout → linear."""

    def __init__(self, vocab_size: int, length: int, classes: int, like_cnnlab: frozenset[str] = frozenset()) -> None:
        super().__init__()
        self.skip_padding = "padding" in like_cnnlab
        self.embed = nn.Embedding(vocab_size, DIM)
        self.convs = nn.ModuleList(nn.Conv1d(DIM, MAPS, h) for h in WIDTHS)
        self.out = nn.Linear(MAPS * len(WIDTHS), classes)
        with torch.no_grad():
            self.embed.weight.uniform_(-RANDOM_RANGE, RANDOM_RANGE)
            self.embed.weight[0].zero_()
            for h, conv in zip(WIDTHS, self.convs):
                fan_in, fan_out = h * DIM, MAPS * h * DIM / (length - h + 1)
                bound = math.sqrt(6.0 / (fan_in + fan_out))
                if "init" in like_cnnlab:
                    nn.init.xavier_uniform_(conv.weight)
                else:
                    conv.weight.uniform_(-bound, bound)
                conv.bias.zero_()
            self.out.weight.zero_()
            self.out.bias.zero_()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Logits; in training the features are masked unscaled, at test the output weights are × (1 − p)."""
        x = self.embed(ids).transpose(1, 2)
        features = torch.cat([self.pool(F.relu(conv(x)), ids, h) for h, conv in zip(WIDTHS, self.convs)], dim=1)
        if self.training:
            keep = torch.bernoulli(torch.full_like(features, 1 - DROPOUT))
            return self.out(features * keep)
        return F.linear(features, self.out.weight * (1 - DROPOUT), self.out.bias)

    def pool(self, maps: torch.Tensor, ids: torch.Tensor, width: int) -> torch.Tensor:
        """Max over time: over every window (Kim), or over the windows holding a word, floored at 0 (cnnlab)."""
        if not self.skip_padding:
            return maps.amax(-1)
        words = F.max_pool1d(ids.ne(0).unsqueeze(1).float(), width, stride=1)
        return maps.masked_fill(words == 0, -torch.inf).amax(-1).clamp_min(0)

    @torch.no_grad()
    def after_update(self) -> None:
        """Kim's constraints: each output unit's weights to norm ≤ 3 (his ``col_norms``), the padding row to zero."""
        w = self.out.weight
        norms = w.norm(dim=1, keepdim=True)
        w.mul_(norms.clamp(0, MAX_NORM) / (1e-7 + norms))
        self.embed.weight[0].zero_()


def kim_counts(n: int) -> tuple[int, int, int]:
    """Kim's batching of ``n`` sentences: (extra copies, training rows, dev rows)."""
    copies = (-n) % BATCH
    n_train = int(np.round((n + copies) // BATCH * TRAIN_SHARE))
    return copies, n_train * BATCH, n + copies - n_train * BATCH


def kim_split(n: int, rng: np.random.RandomState) -> tuple[np.ndarray, np.ndarray]:
    """Kim's batching of ``n`` sentences: (training rows, dev rows), extra random copies filling the last batch."""
    copies, n_train, _ = kim_counts(n)
    rows = np.arange(n)
    if copies:
        rows = np.append(rows, rng.permutation(rows)[:copies])
    rows = rng.permutation(rows)
    return rows[:n_train], rows[n_train:]


@torch.inference_mode()
def accuracy(net: KimNet, ids: torch.Tensor, labels: torch.Tensor, batch: int = 500) -> float:
    """The share of sentences classified right, dropout off."""
    net.eval()
    right = sum(int((net(ids[i:i + batch]).argmax(1) == labels[i:i + batch]).sum()) for i in range(0, len(ids), batch))
    net.train()
    return right / len(ids)


@dataclass
class SeedResult:
    """One seed's per-epoch dev and test accuracies."""

    dev: list[float]
    test: list[float]

    def pick(self, last_of_ties: bool = True) -> int:
        """The 0-based epoch of the best dev accuracy: the last of ties (Kim's ``>=``) or the first (cnnlab's ``>``)."""
        best = max(self.dev)
        epochs = [e for e, d in enumerate(self.dev) if d == best]
        return epochs[-1] if last_of_ties else epochs[0]


def train_seed(seed: int, x: torch.Tensor, y: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor,
               vocab_size: int, classes: int, epochs: int, like_cnnlab: frozenset[str] = frozenset()) -> SeedResult:
    """Kim's training of one network from ``seed``, printing a line per epoch."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    rng = np.random.RandomState(seed)
    train_rows, dev_rows = kim_split(len(x), rng)
    x_train, y_train, x_dev, y_dev = x[train_rows], y[train_rows], x[dev_rows], y[dev_rows]
    net = KimNet(vocab_size, x.shape[1], classes, like_cnnlab)
    optimizer = torch.optim.Adadelta(net.parameters(), lr=1.0, rho=RHO, eps=EPS)
    result = SeedResult([], [])
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        losses = []
        if "shuffle" in like_cnnlab:
            order = torch.from_numpy(rng.permutation(len(train_rows)))
            x_train, y_train = x_train[order], y_train[order]
        for b in rng.permutation(len(train_rows) // BATCH):
            rows = slice(b * BATCH, (b + 1) * BATCH)
            loss = F.cross_entropy(net(x_train[rows]), y_train[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            net.after_update()
            losses.append(loss.item())
        result.dev.append(accuracy(net, x_dev, y_dev))
        result.test.append(accuracy(net, x_test, y_test))
        print(f"seed {seed} epoch {epoch}: loss {statistics.fmean(losses):.4f} dev {100 * result.dev[-1]:.2f}% "
              f"test {100 * result.test[-1]:.2f}% ({time.perf_counter() - t0:.1f} s)", flush=True)
    return result


def spread(values: Sequence[float]) -> str:
    """``mean ± sd`` in percent (sample sd; 0 for one value)."""
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.fmean(values):.2f}% ± {100 * sd:.2f}"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, choices=("trec", "sst2", "mr"))
    p.add_argument("--data-dir", required=True, help="the folder holding trec/, sst2/, rt-polaritydata/")
    p.add_argument("--fold", type=int, help="trec and mr: test on fold K of --folds, as cnnlab's --fold K")
    p.add_argument("--folds", type=positive_int, default=10)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--epochs", type=positive_int, default=25)
    p.add_argument("--threads", type=positive_int, default=2, help="torch.set_num_threads")
    p.add_argument("--like-cnnlab", nargs="*", default=[], choices=CNNLAB_CHOICES, metavar="CHOICE",
                   help=f"train these pieces as cnnlab does, the rest as Kim: {', '.join(CNNLAB_CHOICES)}")
    p.add_argument("--limit", type=positive_int,
                   help="only the first N training sentences, in file order (a quick check; MR's first are negative)")
    a = p.parse_args(argv)
    if a.dataset == "sst2" and a.fold is not None:
        p.error("sst2 is tested on stsa.binary.dev: --fold is for trec and mr")
    if a.dataset != "sst2" and a.fold is None:
        p.error(f"{a.dataset} is tested on a held-out fold, as a cnnlab --fold run: pass --fold K (of --folds)")
    torch.set_num_threads(a.threads)
    try:
        corpus = read_corpus(a.dataset, a.data_dir, a.fold, a.folds)
    except CnnlabError as e:
        p.exit(2, f"error: {e}\n")
    train, train_labels = corpus.train[:a.limit], corpus.train_labels[:a.limit]
    like = frozenset(a.like_cnnlab)
    index = vocabulary(train, with_unknown=True) if "vocab" in like else vocabulary(corpus.every)
    max_l, pad = max(len(s) for s in corpus.every), max(WIDTHS) - 1
    x, y = encode(train, index, max_l, pad), torch.tensor(train_labels)
    x_test, y_test = encode(corpus.test, index, max_l, pad), torch.tensor(corpus.test_labels)
    copies, n_train, n_dev = kim_counts(len(x))
    if not n_train or not n_dev:
        p.exit(2, f"error: {len(x)} training sentences make too few batches of {BATCH} for Kim's 90/10 split "
                  "(5 at least): raise --limit\n")
    print(f"{a.dataset}, {corpus.protocol}: {len(x)} training sentences (+{copies} random copies) → {n_train} train "
          f"/ {n_dev} dev (Kim's last 10% of the {BATCH}-batches), {len(x_test)} test sentences; vocabulary "
          f"{len(index)} words + padding, max length {max_l} (padded to {x.shape[1]})", flush=True)
    results = []
    for seed in a.seeds:
        r = train_seed(seed, x, y, x_test, y_test, vocab_size(index), len(corpus.classes), a.epochs, like)
        kim, first = r.pick(), r.pick(last_of_ties=False)
        print(f"seed {seed}: test {100 * r.test[kim]:.2f}% at epoch {kim + 1} (best dev {100 * r.dev[kim]:.2f}%, "
              f"last of ties); first of ties: epoch {first + 1}, test {100 * r.test[first]:.2f}%; "
              f"last epoch: test {100 * r.test[-1]:.2f}%", flush=True)
        results.append(r)
    kim = [r.test[r.pick()] for r in results]
    first = [r.test[r.pick(last_of_ties=False)] for r in results]
    print(f"{a.dataset} test accuracy at best dev over {len(kim)} seed(s): {spread(kim)} (Kim's rule); "
          f"{spread(first)} with the first epoch of ties (cnnlab's best.pt)")


if __name__ == "__main__":
    main()
