"""He et al. 2016 §4.2: the CIFAR ResNets and plain nets of the degradation experiment."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnlab.models import create_model, list_models, model_info
from cnnlab.models.resnet_cifar import CifarBlock, ZeroPadShortcut
from cnnlab.runs.config import RunConfig

DEPTHS = (20, 32, 44, 56, 110)
TABLE_6_MILLIONS = {20: 0.27, 32: 0.46, 44: 0.66, 56: 0.85, 110: 1.7}  # the paper's "# params" column


def params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def meta(name: str) -> nn.Module:
    with torch.device("meta"):
        return create_model(name)


def test_names_follow_the_paper():
    names = {f"{kind}{d}-cifar" for kind in ("resnet", "plain") for d in DEPTHS}
    assert set(list_models(family="resnet-cifar")) == names
    assert all(model_info(n).input_size == (3, 32, 32) and model_info(n).num_classes == 10 for n in names)


@pytest.mark.parametrize("depth", DEPTHS)
def test_parameter_counts_match_table_6_and_shortcuts_add_none(depth):
    resnet, plain = meta(f"resnet{depth}-cifar"), meta(f"plain{depth}-cifar")
    assert round(params(resnet) / 1e6, 2 if depth < 100 else 1) == TABLE_6_MILLIONS[depth]
    assert params(plain) == params(resnet)  # option A: identity and zero padding, no projection weights
    convs = sum(isinstance(m, nn.Conv2d) for m in resnet.modules())
    linears = sum(isinstance(m, nn.Linear) for m in resnet.modules())
    assert convs + linears == depth  # 6n + 2 weighted layers


def test_stages_keep_16_32_64_filters_on_32_16_8_maps():
    model = create_model("resnet20-cifar").eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        stem = model.relu(model.bn1(model.conv1(x)))
        a = model.layer1(stem)
        b = model.layer2(a)
        c = model.layer3(b)
    assert [tuple(t.shape[1:]) for t in (a, b, c)] == [(16, 32, 32), (32, 16, 16), (64, 8, 8)]
    assert model(x).shape == (2, 10)


def test_option_a_subsamples_and_pads_with_zeros():
    x = torch.arange(2 * 4 * 4, dtype=torch.float32).reshape(1, 2, 4, 4)
    y = ZeroPadShortcut(2, 4, 2)(x)
    assert y.shape == (1, 4, 2, 2)
    assert torch.equal(y[:, :2], x[:, :, ::2, ::2]) and not y[:, 2:].any()
    assert list(ZeroPadShortcut(2, 4, 2).parameters()) == []


def test_the_plain_block_has_no_shortcut_and_the_residual_one_adds_it():
    torch.manual_seed(0)
    residual = CifarBlock(4, 4, 1, shortcut=True).eval()
    plain = CifarBlock(4, 4, 1, shortcut=False).eval()
    plain.load_state_dict(residual.state_dict())
    x = torch.rand(1, 4, 6, 6)
    with torch.no_grad():
        inner = residual.bn2(residual.conv2(residual.relu(residual.bn1(residual.conv1(x)))))
        assert torch.allclose(residual(x), torch.relu(inner + x))
        assert torch.allclose(plain(x), torch.relu(inner))


def test_they_train_with_the_papers_optimiser_by_default():
    cfg = RunConfig(model="plain56-cifar")
    assert (cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay, cfg.batch_size, cfg.augment) == \
        ("sgd", 0.1, 0.9, 1e-4, 128, "crop-flip")
    assert RunConfig(model="resnet20-cifar", lr=0.01).lr == 0.01
