"""cnnlab trains as the course's Keras code does, and a student's Keras weights import.

The fixtures in ``fixtures/keras`` were written by Keras itself (``benchmarks/keras_fixtures.py``; CI has
no TensorFlow). A step case holds a small model's initial weights as Keras saved them, a batch, the
first step's gradients and the state after each ``train_on_batch`` (Adam's defaults, sparse
cross-entropy on the softmax); cnnlab imports the initial weights, trains through its own engine
(``fit`` with the course's ``FitConfig``) and must land on the same loss, gradients, weights and BatchNorm
statistics. An import case holds a course network saved by Keras and its predictions on a batch.
"""
from __future__ import annotations

import copy
import math
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab import CnnlabError
from cnnlab.data.loader import TensorLoader
from cnnlab.engine.config import FitConfig
from cnnlab.engine.callbacks import LambdaCallback
from cnnlab.engine.fit import fit
from cnnlab.explain.keras_import import load_keras_weights
from cnnlab.engine.loss import kernel_penalty
from cnnlab.layers import Dropout, kernel_l2_layers
from cnnlab.models.course import spec_path
from cnnlab.runs.config import RunConfig
from cnnlab.spec import build, build_spec_file, parse_spec

h5py = pytest.importorskip("h5py")
FIXTURES = Path(__file__).parents[1] / "fixtures" / "keras"
STEP, IMPORT = FIXTURES / "step", FIXTURES / "import"

# Step case -> (input C x H x W, classes, CBAPD body): the cnnlab side of benchmarks/keras_fixtures.py's STEP_CASES.
HEAD = "F\nDense(classes,softmax)"
STEP_SPECS = {
    "conv_same_s2": ("3x7x7", 3, f"C(4,3,s2,same)\n{HEAD}"),
    "conv_valid_sigmoid": ("3x7x7", 3, f"C(4,5,valid) A(sigmoid)\n{HEAD}"),
    "bn_relu": ("3x7x7", 3, f"C(4,3,same) B A(relu)\n{HEAD}"),
    "maxpool_same": ("3x7x7", 3, f"C(4,3,same) P(max,2,s2,same)\n{HEAD}"),
    "maxpool_valid": ("3x7x7", 3, f"C(4,3,same) P(max,3,s2,valid)\n{HEAD}"),
    "avgpool_same": ("3x7x7", 3, f"C(4,3,same) P(avg,2,s2,same)\n{HEAD}"),
    "avgpool_valid": ("3x7x7", 3, f"C(4,3,same) P(avg,3,s1,valid)\n{HEAD}"),
    "dense_dropout": ("2x5x5", 3, "F\nDense(6,relu) D(0)\nDense(classes,softmax)"),
    "inception": ("3x7x7", 3, "C(4,3,same) B A(relu)\nInception(3,s2)\nGAP\nDense(classes,softmax)"),
    "residual": ("3x7x7", 3, "C(4,3,same,nobias) B A(relu)\nRes(6,s2) Res(6)\nGAP\nDense(classes,softmax)"),
    "dense_l2": ("3x7x7", 3, "C(4,3,same)\nGAP\nDense(classes,softmax,l2)"),  # kernel_regularizer=l2()
}
GRAD_TOL = dict(rtol=1e-4, atol=1e-6)  # float32 sums in another order
WEIGHT_TOL = dict(rtol=0, atol=1e-6)  # Adam moves each weight by about lr = 1e-3 in the first step
LR = 1e-3
# A bias feeding a BatchNorm has no true gradient: both frameworks see float noise (~1e-7), which Adam's
# m / (sqrt(v) + eps) turns into a random step of up to lr. Those biases are only checked to stay within lr.
NOISE = 1e-6


pytestmark = pytest.mark.usefixtures("one_thread")


def step_model(case: str) -> nn.Module:
    """The cnnlab network of a step case: a CBAPD spec, or the shipped baseline-cifar with its dropout at 0."""
    if case == "baseline":
        model = build_spec_file(spec_path("baseline-cifar"), input_size=(8, 8))
        for m in model.modules():
            if isinstance(m, nn.Dropout):
                m.p = 0.0
        return model
    shape, classes, body = STEP_SPECS[case]
    return build(parse_spec(f"name: {case}\ninput: {shape}\nclasses: {classes}\n\n{body}\n"))


