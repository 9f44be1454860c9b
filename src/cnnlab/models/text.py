"""CNNs for sentences: Kim (2014) and Kalchbrenner, Grefenstette & Blunsom (2014), on int64 token ids.

Both take N×L token ids, right-padded with 0 (``data/text.py``), and give the same logits whatever the
trailing padding: Kim's max-over-time skips the windows that hold no word, the DCNN's k-max pooling sees
each sentence's own length. So a batch can be cut to its longest sentence and one sentence predicts
alone as it does in a batch. The vocabulary size comes from the data (``vocab_size``, filled by the
runs layer); pretrained word vectors are copied in with ``load_word_vectors``.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CnnlabError
from ..layers import ScaledAtTestDropout
from .base import ZooModel
from .registry import register_model

KIM_VARIANTS = ("rand", "static", "non-static", "multichannel")
DEFAULT_VOCAB = 20_000  # for `cnnlab summary` and create_model without data; a run uses its vocabulary's size
RANDOM_VECTOR_RANGE = 0.25  # Kim: random vectors uniform in ±0.25, about the variance of word2vec's
CONV_INITS = ("kim", "glorot")
KIM_LENGTH = 56  # MR's longest sentence: by default, Kim's initialiser spreads the filters' fan-out over its windows


@dataclass(frozen=True)
class Windows:
    """One layer's activations over token windows, for explaining filters (``explain/ngrams.py``).

    ``activations[n, f, t]`` is filter ``f``'s response to the ``width`` tokens starting at ``t - offset``
    of sentence ``n`` (positions outside the sentence are padding).
    """

    name: str
    width: int
    offset: int
    activations: torch.Tensor


def per_layer(value: int | bool | Sequence, count: int, what: str) -> tuple:
    """A per-layer setting as a tuple: a sequence as it is, a single number repeated ``count`` times."""
    if isinstance(value, (int, bool)):
        return (value,) * count
    if not isinstance(value, Sequence) or isinstance(value, str) or not value:
        raise CnnlabError(f"{what} must be a number or a list of numbers such as 3,4,5 (got {value!r})")
    return tuple(value)


def random_embedding(vocab_size: int, dim: int, trainable: bool = True) -> nn.Embedding:
    """An embedding with Kim's random vectors (uniform ±0.25) and a zero, never-updated padding row (id 0)."""
    embed = nn.Embedding(vocab_size, dim, padding_idx=0)
    with torch.no_grad():
        embed.weight.uniform_(-RANDOM_VECTOR_RANGE, RANDOM_VECTOR_RANGE)
        embed.weight[0].zero_()
    embed.weight.requires_grad_(trainable)
    return embed


def word_mask(ids: torch.Tensor) -> torch.Tensor:
    """1.0 at the tokens that are words, 0.0 at the padding: N×1×L."""
    return ids.ne(0).unsqueeze(1).to(torch.float32)


class TextModel(ZooModel):
    """What both sentence CNNs share: embeddings that can take pretrained vectors."""

    def embeddings(self) -> list[nn.Embedding]:
        """The embedding tables that ``load_word_vectors`` fills."""
        return [m for m in self.modules() if isinstance(m, nn.Embedding)]

    @torch.no_grad()
    def load_word_vectors(self, vectors: torch.Tensor, found: torch.Tensor) -> None:
        """Copy pretrained vectors (vocab×dim) into the rows of the words ``found`` (bool, vocab) of every table."""
        for embed in self.embeddings():
            if tuple(vectors.shape) != tuple(embed.weight.shape):
                raise CnnlabError(f"the word vectors are {vectors.shape[1]}-dimensional for {vectors.shape[0]} words but "
                                  f"the network embeds {embed.weight.shape[0]} words in {embed.weight.shape[1]}: pass "
                                  f"--model-option embedding_dim={vectors.shape[1]}")
            embed.weight[found] = vectors[found].to(embed.weight.dtype)
            embed.weight[0].zero_()

    def window_activations(self, ids: torch.Tensor) -> list[Windows]:
        """Each token-window layer's responses, for ``explain/ngrams.py``."""
        raise NotImplementedError


