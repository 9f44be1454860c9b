"""The head API on every registered network: features → head = forward, swappable classifier, transfer backbones.

Networks designed for 32x32 inputs (the course's six, fast-cifar, lenet5, tflearn-cifar) run with real
numbers; the ImageNet-size ones are built and run on the meta device, where only shapes are checked.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.models import create_model, default_input_size, is_text_model, list_models
from cnnlab.models.transfer import build_transfer, transfer_meta

REAL_SIDE = 32  # networks up to this input side run for real; larger ones on meta
TINY_SPEC = """name: tiny
input: 3x12x12
classes: 5
C(4,3,same) B A(relu) P(max,2)
C(8,3,same) A(relu) GAP D(0.1) Dense(16,relu) Dense(classes)
"""


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Batch-2 CPU passes gain nothing from a second thread on a shared machine; restore it afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def device_for(name: str) -> str:
    """``cpu`` for the networks small enough to run for real, ``meta`` for the ImageNet-size ones."""
    return "cpu" if max(default_input_size(name)[1:]) <= REAL_SIDE else "meta"


def built(name: str) -> tuple[nn.Module, torch.Tensor]:
    """The network in eval mode and a batch of two natural-size images, on the device ``device_for`` picks."""
    torch.manual_seed(0)
    with torch.device(device_for(name)):
        return create_model(name).eval(), torch.rand(2, *default_input_size(name))


def assert_same(a: torch.Tensor, b: torch.Tensor) -> None:
    """Equal shapes, and equal numbers unless on meta (which has none)."""
    assert a.shape == b.shape
    assert a.is_meta or torch.equal(a, b)


def image_models() -> list[str]:
    """The networks over images (the text networks' head API: tests/models/test_text_models.py)."""
    return [n for n in list_models() if not is_text_model(n)]


def test_the_course_six_and_fast_cifar_run_for_real() -> None:
    real = {n for n in image_models() if device_for(n) == "cpu"}
    assert real >= {"baseline-cifar", "lenet5-cifar", "alexnet8-cifar", "vgg16-cifar", "inception10-cifar",
                    "resnet18-cifar", "fast-cifar"}


@pytest.mark.parametrize("name", image_models())
def test_forward_is_the_head_of_the_features(name: str) -> None:
    model, x = built(name)
    with torch.no_grad():
        features = model.forward_features(x)
        assert features.dim() == 4
        assert_same(model(x), model.forward_head(features))
        assert model.forward_head(features, pre_logits=True).shape == (2, model.num_features)


@pytest.mark.parametrize("name", image_models())
def test_reset_classifier_swaps_the_linear_the_forward_uses(name: str) -> None:
    model, x = built(name)
    model.reset_classifier(7)
    head = model.get_classifier()
    assert isinstance(head, nn.Linear) and (head.in_features, head.out_features) == (model.num_features, 7)
    assert head.weight.device == x.device and model.num_classes == 7
    with torch.no_grad():
        assert model(x).shape == (2, 7)
        if not x.is_meta:  # a zeroed classifier gives zero logits only if forward goes through it
            for p in head.parameters():
                p.zero_()
            assert not model(x).any()
        model.reset_classifier(0)
        assert isinstance(model.get_classifier(), nn.Identity)
        out = model(x)
        assert out.shape == (2, model.num_features)
        assert_same(out, model.forward_head(model.forward_features(x), pre_logits=True))


@pytest.mark.parametrize("name", ["baseline-cifar", "fast-cifar", "lenet5"])
def test_the_new_classifier_takes_the_model_dtype(name: str) -> None:
    model = create_model(name).double()
    model.reset_classifier(3)
    assert model.get_classifier().weight.dtype == torch.float64
    assert model(torch.rand(1, *default_input_size(name), dtype=torch.float64)).dtype == torch.float64


def test_fast_cifar_head_divides_its_logits_by_the_width() -> None:
    model, x = built("fast-cifar")
    with torch.no_grad():
        features = model.forward_features(x)
        pooled = model.forward_head(features, pre_logits=True)
        assert torch.equal(model.forward_head(features), model.head(pooled) / 256)
    model.reset_classifier(7)  # the same kind of head the network is built with: bias-free, unit std
    assert model.head.bias is None and model.head.weight.std().item() == pytest.approx(1, rel=1e-5)


def write_spec(tmp_path: Path, text: str) -> str:
    path = tmp_path / "tiny.cbapd"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_a_spec_network_splits_inside_a_stage_at_its_first_flat_layer(tmp_path: Path) -> None:
    model = create_model(write_spec(tmp_path, TINY_SPEC)).eval()
    x = torch.rand(2, 3, 12, 12)
    with torch.no_grad():
        features = model.forward_features(x)
        assert features.shape == (2, 8, 6, 6)  # stage2's C and A run, its GAP starts the head
        assert torch.equal(model(x), model.forward_head(features))
        assert model.forward_head(features, pre_logits=True).shape == (2, 16)
    assert model.get_classifier() is model.stage2.f2 and model.num_classes == 5
    model.reset_classifier(3)
    assert model(x).shape == (2, 3) and list(model.state_dict())[-2:] == ["stage2.f2.weight", "stage2.f2.bias"]


@pytest.mark.parametrize(("body", "calls", "match"), [
    ("C(4,3) A(relu)", ("forward_features", "forward_head", "get_classifier", "reset_classifier"),
     "never makes its map flat"),
    ("C(4,3) GAP Dense(5,relu)", ("forward_head", "get_classifier", "reset_classifier"),
     "does not end in a linear classifier"),
])
def test_a_spec_without_a_flat_map_or_final_linear_says_so(tmp_path: Path, body: str, calls: tuple[str, ...],
                                                           match: str) -> None:
    model = create_model(write_spec(tmp_path, f"input: 3x8x8\n{body}\n"))
    x = torch.rand(1, 3, 8, 8)
    args = {"forward_features": (x,), "forward_head": (x,), "get_classifier": (), "reset_classifier": (3,)}
    for call in calls:
        with pytest.raises(CnnlabError, match=match):
            getattr(model, call)(*args[call])
    assert model.num_classes is None and model(x).dim() in (2, 4)  # the failed reset changed nothing


@pytest.mark.parametrize(("name", "pooling", "kept"), [
    ("baseline-cifar", "none", ["stage1"]),  # C B A P D; F and the Dense layers are the top
    ("resnet18-cifar", "avg", ["stage1", "stage2", "stage3", "stage4", "stage5"]),
])
def test_a_course_network_is_a_transfer_backbone(name: str, pooling: str, kept: list[str]) -> None:
    torch.manual_seed(0)
    model = build_transfer(lambda: create_model(name), transfer_meta(name, None, [16], pooling, "backbone"),
                           num_classes=3, in_channels=3, input_size=(32, 32)).eval()
    assert [n for n, _ in model.backbone.named_children()] == kept
    assert model.head[0].out_features == 16 and model.classifier.out_features == 3
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert model(x).shape == (2, 3)
        assert torch.equal(model.forward_features(x), model.backbone.forward_features(x))


def test_a_spec_split_inside_a_stage_keeps_that_stage_as_a_backbone(tmp_path: Path) -> None:
    path = write_spec(tmp_path, TINY_SPEC)
    model = build_transfer(lambda: create_model(path), transfer_meta("tiny", None, [], "avg", "none"),
                           num_classes=2, in_channels=3, input_size=(12, 12))
    assert [n for n, _ in model.backbone.named_children()] == ["stage1", "stage2"]
    assert model(torch.rand(2, 3, 12, 12)).shape == (2, 2)
