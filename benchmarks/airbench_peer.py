"""The peer for ``time_to_accuracy.py``: airbench94's recipe (Jordan 2024, "94% on CIFAR-10 in 3.29 seconds
on a single GPU") written as a plain eager PyTorch loop — no cnnlab engine, loader or optimiser.

What it keeps from airbench94: the network (a 2×2 patch-whitening convolution frozen at its data
initialisation with a bias trained for 3 epochs, then three conv–pool–BN–GELU groups of widths 64/256/256
with partly identity-initialised convolutions, BatchNorm momentum 0.6 with fixed scale, a 3×3 max pool
and a linear head scaled by 1/9), its optimiser (Nesterov SGD, lr 11.5 and weight decay 0.0153 per
1,024-image "kilostep" scale, the BatchNorm biases at 64× the lr, momentum 0.85, summed label-smoothed
(0.2) cross-entropy), its triangular schedule (0.2 → 1 at 23% → 0.07), lookahead weight averaging every
5 steps, 2-pixel reflect-padded translations with alternating flips, 9.9 epochs at batch 1,024 and its
test-time augmentation (flips and 1-pixel translations). Precision: bf16 autocast with channels_last as
airbench runs it, on a device where bf16 is native; fp32 channels_last where it is only emulated (an AVX2
CPU, docs/performance.md §0b), so that the peer is not slowed 20× by a choice no one would make there.
"""
from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

HYP = dict(epochs=9.9, batch_size=1024, lr=11.5, momentum=0.85, weight_decay=0.0153, bias_scaler=64.0,
           label_smoothing=0.2, whiten_bias_epochs=3, translate=2, widths=(64, 256, 256), bn_momentum=0.6,
           scaling_factor=1 / 9, lookahead_every=5, lookahead_decay=0.95)
MEAN = torch.tensor((0.4914, 0.4822, 0.4465)).view(1, 3, 1, 1)
STD = torch.tensor((0.2470, 0.2435, 0.2616)).view(1, 3, 1, 1)


class BatchNorm(nn.BatchNorm2d):
    """BatchNorm with a fixed unit scale and a trained shift (airbench's)."""

    def __init__(self, channels: int, momentum: float) -> None:
        super().__init__(channels, eps=1e-12, momentum=1 - momentum)
        self.weight.requires_grad = False


class Conv(nn.Conv2d):
    """3×3 'same' convolution without bias whose first filters start as identities (airbench's init)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(cin, cout, 3, padding=1, bias=False)
        with torch.no_grad():
            nn.init.dirac_(self.weight[:cin])


def conv_group(cin: int, cout: int, momentum: float) -> nn.Sequential:
    return nn.Sequential(Conv(cin, cout), nn.MaxPool2d(2), BatchNorm(cout, momentum), nn.GELU(),
                         Conv(cout, cout), BatchNorm(cout, momentum), nn.GELU())


class Scale(nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


def make_net() -> nn.Sequential:
    w, m = HYP["widths"], HYP["bn_momentum"]
    whiten = nn.Conv2d(3, 24, 2, padding=0, bias=True)
    whiten.weight.requires_grad = False
    return nn.Sequential(whiten, nn.GELU(), conv_group(24, w[0], m), conv_group(w[0], w[1], m),
                         conv_group(w[1], w[2], m), nn.MaxPool2d(3), nn.Flatten(),
                         nn.Linear(w[2], 10, bias=False), Scale(HYP["scaling_factor"]))


def init_whitening(layer: nn.Conv2d, images: torch.Tensor, eps: float = 5e-4) -> None:
    """Filters that whiten the 2×2 patches of ``images`` (eigenvectors / √eigenvalues, and their negatives)."""
    patches = images.unfold(2, 2, 1).unfold(3, 2, 1).transpose(1, 3).reshape(-1, 3, 2, 2).double()
    flat = patches.flatten(1)
    cov = torch.cov(flat.T)
    values, vectors = torch.linalg.eigh(cov)
    scaled = (vectors.T / torch.sqrt(values.view(-1, 1) + eps)).view(12, 3, 2, 2).float()
    layer.weight.data[:] = torch.cat((scaled, -scaled))


def triangle(steps: int, start: float = 0.2, peak: float = 0.23, end: float = 0.07) -> torch.Tensor:
    """The lr factor of every step: linear from ``start`` to 1 at ``peak`` of the run, then to ``end``."""
    t, top = torch.arange(1 + steps, dtype=torch.float64), peak * steps
    up = start + (1 - start) * t / top
    down = 1 + (end - 1) * (t - top) / (steps - top)
    return torch.where(t < top, up, down).float()


def augment(images: torch.Tensor, epoch: int, flip_base: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random 2-pixel translations of reflect-padded images, and flips that alternate epoch by epoch."""
    flip = flip_base if epoch % 2 == 0 else ~flip_base
    x = torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)
    r = HYP["translate"]
    padded = F.pad(x, (r,) * 4, mode="reflect")
    dx, dy = (torch.randint(0, 2 * r + 1, (2, len(x)), generator=gen))
    out = torch.empty_like(x)
    for sx in range(2 * r + 1):
        for sy in range(2 * r + 1):
            pick = (dx == sx) & (dy == sy)
            if pick.any():
                out[pick] = padded[pick, :, sy:sy + 32, sx:sx + 32]
    return out