class MaxOverTime(nn.Module):
    """Max over the token axis of N×C×T maps, over the windows that hold at least one word (``mask`` N×1×T)."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return x.masked_fill(mask == 0, -torch.inf).amax(-1).clamp_min(0)


def init_filters(conv: nn.Conv1d, how: str, length: int, embedding_dim: int) -> None:
    """Zero biases and Glorot-uniform filters: over the convolution's own fans (``glorot``), or as Kim's code
    (``kim``: Theano's LeNetConvPoolLayer sees a filter as channel maps of width × ``embedding_dim``, so its
    fan-out is maps·width·embedding_dim divided by its pool size, the ``length - width + 1`` windows of a padded
    sentence), which draws MR's filters 1.4× smaller."""
    if how not in CONV_INITS:
        raise CnnlabError(f"conv_init must be one of {', '.join(CONV_INITS)} (got {how!r})")
    width = conv.kernel_size[0]
    fan_in = conv.in_channels * width
    fan_out = (conv.out_channels * width * embedding_dim / max(1, length - width + 1) if how == "kim"
               else conv.out_channels * width)
    with torch.no_grad():
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        conv.weight.uniform_(-bound, bound)
        conv.bias.zero_()


class KimCNN(TextModel):
    """Embedding → one convolution per window width (``maps`` filters each) → ReLU → max over time → dropout → linear.

    ``variant``: ``rand`` (random vectors, trained), ``static`` (pretrained, frozen), ``non-static``
    (pretrained, fine-tuned) or ``multichannel`` (one frozen and one fine-tuned copy; each filter sees
    both). The sentence is padded with ``max(windows) - 1`` zero vectors on each side, as in Kim's code.
    ``after_step`` rescales each class's output weights to L2 norm ``max_norm`` when larger (the engine
    calls it after every optimizer step). As in Kim's code, the output layer starts at zero and dropout scales
    at test time (``ScaledAtTestDropout``), so ``max_norm`` bounds the same weights his s = 3 bounded.
    ``conv_init``: ``kim`` draws the filters as his Theano layer (``init_filters``, its fan-out over the windows
    of an ``init_length``-token sentence, MR's 56 by default) or ``glorot`` over the convolution's own fans.
    """

    classifier_name = "fc"

    def __init__(self, vocab_size: int, num_classes: int = 2, *, variant: str = "rand",
                 windows: Sequence[int] = (3, 4, 5), maps: int = 100, embedding_dim: int = 300,
                 dropout: float = 0.5, max_norm: float = 3.0, conv_init: str = "kim",
                 init_length: int = KIM_LENGTH) -> None:
        super().__init__()
        if variant not in KIM_VARIANTS:
            raise CnnlabError(f"kim-cnn variant must be one of {', '.join(KIM_VARIANTS)} (got {variant!r})")
        windows = per_layer(windows, 1, "kim-cnn windows")
        if min(windows) < 1:
            raise CnnlabError(f"kim-cnn windows must be positive token counts (got {windows!r})")
        self.variant, self.windows, self.max_norm = variant, windows, float(max_norm)
        self.pad = max(self.windows) - 1
        self.embed = random_embedding(vocab_size, embedding_dim, trainable=variant != "static")
        self.static_embed = random_embedding(vocab_size, embedding_dim, False) if variant == "multichannel" else None
        channels = embedding_dim * (2 if self.static_embed is not None else 1)
        self.convs = nn.ModuleList(nn.Conv1d(channels, maps, w) for w in self.windows)
        for conv in self.convs:
            init_filters(conv, conv_init, init_length + 2 * self.pad, embedding_dim)
        self.relu = nn.ReLU()
        self.pool = MaxOverTime()
        self.dropout = ScaledAtTestDropout(dropout)
        self.num_features, self.num_classes = maps * len(self.windows), num_classes
        self.fc = self.new_classifier(num_classes, None, None)

    def embedded(self, ids: torch.Tensor) -> torch.Tensor:
        """N×C×(L + 2·pad): the word vectors of every channel along the token axis, zero-padded on both sides."""
        x = self.embed(ids)
        if self.static_embed is not None:
            x = torch.cat([self.static_embed(ids), x], dim=-1)
        return F.pad(x.transpose(1, 2), (self.pad, self.pad))

    def window_masks(self, ids: torch.Tensor) -> list[torch.Tensor]:
        """Per width, 1 where a window holds at least one word: N×1×(L + 2·pad − width + 1)."""
        words = F.pad(word_mask(ids), (self.pad, self.pad))
        return [F.max_pool1d(words, w, stride=1) for w in self.windows]

    def window_activations(self, ids: torch.Tensor) -> list[Windows]:
        x = self.embedded(ids)
        return [Windows(f"conv{w}", w, self.pad, self.relu(conv(x)) * mask)
                for w, conv, mask in zip(self.windows, self.convs, self.window_masks(ids))]

    def forward_features(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids to the sentence vector: every filter's strongest response (N × maps·len(windows))."""
        x = self.embedded(ids)
        return torch.cat([self.pool(self.relu(conv(x)), mask) for conv, mask in zip(self.convs, self.window_masks(ids))],
                         dim=1)

    def forward_pre_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(x)

    def new_classifier(self, num_classes: int, device: torch.device | None, dtype: torch.dtype | None) -> nn.Module:
        """Kim's output layer: a linear one that starts at zero (his LogisticRegression's weights and bias)."""
        fc = nn.Linear(self.num_features, num_classes, device=device, dtype=dtype)
        nn.init.zeros_(fc.weight)
        nn.init.zeros_(fc.bias)
        return fc

    def after_step(self) -> None:
        """Kim's constraint: each class's weight vector in the output layer has L2 norm at most ``max_norm``."""
        fc = self.get_classifier()
        if isinstance(fc, nn.Linear) and self.max_norm > 0:
            norms = fc.weight.norm(dim=1, keepdim=True)
            fc.weight.mul_(norms.clamp(max=self.max_norm) / norms.clamp_min(1e-12))


# ---- Kalchbrenner, Grefenstette & Blunsom (2014): the dynamic CNN ------------------------------------
def dynamic_k(layer: int, layers: int, length: torch.Tensor, k_top: int) -> torch.Tensor:
    """The paper's k of pooling layer ``layer`` (1-based) of ``layers``: max(k_top, ⌈(layers − layer)/layers · s⌉)."""
    return torch.clamp_min(torch.ceil((layers - layer) / layers * length.float()).long(), k_top)


def kmax_pool(x: torch.Tensor, valid: torch.Tensor, k: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each sentence's ``k`` largest values per row among its first ``valid`` positions, in their order.

    x: N×C×T; valid, k: N. Returns N×C×``width`` (zeros after the k-th) and the new valid lengths (k).
    """
    t = x.shape[-1]
    positions = torch.arange(t, device=x.device)
    masked = x.masked_fill(positions >= valid[:, None, None], -torch.inf)
    count = min(width, t)
    top = masked.topk(count, dim=-1).indices
    rank = torch.arange(count, device=x.device)
    kept = rank < k.clamp(max=count)[:, None, None]
    order = torch.where(kept, top, t + rank).sort(-1).values
    out = x.gather(-1, order.clamp(max=t - 1)) * (order < t)
    return F.pad(out, (0, width - count)), k.clamp(max=count)


class WideConv(nn.Module):
    """A wide 1-D convolution per embedding row (``rows`` independent rows, each mixing ``maps_in`` maps).

    Channels are ordered row by row (row-major: channel = row · maps + map), so a grouped Conv1d with
    ``groups=rows`` holds exactly the paper's row-wise filters. ``bias`` (one per row and map after
    folding) is added by the DCNN after the k-max pooling, as in the paper.
    """

    def __init__(self, rows: int, maps_in: int, maps_out: int, width: int, folded: bool) -> None:
        super().__init__()
        self.rows, self.maps_out, self.width = rows, maps_out, width
        self.conv = nn.Conv1d(rows * maps_in, rows * maps_out, width, padding=width - 1, groups=rows, bias=False)
        self.bias = nn.Parameter(torch.zeros(rows // 2 if folded else rows, maps_out).view(-1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Folding(nn.Module):
    """Sum every two neighbouring rows (d rows → d/2), keeping the row-major channel order."""

    def __init__(self, maps: int) -> None:
        super().__init__()
        self.maps = maps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, t = x.shape
        return x.view(n, c // (2 * self.maps), 2, self.maps, t).sum(2).view(n, c // 2, t)


class DCNN(TextModel):
    """The dynamic CNN: embedding → per layer a wide convolution, (folding), dynamic k-max pooling, bias and tanh
    → dropout → linear. Defaults: the paper's binary-sentiment network (d=48, widths 7 and 5, 6 and 14
    maps, folding in the last layer, k_top=4)."""

    classifier_name = "fc"

    def __init__(self, vocab_size: int, num_classes: int = 2, *, embedding_dim: int = 48,
                 widths: Sequence[int] = (7, 5), maps: Sequence[int] = (6, 14), folding: Sequence[bool] = (False, True),
                 k_top: int = 4, dropout: float = 0.5) -> None:
        super().__init__()
        widths = per_layer(widths, 1, "dcnn widths")
        maps, folding = per_layer(maps, len(widths), "dcnn maps"), per_layer(folding, len(widths), "dcnn folding")
        if not len(widths) == len(maps) == len(folding):
            raise CnnlabError(f"dcnn needs one width, map count and folding flag per layer (got {widths}, {maps}, "
                              f"{folding})")
        folds = sum(bool(f) for f in folding)
        if embedding_dim % 2 ** folds:
            raise CnnlabError(f"dcnn folds {folds} time(s): embedding_dim must be a multiple of {2 ** folds} "
                              f"(got {embedding_dim})")
        self.widths, self.k_top = tuple(widths), int(k_top)
        self.embed = random_embedding(vocab_size, embedding_dim)
        convs, folds = [], []
        rows, maps_in = embedding_dim, 1
        for width, maps_out, fold in zip(widths, maps, folding):
            convs.append(WideConv(rows, maps_in, maps_out, width, bool(fold)))
            folds.append(Folding(maps_out) if fold else nn.Identity())
            rows, maps_in = rows // 2 if fold else rows, maps_out
        self.convs, self.folds = nn.ModuleList(convs), nn.ModuleList(folds)
        self.tanh = nn.Tanh()
        self.dropout = nn.Dropout(dropout)
        self.num_features, self.num_classes = rows * maps_in * self.k_top, num_classes
        self.fc = nn.Linear(self.num_features, num_classes)

    def _layers(self, ids: torch.Tensor):
        """Yield (layer, conv output before folding and pooling, output after pooling and tanh) per layer."""
        length = ids.ne(0).sum(1).clamp_min(1)
        x, valid = self.embed(ids).transpose(1, 2), length
        layers = len(self.convs)
        for i, (conv, fold) in enumerate(zip(self.convs, self.folds), start=1):
            c = conv(x)
            k = dynamic_k(i, layers, length, self.k_top)
            width = self.k_top if i == layers else int(dynamic_k(i, layers, torch.tensor([ids.shape[1]]), self.k_top))
            pooled, valid = kmax_pool(fold(c), valid + conv.width - 1, k, width)
            keep = (torch.arange(width, device=ids.device) < valid[:, None]).unsqueeze(1)
            x = self.tanh(pooled + conv.bias) * keep
            yield i, c, x

    def forward_features(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids to the top layer's k_top-max pooled maps, flattened (N × rows·maps·k_top)."""
        *_, (_, _, x) = self._layers(ids)
        return x.flatten(1)

    def forward_pre_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(x)

    def window_activations(self, ids: torch.Tensor) -> list[Windows]:
        """The first layer's feature maps over ``widths[0]``-grams, summed over the embedding rows."""
        _, c, _ = next(self._layers(ids))
        maps = self.convs[0].maps_out
        acts = c.view(c.shape[0], -1, maps, c.shape[-1]).sum(1)
        return [Windows("conv1", self.widths[0], self.widths[0] - 1, acts)]


