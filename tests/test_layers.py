"""layers: the fast CPU dropout keeps nn.Dropout's contract; TF ``same`` max pooling without a padded copy; 2x2
max pooling without a gradient (pairwise maxima) gives PyTorch's values, and training keeps PyTorch's gradients."""
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


@pytest.mark.parametrize("shape,padding,ceil_mode", [
    ((32, 6, 28, 28), "valid", False),  # LeNet-5's first pool
    ((4, 3, 9, 11), "valid", False),  # odd sides: the last row and column are dropped
    ((32, 64, 15, 15), "same", False),  # TF same on odd sides: -inf padding, then pairwise
    ((32, 16, 10, 10), "valid", True),  # ceil mode on even sides pools as floor mode
])
def test_inference_max_pool_matches_pytorch_on_ties_and_nan_and_training_keeps_its_gradients(shape, padding, ceil_mode):
    x = torch.randint(0, 3, shape).float()  # ties in most windows
    x[0, 0, 0, 0] = float("nan")
    pool = L.MaxPool2d(2, 2, padding, ceil_mode=ceil_mode)
    pads = L._same_pads(x, (2, 2), (2, 2), (1, 1)) if padding == "same" else [0, 0, 0, 0]
    ref = F.max_pool2d(F.pad(x, pads, value=float("-inf")), 2, 2, ceil_mode=ceil_mode)
    with torch.inference_mode():
        y = pool(x)
    assert torch.equal(y.isnan(), ref.isnan()) and torch.equal(y.nan_to_num(), ref.nan_to_num())
    xg = x.nan_to_num().requires_grad_()
    refg = F.max_pool2d(F.pad(xg, pads, value=float("-inf")), 2, 2, ceil_mode=ceil_mode)
    g = torch.randn_like(refg)
    assert torch.equal(torch.autograd.grad(pool(xg), xg, g)[0], torch.autograd.grad(refg, xg, g)[0])


def test_pairwise_max_pool_is_taken_only_without_autograd_and_never_under_tracing():
    x = torch.randn(32, 6, 28, 28)
    applies = lambda x, k=(2, 2), s=(2, 2): L._pairwise_pool_applies(x, k, s, (0, 0), False)  # noqa: E731
    assert applies(x) and not applies(x.requires_grad_())
    with torch.no_grad():
        assert applies(x)
    x = x.detach()
    assert not applies(x, (3, 3)) and not applies(x, (2, 2), (1, 1))
    assert not applies(x.contiguous(memory_format=torch.channels_last))
    traced = torch.jit.trace(L.MaxPool2d(2, 2).eval(), x[:2])
    assert any(n.kind() == "aten::max_pool2d" for n in traced.graph.nodes())
