"""Batches and augments whole uint8 tensors: no per-image Python, no worker processes.

The order and the augmentation of an epoch are drawn at its start from a generator seeded by
``(seed, epoch)``, so any batch of any epoch can be reproduced without replaying the ones before
it: that is what makes resuming (even mid-epoch) give the same result as never stopping.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Literal

import torch
import torch.nn.functional as F

Augment = Literal["none", "flip", "crop-flip", "shift-altflip"]
AUGMENTS: tuple[str, ...] = ("none", "flip", "crop-flip", "shift-altflip")
SHIFT_PAD = 2  # shift-altflip: largest shift in pixels (the border is reflected, not zero)
# Small batches are augmented this many images at a time, then sliced: the same pixels, with the
# per-call cost of the gathers paid once per chunk (batch 32: 220 instead of 360 us per batch).
CHUNK_IMAGES = 1024
FULL_SIZE_SHARE = 3 / 8  # progressive resizing: the last 3/8 of the epochs train at full size


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


def reflect(i: torch.Tensor, n: int) -> torch.Tensor:
    """Indices beyond ``[0, n)`` mirrored back inside, as ``F.pad(mode="reflect")`` does (for overhangs < n)."""
    i = i.abs()
    return torch.where(i >= n, 2 * (n - 1) - i, i)


@dataclass(frozen=True)
class SourceGrid:
    """Where each output pixel of each image comes from: its source row and column, and whether it is padding."""

    rows: torch.Tensor  # int64 (n, h)
    cols: torch.Tensor  # int64 (n, w)
    row_ok: torch.Tensor | None  # bool (n, h), False on zero padding; None when nothing is padding
    col_ok: torch.Tensor | None

    def __getitem__(self, sl: slice) -> "SourceGrid":
        ok = (None, None) if self.row_ok is None else (self.row_ok[sl], self.col_ok[sl])
        return SourceGrid(self.rows[sl], self.cols[sl], *ok)


def source_grid(shift: torch.Tensor, flip: torch.Tensor, h: int, w: int, pad: int, mode: str = "constant") -> SourceGrid:
    """The grid of padding by ``pad`` (zeros, or ``mode="reflect"``), cropping at offsets ``shift``, mirroring where ``flip``."""
    rows = shift[:, :1] - pad + torch.arange(h, device=shift.device)
    cols = shift[:, 1:] - pad + torch.arange(w, device=shift.device)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    if mode == "reflect":
        return SourceGrid(reflect(rows, h), reflect(cols, w), None, None)
    if pad == 0:  # every source pixel is inside the image: nothing to mask
        return SourceGrid(rows, cols, None, None)
    return SourceGrid(rows.clamp(0, h - 1), cols.clamp(0, w - 1), (rows >= 0) & (rows < h), (cols >= 0) & (cols < w))


def gather(images: torch.Tensor, idx: torch.Tensor, grid: SourceGrid, channels_last: bool = False) -> torch.Tensor:
    """``images[idx]`` resampled on ``grid``: uint8 gathers of rows, then columns (channels_last strides when asked).

    Two ``torch.gather`` calls ran 2x faster than one advanced index over all four dimensions.
    """
    x = images[idx]
    n, c, h, w = x.shape
    x = x.gather(2, grid.rows[:, None, :, None].expand(n, c, h, w))
    x = x.gather(3, grid.cols[:, None, None, :].expand(n, c, h, w))
    if grid.row_ok is not None:
        x = x * (grid.row_ok[:, None, :, None] & grid.col_ok[:, None, None, :])
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def crop_flip(images: torch.Tensor, shift: torch.Tensor, flip: torch.Tensor, pad: int,
              mode: str = "constant") -> torch.Tensor:
    """``images`` padded by ``pad``, cropped back at per-image offsets ``shift`` and mirrored where ``flip``.

    The same pixels as ``F.pad``, a crop and ``flip(-1)`` in turn, from one gather and no float copies.
    """
    _, _, h, w = images.shape
    return gather(images, torch.arange(len(images), device=images.device), source_grid(shift, flip, h, w, pad, mode))


def progressive_size(epoch: int, epochs: int, full: int, smallest: int, full_share: float = FULL_SIZE_SHARE) -> int:
    """The image side to train epoch ``epoch`` (0-based) of ``epochs`` at: ``smallest`` first, rising linearly to
    ``full``, which the last ``full_share`` of the epochs (at least the last one) keep; even sizes, as FFCV's
    resolution ramp. ``smallest`` 0 (or not below ``full``) means no resizing.

    8 epochs from 16 to 32: 16 20 22 26 28 32 32 32.
    """
    if not 0 < smallest < full:
        return full
    ramp = min(epochs - 1, epochs - math.floor(epochs * full_share + 0.5))  # the first epoch at full size
    if epoch >= ramp:
        return full
    return min(full, 2 * math.floor((smallest + (full - smallest) * epoch / ramp) / 2 + 0.5))


def progressive_sides(epochs: int, full: int, smallest: int) -> list[int]:
    """Every epoch's training side of a run (``progressive_size``)."""
    return [progressive_size(e, epochs, full, smallest) for e in range(epochs)]


