"""Summary table (shapes, params, MACs, receptive field) and Keras HDF5 weight import."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from cnnlab import CnnlabError
from cnnlab import layers as L
from cnnlab.explain.keras_import import load_keras_weights, read_keras_layers
from cnnlab.explain.summary import summarize, summary_to_dict

h5py = pytest.importorskip("h5py")


def small_net() -> nn.Sequential:
    """C(6x5x5 same) B A P(2, same) D, then Flatten Dense(10): the course's CBAPD baseline, smaller."""
    return nn.Sequential(
        L.Conv2d(3, 6, 5, padding="same"), L.BatchNorm2d(6), nn.ReLU(), L.MaxPool2d(2, 2, "same"),
        nn.Dropout(0.2), L.Conv2d(6, 8, 3, stride=2), nn.Flatten(), nn.Linear(8 * 7 * 7, 10),
    )


def row(summary, name):
    return next(r for r in summary.rows if r.name == name)


def test_summary_sequential_shapes_params_macs_rf():
    s = summarize(small_net(), (3, 32, 32))
    assert [r.outputs for r in s.rows] == [
        ((6, 32, 32),), ((6, 32, 32),), ((6, 32, 32),), ((6, 16, 16),), ((6, 16, 16),), ((8, 7, 7),),
        ((392,),), ((10,),)]
    assert [r.params for r in s.rows] == [3 * 25 * 6 + 6, 12, 0, 0, 0, 6 * 9 * 8 + 8, 0, 392 * 10 + 10]
    assert row(s, "0").macs == 6 * 3 * 25 * 32 * 32
    assert row(s, "5").macs == 8 * 6 * 9 * 7 * 7
    assert row(s, "7").macs == 392 * 10
    assert s.total_macs == 6 * 3 * 25 * 32 * 32 + 8 * 6 * 9 * 7 * 7 + 392 * 10
    # RF: conv5 -> 5 (j 1); pool2 s2 -> 6 (j 2); conv3 s2 -> 6 + 2*2 = 10 (j 4); flatten -> whole image
    assert [(r.receptive_field, r.jump) for r in s.rows[:6]] == [
        ((5, 5), (1, 1))] * 3 + [((6, 6), (2, 2))] * 2 + [((10, 10), (4, 4))]
    assert row(s, "7").receptive_field == "all"
    assert s.total_params == 456 + 12 + 440 + 3930
    assert s.trainable_params == s.total_params and s.non_trainable_params == 0
    assert s.keras_total_params == s.total_params + 12  # BN moving mean + variance, 6 each
    assert s.keras_non_trainable_params == 12
    assert s.outputs == ((10,),)


def test_summary_text_and_dict():
    s = summarize(small_net(), (3, 32, 32), batch_size=2)
    text = str(s)
    for needle in ("Layer (type)", "(N, 6, 16, 16)", "Total params: 4,838", "Keras total params: 4,850",
                   "Trainable params", "Non-trainable params", "MACs per image"):
        assert needle in text
    d = json.loads(json.dumps(summary_to_dict(s)))
    assert d["keras_total_params"] == 4850 and len(d["rows"]) == 8
    assert d["total_macs"] == s.total_macs  # per image whatever the batch


def test_frozen_params_are_non_trainable():
    net = small_net()
    net[0].requires_grad_(False)
    s = summarize(net, (3, 32, 32))
    assert s.non_trainable_params == 456 and s.keras_non_trainable_params == 468


class Inception(nn.Module):
    """Three branches concatenated: 1x1, two 3x3 (RF +4), 3x3 max pool (RF +2)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.a = L.Conv2d(c, 4, 1)
        self.b = nn.Sequential(L.Conv2d(c, 4, 3, padding="same"), L.Conv2d(4, 4, 3, padding="same"))
        self.c = L.MaxPool2d(3, 1, "same")

    def forward(self, x):
        return torch.cat([self.a(x), self.b(x), self.c(x)], 1)


class Residual(nn.Module):
    """ResNet-style block whose shortcut is a strided 1x1 conv."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = L.Conv2d(c, c, 3, 2, "same")
        self.down = L.Conv2d(c, c, 1, 2)

    def forward(self, x):
        return torch.relu(self.conv(x) + self.down(x))


def branching_net() -> nn.Sequential:
    return nn.Sequential(L.Conv2d(3, 4, 3), Inception(4), Residual(12), L.GlobalPool2d(), nn.Linear(12, 2))


