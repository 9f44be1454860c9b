"""The classic-CNN zoo at full size: parameter counts, natural-input shapes, FLOPs, head API, registry.

Counts, shapes at the natural input size and FLOPs are computed on the meta device (no memory, no
arithmetic), so the 138 M parameter VGGs cost nothing there; real weights and a real forward pass
happen once per registered network, in ``test_every_registered_model_gives_logits``.
"""
from __future__ import annotations

from typing import Callable

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from cnnlab.layers import AvgPool2d, MaxPool2d
from cnnlab.models import create_model, default_input_size, is_text_model, list_models, model_info

@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Batch-1 CPU passes gain nothing from a second thread, and on a busy machine OpenMP's spinning
    makes them several times slower; restore the thread count afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


ZOO_FAMILIES = {"lenet", "alexnet", "vgg", "googlenet", "resnet", "xception", "hybrid", "tflearn"}


def param_count(model: nn.Module) -> int:
    """What PyTorch (and torchvision's docs) count: every parameter element."""
    return sum(p.numel() for p in model.parameters())


def keras_param_count(model: nn.Module) -> int:
    """What Keras' ``model.summary()`` counts: parameters plus BN moving mean/variance."""
    stats = sum(b.numel() for n, b in model.named_buffers() if n.endswith(("running_mean", "running_var")))
    return param_count(model) + stats


def meta_model(name: str, **kw) -> nn.Module:
    """The registered network with its defaults (unless overridden), on the meta device, in eval mode."""
    with torch.device("meta"):
        return create_model(name, **kw).eval()


def meta_input(name: str, batch: int = 2) -> torch.Tensor:
    """A meta batch of the network's natural input size."""
    return torch.empty(batch, *default_input_size(name), device="meta")


# (registered name, factory kwargs, counter, expected count, where the number comes from)
COUNTS: list[tuple[str, dict, Callable[[nn.Module], int], int, str]] = [
    ("lenet5", {}, param_count, 61_706, "classic LeNet-5: full C3, C5 as conv, linear output"),
    ("alexnet", {}, param_count, 62_378_344, "single-tower AlexNet, 62.4 M"),
    ("vgg11", {}, param_count, 132_863_336, "paper Table 2: A 133 M; torchvision vgg11"),
    ("vgg11-lrn", {}, param_count, 132_863_336, "paper Table 2: A-LRN 133 M (LRN has no parameters)"),
    ("vgg13", {}, param_count, 133_047_848, "paper Table 2: B 133 M; torchvision vgg13"),
    ("vgg16-c", {}, param_count, 133_638_952, "paper Table 2: C 134 M"),
    ("vgg16", {}, param_count, 138_357_544, "paper Table 2: D 138 M; torchvision vgg16"),
    ("vgg19", {}, param_count, 143_667_240, "paper Table 2: E 144 M; torchvision vgg19"),
    ("googlenet", {}, param_count, 6_998_552, "paper layout, no aux heads (≈6.6-7.0 M)"),
    ("googlenet", {"aux_logits": True}, param_count, 13_378_280, "paper layout with both aux heads"),
    ("googlenet", {"variant": "torchvision"}, param_count, 6_624_904, "torchvision googlenet, no aux"),
    ("resnet18", {}, param_count, 11_689_512, "torchvision resnet18"),
    ("resnet34", {}, param_count, 21_797_672, "torchvision resnet34"),
    ("resnet50", {}, param_count, 25_557_032, "torchvision resnet50"),
    ("resnet50", {"stride_in_1x1": True}, param_count, 25_557_032, "paper v1: same weights, other stride"),
    ("resnet101", {}, param_count, 44_549_160, "torchvision resnet101"),
    ("resnet152", {}, param_count, 60_192_808, "torchvision resnet152"),
    ("xception", {}, keras_param_count, 22_910_480, "Keras applications.Xception"),
    ("xception", {}, param_count, 22_855_952, "Keras trainable params only"),
    ("xception", {"num_classes": 100}, keras_param_count, 21_066_380, "seed 003 results table"),
    ("alexnet-vgg", {}, keras_param_count, 45_295_844, "seed 003 code (its table misprints 45,295,884)"),
    ("alexnet-vgg-resnet", {}, keras_param_count, 23_858_788, "seed 003 results table"),
    ("tflearn-cifar", {}, param_count, 2_159_114, "seed 004 tflearn net: 896+18,496+36,928+2,097,664+5,130"),
]


