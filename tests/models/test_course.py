"""The course's six CIFAR networks: Keras parameter counts, shapes, training step, TF-exact padding."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab import CnnlabError, create_model, list_models, model_info
from cnnlab.layers import Conv2d, MaxPool2d, conv_out_size, tf_same_pad
from cnnlab.models.course import COURSE_NETWORKS, spec_path
from cnnlab.spec import build, infer_shapes, load_spec_file, parse_spec

# name -> (Keras total incl. BN moving mean/var, Keras trainable)
KERAS_PARAMS = {
    "baseline-cifar": (198_506, 198_494),
    "lenet5-cifar": (62_006, 62_006),
    "alexnet8-cifar": (9_639_178, 9_638_474),
    "vgg16-cifar": (15_262_026, 15_253_578),
    "inception10-cifar": (121_418, 120_234),
    "resnet18-cifar": (11_183_562, 11_173_962),
}
NAMES = list(KERAS_PARAMS)


@pytest.fixture(autouse=True)
def _one_thread():
    """These small CPU passes run fastest on one thread, and do not fight parallel test runs for cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def keras_counts(model: nn.Module) -> tuple[int, int]:
    """(total, trainable) as Keras counts them: BN moving statistics are non-trainable weights."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    stats = sum(b.numel() for n, b in model.named_buffers() if n.endswith(("running_mean", "running_var")))
    return trainable + stats, trainable


def test_all_six_registered_in_course_family() -> None:
    assert sorted(list_models(family="course")) == sorted(NAMES) == sorted(COURSE_NETWORKS)
    for name in NAMES:
        info = model_info(name)
        assert (info.input_size, info.num_classes) == ((3, 32, 32), 10) and info.source


@pytest.mark.parametrize("name", NAMES)
def test_parameter_counts_equal_keras(name: str) -> None:
    assert keras_counts(create_model(name)) == KERAS_PARAMS[name]


@pytest.mark.parametrize("name", NAMES)
def test_forward_backward_gives_logits(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name)
    logits = model(torch.rand(2, 3, 32, 32))
    assert logits.shape == (2, 10)
    assert not any(isinstance(m, nn.Softmax) for m in model.modules())  # the course's softmax is left out
    F.cross_entropy(logits, torch.tensor([1, 7])).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("name", ["lenet5-cifar", "inception10-cifar", "resnet18-cifar"])
def test_num_classes_and_in_channels_overrides(name: str) -> None:
    model = create_model(name, num_classes=4, in_channels=1)
    assert model(torch.rand(2, 1, 32, 32)).shape == (2, 4)


def test_input_size_override_resizes_flatten_dense() -> None:
    model = create_model("baseline-cifar", input_size=(28, 28), in_channels=1)
    assert model.stage3.f1.linear.in_features == 6 * 14 * 14
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("name", NAMES)
def test_registered_name_and_spec_file_agree(name: str) -> None:
    torch.manual_seed(3)
    registered = create_model(name).eval()
    torch.manual_seed(3)
    from_file = create_model(str(spec_path(name))).eval()
    assert keras_counts(registered) == keras_counts(from_file)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(registered(x), from_file(x))
    spec = load_spec_file(spec_path(name))
    assert (spec.name, spec.input_size, spec.num_classes) == (name, (3, 32, 32), 10)


def test_resnet18_stage_shapes_and_stem_init() -> None:
    steps = infer_shapes(load_spec_file(spec_path("resnet18-cifar")))
    res = [s.out_shape for s in steps if s.name.startswith("res")]
    assert res == [(64, 32, 32)] * 2 + [(128, 16, 16)] * 2 + [(256, 8, 8)] * 2 + [(512, 4, 4)] * 2
    model = create_model("resnet18-cifar")
    assert model.stage1.c1.bias is None and model.stage1.c1.keras_kernel_init == "he_normal"


def test_inception10_channels_double_after_each_pair() -> None:
    steps = infer_shapes(load_spec_file(spec_path("inception10-cifar")))
    blocks = [s.out_shape for s in steps if s.name.startswith("inception")]
    assert blocks == [(64, 16, 16), (64, 16, 16), (128, 8, 8), (128, 8, 8)]


# ---------------------------------------------------------------------------- TF-exact padding


@pytest.mark.parametrize("n,k,pads", [(32, 3, (0, 1)), (7, 4, (1, 2)), (7, 3, (1, 1)), (8, 1, (0, 0))])
def test_stride2_same_conv_matches_manual_tf_padding(n: int, k: int, pads: tuple[int, int]) -> None:
    torch.manual_seed(0)
    conv = Conv2d(2, 3, k, stride=2, padding="same")
    x = torch.randn(1, 2, n, n)
    assert tf_same_pad(n, k, 2) == pads
    manual = F.conv2d(F.pad(x, [pads[0], pads[1], pads[0], pads[1]]), conv.weight, conv.bias, stride=2)
    out = conv(x)
    assert out.shape[-1] == conv_out_size(n, k, 2, "same") == -(-n // 2)
    torch.testing.assert_close(out, manual)


def test_stride2_same_through_a_spec() -> None:
    for n, expected in [(32, 16), (7, 4)]:
        spec = parse_spec(f"input: 3x{n}x{n}\nC(4,3,s2,same) P(max,2,s2,same)")
        steps = infer_shapes(spec)
        assert steps[0].out_shape == (4, expected, expected)
        model = build(spec)
        assert model(torch.rand(1, 3, n, n)).shape[-1] == steps[1].out_shape[-1] == -(-expected // 2)


def test_same_max_pool_pads_with_minus_infinity() -> None:
    x = -torch.arange(1.0, 10.0).reshape(1, 1, 3, 3)  # all negative: zero padding would win the max
    out = MaxPool2d(2, 2, "same")(x)
    assert out.shape[-2:] == (2, 2) and out.max() < 0


@pytest.mark.parametrize("kernel, stride, padding", [(3, 1, "same"), (3, 2, "valid"), (3, 2, "same"), (2, 2, "same")])
def test_max_pool_values_and_gradients_equal_the_plain_op(kernel, stride, padding) -> None:
    # Overlapping CPU pools run through channels_last: the values, gradients and layout must not change.
    x = torch.randn(4, 16, 9, 9, requires_grad=True)
    y = MaxPool2d(kernel, stride, padding)(x)
    before, after = tf_same_pad(9, kernel, stride) if padding == "same" else (0, 0)
    pads = [before, after, before, after]  # square input: left/right as top/bottom
    ref_x = x.detach().clone().requires_grad_()
    ref = F.max_pool2d(F.pad(ref_x, pads, value=float("-inf")), kernel, stride)
    g = torch.randn_like(ref)
    y.backward(g)
    ref.backward(g)
    assert torch.equal(y, ref) and torch.equal(x.grad, ref_x.grad) and y.is_contiguous()


def test_unknown_course_name_suggests() -> None:
    with pytest.raises(CnnlabError, match="vgg16-cifar"):
        create_model("vgg16cifar")


def test_only_inception10_trains_in_channels_last_by_default_and_the_user_flag_wins():
    from cnnlab.runs.config import RunConfig

    defaults = {name: RunConfig(model=name) for name in NAMES}
    assert {n for n, cfg in defaults.items() if cfg.channels_last} == {"inception10-cifar"}
    incep = defaults["inception10-cifar"]
    assert incep.recipe == "course-channels-last"
    # everything else is the course recipe: fp32, Adam, batch 32, 5 epochs, no augmentation
    assert (incep.precision, incep.optimizer, incep.batch_size, incep.epochs, incep.augment) == \
        ("fp32", "adam", 32, 5, "none")
    assert RunConfig(model="inception10-cifar", channels_last=False).channels_last is False


def test_the_course_code_as_printed_doubles_inception10_after_every_block():
    """docs/cbapd.md: the printed p40 code's `out_channels *= 2` sits in the inner loop — 925,738 Keras params."""
    from cnnlab.spec import build, parse_spec

    text = ("input: 3x32x32\nclasses: 10\nC(16,3,same) B A(relu)\nInception(16,s2) Inception(32)\n"
            "Inception(64,s2) Inception(128)\nGAP\nDense(classes,softmax)\n")
    model = build(parse_spec(text))
    stats = sum(b.numel() for n, b in model.named_buffers() if n.endswith(("running_mean", "running_var")))
    assert sum(p.numel() for p in model.parameters()) + stats == 925_738
