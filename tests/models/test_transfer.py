"""Transfer learning: torchvision key/shape mapping for every architecture, numerics, --pretrained, head, freeze."""
import pytest
import torch
import torchvision
from torchvision.models.feature_extraction import create_feature_extractor

from cnnlab.cli import main
from cnnlab.engine.checkpoint import load_checkpoint
from cnnlab.runs.card import RunCard
from cnnlab.runs.run import build_model, load_trained
from cnnlab.errors import CnnlabError
from cnnlab.engine.checkpoint import save_checkpoint
from cnnlab.models import create_model, list_models
from cnnlab.models.transfer import TransferModel, backbone_kwargs, build_transfer, load_pretrained, parse_head, transfer_meta
from cnnlab.models.weights import IMAGENET_MEAN, IMAGENET_STD

TOP = {"classifier", "fc", "aux1", "aux2"}  # torchvision's parts that include_top=False leaves out
FEATURES_NODE = {"vgg11": "features", "alexnet": "features", "resnet18": "layer4", "googlenet": "inception5b"}


def meta_for(name, num_classes=10, channels=3, size=(32, 32), pretrained="imagenet", hidden=(), pooling="none",
             freeze="none"):
    """The run card of a transfer model, as run.make_card writes it."""
    return RunCard(name, num_classes, channels, tuple(size), tuple(str(i) for i in range(num_classes)),
                   model_kwargs=backbone_kwargs(name, pretrained, None),
                   transfer=transfer_meta(name, pretrained, list(hidden), pooling, freeze))


def torchvision_model(name):
    """torchvision's network with random weights (GoogLeNet as its pretrained weights configure it)."""
    extra = {"aux_logits": True, "transform_input": True, "init_weights": False} if name == "googlenet" else {}
    return getattr(torchvision.models, name)(weights=None, **extra)


def torchvision_reference(name):
    """torchvision's network for the numeric check; VGG as torchvision's own features only (its top is 100 M weights)."""
    if name != "vgg11":
        return torchvision_model(name)
    from torchvision.models import vgg

    return torch.nn.ModuleDict({"features": vgg.make_layers(vgg.cfgs["A"])})


@pytest.mark.parametrize("name", list_models(pretrained=True))
def test_backbone_keys_and_shapes_equal_torchvision(name):
    with torch.device("meta"):
        backbone = build_model(meta_for(name, size=(224, 224))).backbone
        theirs = {k: v.shape for k, v in torchvision_model(name).state_dict().items()}
    ours = {k: v.shape for k, v in backbone.state_dict().items()}
    assert ours and all(theirs.get(k) == shape for k, shape in ours.items())
    assert {k.split(".")[0] for k in set(theirs) - set(ours)} <= TOP


@pytest.mark.parametrize("name", sorted(FEATURES_NODE))
def test_features_equal_torchvision_with_loaded_weights(name, cached_weights):
    torch.manual_seed(0)
    reference = torchvision_reference(name).eval()
    path = cached_weights(name, reference.state_dict())  # resnet18's fc and googlenet's fc/aux heads are ignored
    model = build_model(meta_for(name, size=(64, 64))).eval()
    assert load_pretrained(model, name, "imagenet") == f"{name} IMAGENET1K_V1 ({path})"
    x = torch.rand(2, 3, 64, 64)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        normalized = (x - mean) / std
        expected = reference.features(normalized) if name == "vgg11" else \
            create_feature_extractor(reference, {FEATURES_NODE[name]: "out"})(normalized)["out"]
        assert torch.allclose(model.forward_features(x), expected, atol=1e-5)


def test_offline_error_names_file_and_directory(hub):
    model = build_model(meta_for("resnet18"))
    with pytest.raises(CnnlabError) as err:
        load_pretrained(model, "resnet18", "imagenet")
    message = str(err.value)
    assert "resnet18-f37072fd.pth" in message and str(hub / "checkpoints") in message and "\n" not in message
    assert "--pretrained PATH" in message