def downsample(x: torch.Tensor, side: int) -> torch.Tensor:
    """Float images resized so that their shorter side is ``side`` (bilinear with antialiasing, as a photo is
    shrunk), in the memory format they came in."""
    h, w = x.shape[-2:]
    size = (max(1, round(h * side / min(h, w))), max(1, round(w * side / min(h, w))))
    cl = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    y = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    return y.contiguous(memory_format=torch.channels_last) if cl else y.contiguous()


def trim_padding(ids: torch.Tensor) -> torch.Tensor:
    """Token ids without the columns that are padding (0) in every row (at least one column is kept)."""
    used = ids.ne(0).any(0).nonzero()
    return ids[:, :int(used[-1]) + 1 if len(used) else 1]


class TensorLoader:
    """Iterates ``(x, y)`` batches of a uint8 image tensor, scaled to [0, 1] (then normalised if asked, and
    downsampled after ``set_side``),
    or of int64 N×L token ids (right-padded with 0), given as they are and cut to the batch's longest
    sentence (the text models do not depend on trailing padding, so this only saves work).

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
        self.tokens = images.dtype == torch.int64 and images.dim() == 2
        if not self.tokens and (images.dtype != torch.uint8 or images.dim() != 4):
            raise ValueError("images must be a uint8 N x C x H x W tensor (or token ids an int64 N x L one)")
        if self.tokens and augment != "none":
            raise ValueError(f"token sequences take no image augmentation (got augment={augment!r})")
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
        self.side: int | None = None  # the shorter side batches are downsampled to (None: as stored)
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

    @property
    def full_side(self) -> int:
        """The shorter side of the stored images (0 for token ids)."""
        return 0 if self.tokens else min(self.images.shape[-2:])

    def set_side(self, side: int | None) -> bool:
        """Downsample every batch to shorter side ``side`` from now on (None or the full side: as stored), for
        progressive resizing; returns whether that changed anything."""
        if side is not None and (self.tokens or side < 1):
            raise ValueError(f"cannot resize {'token ids' if self.tokens else 'images'} to side {side}")
        side = None if side is None or side >= self.full_side else side
        changed, self.side = side != self.side, side
        return changed

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

    def _grid(self, plan: EpochPlan) -> SourceGrid | None:
        """The epoch's source grid of every position (None without augmentation): drawn once, sliced per batch."""
        if self.augment == "none":
            return None
        pad, mode = (SHIFT_PAD, "reflect") if self.augment == "shift-altflip" else (self.pad, "constant")
        shift = plan.shift
        if self.augment == "flip":  # no shift: a zero-padding grid at offset 0
            pad, shift = 0, torch.zeros_like(shift)
        h, w = self.images.shape[-2:]
        return source_grid(shift.to(self.device), plan.flip.to(self.device), h, w, pad, mode)

    def _prepare(self, idx: torch.Tensor, grid: SourceGrid | None) -> torch.Tensor:
        if self.tokens:
            return self.images[idx]
        if grid is None:
            x = self.images[idx]
            x = x.contiguous(memory_format=torch.channels_last) if self.channels_last else x
        else:
            x = gather(self.images, idx, grid, self.channels_last)
        x = x.float().div_(255.0)
        x = x if self._mean is None else x.sub_(self._mean).div_(self._std)
        return x if self.side is None else downsample(x, self.side)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        plan = self._plan()
        order, grid = plan.order.to(self.device), self._grid(plan)
        b = self.batch_size
        per_chunk = max(1, CHUNK_IMAGES // b)
        for first in range(self.start_step, len(self), per_chunk):
            last = min(first + per_chunk, len(self))
            sl = slice(first * b, last * b)
            idx = order[sl]
            x, y = self._prepare(idx, None if grid is None else grid[sl]), self.labels[idx]
            for i in range(last - first):
                batch = x[i * b:(i + 1) * b]
                yield (trim_padding(batch) if self.tokens else batch), y[i * b:(i + 1) * b]
        self.start_step = 0
