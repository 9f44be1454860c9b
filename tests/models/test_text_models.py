"""kim-cnn and dcnn: padding-independent logits, Kim's variants and max-norm, dynamic k-max pooling, head API, summary."""
from pathlib import Path

import pytest
import torch

from cnnlab.engine import FitConfig, Trainer
from cnnlab.engine.optim import Adadelta
from cnnlab.data.loader import TensorLoader, trim_padding
from cnnlab.errors import CnnlabError
from cnnlab.explain.summary import summarize
from cnnlab.models import create_model, default_input_size, is_text_model
from cnnlab.models.registry import accepted_options
from cnnlab.models.text import dynamic_k, kmax_pool

SMALL = dict(vocab_size=30, embedding_dim=12)


def ids(*rows: list[int], length: int = 9) -> torch.Tensor:
    return torch.tensor([r + [0] * (length - len(r)) for r in rows])


@pytest.mark.parametrize("name, options", [("kim-cnn", dict(maps=4)), ("kim-cnn", dict(maps=4, variant="multichannel")),
                                           ("dcnn", dict(maps=(2, 3)))])
def test_logits_do_not_depend_on_trailing_padding_or_the_batch(name, options):
    torch.manual_seed(0)
    model = create_model(name, num_classes=3, **SMALL, **options).eval()
    torch.nn.init.normal_(model.get_classifier().weight)  # kim-cnn's starts at zero, as Kim's: logits would all be 0
    x = ids([5, 6, 7, 8], [9], [3, 4, 5, 6, 7, 8, 9, 10])
    with torch.no_grad():
        full = model(x)
        assert full.shape == (3, 3)
        assert torch.allclose(model(trim_padding(x)), full, atol=1e-6)
        assert torch.allclose(model(x[1:2, :1]), full[1:2], atol=1e-6)


def test_kim_variants_freeze_what_kim_froze_and_options_are_checked():
    rand = create_model("kim-cnn", **SMALL)
    assert rand.embed.weight.requires_grad and rand.static_embed is None
    assert rand.embed.weight[0].eq(0).all() and rand.embed.weight[1:].abs().max() <= 0.25
    assert not create_model("kim-cnn", variant="static", **SMALL).embed.weight.requires_grad
    multi = create_model("kim-cnn", variant="multichannel", **SMALL)
    assert multi.embed.weight.requires_grad and not multi.static_embed.weight.requires_grad
    assert multi.convs[0].in_channels == 24
    assert {"variant", "windows", "maps", "vocab_size", "embedding_dim"} <= set(accepted_options("kim-cnn"))
    with pytest.raises(CnnlabError, match="variant must be one of rand, static, non-static, multichannel"):
        create_model("kim-cnn", variant="dynamic", **SMALL)
    with pytest.raises(CnnlabError, match="kim-cnn takes no option 'kernel'"):
        create_model("kim-cnn", kernel=3)
    with pytest.raises(CnnlabError, match="embedding_dim must be a multiple of 2"):
        create_model("dcnn", vocab_size=10, embedding_dim=7)
    with pytest.raises(CnnlabError, match="kim-cnn windows must be a number or a list"):
        create_model("kim-cnn", windows="3,4", **SMALL)
    assert create_model("kim-cnn", windows=2, **SMALL).windows == (2,)
    assert [c.maps_out for c in create_model("dcnn", maps=4, **SMALL).convs] == [4, 4]


def test_kims_filter_initialiser_draws_the_bounds_his_theano_layer_draws():
    """Kim's LeNetConvPoolLayer: fan_in = width·dim, fan_out = maps·width·dim / (padded length - width + 1)."""
    for how, bounds in (("kim", (0.0505, 0.0435, 0.0387)), ("glorot", (0.0707, 0.0612, 0.0548))):
        model = create_model("kim-cnn", vocab_size=10, conv_init=how)
        for conv, bound in zip(model.convs, bounds):
            assert conv.bias.eq(0).all()
            assert bound * 0.98 < conv.weight.abs().max().item() <= bound * 1.001
    with pytest.raises(CnnlabError, match="conv_init must be one of kim, glorot"):
        create_model("kim-cnn", conv_init="he", **SMALL)


def test_kims_output_layer_starts_at_zero_and_dropout_scales_at_test_as_his_code():
    model = create_model("kim-cnn", num_classes=3, maps=4, **SMALL)
    assert model.fc.weight.eq(0).all() and model.fc.bias.eq(0).all()
    model.reset_classifier(5)
    assert model.fc.weight.shape == (5, 12) and model.fc.weight.eq(0).all()
    x = torch.full((200, 300), 2.0)
    model.dropout.train()
    kept = model.dropout(x)
    assert set(kept.unique().tolist()) == {0.0, 2.0} and abs(kept.eq(0).float().mean().item() - 0.5) < 0.02
    model.dropout.eval()
    assert model.dropout(x).eq(1.0).all()  # every unit times 1 - p: the weights max-norm bounds are Kim's W


def test_word_vectors_fill_every_table_and_a_wrong_dimension_names_the_fix():
    model = create_model("kim-cnn", variant="multichannel", **SMALL)
    vectors = torch.full((30, 12), 0.5)
    found = torch.zeros(30, dtype=torch.bool)
    found[[0, 4]] = True
    model.load_word_vectors(vectors, found)
    for table in (model.embed, model.static_embed):
        assert table.weight[4].eq(0.5).all() and table.weight[0].eq(0).all() and not table.weight[5].eq(0.5).all()
    with pytest.raises(CnnlabError, match="--model-option embedding_dim=5"):
        model.load_word_vectors(torch.zeros(30, 5), found)


