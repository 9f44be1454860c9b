"""Batches and augments whole uint8 tensors: no per-image Python, no worker processes.

The order and the augmentation of an epoch are drawn at its start from a generator seeded by
``(seed, epoch)``, so any batch of any epoch can be reproduced without replaying the ones before
it: that is what makes resuming (even mid-epoch) give the same result as never stopping.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Literal

import torch

Augment = Literal["none", "flip", "crop-flip", "shift-altflip"]
AUGMENTS: tuple[str, ...] = ("none", "flip", "crop-flip", "shift-altflip")
SHIFT_PAD = 2  # shift-altflip: largest shift in pixels (the border is reflected, not zero)


@dataclass(frozen=True)
class EpochPlan:
    """Everything random about one epoch: sample order, flips and crop offsets per position."""

    order: torch.Tensor  # int64 indices into the dataset
    flip: torch.Tensor  # bool, one per position
    shift: torch.Tensor  # int64 (positions, 2): crop offsets into the padded image


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A CPU generator whose stream depends only on ``(seed, epoch)``."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def plan_epoch(n: int, seed: int, epoch: int, shuffle: bool, pad: int, alternate_flips: bool = False) -> EpochPlan:
    """Draw an epoch's order and augmentation parameters (on CPU, for device independence).

    With ``alternate_flips`` each image is mirrored in every other epoch (odd or even ones, drawn
    once per seed): over two epochs the network sees both orientations of every image.
    """
    g = epoch_generator(seed, epoch)
    order = torch.randperm(n, generator=g) if shuffle else torch.arange(n)
    flip = torch.rand(n, generator=g) < 0.5
    if alternate_flips:
        flip = (torch.rand(n, generator=epoch_generator(seed, -1)) < 0.5)[order] ^ bool(epoch % 2)
    shift = torch.randint(0, 2 * pad + 1, (n, 2), generator=g)
    return EpochPlan(order, flip, shift)


def random_crop(x: torch.Tensor, shift: torch.Tensor, pad: int, mode: str = "constant") -> torch.Tensor:
    """Pad a batch by ``pad`` (zeros, or ``mode="reflect"``) and crop each image back to size at its own offset."""
    n, c, h, w = x.shape
    xp = torch.nn.functional.pad(x, (pad, pad, pad, pad), mode=mode)
    dev = x.device
    rows = (shift[:, 0:1].to(dev) + torch.arange(h, device=dev))[:, None, :, None]
    cols = (shift[:, 1:2].to(dev) + torch.arange(w, device=dev))[:, None, None, :]
    batch = torch.arange(n, device=dev)[:, None, None, None]
    chan = torch.arange(c, device=dev)[None, :, None, None]
    return xp[batch, chan, rows, cols]


def random_flip(x: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Mirror left-right the images whose ``flip`` is true."""
    return torch.where(flip.to(x.device)[:, None, None, None], x.flip(-1), x)


class TensorLoader:
    """Iterates ``(x, y)`` batches of a uint8 image tensor, scaled to [0, 1] (then normalised if asked).

    ``rank``/``world_size`` shard every epoch's global order for DistributedDataParallel: each
    rank sees ``batch_size`` images per step out of a global batch of ``batch_size * world_size``.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        *,
        shuffle: bool = True,
        augment: Augment = "none",
        seed: int = 0,
        drop_last: bool = False,
        device: torch.device | str = "cpu",
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
        channels_last: bool = False,
        pad: int = 4,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError("images must be a uint8 N x C x H x W tensor")
        if augment not in AUGMENTS:
            raise ValueError(f"augment must be one of {AUGMENTS}, not {augment!r}")
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device, torch.int64)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augment = augment
        self.seed = seed
        self.drop_last = drop_last
        self.pad = pad
        self.rank, self.world_size = rank, world_size
        self.channels_last = channels_last
        self.epoch = 0
        self.start_step = 0
        c = images.shape[1]
        self._mean = None if mean is None else torch.tensor(mean, device=self.device).view(1, c, 1, 1)
        self._std = None if std is None else torch.tensor(std, device=self.device).view(1, c, 1, 1)

    @property
    def num_samples(self) -> int:
        """Images this rank sees per epoch (all ranks see equally many)."""
        return len(self.images) // self.world_size

    def __len__(self) -> int:
        n, b = self.num_samples, self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        """Select the epoch to iterate next and the step to start at (for mid-epoch resume)."""
        self.epoch, self.start_step = epoch, start_step

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "start_step": self.start_step, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.set_epoch(int(state["epoch"]), int(state.get("start_step", 0)))

    @property
    def shift_pad(self) -> int:
        """Largest shift of this loader's augmentation, in pixels."""
        return SHIFT_PAD if self.augment == "shift-altflip" else self.pad

    def _plan(self) -> EpochPlan:
        plan = plan_epoch(len(self.images), self.seed, self.epoch, self.shuffle, self.shift_pad,
                          alternate_flips=self.augment == "shift-altflip")
        if self.world_size == 1:
            return plan
        keep = slice(self.rank, self.num_samples * self.world_size, self.world_size)
        return EpochPlan(plan.order[keep], plan.flip[keep], plan.shift[keep])

    def _prepare(self, idx: torch.Tensor, flip: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        x = self.images[idx.to(self.device)].float().div_(255.0)
        if self.augment == "crop-flip":
            x = random_crop(x, shift, self.pad)
        if self.augment == "shift-altflip":
            x = random_crop(x, shift, SHIFT_PAD, mode="reflect")
        if self.augment != "none":
            x = random_flip(x, flip)
        if self._mean is not None:
            x = (x - self._mean) / self._std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        plan = self._plan()
        for step in range(self.start_step, len(self)):
            sl = slice(step * self.batch_size, (step + 1) * self.batch_size)
            idx = plan.order[sl]
            yield self._prepare(idx, plan.flip[sl], plan.shift[sl]), self.labels[idx.to(self.device)]
        self.start_step = 0