def test_receptive_field_takes_max_over_branches():
    s = summarize(branching_net(), (3, 16, 16))
    rf = {r.name: (r.receptive_field, r.jump) for r in s.rows}
    assert rf["0"] == ((3, 3), (1, 1))
    assert rf["1.a"] == ((3, 3), (1, 1))
    assert rf["1.b.1"] == ((7, 7), (1, 1))
    assert rf["1.c"] == ((5, 5), (1, 1))
    assert rf["2.conv"] == ((9, 9), (2, 2))  # input of the block sees 7 (the widest branch)
    assert rf["2.down"] == ((7, 7), (2, 2))
    assert rf["3"] == ("all", None)
    blocks = {r.name: r for r in summarize(branching_net(), (3, 16, 16), depth=1).rows}
    assert blocks["1"].receptive_field == (7, 7) and blocks["1"].outputs == ((12, 14, 14),)
    assert blocks["2"].receptive_field == (9, 9) and blocks["2"].params == 12 * 12 * 9 + 12 + 12 * 12 + 12
    assert blocks["2"].macs == (12 * 12 * 9 + 12 * 12) * 7 * 7


class TupleOut(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = L.Conv2d(1, 2, 3)

    def forward(self, x):
        y = self.conv(x)
        return {"logits": y.flatten(1), "aux": (y, None)}


def test_non_tensor_outputs_are_handled():
    s = summarize(TupleOut(), (1, 8, 8))
    assert s.outputs == ((72,), (2, 6, 6))
    assert s.rows[0].outputs == ((2, 6, 6),)
    assert "TupleOut" in str(s)


def test_summary_restores_training_mode():
    net = small_net().train()
    summarize(net, (3, 32, 32))
    assert net.training


def course_baseline():
    import cnnlab

    try:
        return cnnlab.create_model("baseline-cifar")
    except Exception as e:  # the course networks are written in parallel; skip until they exist
        pytest.skip(f"baseline-cifar not available: {e}")


def test_summary_of_course_baseline_matches_keras_counts():
    s = summarize(course_baseline(), (3, 32, 32))
    assert s.total_params == 198_494 and s.keras_total_params == 198_506  # the course's Keras summary
    assert s.total_macs == 6 * 3 * 25 * 32 * 32 + 1536 * 128 + 128 * 10
    assert s.rows[-1].outputs == ((10,),)


# ---- Keras import: a pure-NumPy NHWC reference of TensorFlow's semantics ----

def tf_same(n: int, k: int, s: int) -> tuple[int, int]:
    total = max((math.ceil(n / s) - 1) * s + k - n, 0)
    return total // 2, total - total // 2


def windows(x: np.ndarray, k: int, s: int, pad_value: float) -> np.ndarray:
    """Sliding k×k windows of an NHWC array after TF same padding: N, H', W', C, k, k."""
    (t, b), (l, r) = tf_same(x.shape[1], k, s), tf_same(x.shape[2], k, s)
    xp = np.pad(x, ((0, 0), (t, b), (l, r), (0, 0)), constant_values=pad_value)
    return np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(1, 2))[:, ::s, ::s]


def np_conv_same(x, kernel, bias, s):
    return np.einsum("nhwcij,ijco->nhwo", windows(x, kernel.shape[0], s, 0.0), kernel) + bias


def np_separable_same(x, depthwise, pointwise, bias):
    dw = np.einsum("nhwcij,ijc->nhwc", windows(x, depthwise.shape[0], 1, 0.0), depthwise[..., 0])
    return np.einsum("nhwc,co->nhwo", dw, pointwise[0, 0]) + bias


def np_bn(x, gamma, beta, mean, var, eps=1e-3):
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def np_maxpool_same(x, k, s):
    return windows(x, k, s, -np.inf).max(axis=(-2, -1))


def rand(rng, *shape, positive=False):
    a = rng.standard_normal(shape)
    return np.abs(a) + 0.5 if positive else a


def write_keras3(path, layers):
    """Keras 3 save_weights layout: layers/<snake_name>/vars/<i>."""
    with h5py.File(path, "w") as f:
        for name, arrays in layers:
            g = f.create_group(f"layers/{name}/vars")
            for i, a in enumerate(arrays):
                g[str(i)] = a.astype(np.float32)
        f.create_group("optimizer/vars")["0"] = np.array(3, dtype=np.int64)


LEGACY_NAMES = {2: ("kernel", "bias"), 4: ("gamma", "beta", "moving_mean", "moving_variance"),
                3: ("depthwise_kernel", "pointwise_kernel", "bias")}


