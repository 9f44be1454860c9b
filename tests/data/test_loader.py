"""TensorLoader: batching, determinism per (seed, epoch), mid-epoch restart, batched augmentation, sharding."""
import pytest
import torch
import torch.nn.functional as F

from cnnlab.data import loader as loader_module
from cnnlab.data.loader import TensorLoader, crop_flip


def _data(n=50, c=3, h=8, w=8):
    images = torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8)
    return images, torch.arange(n) % 10


def test_batches_cover_every_image_once_scaled_to_unit_range():
    images, labels = _data()
    loader = TensorLoader(images, labels, 16, shuffle=True, seed=1)
    xs, ys = zip(*loader)
    assert len(loader) == 4 and [len(y) for y in ys] == [16, 16, 16, 2]
    x = torch.cat(xs)
    assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert sorted(torch.cat(ys).tolist()) == sorted(labels.tolist())
    # every image appears once: compare as bytes
    assert sorted((x * 255).round().to(torch.uint8).flatten(1).sum(1).tolist()) == sorted(images.flatten(1).sum(1).tolist())


def test_order_is_a_function_of_seed_and_epoch_only():
    images, labels = _data()
    a = TensorLoader(images, labels, 10, seed=3, augment="crop-flip")
    b = TensorLoader(images, labels, 10, seed=3, augment="crop-flip")
    a.set_epoch(2)
    b.set_epoch(2)
    assert all(torch.equal(x1, x2) for (x1, _), (x2, _) in zip(a, b))
    a.set_epoch(3)
    b.set_epoch(2)
    assert not torch.equal(next(iter(a))[1], next(iter(b))[1])


def test_start_step_resumes_mid_epoch_with_identical_batches():
    images, labels = _data()
    full = TensorLoader(images, labels, 8, seed=5, augment="crop-flip")
    full.set_epoch(1)
    batches = list(full)
    part = TensorLoader(images, labels, 8, seed=5, augment="crop-flip")
    part.set_epoch(1, start_step=4)
    rest = list(part)
    assert len(rest) == len(batches) - 4
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(batches[4:], rest))


@pytest.mark.parametrize("start_step", [0, 3])
def test_chunked_augmentation_yields_the_same_batches_as_one_batch_at_a_time(monkeypatch, start_step):
    images, labels = _data()

    def batches(chunk_images: int) -> list:
        monkeypatch.setattr(loader_module, "CHUNK_IMAGES", chunk_images)
        loader = TensorLoader(images, labels, 4, seed=2, augment="crop-flip", channels_last=True)
        loader.set_epoch(1, start_step=start_step)
        return list(loader)

    one_at_a_time, chunked = batches(1), batches(16)  # chunks of 4 batches; 13 batches end mid-chunk
    assert len(chunked) == len(one_at_a_time) == 13 - start_step
    for (x1, y1), (x2, y2) in zip(one_at_a_time, chunked):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
        assert x2.is_contiguous(memory_format=torch.channels_last)


def test_crop_shifts_content_and_zero_pads():
    x = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4)
    no_flip = torch.tensor([False])
    shifted = crop_flip(x, torch.tensor([[0, 0]]), no_flip, pad=1)  # offset 0 = moved down-right by 1
    assert shifted[0, 0, 0].tolist() == [0, 0, 0, 0]
    assert shifted[0, 0, 1].tolist() == [0, 0, 1, 2]
    assert torch.equal(crop_flip(x, torch.tensor([[1, 1]]), no_flip, pad=1), x)


def test_flip_mirrors_only_selected_images():
    x = torch.arange(8, dtype=torch.uint8).view(2, 1, 1, 4)
    out = crop_flip(x, torch.zeros(2, 2, dtype=torch.long), torch.tensor([True, False]), pad=0)
    assert out[0, 0, 0].tolist() == [3, 2, 1, 0] and out[1, 0, 0].tolist() == [4, 5, 6, 7]


@pytest.mark.parametrize("mode, pad", [("constant", 4), ("reflect", 2)])
def test_one_gather_equals_pad_then_crop_then_flip(mode, pad):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8, generator=g)
    shift = torch.randint(0, 2 * pad + 1, (64, 2), generator=g)
    flip = torch.rand(64, generator=g) < 0.5
    padded = F.pad(x.float(), (pad,) * 4, mode=mode)
    crops = torch.stack([p[:, r:r + 8, c:c + 8] for p, (r, c) in zip(padded, shift.tolist())])
    expected = torch.where(flip[:, None, None, None], crops.flip(-1), crops)
    assert torch.equal(crop_flip(x, shift, flip, pad, mode).float(), expected)


def test_ranks_see_disjoint_shards_of_the_same_global_order():
    images, labels = _data(n=40)
    seen = []
    for rank in range(2):
        loader = TensorLoader(images, labels, 5, seed=0, rank=rank, world_size=2)
        assert len(loader) == 4
        seen.append(torch.cat([y for _, y in loader]))
    both = torch.cat(seen)
    assert len(both) == 40


def test_normalisation_and_channels_last():
    images, labels = _data()
    loader = TensorLoader(images, labels, 50, shuffle=False, mean=(0.5,) * 3, std=(0.25,) * 3, channels_last=True)
    x, _ = next(iter(loader))
    expected = (images.float() / 255 - 0.5) / 0.25
    assert torch.allclose(x, expected, atol=1e-6)
    assert x.is_contiguous(memory_format=torch.channels_last)


def test_progressive_sizes_ramp_to_full_size_for_the_last_three_eighths():
    sides = [loader_module.progressive_size(e, 8, 32, 16) for e in range(8)]
    assert sides == [16, 20, 22, 26, 28, 32, 32, 32]
    assert [loader_module.progressive_size(e, 6, 32, 16) for e in range(6)] == [16, 20, 24, 28, 32, 32]
    assert loader_module.progressive_size(0, 1, 32, 16) == 32  # a one-epoch run trains at full size
    assert [loader_module.progressive_size(e, 5, 32, 0) for e in range(5)] == [32] * 5  # 0: off


def test_set_side_downsamples_batches_with_antialiasing_in_their_memory_format():
    images, labels = _data(h=16, w=16)
    loader = TensorLoader(images, labels, 25, shuffle=False, augment="shift-altflip", channels_last=True)
    full = next(iter(loader))[0]
    assert loader.full_side == 16 and loader.set_side(8) and not loader.set_side(8)
    x, _ = next(iter(loader))
    assert x.shape == (25, 3, 8, 8) and x.is_contiguous(memory_format=torch.channels_last)
    # a factor-2 antialiased bilinear shrink averages each 2x2 block (plus a little of its neighbours)
    assert torch.allclose(x.mean((2, 3)), full.mean((2, 3)), atol=0.03)
    assert loader.set_side(16) and next(iter(loader))[0].shape[-1] == 16 and loader.side is None
    flat = TensorLoader(torch.full((4, 1, 10, 10), 200, dtype=torch.uint8), torch.zeros(4), 4)
    flat.set_side(5)
    assert torch.allclose(next(iter(flat))[0], torch.tensor(200 / 255))  # no ringing on a constant image


def test_token_ids_cannot_be_resized():
    loader = TensorLoader(torch.ones(4, 7, dtype=torch.int64), torch.zeros(4), 2)
    assert loader.full_side == 0 and not loader.set_side(None)
    with pytest.raises(ValueError, match="token ids"):
        loader.set_side(3)
