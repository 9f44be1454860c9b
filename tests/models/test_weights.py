"""Pretrained weights: the declared entries against torchvision's enums, create_model(pretrained=...), the
hash-checked cache and download (tiny or fake files only: nothing is fetched from the internet)."""
import math
from pathlib import Path
from dataclasses import replace

import pytest
import torch
import torchvision

from cnnlab.engine.checkpoint import save_checkpoint
from cnnlab.errors import CnnlabError
from cnnlab.models import create_model, list_models, model_info, registry
from cnnlab.models.weights import TORCHVISION_URL, Pretrained, Weights

ENTRIES = [(model, w) for model in list_models(pretrained=True) for w in model_info(model).weights]
ENTRY_IDS = [f"{model}-{w.name}" for model, w in ENTRIES]


def published(value: float) -> float | None:
    """torchvision writes nan where it publishes no accuracy; cnnlab writes None."""
    return None if math.isnan(value) else value


def same_tensors(model: torch.nn.Module, state: dict, skip: tuple[str, ...] = ()) -> bool:
    """True when every tensor of ``model`` outside the ``skip`` prefixes equals ``state``'s."""
    return all(torch.equal(v, state[k]) for k, v in model.state_dict().items() if not k.startswith(skip))


def resnet18_state(seed: int = 0) -> dict:
    """torchvision's resnet18 with random weights, as its ImageNet file is laid out."""
    torch.manual_seed(seed)
    return torchvision.models.resnet18().state_dict()


@pytest.mark.parametrize(("model", "weights"), ENTRIES, ids=ENTRY_IDS)
def test_entry_url_hash_and_parameter_count(model, weights):
    assert weights.url.startswith(TORCHVISION_URL) and len(weights.hash_prefix) >= 8
    assert weights.file_name.endswith(f"-{weights.hash_prefix}.pth")
    with torch.device("meta"):
        net = create_model(model, **dict(weights.model_kwargs))
    assert sum(p.numel() for p in net.parameters()) == weights.num_params


@pytest.mark.parametrize(("model", "weights"), ENTRIES, ids=ENTRY_IDS)
def test_entry_matches_torchvisions_enum(model, weights):
    theirs = torchvision.models.get_model_weights(model)[weights.name]
    metrics = theirs.meta["_metrics"]["ImageNet-1K"]
    assert (theirs.url, theirs.meta["num_params"]) == (weights.url, weights.num_params)
    assert (published(metrics["acc@1"]), published(metrics["acc@5"])) == (weights.acc1, weights.acc5)
    categories = theirs.meta["categories"]
    assert weights.num_classes == (len(categories) if categories else None)
    transform, ours = theirs.transforms(), weights.transforms
    assert (transform.resize_size, transform.crop_size) == ([ours.resize], [ours.crop])
    assert transform.interpolation.value == ours.interpolation
    if model != "googlenet":
        assert (tuple(transform.mean), tuple(transform.std)) == (ours.mean, ours.std)


def test_googlenet_entry_states_the_scaling_torchvisions_model_applies_inside():
    net = torchvision.models.googlenet(weights=None, transform_input=True, init_weights=False, aux_logits=False)
    theirs, ours = torchvision.models.GoogLeNet_Weights.IMAGENET1K_V1.transforms(), model_info("googlenet").weights[0]
    image = torch.rand(2, 3, 8, 8)
    normalised = (image - torch.tensor(theirs.mean).view(1, 3, 1, 1)) / torch.tensor(theirs.std).view(1, 3, 1, 1)
    expected = (image - torch.tensor(ours.transforms.mean).view(1, 3, 1, 1)) / torch.tensor(ours.transforms.std).view(
        1, 3, 1, 1)
    assert torch.allclose(net._transform_input(normalised), expected, atol=1e-6)


@pytest.mark.parametrize("model", list_models(pretrained=True))
def test_every_torchvision_entry_is_declared_with_v1_as_the_default(model):
    declared = [w.name for w in model_info(model).weights]
    assert declared[0] == "IMAGENET1K_V1"
    assert sorted(declared) == sorted(w.name for w in torchvision.models.get_model_weights(model))  # DEFAULT: an alias


