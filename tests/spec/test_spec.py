"""CBAPD grammar, error positions, and static shape inference against real forward passes."""
from __future__ import annotations

import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from cnnlab import layers
from cnnlab.errors import CnnlabError
from cnnlab.spec import (Conv, Pool, Res, SpecError, build, build_spec_file, infer_shapes,
                         load_spec_file, parse_spec)

HEAD = "input: 3x16x16\nclasses: 5\n"


def parse(body: str, head: str = HEAD):
    return parse_spec(head + body, source="t.cbapd")


def out_shape(model: nn.Module, shape: tuple[int, ...]) -> tuple[int, ...]:
    model.eval()
    with torch.no_grad():
        return tuple(model(torch.zeros(1, *shape)).shape[1:])


# --------------------------------------------------------------------------------------- grammar


def test_headers_and_stages() -> None:
    spec = parse_spec("# a comment\nname: tiny\ninput: 1x28x28\nclasses: 10\n"
                      "C(6,5,same) B A(relu) P(max,2,s2,same) D(0.2) | F | Dense(128,relu) D(0.2) "
                      "| Dense(classes)")
    assert (spec.name, spec.input_size, spec.num_classes) == ("tiny", (1, 28, 28), 10)
    assert [len(stage) for stage in spec.stages] == [5, 1, 2, 1]
    conv = spec.stages[0][0]
    assert isinstance(conv, Conv)
    assert (conv.filters, conv.kernel, conv.padding, conv.stride) == (6, (5, 5), "same", 1)
    pool = spec.stages[0][3]
    assert isinstance(pool, Pool)
    assert (pool.mode, pool.kernel, pool.stride, pool.padding) == ("max", (2, 2), 2, "same")
    assert out_shape(build(spec), (1, 28, 28)) == (10,)


def test_line_breaks_split_stages_and_name_defaults_to_file_stem() -> None:
    spec = parse_spec("input: 3x8x8\nC(4,3)  # first\n\nGAP\n", source="dir/my-net.cbapd")
    assert spec.name == "my-net" and len(spec.stages) == 2 and spec.num_classes is None


def test_conv_options() -> None:
    conv = parse("C(8,3x1,s2,d2,g1,nobias,4)").stages[0][0]
    fields = (conv.kernel, conv.stride, conv.dilation, conv.groups, conv.bias, conv.padding)
    assert fields == ((3, 1), 2, 2, 1, False, 4)
    model = build(parse("C(6,3,same,g3) C(4,1,g2) GAP Dense(classes)"))
    assert model.stage1.c1.groups == 3 and out_shape(model, (3, 16, 16)) == (5,)


def test_repetition_of_layers_and_groups() -> None:
    spec = parse("[C(4,3,same) B A(relu)]x2 Res(8,s2)x3 D(0.1) x2")
    kinds = [type(n).__name__ for n in spec.nodes]
    assert kinds == ["Conv", "BatchNorm", "Act"] * 2 + ["Res"] * 3 + ["Dropout"] * 2
    names = [s.name for s in infer_shapes(spec)]
    assert names[:6] == ["c1", "b1", "a1", "c2", "b2", "a2"] and names[6:9] == ["res1", "res2", "res3"]


def test_group_spans_lines() -> None:
    spec = parse("[C(4,3,same)\n B\n A(relu)]x2\nGAP")
    assert len(spec.stages) == 2 and len(spec.stages[0]) == 6


def test_aliases_and_case() -> None:
    spec = parse("conv(4,3,SAME) bn a(ReLU) pool(AVG,2) sepconv(6,3,same) lrn(3) gmp flatten dense(classes,tanh)")
    model = build(spec)
    assert out_shape(model, (3, 16, 16)) == (5,)
    assert isinstance(model.stage1.lrn1, nn.LocalResponseNorm) and model.stage1.lrn1.size == 3
    assert model.stage1.lrn1.alpha == pytest.approx(3e-4)  # the paper's alpha scales the sum, PyTorch's the mean
    flat_bn = build(parse("F B Dense(classes)")).stage1.b1
    assert isinstance(flat_bn, nn.BatchNorm1d) and flat_bn.eps == layers.KERAS_BN_EPS


def test_final_softmax_is_dropped_but_inner_softmax_kept() -> None:
    model = build(parse("F Dense(classes,softmax)"))
    assert isinstance(model.stage1.f1, nn.Linear)
    model = build(parse("F Dense(7,softmax) Dense(classes) A(softmax)"))
    assert isinstance(model.stage1.f1.act, nn.Softmax) and len(model.stage1) == 3