def write_legacy(path, layers, weightless=("max_pooling2d", "flatten")):
    """Keras 2 save_weights layout: layer_names / weight_names attributes, model_weights root."""
    with h5py.File(path, "w") as f:
        root = f.create_group("model_weights")
        names = [n for n, _ in layers] + list(weightless)
        root.attrs["layer_names"] = [n.encode() for n in names]
        for name, arrays in layers:
            g = root.create_group(name)
            wnames = [f"{name}/{w}:0" for w in LEGACY_NAMES[len(arrays)]]
            g.attrs["weight_names"] = [w.encode() for w in wnames]
            for w, a in zip(wnames, arrays):
                g.create_dataset(w, data=a.astype(np.float32))
        for name in weightless:
            root.create_group(name).attrs["weight_names"] = []


def conv_bn_pool_dense(rng):
    """conv(4, 3x3, same, stride 2) + BN + ReLU + maxpool(2, same) + flatten + dense(5) + dense(3)."""
    net = nn.Sequential(L.Conv2d(3, 4, 3, 2, "same"), L.BatchNorm2d(4), nn.ReLU(), L.MaxPool2d(2, 2, "same"),
                        nn.Flatten(), nn.Linear(4 * 2 * 3, 5), nn.ReLU(), nn.Linear(5, 3))
    w = {
        "conv2d": [rand(rng, 3, 3, 3, 4), rand(rng, 4)],
        "batch_normalization": [rand(rng, 4, positive=True), rand(rng, 4), rand(rng, 4),
                                rand(rng, 4, positive=True)],
        "dense": [rand(rng, 24, 5), rand(rng, 5)],
        "dense_1": [rand(rng, 5, 3), rand(rng, 3)],
    }

    def reference(x):
        y = np_conv_same(x, *w["conv2d"], 2)
        y = np.maximum(np_bn(y, *w["batch_normalization"]), 0)
        y = np_maxpool_same(y, 2, 2).reshape(len(x), -1)  # NHWC flatten order
        y = np.maximum(y @ w["dense"][0] + w["dense"][1], 0)
        return y @ w["dense_1"][0] + w["dense_1"][1]

    return net, w, reference


@pytest.mark.parametrize("layout", ["keras3", "legacy"])
def test_keras_import_matches_numpy_tf_reference(tmp_path, layout):
    rng = np.random.default_rng(0)
    net, weights, reference = conv_bn_pool_dense(rng)
    path = tmp_path / "net.weights.h5"
    (write_keras3 if layout == "keras3" else write_legacy)(path, list(weights.items()))
    # 8x10 input: TF same pads the extra row/column bottom/right; the pre-flatten map is 4x2x3
    matched = load_keras_weights(net, path, input_size=(3, 8, 10))
    assert [k.rsplit("/", 1)[-1] for _, k in matched] == ["conv2d", "batch_normalization", "dense", "dense_1"]
    x = rng.standard_normal((2, 8, 10, 3))
    with torch.no_grad():
        got = net.eval()(torch.from_numpy(x.transpose(0, 3, 1, 2)).float()).numpy()
    np.testing.assert_allclose(got, reference(x), atol=1e-5, rtol=1e-5)


def test_keras_import_separable_square_flatten(tmp_path):
    rng = np.random.default_rng(1)
    net = nn.Sequential(L.SeparableConv2d(3, 6, 3, 1, "same"), L.BatchNorm2d(6), nn.ReLU(),
                        nn.Flatten(), nn.Linear(6 * 5 * 5, 4))
    w = [("separable_conv2d", [rand(rng, 3, 3, 3, 1), rand(rng, 1, 1, 3, 6), rand(rng, 6)]),
         ("batch_normalization", [rand(rng, 6, positive=True), rand(rng, 6), rand(rng, 6),
                                  rand(rng, 6, positive=True)]),
         ("dense", [rand(rng, 150, 4), rand(rng, 4)])]
    path = tmp_path / "sep.weights.h5"
    write_keras3(path, w)
    load_keras_weights(net, path)  # no input size: square 5x5 map inferred from 150 / 6 channels
    x = rng.standard_normal((1, 5, 5, 3))
    y = np.maximum(np_bn(np_separable_same(x, *w[0][1]), *w[1][1]), 0).reshape(1, -1)
    expected = y @ w[2][1][0] + w[2][1][1]
    with torch.no_grad():
        got = net.eval()(torch.from_numpy(x.transpose(0, 3, 1, 2)).float()).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)


def test_keras3_layers_are_ordered_naturally(tmp_path):
    path = tmp_path / "many.weights.h5"
    layers = [(f"conv2d{'' if i == 0 else f'_{i}'}", [np.full((1, 1, 1, 1), i), np.zeros(1)]) for i in range(12)]
    write_keras3(path, layers)
    assert [k.arrays[0].item() for k in read_keras_layers(path)] == list(range(12))