def keras_file(tmp_path: Path, case: str, state: str, data: dict) -> Path:
    """A Keras weights file of the case holding ``state`` (``grad`` or ``after<k>``): the initial file, arrays replaced."""
    path = tmp_path / f"{case}-{state}.weights.h5"
    path.write_bytes((STEP / f"{case}.weights.h5").read_bytes())
    with h5py.File(path, "r+") as f:
        for key in data.files:
            kind, _, where = key.partition(":")
            if kind == state:
                f[where][...] = data[key]
    return path


def imported(case: str, path: Path) -> nn.Module:
    model = step_model(case)
    load_keras_weights(model, path, input_size=model.input_size)
    return model


def loader_of(data: dict, steps: int) -> TensorLoader:
    """The fixture's batches in order (uint8 NHWC pixels → the engine's NCHW loader, which divides by 255)."""
    x = torch.from_numpy(data["x"][:steps].reshape(-1, *data["x"].shape[2:])).permute(0, 3, 1, 2).contiguous()
    return TensorLoader(x, torch.from_numpy(data["y"][:steps].reshape(-1)), data["x"].shape[1], shuffle=False)


def course_config() -> FitConfig:
    """The course recipe as cnnlab's CLI fills it in (Adam 1e-3, batch 32, constant rate), for one epoch."""
    return RunConfig(model="baseline-cifar", epochs=1).fit_config()


def train(model: nn.Module, data: dict, steps: int, tmp_path: Path) -> list[float]:
    """``steps`` steps of the engine's own fit loop; the loss of each."""
    means: list[float] = []  # the epoch's running mean loss after each batch (Keras' batch logs)
    run = tmp_path / f"run{steps}"
    fit(model, loader_of(data, steps), None, course_config(), run, resume=False, progress=False,
        callbacks=[LambdaCallback(on_train_batch_end=lambda batch, logs: means.append(logs["loss"]))])
    return [(k + 1) * m - k * (means[k - 1] if k else 0.0) for k, m in enumerate(means)]  # equal batches


def first_gradients(model: nn.Module, data: dict) -> dict[str, torch.Tensor]:
    """Gradients of the engine's loss on the first batch, on a copy (the BN statistics of ``model`` stay)."""
    twin = copy.deepcopy(model).train()
    x, y = next(iter(loader_of(data, 1)))
    penalty = kernel_penalty(kernel_l2_layers(twin))
    (F.cross_entropy(twin(x), y) + (0 if penalty is None else penalty)).backward()
    return {n: p.grad for n, p in twin.named_parameters()}


def noise_only(keras_grads: nn.Module) -> set[str]:
    """Parameters whose Keras gradient is float noise (biases before a BatchNorm)."""
    return {n for n, p in keras_grads.named_parameters() if p.detach().abs().max() < NOISE}


def assert_state_equal(got: nn.Module, want: nn.Module, tol: dict, start: nn.Module, noisy: set[str],
                       steps: int = 1) -> None:
    """Parameters and BatchNorm moving statistics agree to ``tol``; ``noisy`` ones moved at most lr a step."""
    ours, theirs, before = got.state_dict(), want.state_dict(), start.state_dict()
    for name, value in ours.items():
        if name in noisy:
            for moved in (value - before[name], theirs[name] - before[name]):
                assert moved.abs().max() <= LR * steps * 1.001, name
        elif value.is_floating_point():
            np.testing.assert_allclose(value.numpy(), theirs[name].numpy(), **tol, err_msg=name)


@pytest.mark.parametrize("case", [*STEP_SPECS, "baseline"])
def test_one_training_step_equals_keras(case: str, tmp_path: Path) -> None:
    data = np.load(STEP / f"{case}.npz")
    model = imported(case, STEP / f"{case}.weights.h5")
    grads = first_gradients(model, data)
    want = imported(case, keras_file(tmp_path, case, "grad", data))
    for name, p in want.named_parameters():
        np.testing.assert_allclose(grads[name].numpy(), p.detach().numpy(), **GRAD_TOL, err_msg=name)
    start = copy.deepcopy(model)
    losses = train(model, data, 1, tmp_path)
    np.testing.assert_allclose(losses, data["loss"][:1], rtol=1e-5)
    after = imported(case, keras_file(tmp_path, case, "after1", data))
    assert_state_equal(model, after, WEIGHT_TOL, start, noise_only(want))