def test_dense_l2_is_keras_kernel_regularizer_l2_and_adds_no_parameters() -> None:
    plain, marked = build(parse("GAP Dense(classes)")), build(parse("GAP Dense(classes,softmax,l2)"))
    assert sum(p.numel() for p in plain.parameters()) == sum(p.numel() for p in marked.parameters())
    assert [(f, w.shape) for f, w in layers.kernel_l2_layers(marked)] == [(0.01, torch.Size([5, 3]))]
    assert layers.kernel_l2_layers(plain) == []
    with pytest.raises(SpecError, match="l2 given twice"):
        parse("GAP Dense(classes,l2,l2)")


def test_built_module_is_named_and_hookable() -> None:
    model = build(parse("C(4,3,same) B A(relu) | Inception(4,s2) | Res(8,s2) | GAP | Dense(classes)"))
    names = dict(model.named_modules())
    assert {"stage1.c1", "stage2.inception1.c2_2", "stage3.res1.down_c1", "stage4.p1", "stage5.f1"} <= set(names)
    seen: list[tuple[int, ...]] = []
    names["stage2.inception1"].register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape)))
    model(torch.zeros(2, 3, 16, 16))
    assert seen == [(2, 16, 8, 8)]
    assert "name='t'" in repr(model)


def test_overrides_and_keras_init() -> None:
    spec = parse("C(4,3,same,nobias,he) B A(relu) F Dense(classes)")
    model = build(spec, num_classes=3, in_channels=1, input_size=(8, 6), init="keras")
    assert out_shape(model, (1, 8, 6)) == (3,) and model.stage1.f1.in_features == 4 * 8 * 6
    assert torch.all(model.stage1.f1.bias == 0) and model.stage1.c1.bias is None
    std = (2 / 9) ** 0.5
    assert model.stage1.c1.weight.abs().max() <= 2 * std / 0.8796 + 1e-6
    with pytest.raises(CnnlabError, match="unknown init"):
        build(spec, init="xavier")


def test_spec_files(tmp_path) -> None:
    path = tmp_path / "net.cbapd"
    path.write_text(HEAD + "C(4,3) GAP Dense(classes)\n", encoding="utf-8")
    assert load_spec_file(path).name == "net"
    assert out_shape(build_spec_file(str(path), num_classes=2), (3, 16, 16)) == (2,)
    with pytest.raises(CnnlabError, match="not found"):
        load_spec_file(tmp_path / "missing.cbapd")


def test_res_projection_only_when_shape_changes() -> None:
    model = build(parse("C(8,3,same) Res(8) Res(16) Res(16,s2) GAP Dense(classes)"))
    blocks = [model.stage1.res1, model.stage1.res2, model.stage1.res3]
    assert [b.residual_path for b in blocks] == [False, True, True]
    assert all(m.bias is None for b in blocks for m in b.modules() if isinstance(m, nn.Conv2d))
    assert isinstance(parse("Res(8,s2)").nodes[0], Res)


# ---------------------------------------------------------------------------------------- errors

ERRORS = [
    # (body, line, col, words in the message)
    ("C(6,5) Bq A(relu)", 3, 8, "unknown layer 'Bq'"),
    ("Cx2", 3, 1, "separate the repeat"),
    ("Dence(10)", 3, 1, "did you mean Dense"),
    ("C(6)", 3, 1, "missing its kernel"),
    ("C(6,5,1,9)", 3, 9, "extra argument '9'"),
    ("C(6,five)", 3, 5, "kernel must be"),
    ("D(1.5)", 3, 3, "rate in [0, 1)"),
    ("A(swish)", 3, 3, "act must be one of"),
    ("P(max,2,same,valid)", 3, 14, "padding given twice"),
    ("P(2,2)", 3, 3, "mode must be one of"),
    ("P(max,2,same,ceil)", 3, 1, "ceil has no effect"),
    ("C(6,5,s0)", 3, 7, "stride must be"),
    ("C(6,5,,1)", 3, 7, "empty argument"),
    ("C(6,5", 3, 2, "unbalanced '('"),
    ("[C(6,5) B\nA(relu)", 3, 1, "unbalanced '['"),
    ("C(6,5) ]", 3, 8, "unbalanced ']'"),
    ("[C(6,5) | B]", 3, 9, "'|' inside"),
    ("C(6,5) @", 3, 8, "unexpected character '@'"),
    ("C(6,5) x0", 3, 8, "repeat count"),
    ("C(6,5) (", 3, 8, "unexpected '('"),
    ("C(6,5) Dense(classes)", 3, 8, "needs a flat vector"),
    ("F C(6,5)", 3, 3, "needs a CxHxW feature map"),
    ("C(6,5) P(max,2) C(6,5) P(max,2) P(max,2)", 3, 33, "P(max,2) (p3) shrinks 6x1x1 to 6x0x0"),
    ("C(6,17)", 3, 1, "(c1) shrinks 3x16x16 to 6x0x0"),
    ("C(6,3,g4)", 3, 1, "groups=4 must divide"),
    ("P(max,3,2)", 3, 1, "exceeds half the kernel"),
]