def test_the_engine_calls_after_step_kims_max_norm(tmp_path: Path):
    torch.manual_seed(0)
    model = create_model("kim-cnn", maps=4, max_norm=0.05, **SMALL)
    torch.nn.init.normal_(model.fc.weight)  # far above the cap (it starts at zero, as Kim's)
    loader = TensorLoader(torch.randint(1, 30, (16, 6)), torch.randint(0, 2, (16,)), 8)
    trainer = Trainer(model, loader, None, FitConfig(epochs=1, optimizer="adadelta", lr=1.0, momentum=0.95),
                      tmp_path, progress=False)
    assert isinstance(trainer.optimizer, Adadelta) and trainer.optimizer.defaults["rho"] == 0.95
    trainer.train_epoch()
    norms = model.fc.weight.norm(dim=1)
    assert norms.max() <= 0.05 + 1e-6 and torch.allclose(norms, torch.full_like(norms, 0.05), atol=1e-4)


def test_kmax_pool_keeps_each_sentences_k_largest_in_order():
    x = torch.tensor([[[1.0, 5.0, 2.0, 4.0, 3.0, 9.0]], [[7.0, 1.0, 8.0, 0.0, 0.0, 0.0]]])
    out, valid = kmax_pool(x, valid=torch.tensor([5, 3]), k=torch.tensor([3, 2]), width=4)
    assert out.tolist() == [[[5.0, 4.0, 3.0, 0.0]], [[7.0, 8.0, 0.0, 0.0]]] and valid.tolist() == [3, 2]
    assert dynamic_k(1, 2, torch.tensor([3, 18]), 4).tolist() == [4, 9] and dynamic_k(2, 2, torch.tensor([18]), 4) == 4


def test_head_api_and_registry_entries():
    model = create_model("dcnn", **SMALL, maps=(2, 3)).eval()
    x = ids([3, 4, 5])
    features = model.forward_features(x)
    assert features.shape == (1, model.num_features) and model.forward_head(features, pre_logits=True).shape == features.shape
    model.reset_classifier(5)
    assert model(x).shape == (1, 5)
    assert is_text_model("kim-cnn") and not is_text_model("lenet5-cifar") and default_input_size("dcnn") == (64,)


def test_summary_gives_tokens_by_channels_and_the_receptive_field_in_tokens():
    s = summarize(create_model("kim-cnn", vocab_size=100), (20,))
    rows = {r.name: r for r in s.rows}
    assert [rows[f"convs.{i}"].receptive_field for i in range(3)] == [(3,), (4,), (5,)]
    assert rows["pool"].receptive_field == "all" and rows["embed"].receptive_field == (1,)
    text = str(s)
    assert "(N, 26 tokens, 100 ch)" in text and "(N, 20 tokens, 300 ch)" in text and "Input: (N, 20) token ids" in text
    assert s.total_params == 100 * 300 + (90_100 + 120_100 + 150_100) + 602
    assert s.total_macs == 26 * 90_000 + 25 * 120_000 + 24 * 150_000 + 600  # 20 tokens + 2·4 padding
    dcnn = {r.name: r for r in summarize(create_model("dcnn", vocab_size=50), (10,)).rows}
    assert dcnn["convs.0.conv"].receptive_field == (7,) and dcnn["convs.1.conv"].receptive_field == "all"


@pytest.mark.parametrize("name, options", [("kim-cnn", dict(windows=(2, 3, 5), maps=2)), ("dcnn", dict(maps=(2, 3)))])
def test_summary_start_is_where_each_filter_window_begins_padding_included(name, options):
    """The 1-D field's start agrees with the network's own account of its windows (``Windows.offset``): unit t of
    a window layer sees tokens t - offset … t - offset + width - 1."""
    from cnnlab.explain.summary import input_window

    model = create_model(name, **SMALL, **options).eval()
    rows = {r.name: r for r in summarize(model, (9,)).rows}
    convs = [n for n in rows if n.startswith("convs.") and rows[n].kind == "Conv1d"]
    with torch.no_grad():
        windows = model.window_activations(ids([5, 6, 7]))
    for w, conv in zip(windows, convs):
        row = rows[conv]
        assert (row.receptive_field, row.jump, row.start, row.layout) == ((w.width,), (1,), (-w.offset,), "NC*")
        assert input_window(row, (4,)) == ((4 - w.offset, 4 - w.offset + w.width - 1),)


def test_model_options_from_the_command_line_are_typed_by_the_factory():
    """``--model-option KEY=VALUE`` text becomes what the factory declares: sequences of ints or bools included."""
    from cnnlab.models.registry import typed_options

    assert typed_options("kim-cnn", {"windows": "3,4,5", "maps": "8", "variant": "static", "dropout": "0.3"}) == \
        {"windows": (3, 4, 5), "maps": 8, "variant": "static", "dropout": 0.3}
    assert typed_options("kim-cnn", {"windows": "4"}) == {"windows": (4,)}
    assert typed_options("dcnn", {"folding": "false,true", "maps": "(2, 3)", "widths": "7,5,"}) == \
        {"folding": (False, True), "maps": (2, 3), "widths": (7, 5)}
    with pytest.raises(CnnlabError, match="comma-separated values such as 3,4,5"):
        typed_options("kim-cnn", {"windows": "3,,5"})
    with pytest.raises(CnnlabError, match="windows takes a whole number, not 'x'"):
        typed_options("kim-cnn", {"windows": "3,x"})