def test_a_file_name_without_its_hash_is_refused_at_declaration():
    with pytest.raises(ValueError, match="carries no sha256 prefix"):
        Weights("IMAGENET1K_V1", TORCHVISION_URL + "resnet18.pth", 1, None, None)


def test_pretrained_default_and_named_entry_load_from_the_cache(cached_weights):
    state = resnet18_state()
    cached_weights("resnet18", state)
    for pretrained in (True, "imagenet", "ImageNet", "IMAGENET1K_V1"):
        assert same_tensors(create_model("resnet18", pretrained=pretrained), state), pretrained


def test_other_classes_leave_the_classifier_fresh_and_load_the_rest(cached_weights):
    state = resnet18_state()
    cached_weights("resnet18", state)
    model = create_model("resnet18", num_classes=10, pretrained=True)
    assert model.fc.weight.shape == (10, 512) and same_tensors(model, state, skip=("fc.",))


def test_an_entry_without_a_trained_classifier_leaves_it_fresh(cached_weights, monkeypatch):
    state = resnet18_state()
    cached_weights("resnet18", state)
    info = model_info("resnet18")
    features_only = replace(info.weights[0], num_classes=None, fresh=("fc",))  # as vgg16's IMAGENET1K_FEATURES
    monkeypatch.setitem(registry._REGISTRY, "resnet18", replace(info, weights=(features_only,)))
    model = create_model("resnet18", pretrained=True)
    assert not torch.equal(model.fc.weight, state["fc.weight"]) and same_tensors(model, state, skip=("fc.",))


def test_googlenet_entry_selects_torchvisions_layout_and_fills_the_aux_heads(cached_weights):
    torch.manual_seed(1)
    state = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=False).state_dict()
    cached_weights("googlenet", state)
    assert same_tensors(create_model("googlenet", pretrained=True), state)  # the file's aux heads: ignored
    with_aux = create_model("googlenet", pretrained=True, aux_logits=True, num_classes=5)
    assert same_tensors(with_aux, state, skip=("fc.", "aux1.fc2.", "aux2.fc2.")) and with_aux.aux1.fc2.out_features == 5
    with pytest.raises(CnnlabError, match="pretrained googlenet weights need variant='torchvision', not 'paper'"):
        create_model("googlenet", pretrained=True, variant="paper")


def test_a_local_pth_and_a_file_named_like_an_entry(tmp_path, hub, fake_weights):
    state = resnet18_state()
    torch.save(state, tmp_path / "mine.pth")
    assert same_tensors(create_model("resnet18", pretrained=tmp_path / "mine.pth"), state)
    entry, data = fake_weights("resnet18", state)
    (tmp_path / entry.file_name).write_bytes(data)  # a torchvision file fetched by hand: its entry's hash applies
    assert same_tensors(create_model("resnet18", pretrained=str(tmp_path / entry.file_name)), state)
    (tmp_path / entry.file_name).write_bytes(data + b"\0")
    with pytest.raises(CnnlabError, match="sha256 does not start with"):
        create_model("resnet18", pretrained=str(tmp_path / entry.file_name))
    for absent in ("absent.pth", "resnet18-f37072fd.pth"):  # the second names an entry's file
        with pytest.raises(CnnlabError, match="no weights file or run directory at"):
            create_model("resnet18", pretrained=str(tmp_path / absent))


def test_a_cnnlab_run_directory_or_checkpoint(tmp_path):
    torch.manual_seed(2)
    trained = create_model("baseline-cifar").state_dict()
    run = tmp_path / "baseline-cifar-cifar10"
    save_checkpoint(run / "last.pt", {"model": create_model("baseline-cifar").state_dict()})
    save_checkpoint(run / "best.pt", {"model": trained, "model_name": "baseline-cifar", "epoch": 4})
    assert same_tensors(create_model("baseline-cifar", pretrained=run), trained)  # best.pt before last.pt
    assert same_tensors(create_model("baseline-cifar", pretrained=str(run / "best.pt")), trained)
    (run / "best.pt").unlink()
    assert not same_tensors(create_model("baseline-cifar", pretrained=run), trained)  # last.pt
    with pytest.raises(CnnlabError, match="holds no best.pt or last.pt"):
        create_model("baseline-cifar", pretrained=tmp_path)


