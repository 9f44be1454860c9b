"""The explainer page's data: what it stores is enough to redo PyTorch's numbers, and it stays small."""
from __future__ import annotations

import base64
import zlib

import numpy as np
import pytest
import torch

import cnnlab
from cnnlab import CnnlabError
from cnnlab.explain.explainer import Story, build_page
from cnnlab.explain.summary import input_window, summarize
from cnnlab.models import create_model, default_input_size
from cnnlab.runs.explainer import cell_examples, pick_images, thumbnails
from conftest import leaf_outputs

def blob(data: dict, key: str) -> np.ndarray:
    return np.frombuffer(zlib.decompress(base64.b64decode(data["blobs"][key])), "<f4")


def conv_unit(layer: dict, data: dict, image: int, c: int, i: int, j: int) -> float:
    """A convolution's unit from the page's stored numbers (what the page's script sums): the stored input
    channels times their weights, plus the stored sum over the other channels, plus the bias."""
    op, (kh, kw) = layer["op"], layer["op"]["k"]
    x = blob(data, op["x"][image]).reshape(op["cin_stored"], *op["in_hw"]).astype(np.float64)
    w = blob(data, op["w"]).reshape(-1, op["w_cin"], kh, kw)
    padded = np.pad(x, ((0, 0), (op["pad"][0], kh), (op["pad"][1], kw)))
    patch = padded[:, i * op["s"][0]:i * op["s"][0] + kh, j * op["s"][1]:j * op["s"][1] + kw]
    rest = blob(data, op["rest"][image]).reshape(op["cout_stored"], *layer["shape"][1:])[c, i, j] if "rest" in op else 0
    return float((patch * w[c]).sum() + rest + (blob(data, op["b"])[c] if op["b"] else 0))


@pytest.mark.parametrize("max_maps", [16, 2])
def test_stored_numbers_redo_every_conv_unit_with_asymmetric_same_padding(max_maps, strided_net):
    net, x = strided_net, torch.rand(2, 3, 15, 15)
    data = build_page(net, x, ["a", "b"], ["w", "x", "y", "z"], max_maps=max_maps).data()
    real = leaf_outputs(net, x)
    convs = [layer for layer in data["layers"] if layer["type"] == "Conv2d"]
    assert [c["op"]["pad"] for c in convs] == [[1, 1], [1, 1]]  # 15 px, k4 s2: 1 before, 2 after; 4 px, k3: 1, 1
    assert ("rest" in convs[1]["op"]) == (max_maps < 5)  # inputs past the stored channels: their sum is stored
    for layer in convs:
        y = real[layer["name"]]
        for image in (0, 1):
            for c, i, j in ((0, 0, 0), (min(y.shape[1], max_maps) - 1, y.shape[2] - 1, y.shape[3] - 1), (1, 1, 3)):
                assert conv_unit(layer, data, image, c, i, j) == pytest.approx(float(y[image, c, i, j]), abs=1e-5)


def test_the_column_is_the_summary_and_says_how_many_maps_it_shows(strided_net):
    net = strided_net
    data = build_page(net, torch.rand(1, 3, 15, 15), ["a"], list("wxyz"), max_maps=4).data()
    rows = summarize(net, (3, 15, 15)).rows
    assert [(r["name"], r["type"], r["params"]) for r in data["layers"]] == [(r.name, r.kind, r.params) for r in rows]
    first = data["layers"][0]["display"]
    assert (first["shown"], first["count"], first["hw"]) == (4, 5, [8, 8])
    pool = next(r for r in data["layers"] if r["type"] == "AvgPool2d")
    assert pool["op"]["pad"] == [0, 0] and pool["op"]["same"]  # 8 px, k3 s2: nothing before, 1 after


def test_dense_units_list_their_largest_terms_and_the_rest_adds_up(strided_net):
    net, x = strided_net, torch.rand(1, 3, 15, 15)
    data = build_page(net, x, ["a"], list("wxyz")).data()
    real = leaf_outputs(net, x)
    layer = next(r for r in data["layers"] if r["type"] == "Linear")
    op = layer["op"]
    rows = blob(data, op["terms"][0]).reshape(op["units"], 3 * op["top"] + 1)
    top = op["top"]
    values = (rows[:, top:2 * top] * rows[:, 2 * top:3 * top]).sum(1) + rows[:, -1] + blob(data, op["bias"])
    np.testing.assert_allclose(values, real[layer["name"]][0].numpy(), atol=1e-5)
    assert op["in_shape"] == [6, 2, 2]  # inputs named by map and position of the flattened maps


@pytest.mark.slow
@pytest.mark.parametrize("name", ["baseline-cifar", "lenet5-cifar", "alexnet8-cifar", "vgg16-cifar",
                                  "inception10-cifar", "resnet18-cifar", "fast-cifar"])
