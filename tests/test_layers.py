"""layers: the fast CPU dropout keeps nn.Dropout's contract; TF ``same`` max pooling without a padded copy."""
import pytest
import torch
import torch.nn.functional as F

from cnnlab import layers as L


def test_dropout_zeroes_the_rate_and_rescales_the_rest():
    torch.manual_seed(0)
    drop = L.Dropout(0.2)
    x = torch.ones(200_000, requires_grad=True)
    y = drop(x)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.8) < 0.005
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / 0.8))
    (grad,) = torch.autograd.grad(y.sum(), x)
    assert torch.equal(grad, y.detach())  # the gradient passes through the same mask and scale


def test_dropout_is_seeded_identity_in_eval_and_keeps_dtype_and_inplace():
    drop = L.Dropout(0.5)
    x = torch.randn(64, 8, dtype=torch.bfloat16)
    torch.manual_seed(3)
    a = drop(x)
    torch.manual_seed(3)
    assert torch.equal(a, drop(x)) and a.dtype == torch.bfloat16
    assert torch.equal(drop.eval()(x), x)
    cl = torch.randn(4, 8, 5, 5).contiguous(memory_format=torch.channels_last)
    assert drop.train()(cl).is_contiguous(memory_format=torch.channels_last)
    inplace = L.Dropout(0.5, inplace=True).train()
    z = x.clone()
    torch.manual_seed(3)
    assert inplace(z) is z and torch.equal(z, a)


@pytest.mark.parametrize("side,kernel,stride", [(16, 3, 1), (16, 3, 2), (15, 3, 2), (15, 2, 2), (9, 5, 1)])
def test_same_max_pool_equals_padding_with_minus_infinity(side, kernel, stride):
    x = torch.randn(2, 3, side, side + 1, requires_grad=True)
    y = L.MaxPool2d(kernel, stride, "same")(x)
    ref = F.max_pool2d(F.pad(x, L._same_pads(x, (kernel,) * 2, (stride,) * 2, (1, 1)), value=float("-inf")),
                       kernel, stride)
    assert y.shape[-2:] == (-(-side // stride), -(-(side + 1) // stride))  # TF same: ceil(n / s)
    g = torch.randn_like(y)
    assert torch.equal(y, ref)
    assert torch.equal(torch.autograd.grad(y, x, g)[0], torch.autograd.grad(ref, x, g)[0])
