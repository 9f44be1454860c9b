"""Building blocks with TensorFlow-exact ``same``/``valid`` padding, and Keras-compatible defaults.

TensorFlow's ``same`` pads ``total = max((ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)`` and puts
the extra row/column at the bottom/right when ``total`` is odd; PyTorch's own ``padding="same"``
is symmetric and stride-1 only. These layers reproduce TF so a network copied from a Keras course
has the same shapes, parameter counts and (with imported weights) the same outputs.
"""
from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Padding = Literal["same", "valid"] | int | tuple[int, int]

# Keras BatchNormalization defaults: momentum 0.99 (PyTorch counts 1 - that), epsilon 1e-3.
KERAS_BN_MOMENTUM = 0.01
KERAS_BN_EPS = 1e-3


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def conv_out_size(n: int, k: int, s: int = 1, padding: Padding = "valid", d: int = 1,
                  ceil_mode: bool = False) -> int:
    """Output length of a conv/pool along one axis (the course's formula, TF and PyTorch rules)."""
    if padding == "same":
        return math.ceil(n / s)
    eff = (k - 1) * d + 1
    pad = 0 if padding == "valid" else 2 * _pair(padding)[0]
    span = n + pad - eff
    if span < 0:
        return 0
    out = (math.ceil(span / s) if ceil_mode else span // s) + 1
    if ceil_mode and (out - 1) * s >= n + pad // 2:  # PyTorch: last window must start inside input
        out -= 1
    return out


def tf_same_pad(n: int, k: int, s: int = 1, d: int = 1) -> tuple[int, int]:
    """(before, after) padding that TensorFlow's ``same`` adds along an axis of length ``n``."""
    total = max((math.ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)
    return total // 2, total - total // 2


def _same_pads(x: torch.Tensor, k: tuple[int, int], s: tuple[int, int], d: tuple[int, int]) -> list[int]:
    top, bottom = tf_same_pad(x.shape[-2], k[0], s[0], d[0])
    left, right = tf_same_pad(x.shape[-1], k[1], s[1], d[1])
    return [left, right, top, bottom]


def _static_symmetric_same(k: tuple[int, int], s: tuple[int, int], d: tuple[int, int]) -> tuple[int, int] | None:
    """Padding usable directly by the op when TF ``same`` is symmetric for every input size."""
    if s != (1, 1):
        return None
    totals = [(ki - 1) * di for ki, di in zip(k, d)]
    return None if any(t % 2 for t in totals) else (totals[0] // 2, totals[1] // 2)


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` whose ``padding`` also takes TF's ``"same"`` (any stride) and ``"valid"``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 stride: int | tuple[int, int] = 1, padding: Padding = "valid",
                 dilation: int | tuple[int, int] = 1, groups: int = 1, bias: bool = True) -> None:
        k, s, d = _pair(kernel_size), _pair(stride), _pair(dilation)
        self.tf_padding = padding if isinstance(padding, str) else None
        static = 0
        self._dynamic = False
        if padding == "same":
            sym = _static_symmetric_same(k, s, d)
            static, self._dynamic = (sym, False) if sym is not None else (0, True)
        elif padding != "valid":
            static = _pair(padding)
        super().__init__(in_channels, out_channels, k, s, static, d, groups, bias)

    def extra_repr(self) -> str:
        text = super().extra_repr()
        return text + f", padding={self.tf_padding!r}" if self._dynamic else text

    def padding_before(self, size: tuple[int, int]) -> tuple[int, int]:
        """Rows and columns of zeros this convolution puts above and left of an H×W input (TF's when ``same``)."""
        if not self._dynamic:
            return _pair(self.padding)
        return tuple(tf_same_pad(n, k, s, d)[0] for n, k, s, d in zip(size, self.kernel_size, self.stride,
                                                                       self.dilation))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._dynamic:
            x = F.pad(x, _same_pads(x, self.kernel_size, self.stride, self.dilation))
        return super().forward(x)


class SeparableConv2d(nn.Module):
    """Keras ``SeparableConv2D``: a depthwise conv (no bias) then a 1x1 pointwise conv."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 padding: Padding = "same", dilation: int = 1, bias: bool = True) -> None:
        super().__init__()
        self.depthwise = Conv2d(in_channels, in_channels, kernel_size, stride, padding, dilation,
                                groups=in_channels, bias=False)
        self.pointwise = Conv2d(in_channels, out_channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class _Pool2d(nn.Module):
    """Shared shape of max/avg pooling with TF ``same``/``valid`` or explicit padding and ceil mode."""

    def __init__(self, kernel_size: int | tuple[int, int], stride: int | tuple[int, int] | None = None,
                 padding: Padding = "valid", ceil_mode: bool = False) -> None:
        super().__init__()
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride) if stride is not None else self.kernel_size
        self.padding = padding
        self.ceil_mode = ceil_mode

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding!r}"

    def _explicit(self) -> tuple[int, int]:
        return (0, 0) if self.padding in ("valid", "same") else _pair(self.padding)

    def padding_before(self, size: tuple[int, int]) -> tuple[int, int]:
        """Rows and columns of padding this pool puts above and left of an H×W input (TF's when ``same``)."""
        if self.padding != "same":
            return self._explicit()
        return tuple(tf_same_pad(n, k, s)[0] for n, k, s in zip(size, self.kernel_size, self.stride))


def _nchw_on_cpu(x: torch.Tensor) -> bool:
    """A 4-d CPU tensor in NCHW layout: where PyTorch's max pooling runs its scalar (unvectorised) kernel."""
    return (x.device.type == "cpu" and x.dim() == 4 and x.is_contiguous()
            and not x.is_contiguous(memory_format=torch.channels_last))


def _slow_nchw_overlapping_pool(x: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int]) -> bool:
    """True where PyTorch's CPU max pooling is slow: NCHW input and overlapping windows.

    Its NCHW kernel is not vectorised over channels: a 3x3 stride-1 pool of 32x64x16x16 took 13.8 ms
    forward+backward against 4.9 ms through channels_last, copies included (benchmarks/layers.py).
    """
    return kernel[0] > stride[0] and _nchw_on_cpu(x) and x.shape[1] >= 8


def _pairwise_pool_applies(x: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int],
                           padding: tuple[int, int], ceil_mode: bool) -> bool:
    """True where ``pairwise_max_pool`` beats PyTorch's CPU kernel: a 2x2 stride-2 pool of an NCHW tensor
    that needs no gradient (validation, test-time augmentation, predict, the explainer).

    PyTorch's NCHW max pooling is a scalar loop (32x6x28x28, LeNet-5's first pool: 0.29 ms; 32x64x32x32,
    VGG-16's first: 4.7 ms); two vectorised elementwise maxima take a seventh to a fourteenth of that
    (benchmarks/layers.py). Under autograd the first-maximum indices its backward needs cost what the maxima
    save: the whole training step measured 0.93x (lenet5, baseline) to 1.01x (vgg16), so training keeps
    PyTorch's op. Tracing, export and function modes (cnnlab's summary) should see one max_pool2d too.
    """
    if (kernel, stride, padding) != ((2, 2), (2, 2), (0, 0)) or (x.requires_grad and torch.is_grad_enabled()):
        return False  # first the cheap tests that settle every training call
    if not _nchw_on_cpu(x):
        return False
    if (torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling()
            or torch.overrides.has_torch_function((x,))):  # a summary's function mode, a tensor subclass
        return False  # (before any size test: a traced size would warn)
    return x.numel() > 0 and not (ceil_mode and (x.shape[-1] % 2 or x.shape[-2] % 2))


def pairwise_max_pool(x: torch.Tensor) -> torch.Tensor:
    """2x2 stride-2 max pooling (floor mode) as the maximum over column pairs, then over row pairs: exactly
    ``F.max_pool2d(x, 2)``'s values, NaN included."""
    h, w = x.shape[-2:]
    even = x[..., :h // 2 * 2, :w // 2 * 2]
    cols = torch.maximum(even[..., 0::2], even[..., 1::2])
    return torch.maximum(cols[..., 0::2, :], cols[..., 1::2, :])


class MaxPool2d(_Pool2d):
    """Max pooling; ``same`` pads with -inf as TF does, so padding never wins the max.

    Overlapping windows on the CPU are pooled in channels_last and handed back in the input's layout, and
    2x2 stride-2 windows of NCHW tensors needing no gradient by pairwise maxima (``pairwise_max_pool``):
    exactly PyTorch's values, several times faster; training calls keep PyTorch's op and its gradients.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        via_channels_last = _slow_nchw_overlapping_pool(x, self.kernel_size, self.stride)
        padding = self._explicit()
        if self.padding == "same":
            # Symmetric for every input size (stride 1, odd kernel): the op pads with -inf itself, no
            # padded copy (3x3 stride-1 pool of 32x64x16x16 in channels_last: 1.2 against 1.6 ms
            # forward+backward, benchmarks/layers.py). Otherwise pad as TF does.
            symmetric = _static_symmetric_same(self.kernel_size, self.stride, (1, 1))
            if symmetric is not None:
                padding = symmetric
            else:
                pads = _same_pads(x, self.kernel_size, self.stride, (1, 1))
                if torch.jit.is_tracing() or any(pads):  # a traced graph keeps the arithmetic for any size
                    x = F.pad(x, pads, value=float("-inf"))
        if _pairwise_pool_applies(x, self.kernel_size, self.stride, padding, self.ceil_mode):
            return pairwise_max_pool(x)
        if via_channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = F.max_pool2d(x, self.kernel_size, self.stride, padding, ceil_mode=self.ceil_mode)
        return y.contiguous() if via_channels_last else y


class AvgPool2d(_Pool2d):
    """Average pooling; ``same`` averages over the real (unpadded) cells only, as TF does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding != "same":
            return F.avg_pool2d(x, self.kernel_size, self.stride, self._explicit(), ceil_mode=self.ceil_mode)
        pads = _same_pads(x, self.kernel_size, self.stride, (1, 1))
        if not any(pads):
            return F.avg_pool2d(x, self.kernel_size, self.stride)
        summed = F.avg_pool2d(F.pad(x, pads), self.kernel_size, self.stride, divisor_override=1)
        ones = F.pad(torch.ones_like(x[:1, :1]), pads)
        count = F.avg_pool2d(ones, self.kernel_size, self.stride, divisor_override=1)
        return summed / count


class GlobalPool2d(nn.Module):
    """Global average or max pooling to an N x C vector (Keras ``GlobalAveragePooling2D``)."""

    def __init__(self, mode: Literal["avg", "max"] = "avg") -> None:
        super().__init__()
        self.mode = mode

    def extra_repr(self) -> str:
        return self.mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((-2, -1)) if self.mode == "avg" else x.amax((-2, -1))


def keep_mask(x: torch.Tensor, p: float) -> torch.Tensor:
    """A float32 0/1 mask of ``x``'s shape and memory layout keeping each unit with probability 1 − ``p``
    (``torch.rand``: on the CPU faster than ``bernoulli_``, see ``Dropout``)."""
    return torch.rand_like(x, dtype=torch.float32).ge_(p)


class Dropout(nn.Dropout):
    """``nn.Dropout`` whose CPU mask comes from ``torch.rand``: the same distribution, 1.7-2.6x faster.

    PyTorch's CPU dropout draws its mask with ``bernoulli_``; at the course's shapes (32x6x16x16,
    32x2048) forward+backward took 0.57 and 1.09 ms against 0.34 and 0.41 ms this way (benchmarks/layers.py).
    Other devices keep PyTorch's fused kernel.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p in (0, 1) or x.device.type != "cpu":
            return super().forward(x)
        # rand_like keeps x's memory layout, so a channels_last map is multiplied contiguously
        keep = keep_mask(x, self.p).mul_(1 / (1 - self.p)).to(x.dtype)
        return x.mul_(keep) if self.inplace else x * keep


class ScaledAtTestDropout(nn.Dropout):
    """Dropout as Hinton et al. 2012 and Kim 2014's code apply it: units dropped unscaled in training, all scaled
    by 1 − p at test. The expected outputs equal ``nn.Dropout``'s, but the next layer's weights keep the scale
    of those papers' weights: Kim's max-norm s = 3 bounds them, and Adadelta moves them as it moved his (an
    inverted dropout's weights are 1 − p times his, so the same cap and steps would be twice as loose and as fast)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x * (1 - self.p)
        return x * keep_mask(x, self.p).to(x.dtype)


class _KerasMovingVariance(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose moving variance blends in the batch's biased variance, as Keras 3 does.

    PyTorch (and TF2's fused Keras 2 kernel) blend in the unbiased one, n/(n-1) times larger, n being
    the values per channel; the normalisation itself is the same. Taking that factor back out of the
    newly blended part costs a few C-element operations, and the state-dict keys stay PyTorch's.
    """

    def __init__(self, num_features: int, momentum: float = KERAS_BN_MOMENTUM, eps: float = KERAS_BN_EPS) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and self.track_running_stats and self.momentum is not None):
            return super().forward(x)
        self._check_input_dim(x)
        self.num_batches_tracked.add_(1)
        blended = self.running_var.clone()  # PyTorch's update lands here; autograd may keep it, so it stays as is
        y = F.batch_norm(x, self.running_mean, blended, self.weight, self.bias, True, self.momentum, self.eps)
        with torch.no_grad():
            new_part = blended - (1 - self.momentum) * self.running_var  # momentum * n/(n-1) * biased variance
            self.running_var.copy_(blended - new_part / (x.numel() // x.shape[1]))
        return y


class KerasBatchNorm2d(_KerasMovingVariance, nn.BatchNorm2d):
    """``nn.BatchNorm2d`` with Keras' defaults (momentum 0.99, epsilon 1e-3) and Keras 3's moving variance."""


class KerasBatchNorm1d(_KerasMovingVariance, nn.BatchNorm1d):
    """``nn.BatchNorm1d`` (after a Dense layer) with Keras' defaults and Keras 3's moving variance."""


def BatchNorm2d(num_features: int, keras: bool = True) -> nn.BatchNorm2d:  # noqa: N802 (layer factory)
    """BatchNorm as Keras' ``BatchNormalization()`` by default (PyTorch's own with ``keras=False``)."""
    return KerasBatchNorm2d(num_features) if keras else nn.BatchNorm2d(num_features)


ACTIVATIONS: dict[str, type[nn.Module] | None] = {
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "softmax": None,  # handled in activation(): needs dim=1
    "linear": nn.Identity,
    "none": nn.Identity,
}


def activation(name: str) -> nn.Module:
    """The activation layer named as Keras names it (``relu``, ``sigmoid``, ``tanh``, ``softmax`` …)."""
    key = name.lower()
    if key not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")
    cls = ACTIVATIONS[key]
    return nn.Softmax(dim=1) if cls is None else cls()


def kernel_l2(layer: nn.Module, factor: float) -> nn.Module:
    """Mark ``layer`` as carrying Keras' ``kernel_regularizer=l2(factor)``: training adds factor·Σw² of its
    weight to the loss (``engine.loss.kernel_penalty``); 0 leaves it unmarked."""
    if factor:
        layer.kernel_l2 = float(factor)
    return layer


def kernel_l2_layers(model: nn.Module) -> list[tuple[float, torch.Tensor]]:
    """(factor, weight) of every layer of ``model`` marked by ``kernel_l2``."""
    return [(m.kernel_l2, m.weight) for m in model.modules() if getattr(m, "kernel_l2", 0.0)]


def keras_init_(module: nn.Module) -> nn.Module:
    """Initialise as Keras does: Glorot-uniform kernels, zero biases, BN gamma 1 / beta 0.

    The course's accuracies are measured with these defaults; PyTorch's Kaiming-uniform(a=√5)
    trains sigmoid networks such as LeNet noticeably slower.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module