def tta_logits(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """airbench's level-2 test-time augmentation: flips, and 1-pixel translations up-left and down-right."""
    def mirror(v: torch.Tensor) -> torch.Tensor:
        return 0.5 * (net(v) + net(v.flip(-1)))

    padded = F.pad(x, (1,) * 4, mode="reflect")
    shifted = torch.stack([mirror(padded[:, :, :32, :32]), mirror(padded[:, :, 2:, 2:])]).mean(0)
    return 0.5 * mirror(x) + 0.5 * shifted


@torch.inference_mode()
def accuracy(net: nn.Module, images: torch.Tensor, labels: torch.Tensor, precision: Callable, tta: bool,
             batch: int = 2000) -> float:
    net.eval()
    correct = 0
    for i in range(0, len(images), batch):
        x = images[i:i + batch]
        with precision():
            logits = tta_logits(net, x) if tta else net(x)
        correct += int((logits.argmax(1) == labels[i:i + batch]).sum())
    net.train()
    return correct / len(images)


def train_airbench(train_images: torch.Tensor, train_labels: torch.Tensor, val_images: torch.Tensor,
                   val_labels: torch.Tensor, bf16: bool, seed: int = 0, epochs: float = HYP["epochs"],
                   on_epoch_end: Callable[[int, float, float], None] | None = None) -> tuple[float, float]:
    """Train airbench94's recipe on uint8 N×3×32×32 images; returns the final TTA accuracy on the validation
    set and the seconds spent in the per-epoch evaluations (which airbench's clock leaves out).

    ``on_epoch_end(epoch, seconds, accuracy)`` gets the training seconds so far (its own evaluation excluded,
    as airbench times itself) and the epoch's validation accuracy without TTA.
    """
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    layout = torch.channels_last
    t0 = time.perf_counter()
    x_train = ((train_images.float() / 255 - MEAN) / STD).contiguous(memory_format=layout)
    x_val = ((val_images.float() / 255 - MEAN) / STD).contiguous(memory_format=layout)

    def precision() -> contextlib.AbstractContextManager:
        return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    net = make_net().to(memory_format=layout)
    init_whitening(net[0], x_train[:5000])
    bs, mom = HYP["batch_size"], HYP["momentum"]
    kilostep = 1024 * (1 + 1 / (1 - mom))
    lr, wd = HYP["lr"] / kilostep, HYP["weight_decay"] * bs / kilostep
    norm_biases = [m.bias for m in net.modules() if isinstance(m, BatchNorm)]  # airbench: the 'norm' parameters
    others = [p for p in net.parameters() if p.requires_grad and all(p is not q for q in norm_biases)]
    groups = [dict(params=norm_biases, lr=lr * HYP["bias_scaler"], weight_decay=wd / HYP["bias_scaler"]),
              dict(params=others, lr=lr, weight_decay=wd)]
    opt = torch.optim.SGD(groups, momentum=mom, nesterov=True)
    for g in opt.param_groups:
        g["initial_lr"] = g["lr"]
    steps_per_epoch = len(x_train) // bs
    total = math.ceil(epochs * steps_per_epoch)
    schedule = triangle(total)
    alphas = HYP["lookahead_decay"] ** HYP["lookahead_every"] * (torch.arange(total + 1) / total) ** 3
    ema = [p.detach().clone() for p in net.state_dict().values()]
    flip_base = torch.rand(len(x_train), generator=gen) < 0.5
    loss_fn = nn.CrossEntropyLoss(label_smoothing=HYP["label_smoothing"], reduction="none")
    step, epoch, eval_seconds = 0, 0, 0.0
    while step < total:
        if epoch == HYP["whiten_bias_epochs"]:
            net[0].bias.requires_grad = False
        order = torch.randperm(len(x_train), generator=gen)
        data = augment(x_train, epoch, flip_base, gen)
        for b in range(steps_per_epoch):
            if step >= total:
                break
            idx = order[b * bs:(b + 1) * bs]
            with precision():
                loss = loss_fn(net(data[idx]), train_labels[idx]).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            for g in opt.param_groups:
                g["lr"] = g["initial_lr"] * float(schedule[step])
            opt.step()
            step += 1
            if step % HYP["lookahead_every"] == 0:
                lookahead(net, ema, float(alphas[step]))
        epoch += 1
        if on_epoch_end is not None:
            t_eval = time.perf_counter()
            acc = accuracy(net, x_val, val_labels, precision, tta=False)
            eval_seconds += time.perf_counter() - t_eval
            on_epoch_end(epoch, time.perf_counter() - t0 - eval_seconds, acc)
    lookahead(net, ema, 1.0)  # end on the averaged weights
    return accuracy(net, x_val, val_labels, precision, tta=True), eval_seconds


@torch.no_grad()
def lookahead(net: nn.Module, ema: list[torch.Tensor], decay: float) -> None:
    """Move the average towards the weights by ``1 - decay``, then set the weights to the average."""
    for avg, p in zip(ema, net.state_dict().values()):
        if p.dtype.is_floating_point:
            avg.lerp_(p, 1 - decay)
            p.copy_(avg)