def test_a_cached_file_with_the_wrong_hash_is_refused_and_not_used(hub):
    path = model_info("resnet18").weights[0].cache_path()
    path.parent.mkdir(parents=True)
    torch.save(resnet18_state(), path)  # loadable, but not the published file
    with pytest.raises(CnnlabError) as err:
        create_model("resnet18", pretrained=True)
    message = str(err.value)
    assert message.startswith(f"{path} is not the published resnet18-f37072fd.pth") and "\n" not in message
    assert "delete it" in message and path.exists()


def test_a_download_is_verified_and_lands_in_the_cache(http_server, hub_dir, fake_weights):
    state = resnet18_state()
    entry, data = fake_weights("resnet18", state, base=http_server.base)
    (http_server.root / entry.file_name).write_bytes(data)
    model = create_model("resnet18", pretrained=True)
    assert same_tensors(model, state) and http_server.hits == [f"/{entry.file_name}"]
    assert [p.name for p in (hub_dir / "checkpoints").iterdir()] == [entry.file_name]
    create_model("resnet18", pretrained=True)
    assert len(http_server.hits) == 1  # the second time from the cache


def test_a_download_with_the_wrong_bytes_leaves_nothing_behind(http_server, hub_dir):
    entry = Weights("IMAGENET1K_V1", http_server.url("tiny-0123abcd.pth"), 1, None, None)
    (http_server.root / entry.file_name).write_bytes(b"not the published file")
    with pytest.raises(CnnlabError, match="is not the published tiny-0123abcd.pth.*nothing was kept"):
        Pretrained("tiny", entry).file(progress=False)
    assert list((hub_dir / "checkpoints").iterdir()) == []  # no partial file, no target


def test_offline_message_names_the_url_the_cache_and_the_file(hub):
    with pytest.raises(CnnlabError) as err:
        create_model("resnet18", pretrained=True)
    message = str(err.value)
    assert message.startswith("cannot download https://download.pytorch.org/models/resnet18-f37072fd.pth")
    assert f"put it in {hub / 'checkpoints'} as resnet18-f37072fd.pth" in message and "\n" not in message


def test_an_unknown_keyword_names_the_accepted_ones():
    with pytest.raises(CnnlabError) as err:
        create_model("resnet18", foo=1)
    assert str(err.value) == ("resnet18 takes no option 'foo' (it takes: stride_in_1x1, pretrained, num_classes, "
                              "in_channels, input_size)")
    with pytest.raises(CnnlabError, match=r"googlenet takes no options 'a', 'b' \(it takes: aux_logits, variant"):
        create_model("googlenet", a=1, b=2)
    spec = str(Path(__file__).parents[2] / "src/cnnlab/specs/baseline-cifar.cbapd")
    with pytest.raises(CnnlabError, match=r"baseline-cifar.cbapd takes no option 'foo' \(it takes: init, pretrained"):
        create_model(spec, foo=1)
    assert create_model(spec, init="torch") is not None and create_model("lenet5", act="relu") is not None


def test_pretrained_without_weights_lists_the_models_that_have_them():
    with pytest.raises(CnnlabError) as err:
        create_model("lenet5", pretrained=True)
    assert str(err.value).startswith("lenet5 has no pretrained weights (the models that have them: alexnet, googlenet,")
    with pytest.raises(CnnlabError, match="unknown weights 'IMAGENET1K_V2' for resnet18: use imagenet, IMAGENET1K_V1"):
        create_model("resnet18", pretrained="IMAGENET1K_V2")
    with pytest.raises(CnnlabError, match="pretrained must be True, a weights name or a path, not 3"):
        create_model("resnet18", pretrained=3)