@register_model("kim-cnn", family="text", input_size=(64,), num_classes=2, recipe="kim-2014", options=KimCNN,
                source="Kim 2014, Convolutional Neural Networks for Sentence Classification")
def kim_cnn(*, num_classes: int, in_channels: int, input_size: tuple[int, ...], vocab_size: int = DEFAULT_VOCAB,
            **kw) -> nn.Module:
    """Kim's CNN over ``vocab_size`` words (any sentence length: max over time)."""
    del in_channels, input_size  # token ids have no channels; any length works
    return KimCNN(vocab_size, num_classes, **kw)


@register_model("dcnn", family="text", input_size=(64,), num_classes=2, recipe="kim-2014", options=DCNN,
                source="Kalchbrenner, Grefenstette & Blunsom 2014, A Convolutional Neural Network for Modelling Sentences")
def dcnn(*, num_classes: int, in_channels: int, input_size: tuple[int, ...], vocab_size: int = DEFAULT_VOCAB,
         **kw) -> nn.Module:
    """The DCNN over ``vocab_size`` words (any sentence length: dynamic k-max pooling)."""
    del in_channels, input_size
    return DCNN(vocab_size, num_classes, **kw)


__all__ = ["DCNN", "KIM_VARIANTS", "KimCNN", "MaxOverTime", "TextModel", "Windows", "dcnn", "dynamic_k", "kim_cnn",
           "kmax_pool"]