@pytest.mark.parametrize(("name", "kw", "counter", "expected", "why"), COUNTS,
                         ids=[f"{c[0]}-{c[1]}" if c[1] else c[0] for c in COUNTS])
def test_param_count_and_natural_output_shape(name: str, kw: dict, counter: Callable, expected: int, why: str) -> None:
    model = meta_model(name, **kw)
    assert counter(model) == expected, why
    classes = kw.get("num_classes", model_info(name).num_classes)
    assert model(meta_input(name)).shape == (2, classes)


@pytest.mark.parametrize(("name", "millions"), [
    ("vgg11", 133), ("vgg11-lrn", 133), ("vgg13", 133), ("vgg16-c", 134), ("vgg16", 138), ("vgg19", 144),
])
def test_vgg_matches_paper_table_2(name: str, millions: int) -> None:
    assert round(param_count(meta_model(name)) / 1e6) == millions


def macs(name: str, **kw) -> float:
    """Multiply-adds (G) of one natural-size image; FlopCounterMode counts 2 FLOPs per multiply-add."""
    model, counter = meta_model(name, **kw), FlopCounterMode(display=False)  # build outside: probes run convs
    with counter, torch.no_grad():
        model(meta_input(name, batch=1))
    return counter.get_total_flops() / 2e9


# (name, kwargs, expected G multiply-adds at the natural input, relative tolerance)
FLOPS = [
    ("resnet18", {}, 1.8, 0.03),  # paper Table 1 (1.81)
    ("resnet34", {}, 3.6, 0.03),  # 3.66
    ("resnet50", {"stride_in_1x1": True}, 3.8, 0.03),  # paper v1: 3.86
    ("resnet50", {}, 4.1, 0.03),  # torchvision v1.5, stride on the 3x3: 4.09
    ("resnet101", {"stride_in_1x1": True}, 7.6, 0.03),  # 7.57
    ("resnet101", {}, 7.8, 0.03),  # 7.80
    ("resnet152", {"stride_in_1x1": True}, 11.3, 0.03),  # 11.28
    ("resnet152", {}, 11.5, 0.03),  # 11.51
    ("vgg16", {}, 15.5, 0.03),  # 15.47
]


@pytest.mark.parametrize(("name", "kw", "expected", "tol"), FLOPS,
                         ids=[f"{f[0]}{'-v1' if f[1] else ''}" for f in FLOPS])
def test_multiply_adds(name: str, kw: dict, expected: float, tol: float) -> None:
    assert macs(name, **kw) == pytest.approx(expected, rel=tol)


def zoo_names() -> list[str]:
    return [n for n in list_models() if model_info(n).family in ZOO_FAMILIES]


def test_zoo_is_registered_under_the_naming_scheme() -> None:
    expected = {"lenet5", "alexnet", "vgg11", "vgg11-lrn", "vgg13", "vgg16-c", "vgg16", "vgg19", "googlenet",
                "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "xception",
                "alexnet-vgg", "alexnet-vgg-resnet", "tflearn-cifar"}
    assert set(zoo_names()) == expected
    assert all(default_input_size(n)[1:] == (32, 32) for n in zoo_names() if n.endswith("-cifar"))


REAL_SIDE = 96  # real runs of the ImageNet nets use 96x96: every one allows it, and 2 CPU cores stay quick