def test_three_baseline_steps_equal_keras(tmp_path: Path) -> None:
    """Adam's bias corrections and epsilon change with the step count; the BN statistics compound."""
    data = np.load(STEP / "baseline.npz")
    model = imported("baseline", STEP / "baseline.weights.h5")
    start = copy.deepcopy(model)
    losses = train(model, data, 3, tmp_path)
    np.testing.assert_allclose(losses, data["loss"], rtol=1e-5)
    noisy = noise_only(imported("baseline", keras_file(tmp_path, "baseline", "grad", data)))
    # the moving mean follows the noisy conv bias: 1% of its ~3e-4 drift
    assert_state_equal(model, imported("baseline", keras_file(tmp_path, "baseline", "after3", data)),
                       dict(rtol=0, atol=5e-6), start, noisy, steps=3)


def test_baseline_inference_after_a_step_equals_keras(tmp_path: Path) -> None:
    """With the course's dropout 0.2 in place, inference (moving BN statistics, no dropout) predicts as Keras."""
    data = np.load(STEP / "baseline.npz")
    model = build_spec_file(spec_path("baseline-cifar"), input_size=(8, 8))
    load_keras_weights(model, keras_file(tmp_path, "baseline", "after3", data), input_size=model.input_size)
    x, _ = next(iter(loader_of(data, 1)))
    with torch.no_grad():
        probs = model.eval()(x).softmax(1).numpy()
    np.testing.assert_allclose(probs, data["eval_probs"], atol=1e-5)


def test_dropout_scales_survivors_as_keras() -> None:
    keras = np.load(STEP / "dropout_scaling.npz")
    rate = float(keras["rate"])
    kept = keras["y"][keras["y"] != 0].astype(np.float32)
    assert np.allclose(kept, 1 / (1 - rate), rtol=1e-3)
    torch.manual_seed(0)
    ours = Dropout(rate).train()(torch.ones(len(keras["y"])))
    assert torch.allclose(ours[ours != 0], torch.tensor(1 / (1 - rate)))
    assert abs((ours != 0).float().mean().item() - (1 - rate)) < 0.03
    assert abs(len(kept) / len(keras["y"]) - (1 - rate)) < 0.03


# ---- a student's Keras files import ------------------------------------------------------------

# network -> (width divisor of the shipped spec, input H x W): keras_fixtures.py's IMPORT_CASES
IMPORT_SIZES = {
    "baseline-cifar": (1, (8, 8)), "lenet5-cifar": (1, (20, 20)), "alexnet8-cifar": (32, (32, 32)),
    "vgg16-cifar": (32, (32, 32)), "inception10-cifar": (8, (16, 16)), "resnet18-cifar": (32, (16, 16)),
}
WIDTH = re.compile(r"\b(C|Dense|Inception|Res)\((\d+)")


def course_network(name: str) -> nn.Module:
    """The shipped spec of ``name`` with every width divided as the fixture's Keras model's were."""
    div, size = IMPORT_SIZES[name]
    text = WIDTH.sub(lambda m: f"{m.group(1)}({int(m.group(2)) // div}", spec_path(name).read_text())
    return build(parse_spec(text, source=name), input_size=size)


def predictions(model: nn.Module, x: np.ndarray, keras_out: np.ndarray) -> np.ndarray:
    """cnnlab's output on Keras' batch (uint8 NHWC), as probabilities where Keras' rows are (a softmax head)."""
    with torch.no_grad():
        logits = model.eval()(torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255)
    softmax = np.allclose(keras_out.sum(1), 1, atol=1e-5) and (keras_out >= 0).all()
    return (logits.softmax(1) if softmax else logits).numpy()


def assert_imports(name: str, path: Path, batch: str, form: str) -> list[tuple[str, str]]:
    model = course_network(name)
    matched = load_keras_weights(model, path, input_size=(3, *IMPORT_SIZES[name][1]))
    data = np.load(IMPORT / batch)
    np.testing.assert_allclose(predictions(model, data["x"], data[form]), data[form], atol=1e-5, rtol=0)
    return matched