def test_keras_import_shape_mismatch_names_layer_and_shapes(tmp_path):
    rng = np.random.default_rng(2)
    net, weights, _ = conv_bn_pool_dense(rng)
    weights["conv2d"] = [rand(rng, 5, 5, 3, 4), rand(rng, 4)]
    path = tmp_path / "bad.weights.h5"
    write_keras3(path, list(weights.items()))
    with pytest.raises(CnnlabError, match=r"conv2d.*\(4, 3, 5, 5\).*'0'.*\(4, 3, 3, 3\)"):
        load_keras_weights(net, path, input_size=(3, 8, 10))


def test_keras_import_layer_count_mismatch(tmp_path):
    rng = np.random.default_rng(3)
    net, weights, _ = conv_bn_pool_dense(rng)
    del weights["dense_1"]
    path = tmp_path / "short.weights.h5"
    write_keras3(path, list(weights.items()))
    with pytest.raises(CnnlabError, match="dense: cnnlab 2 vs Keras 1"):
        load_keras_weights(net, path, input_size=(3, 8, 10))


def test_keras_import_missing_file_is_a_cnnlab_error(tmp_path):
    with pytest.raises(CnnlabError, match="cannot read"):
        load_keras_weights(small_net(), tmp_path / "nope.h5")


def test_keras_import_course_baseline(tmp_path):
    net = course_baseline()
    rng = np.random.default_rng(4)
    w = {"conv2d": [rand(rng, 5, 5, 3, 6) * 0.2, rand(rng, 6)],
         "batch_normalization": [rand(rng, 6, positive=True), rand(rng, 6), rand(rng, 6),
                                 rand(rng, 6, positive=True)],
         "dense": [rand(rng, 1536, 128) * 0.05, rand(rng, 128)],
         "dense_1": [rand(rng, 128, 10) * 0.1, rand(rng, 10)]}
    path = tmp_path / "baseline.weights.h5"
    write_keras3(path, list(w.items()))
    load_keras_weights(net, path, input_size=(3, 32, 32))
    x = rng.random((2, 32, 32, 3))
    y = np.maximum(np_bn(np_conv_same(x, *w["conv2d"], 1), *w["batch_normalization"]), 0)
    y = np_maxpool_same(y, 2, 2).reshape(2, -1)
    y = np.maximum(y @ w["dense"][0] + w["dense"][1], 0) @ w["dense_1"][0] + w["dense_1"][1]
    with torch.no_grad():
        got = net.eval()(torch.from_numpy(x.transpose(0, 3, 1, 2)).float()).numpy()
    np.testing.assert_allclose(got, y, atol=1e-4, rtol=1e-5)


def test_keras_weights_become_a_run_that_eval_and_predict_use(tmp_path):
    from cnnlab.runs.keras import import_keras
    from cnnlab.runs.run import evaluate_run, load_trained

    rng = np.random.default_rng(5)
    w = {"conv2d": [rand(rng, 5, 5, 1, 6) * 0.2, rand(rng, 6)],
         "batch_normalization": [rand(rng, 6, positive=True), rand(rng, 6), rand(rng, 6), rand(rng, 6, positive=True)],
         "dense": [rand(rng, 1536, 128) * 0.05, rand(rng, 128)],
         "dense_1": [rand(rng, 128, 10) * 0.1, rand(rng, 10)]}
    h5 = tmp_path / "baseline.weights.h5"
    write_keras3(h5, list(w.items()))
    imported = import_keras("baseline-cifar", h5, tmp_path / "run", dataset="digits", input=(1, 32, 32))
    assert len(imported.matched) == 4 and imported.checkpoint.name == "best.pt"
    trained = load_trained(tmp_path / "run")
    assert trained.card.classes == tuple(str(i) for i in range(10)) and trained.card.in_channels == 1
    kernel = trained.model.get_submodule("stage1.c1").weight.detach().numpy()
    np.testing.assert_allclose(kernel, w["conv2d"][0].transpose(3, 2, 0, 1), rtol=1e-6)
    result = evaluate_run(tmp_path / "run")
    assert result.count == 360 and 0.0 <= result.accuracy <= 1.0

    from cnnlab.cli import main

    args = ["--dataset", "digits", "--input", "1x32x32"]
    assert main(["import-keras", "baseline-cifar", str(h5), *args, "--out", str(tmp_path / "cli")]) == 0
    assert main(["import-keras", "lenet5-cifar", str(h5), *args, "--out", str(tmp_path / "bad")]) == 2
    assert not (tmp_path / "bad" / "best.pt").exists()