@pytest.mark.parametrize("body,line,col,words", ERRORS)
def test_error_positions(body: str, line: int, col: int, words: str) -> None:
    with pytest.raises(SpecError) as info:
        build(parse(body))
    err = info.value
    assert (err.line, err.col) == (line, col), str(err)
    assert words in err.problem or words in err.hint, str(err)
    message = str(err)
    assert "\n" not in message and message.startswith(f"t.cbapd:{line}:{col}: ") and "(hint: " in message
    assert isinstance(err, CnnlabError)


@pytest.mark.parametrize("text,words", [
    ("C(4,3)", "missing 'input:'"),
    ("input: 3x32\nC(4,3)", "input must be CxHxW"),
    ("input: 3x8x8\nclasses: ten\nC(4,3)", "classes must be"),
    ("input: 3x8x8\ninput: 3x8x8\nC(4,3)", "given twice"),
    ("input: 3x8x8\nlayers: 3\nC(4,3)", "unknown header"),
    ("input: 3x8x8\n# nothing\n", "no layers"),
    ("input: 3x8x8\nF Dense(classes)", "needs a class count"),
])
def test_header_errors(text: str, words: str) -> None:
    with pytest.raises(SpecError) as info:
        build(parse_spec(text))
    assert words in str(info.value)


# ------------------------------------------------------------------------------- shape property

pads = st.one_of(st.sampled_from(["same", "valid"]), st.integers(0, 2))


@st.composite
def conv_pool(draw):
    size = draw(st.integers(1, 20)), draw(st.integers(1, 20))
    conv = dict(k=draw(st.integers(1, 5)), s=draw(st.integers(1, 3)), d=draw(st.integers(1, 2)), pad=draw(pads))
    pk = draw(st.integers(1, 3))
    pool = dict(mode=draw(st.sampled_from(["max", "avg"])), k=pk, s=draw(st.integers(1, 3)),
                pad=draw(st.one_of(st.sampled_from(["same", "valid"]), st.integers(0, pk // 2))))
    pool["ceil"] = pool["pad"] != "same" and draw(st.booleans())
    return size, conv, pool


def expected(n: int, conv: dict, pool: dict) -> tuple[int, int]:
    after_conv = layers.conv_out_size(n, conv["k"], conv["s"], conv["pad"], conv["d"])
    if after_conv < 1:
        return after_conv, after_conv
    return after_conv, layers.conv_out_size(after_conv, pool["k"], pool["s"], pool["pad"], 1, pool["ceil"])


@settings(max_examples=60, deadline=None)
@given(conv_pool())
def test_inferred_shapes_match_forward_and_formula(case) -> None:
    (h, w), conv, pool = case
    ceil = ",ceil" if pool["ceil"] else ""
    text = (f"input: 2x{h}x{w}\nC(3,{conv['k']},s{conv['s']},d{conv['d']},{conv['pad']}) "
            f"P({pool['mode']},{pool['k']},s{pool['s']},{pool['pad']}{ceil})")
    (hc, hp), (wc, wp) = expected(h, conv, pool), expected(w, conv, pool)
    spec = parse_spec(text)
    if min(hc, hp, wc, wp) < 1:
        with pytest.raises(SpecError, match="shrinks"):
            infer_shapes(spec)
        return
    steps = infer_shapes(spec)
    assert [s.out_shape for s in steps] == [(3, hc, wc), (3, hp, wp)]
    assert out_shape(build(spec), (2, h, w)) == (3, hp, wp)


def test_batchnorm_momentum_is_keras_style_and_defaults_to_keras():
    net = build(parse_spec("input: 3x8x8\nC(4,3) B A(relu) B(0.9) F B Dense(2)"))
    norms = [m for m in net.modules() if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d))]
    assert [round(m.momentum, 6) for m in norms] == [0.01, 0.1, 0.01]
    assert all(m.eps == 1e-3 for m in norms)
    with pytest.raises(CnnlabError, match=r"2:10: B momentum must be a rate in \[0, 1\)"):
        parse_spec("input: 3x8x8\nC(4,3) B(1.5) F Dense(2)")


@pytest.mark.parametrize("layers,words", [
    ("C(6,5) A(relu) P(max,2) | F | Dense(12000000,relu) | Dense(classes)",
     "4:31: Dense(12000000,relu) (f1) would have 14,124,000,000 parameters"),
    ("C(600000,5,same) A(relu) | F | Dense(classes)", "4:1: C(600000,5,same) (c1) would output 600000x32x32"),
])
def test_a_layer_too_large_to_hold_is_refused_before_memory_is_allocated(layers, words):
    """A fuzzed digit (Dense(120) → Dense(12000000)) once made summary allocate 56 GB and the OOM killer end it."""
    spec = parse_spec(f"name: big\ninput: 3x32x32\nclasses: 10\n{layers}\n", source="big.cbapd")
    with pytest.raises(SpecError, match=re.escape(words)):
        build(spec)