@pytest.mark.parametrize("form", ["subclassed", "functional"])
@pytest.mark.parametrize("name", list(IMPORT_SIZES))
def test_course_network_saved_by_keras3_predicts_as_keras(name: str, form: str) -> None:
    matched = assert_imports(name, IMPORT / f"{name}-{form}.weights.h5", f"{name}.npz", form)
    assert len(matched) == sum(1 for m in course_network(name).modules()
                               if isinstance(m, (nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm)))


@pytest.mark.parametrize("name", ["inception10-cifar", "resnet18-cifar"])
def test_nested_subclassed_model_in_legacy_h5_predicts_as_keras(name: str) -> None:
    assert_imports(name, IMPORT / f"{name}-legacy.h5", f"{name}-keras2.npz", "subclassed")


@pytest.mark.parametrize("name", ["baseline-cifar", "inception10-cifar", "resnet18-cifar"])
def test_course_tensorflow_checkpoint_predicts_as_keras(name: str) -> None:
    pytest.importorskip("tensorflow")
    ckpt = IMPORT / f"{name}-ckpt"
    for given in (ckpt / "model.ckpt", ckpt / "model.ckpt.index", ckpt):  # prefix, index file or folder
        assert_imports(name, given, f"{name}-keras2.npz", "subclassed")


def test_tensorflow_checkpoint_without_tensorflow_says_how(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # import tensorflow now raises ImportError
    with pytest.raises(CnnlabError, match=r"needs tensorflow.*pip install tensorflow-cpu.*\.weights\.h5"):
        load_keras_weights(course_network("baseline-cifar"), IMPORT / "baseline-cifar-ckpt" / "model.ckpt")


def test_hand_named_layers_keep_the_file_order() -> None:
    from cnnlab.explain.keras_import import KerasLayer, creation_order

    auto = [KerasLayer(f"l{i}", "conv", (), name) for i, name in enumerate(["conv2d_10", "conv2d", "conv2d_2"])]
    assert [k.keras_name for k in creation_order(auto, "conv")] == ["conv2d", "conv2d_2", "conv2d_10"]
    mixed = [*auto, KerasLayer("l3", "conv", (), "stem")]
    assert creation_order(mixed, "conv") == mixed


# ---- initial weights -------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["baseline-cifar", "lenet5-cifar", "resnet18-cifar"])
def test_initial_kernels_spread_as_keras_and_biases_are_zero(name: str) -> None:
    """Glorot-uniform kernels (he_normal for ResNet18's stem), zero biases: the same spread layer by layer."""
    stats = np.load(FIXTURES / "init_stats.npz")
    torch.manual_seed(0)
    model = build_spec_file(spec_path(name))
    kernels = [p.detach() for n, p in model.named_parameters() if p.dim() > 1]
    keras = [stats[f"{name}/{j}"] for j in range(len(kernels))]
    assert f"{name}/{len(kernels)}" not in stats.files
    for k, (size, largest, std) in zip(kernels, keras):
        assert k.numel() == size
        assert abs(k.std().item() - std) < 0.05 * std + 3 / math.sqrt(size) * std
        assert k.abs().max().item() <= largest * 1.05 + 1e-6
    assert bool(stats[f"{name}/biases_zero"])
    assert all(not p.any() for n, p in model.named_parameters() if n.endswith("bias") and ".b" not in n)


def test_keras_adam_counts_steps_across_a_resume_and_from_older_checkpoints() -> None:
    """The epsilon follows the step count; a state saved without the counter resumes from Adam's own."""
    from cnnlab.engine.optim import KERAS_ADAM_EPS, KerasAdam

    w = nn.Parameter(torch.ones(3))

    def stepped(opt: torch.optim.Optimizer, times: int) -> torch.optim.Optimizer:
        for _ in range(times):
            w.grad = torch.full_like(w, 1e-6)
            opt.step()
        return opt

    saved = stepped(KerasAdam([w], lr=LR), 2).state_dict()
    for state in (saved, {**saved, "param_groups": [{k: v for k, v in g.items() if k != "keras_step"}
                                                    for g in saved["param_groups"]]}):
        opt = KerasAdam([w], lr=LR)
        opt.load_state_dict(copy.deepcopy(state))
        group = stepped(opt, 1).param_groups[0]
        assert group["keras_step"] == 3
        assert group["eps"] == pytest.approx(KERAS_ADAM_EPS / math.sqrt(1 - 0.999 ** 3))