def test_course_networks_and_fast_cifar_pages_stay_under_10_mb_and_explain_every_conv(name):
    torch.manual_seed(0)
    net = create_model(name).eval()
    page = build_page(net, torch.rand(4, *default_input_size(name)), list("abcd"), [str(k) for k in range(10)])
    data = page.data()
    assert page.size < 10_000_000
    assert data["capped"] == {"pictures": None, "numbers": None} and page.layers == len(data["layers"])
    called = [r for r in data["layers"] if r.get("note") != "not called in forward()"]  # fast-cifar's stem: F.conv2d
    assert page.layers_pictured == len(called) and page.layers_explained >= len(called) - 2  # flatten, last Dense
    convs = [r for r in called if r["type"] == "Conv2d"]
    assert convs and all(r["op"]["kind"] == "conv" for r in convs)


@pytest.mark.slow
def test_a_resnet50_page_caps_its_layers_and_says_where():
    net = create_model("resnet50").eval()
    page = build_page(net, torch.rand(1, 3, 224, 224), ["a"], [str(k) for k in range(1000)], max_bytes=2_500_000)
    data = page.data()
    assert page.size < 3_000_000 and data["capped"]["numbers"]
    assert 0 < page.layers_explained < page.layers_pictured <= page.layers
    assert data["layers"][-1]["note"].startswith("not pictured: the page reached its size cap (max_mb) after")
    assert len(data["logits"][0]) == 1000  # the answer is always there


def test_the_receptive_field_window_is_exactly_where_the_unit_looks(strided_net):
    net = strided_net
    rows = {r.name: r for r in summarize(net, (3, 15, 15)).rows}
    for name, (c, i, j) in (("stage1.p1", (1, 2, 3)), ("stage2.c2", (0, 1, 2)), ("stage2.p2", (3, 1, 0))):
        x = torch.rand(1, 3, 15, 15, requires_grad=True)
        y = {}
        hook = net.get_submodule(name).register_forward_hook(lambda m, a, out: y.setdefault("y", out))
        net(x)
        hook.remove()
        y["y"][0, c, i, j].backward()
        rows_hit, cols_hit = x.grad[0].abs().sum(0).nonzero(as_tuple=True)
        (top, bottom), (left, right) = input_window(rows[name], (i, j))
        assert top <= rows_hit.min() and rows_hit.max() <= bottom and left <= cols_hit.min() and cols_hit.max() <= right
        assert (max(top, 0), min(bottom, 14)) == (rows_hit.min(), rows_hit.max())  # tight: no pixel of it unused


def test_story_thumbnails_cells_and_the_notebook_iframe(strided_net):
    labels, predicted = torch.tensor([0, 1, 1, 0, 1, 1, 1]), torch.tensor([0, 1, 0, 0, 1, 1, 1])
    assert pick_images(labels, 3) == [0, 1, 3]
    assert cell_examples(labels, predicted, per_cell=2) == {(0, 0): [0, 3], (1, 1): [1, 4], (1, 0): [2]}
    assert thumbnails(torch.zeros(2, 3, 96, 64, dtype=torch.uint8)).shape == (2, 3, 48, 32)
    story = Story({"accuracy": [0.5, float("nan")]}, torch.tensor([[2, 0], [1, 4]]), "val", 6 / 7,
                  {(0, 0): [0], (1, 0): [1]}, torch.zeros(2, 1, 8, 8, dtype=torch.uint8))
    page = build_page(strided_net, torch.rand(1, 3, 15, 15), ["a"], list("wxyz"), story=story)
    s = page.data()["story"]
    assert s["history"]["accuracy"] == [0.5, None] and s["cells"] == {"0,0": [0], "1,0": [1]} and len(s["thumbs"]) == 2
    frame = page._repr_html_()
    assert frame.startswith("<iframe srcdoc=\"") and "&lt;script" in frame and "<script" not in frame


def test_the_page_makes_no_request_by_construction(strided_net):
    html = build_page(strided_net, torch.rand(1, 3, 15, 15), ["</script><b>"], list("wxyz")).html
    assert "default-src 'none'" in html  # the browser refuses any fetch
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "") and "https://" not in html
    assert html.count("</script>") == 2  # an image name cannot close the data tag


def test_explainer_from_python_and_its_mistakes(digits_run, tmp_path):
    page = cnnlab.explainer(digits_run, out=tmp_path / "p.html", count=2)
    assert page.path.read_text() == page.html and page.images == 2
    data = page.data()
    assert data["story"]["confusion"] and data["story"]["history"]["val_accuracy"]
    assert [i["label"] for i in data["images"]] == [0, 1]
    from PIL import Image

    Image.fromarray(np.tile(np.arange(0, 256, 16, dtype=np.uint8), (16, 1))).save(tmp_path / "ramp.png")
    mine = cnnlab.explainer(digits_run, [tmp_path / "ramp.png", tmp_path / "missing.png"], out=tmp_path / "m.html")
    assert [(i["name"], i["label"]) for i in mine.data()["images"]] == [("ramp.png", None)]
    assert [(s.path, s.reason) for s in mine.skipped] == [(str(tmp_path / "missing.png"), "no such file")]
    with pytest.raises(CnnlabError, match="none of the 1 image"):
        cnnlab.explainer(digits_run, [tmp_path / "p.html"], out=tmp_path / "q.html")
    with pytest.raises(CnnlabError, match="above 0"):
        cnnlab.explainer(digits_run, max_mb=0)
