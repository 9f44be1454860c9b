"""Summary counts of the zoo's heads: hidden Dense MACs, collapsed blocks, MACs vs FLOPs, factory options."""
from __future__ import annotations

import pytest
from torch import nn

from cnnlab import api
from cnnlab.cli import main
from cnnlab.errors import CnnlabError
from cnnlab.explain.summary import summarize, summary_to_dict
from cnnlab.models import create_model

HEADS = [("vgg16", (3, 32, 32)), ("alexnet", (3, 227, 227)), ("alexnet-vgg", (3, 224, 224)),
         ("tflearn-cifar", (3, 32, 32))]


@pytest.mark.parametrize("name, shape", HEADS)
def test_every_dense_layer_of_the_head_counts_its_multiply_adds(name, shape):
    net = create_model(name, num_classes=10, input_size=shape[1:])
    s = summarize(net, shape)
    dense = {n: m for n, m in net.named_modules() if isinstance(m, nn.Linear)}
    assert len(dense) >= 2
    for r in s.rows:
        if r.name in dense:
            assert r.macs == dense[r.name].in_features * dense[r.name].out_features, r.name
            assert r.outputs == ((dense[r.name].out_features,),)
    assert sum(r.macs for r in s.rows) == s.total_macs


@pytest.mark.parametrize("name, shape", HEADS)
def test_a_collapsed_head_shows_its_output_and_the_macs_of_its_layers(name, shape):
    net = create_model(name, num_classes=10, input_size=shape[1:])
    s = summarize(net, shape, depth=1)
    head = next(r for r in s.rows if r.name == "classifier")
    assert head.outputs == ((10,),) and head.receptive_field == "all"
    assert head.macs == sum(m.in_features * m.out_features for m in net.classifier if isinstance(m, nn.Linear))
    assert sum(r.macs for r in s.rows) == s.total_macs


def test_macs_and_flops_are_both_named_in_the_table_and_the_fields():
    s = api.summary("lenet5-cifar")
    assert s.total_flops == 2 * s.total_macs and s.gmacs == s.total_macs / 1e9 and s.gflops == 2 * s.gmacs
    text = str(s)
    assert f"MACs per image: {s.total_macs:,} = " in text and "(what the papers call FLOPs)" in text
    assert f"FLOPs per image (2×MACs): {s.total_flops:,} = " in text
    d = summary_to_dict(s)
    assert (d["total_macs"], d["total_flops"]) == (s.total_macs, s.total_flops)


def test_a_factory_option_reaches_the_summary_from_the_cli(capsys):
    paper = summarize(create_model("resnet50", stride_in_1x1=True), (3, 64, 64))
    assert main(["summary", "resnet50", "--input", "3x64x64", "--model-option", "stride_in_1x1=true",
                 "--depth", "1"]) == 0
    out = capsys.readouterr().out
    assert f"MACs per image: {paper.total_macs:,} = " in out
    assert paper.total_macs < summarize(create_model("resnet50"), (3, 64, 64)).total_macs  # v1.5 strides later


@pytest.mark.parametrize("option, message", [
    ("stride_in_1x1=maybe", "resnet50 option stride_in_1x1 takes true or false, not 'maybe'"),
    ("stride=1", "resnet50 takes no option 'stride' (it takes: stride_in_1x1, "),
    ("num_classes=5", "num_classes is not a model option: cnnlab sets it"),
    ("stride_in_1x1", "expected KEY=VALUE such as stride_in_1x1=true"),
])
def test_a_wrong_model_option_is_one_line(option, message, capsys):
    try:
        code = main(["summary", "resnet50", "--model-option", option])
    except SystemExit as e:  # argparse's own usage errors
        code = e.code
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err, err


def test_model_options_are_typed_for_training_configs_too():
    from cnnlab.runs.config import RunConfig

    assert RunConfig(model="googlenet", model_kwargs={"aux_logits": "yes", "dropout": "0.2"}).model_kwargs == \
        {"aux_logits": True, "dropout": 0.2}
    with pytest.raises(CnnlabError, match="googlenet option variant must be one of paper, torchvision"):
        RunConfig(model="googlenet", model_kwargs={"variant": "keras"})