@pytest.mark.parametrize("name", [n for n in list_models() if not is_text_model(n)])
def test_every_registered_model_gives_logits(name: str) -> None:
    """Real weights, real forward: 7 classes, one grey channel, batch 1, at the natural H x W or,
    for the ImageNet-size nets (their natural size is covered on meta above), at 96x96."""
    _, h, w = default_input_size(name)
    h, w = min(h, REAL_SIDE), min(w, REAL_SIDE)
    model = create_model(name, num_classes=7, in_channels=1, input_size=(h, w)).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 1, h, w))
    assert out.shape == (1, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", zoo_names())
def test_head_api_swaps_and_strips_the_classifier(name: str) -> None:
    model = meta_model(name)
    x = meta_input(name)
    features = model.forward_features(x)
    assert model.forward_head(features, pre_logits=True).shape == (2, model.num_features)
    assert isinstance(model.get_classifier(), nn.Linear)
    model.reset_classifier(5)
    assert model(x).shape == (2, 5) and model.num_classes == 5
    model.reset_classifier(0)
    assert model(x).shape == (2, model.num_features)


@pytest.mark.parametrize(("name", "kw"), [
    ("vgg11", {}), ("vgg13", {}), ("vgg16", {}), ("vgg19", {}),
    ("resnet18", {}), ("resnet34", {}), ("resnet50", {}), ("resnet101", {}), ("resnet152", {}),
    ("googlenet", {"variant": "torchvision", "aux_logits": True}),
])
def test_state_dict_matches_torchvision(name: str, kw: dict) -> None:
    """Same keys and shapes as torchvision, so its ImageNet weights load by name."""
    models = pytest.importorskip("torchvision.models")
    theirs_kw = {"aux_logits": True, "init_weights": False} if name == "googlenet" else {}
    with torch.device("meta"):
        theirs = getattr(models, name)(**theirs_kw).state_dict()
    ours = meta_model(name, **kw).state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}


def test_googlenet_aux_heads_only_in_training() -> None:
    model = meta_model("googlenet", aux_logits=True).train()
    main, aux2, aux1 = model(meta_input("googlenet"))
    assert main.shape == aux2.shape == aux1.shape == (2, 1000)
    assert model.eval()(meta_input("googlenet")).shape == (2, 1000)
    model.reset_classifier(3)
    assert model.train()(meta_input("googlenet")).aux_logits1.shape == (2, 3)


@pytest.mark.parametrize(("name", "size", "grid"), [
    ("alexnet", (227, 227), (6, 6)), ("vgg16", (224, 224), (7, 7)), ("xception", (299, 299), (10, 10)),
    ("googlenet", (224, 224), (7, 7)), ("resnet50", (224, 224), (7, 7)), ("lenet5", (32, 32), (1, 1)),
    ("alexnet-vgg", (224, 224), (3, 3)), ("alexnet-vgg-resnet", (224, 224), (14, 14)),
    ("tflearn-cifar", (32, 32), (8, 8)),
])
def test_natural_size_and_feature_map_grid(name: str, size: tuple[int, int], grid: tuple[int, int]) -> None:
    assert default_input_size(name)[1:] == size
    assert meta_model(name).forward_features(meta_input(name)).shape[-2:] == grid


def test_head_follows_input_size() -> None:
    """A Flatten → Dense head is sized from ``input_size``; LeNet's C5 kernel follows S4's map."""
    vgg = meta_model("vgg16", input_size=(32, 32))
    assert vgg.classifier[0].in_features == 512
    lenet = meta_model("lenet5", input_size=(28, 28))
    assert lenet.features.c5.kernel_size == (4, 4)
    assert lenet(torch.empty(2, 1, 28, 28, device="meta")).shape == (2, 10)


def conv_pool_shapes(name: str) -> list[tuple[int, ...]]:
    """(C, H, W) after each conv and pool of ``features`` for one natural-size image."""
    x, shapes = meta_input(name, batch=1), []
    for layer in meta_model(name).features:
        x = layer(x)
        if isinstance(layer, (nn.Conv2d, MaxPool2d, AvgPool2d)):
            shapes.append(tuple(x.shape[1:]))
    return shapes


@pytest.mark.parametrize(("name", "table"), [
    # seed 004 LeNet-5 table: C1, S2, C3, S4, C5
    ("lenet5", [(6, 28, 28), (6, 14, 14), (16, 10, 10), (16, 5, 5), (120, 1, 1)]),
    # seed 004 AlexNet table: C1, S2, C3, S4, C5, C6, C7, then the pool feeding F8
    ("alexnet", [(96, 55, 55), (96, 27, 27), (256, 27, 27), (256, 13, 13), (384, 13, 13), (384, 13, 13),
                 (256, 13, 13), (256, 6, 6)]),
    # seed 004 tflearn net: conv32, max2, conv64, conv64, max2 (then FC 512 on 8*8*64)
    ("tflearn-cifar", [(32, 32, 32), (32, 16, 16), (64, 16, 16), (64, 16, 16), (64, 8, 8)]),
])
def test_layer_table_shapes(name: str, table: list[tuple[int, int, int]]) -> None:
    assert conv_pool_shapes(name) == table