def test_local_pth_and_weight_errors(tmp_path, hub):
    torch.manual_seed(1)
    reference = torchvision.models.resnet18()
    torch.save(reference.state_dict(), tmp_path / "mine.pth")
    model = build_model(meta_for("resnet18", pretrained=str(tmp_path / "mine.pth")))
    assert load_pretrained(model, "resnet18", str(tmp_path / "mine.pth")) == str(tmp_path / "mine.pth")
    assert torch.equal(model.backbone.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(CnnlabError, match="does not fit this network"):
        load_pretrained(model, "resnet18", str(tmp_path / "other.pth"))
    with pytest.raises(CnnlabError, match="no weights file"):
        load_pretrained(model, "resnet18", str(tmp_path / "absent.pth"))
    with pytest.raises(CnnlabError, match="unknown weights 'IMAGENET9'.*IMAGENET1K_V1"):
        load_pretrained(model, "resnet18", "IMAGENET9")
    with pytest.raises(CnnlabError, match="lenet5 has no pretrained weights"):
        backbone_kwargs("lenet5", "imagenet", None)


def test_a_cnnlab_run_directory_as_the_backbone_start(tmp_path):
    torch.manual_seed(3)
    trained = create_model("lenet5", num_classes=7)
    run = tmp_path / "lenet5-digits"
    save_checkpoint(run / "best.pt", {"model": trained.state_dict(), "model_name": "lenet5", "epoch": 3})
    model = build_model(meta_for("lenet5", num_classes=4, channels=1, pretrained=str(run), hidden=(8,)))
    assert isinstance(model.normalize, torch.nn.Identity)  # a run's weights: no ImageNet input normalisation
    assert load_pretrained(model, "lenet5", str(run)) == str(run / "best.pt")
    assert torch.equal(model.backbone.features.c5.weight, trained.features.c5.weight)


def test_head_pooling_and_frozen_backbone():
    model = build_model(meta_for("vgg16", hidden=(256, 64), freeze="backbone"))
    assert isinstance(model, TransferModel) and not hasattr(model.backbone, "classifier")
    assert [m.out_features for m in model.head if isinstance(m, torch.nn.Linear)] == [256, 64]
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == 512 * 256 + 256 + 256 * 64 + 64 + 64 * 10 + 10  # the course's Flatten → 256 → 64 → 10
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    pooled = build_model(meta_for("resnet18", pooling="max", freeze="backbone"))
    assert pooled.classifier.in_features == 512 and pooled.train().backbone.training is False
    assert pooled.head.training and not any(p.requires_grad for p in pooled.backbone.parameters())
    assert parse_head("256, 64") == [256, 64] and parse_head("") == []
    with pytest.raises(CnnlabError, match="--head must be"):
        parse_head("256,x")
    with pytest.raises(CnnlabError, match="--rgb"):
        build_model(meta_for("resnet18", channels=1))
    with pytest.raises(CnnlabError, match="cannot take 20x20 images.*--resize 32"):
        build_model(meta_for("vgg16", size=(20, 20)))
    with pytest.raises(CnnlabError, match="no forward_features"):
        build_transfer(lambda: torch.nn.Conv2d(3, 4, 3), transfer_meta("conv", None, [], "none", "none"), 10, 3,
                       (32, 32))


def test_googlenet_and_alexnet_switch_to_torchvision_layout():
    assert backbone_kwargs("googlenet", "imagenet", None) == {"variant": "torchvision"}
    assert backbone_kwargs("googlenet", None, None) == {}
    with pytest.raises(CnnlabError, match="variant='torchvision'"):
        backbone_kwargs("alexnet", "imagenet", {"variant": "paper"})
    assert transfer_meta("googlenet", "imagenet", [], "avg", "none")["normalize"] == [[0.5] * 3, [0.5] * 3]
    assert create_model("alexnet", variant="torchvision").features[3].out_channels == 192


def test_train_frozen_pretrained_resnet18_end_to_end(cached_weights, tmp_path, capsys):
    torch.manual_seed(2)
    pretrained = torchvision.models.resnet18().state_dict()
    cached_weights("resnet18", pretrained)  # with its 1000-class fc: ignored
    run = tmp_path / "run"
    assert main(["train", "resnet18", "--pretrained", "imagenet", "--freeze", "backbone", "--head", "16",
                 "--pooling", "avg", "--rgb", "--epochs", "1", "--limit-train", "32", "--limit-val", "16",
                 "--run-dir", str(run), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "Backbone weights: resnet18 IMAGENET1K_V1" in err and "(8,378 trainable)" in err
    weights = load_checkpoint(run / "last.pt")["model"]
    for key in ("conv1.weight", "layer3.0.bn1.running_mean", "layer4.1.conv2.weight"):  # frozen: weights and BN stats
        assert torch.equal(weights[f"backbone.{key}"], pretrained[key]), key
    trained = load_trained(run)  # rebuilt from the checkpoint alone: no weights download needed
    assert isinstance(trained.model, TransferModel) and trained.card.transfer["hidden"] == [16]
    assert main(["visualize", str(run), str(save_png(tmp_path)), "--out", str(tmp_path / "vis"), "--max-maps", "1"]) == 0
    names = {p.name for p in (tmp_path / "vis").iterdir()}
    assert {"filters.png", "01_conv1.png"} <= names and any("layer4" in n for n in names)


def save_png(folder):
    """A 32x32 grayscale PNG."""
    from PIL import Image

    path = folder / "x.png"
    Image.new("L", (32, 32), 128).save(path)
    return path


def test_a_trained_course_network_is_a_backbone_for_a_new_run(digits_run, tmp_path, capsys):
    """--pretrained RUN_DIR: the course network's own weights under a new head (the head API on every network)."""
    run = tmp_path / "from-run"
    assert main(["train", "baseline-cifar", "--pretrained", str(digits_run), "--freeze", "backbone", "--head", "16",
                 "--epochs", "1", "--limit-train", "64", "--limit-val", "32", "--run-dir", str(run),
                 "--no-progress"]) == 0
    assert f"Backbone weights: {digits_run}" in capsys.readouterr().err
    source = load_checkpoint(digits_run / "best.pt")["model"]
    trained = load_checkpoint(run / "last.pt")["model"]
    assert torch.equal(trained["backbone.stage1.c1.weight"], source["stage1.c1.weight"])  # frozen: unchanged
    assert "head.0.weight" in trained and "classifier.weight" in trained
