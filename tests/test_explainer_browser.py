"""The explainer page in a real browser: headless Chromium driven over the DevTools protocol (tests/cdp.py).

One browser for the module. Set CNNLAB_SCREENSHOTS=docs/images to refresh the screenshots the docs show.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

import cnnlab
from cdp import Browser, Page, find_browser
from cnnlab.cli import main
from cnnlab.explain.explainer import build_page
from cnnlab.runs.explainer import chosen_images, validation_images
from cnnlab.runs.run import load_trained
from conftest import leaf_outputs

pytestmark = pytest.mark.skipif(find_browser() is None, reason="no Chromium on PATH: `apt-get install chromium` "
                                "(.ci/run installs it)")
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def browser():
    chromium = Browser(find_browser())
    yield chromium.page
    chromium.close()


@pytest.fixture(scope="module")
def digits_page(digits_run, tmp_path_factory):
    """The README's main job's page, as `cnnlab explainer RUN --out PAGE.html` writes it."""
    out = tmp_path_factory.mktemp("explainer") / "digits.html"
    assert main(["explainer", str(digits_run), "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def digits_outputs(digits_run):
    """PyTorch's own output of every layer for the page's images."""
    trained = load_trained(digits_run)
    data, note = validation_images(trained)
    pixels, _, _, _ = chosen_images(trained, (), data, 4, note)
    return leaf_outputs(trained.model, pixels.float() / 255.0)


def shots(tmp_path: Path) -> Path:
    return Path(os.environ.get("CNNLAB_SCREENSHOTS") or tmp_path)


def opened(page: Page, path: Path) -> Page:
    page.open(path)
    assert page.wait_for("document.body.dataset.ready !== '0' && document.body.dataset.ready") == "1"
    return page


def layer_index(page: Page, name: str) -> int:
    return page.evaluate(f"Number(document.querySelector('.layer[data-name={json.dumps(name)}]').dataset.index)")


def click_unit(page: Page, layer: int, c: int, i: int = 0, j: int = 0) -> float:
    """Click unit (c, i, j) of a layer's picture like a user would; the value the one-neuron panel shows."""
    x, y = page.evaluate(f"""(() => {{
        const cv = document.querySelector('canvas[data-layer="{layer}"]'), d = cv.dataset;
        cv.scrollIntoView({{block: 'center'}});
        const L = D.layers[{layer}], r = cv.getBoundingClientRect(), s = r.width / cv.width;
        const [h, w] = L.display.type === 'maps' ? L.display.hw : [1, 1];
        const cell = +d.cell, cellh = +d.cellh, gap = +d.gap, cols = +d.cols;
        return [r.left + s * (({c} % cols) * (cell + gap) + ({j} + 0.5) * cell / w),
                r.top + s * (Math.floor({c} / cols) * (cellh + gap) + ({i} + 0.5) * cellh / h)];
    }})()""")
    page.click(x, y)
    image = page.evaluate("state.image")
    selector = f"#neuron-value[data-unit='{layer}:{c}:{i}:{j}:{image}']"
    return float(page.wait_for(f"document.querySelector({json.dumps(selector)})?.dataset.value"))


def test_the_page_loads_with_no_console_error_and_no_request(browser, digits_page, tmp_path):
    page = opened(browser, digits_page)
    assert page.problems() == []
    assert [u for u in page.requests() if not u.startswith("data:")] == [digits_page.resolve().as_uri()]
    assert digits_page.stat().st_size < 10_000_000
    page.screenshot(shots(tmp_path) / "explainer-top.png")


def test_the_layer_column_is_what_cnnlab_summary_prints(browser, digits_page, capsys):
    page = opened(browser, digits_page)
    assert main(["summary", "baseline-cifar", "--input", "1x32x32"]) == 0
    printed = capsys.readouterr().out.strip()
    assert page.evaluate("document.getElementById('summary-pre').textContent") == printed
    shown = page.evaluate("[...document.querySelectorAll('.layer[data-type]')].map(e => "
                          "[e.dataset.name, e.dataset.type, JSON.parse(e.dataset.shape), Number(e.dataset.params)])")
    rows = cnnlab.summary("baseline-cifar", input=(1, 32, 32)).rows
    assert shown == [[r.name, r.kind, list(r.outputs[0]), r.params] for r in rows]
    assert page.evaluate("document.querySelector('.layer[data-index=\"0\"] .shown').textContent") == "6 of 6 maps"


def test_selecting_another_image_changes_the_maps(browser, digits_page):
    page = opened(browser, digits_page)
    picture = "document.querySelector('canvas[data-layer=\"0\"]').toDataURL()"
    before = page.evaluate(picture)
    page.click_element(".pick[data-image='1']")
    page.wait_for("state.image === 1 && document.body.dataset.ready === '1'")
    assert page.evaluate(picture) != before
    assert page.evaluate("document.querySelector('.pick.selected').dataset.image") == "1"


@pytest.mark.parametrize("image", [0, 2])
def test_clicking_a_unit_shows_the_value_pytorch_computes(browser, digits_page, digits_outputs, image, tmp_path):
    page = opened(browser, digits_page)
    if image:
        page.click_element(f".pick[data-image='{image}']")
        page.wait_for(f"state.image === {image} && document.body.dataset.ready === '1'")
    units = {"stage1.c1": [(2, 0, 31), (5, 17, 9)], "stage1.b1": [(1, 4, 4)], "stage1.a1": [(3, 20, 11)],
             "stage1.p1": [(4, 15, 0), (0, 7, 8)], "stage1.d1": [(2, 3, 3)], "stage2.flatten1": [(200, 0, 0)],
             "stage3.f1.linear": [(17, 0, 0)], "stage3.f1.act": [(17, 0, 0)], "stage3.d2": [(5, 0, 0)],
             "stage4.f2": [(9, 0, 0)]}
    for name, picks in units.items():
        for c, i, j in picks:
            y = digits_outputs[name][image]
            expected = float(y[c, i, j] if y.dim() == 3 else y[c])
            assert click_unit(page, layer_index(page, name), c, i, j) == pytest.approx(expected, abs=TOLERANCE), name
    if image == 0:
        click_unit(page, 0, 2, 14, 16)
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(shots(tmp_path) / "explainer-neuron.png")


def test_a_spec_network_with_asymmetric_same_padding_matches_pytorch(browser, strided_net, tmp_path):
    x = torch.rand(2, 3, 15, 15)
    path = build_page(strided_net, x, ["one", "two"], list("wxyz"), max_maps=3).save(tmp_path / "strided.html").path
    real = leaf_outputs(strided_net, x)
    page = opened(browser, path)
    assert page.problems() == []
    assert click_unit(page, 0, 2, 7, 7) == pytest.approx(float(real["stage1.c1"][0, 2, 7, 7]), abs=TOLERANCE)
    assert page.evaluate("document.getElementById('rf-note').textContent") == \
        "Receptive field: rows 13…16, columns 13…16 (partly in the padding)"  # 15 px, k4 s2: 1 row above, 2 below
    for name, (c, i, j) in {"stage1.c1": (1, 0, 0), "stage1.b1": (0, 0, 7), "stage1.a1": (2, 5, 1),
                            "stage1.p1": (1, 3, 3), "stage2.c2": (2, 0, 3), "stage2.a2": (1, 3, 0),
                            "stage2.p2": (2, 1, 1), "stage4.f1.linear": (3, 0, 0), "stage5.f2": (1, 0, 0)}.items():
        y = real[name][0]
        expected = float(y[c, i, j] if y.dim() == 3 else y[c])
        assert click_unit(page, layer_index(page, name), c, i, j) == pytest.approx(expected, abs=TOLERANCE), name


def test_a_confusion_cell_lists_its_validation_images(browser, digits_page, tmp_path):
    page = opened(browser, digits_page)
    cells = page.evaluate("[...document.querySelectorAll('table.confusion td')]"
                          ".map(td => [td.dataset.cell, +td.textContent])")
    cell, count = max((c for c in cells if len(set(c[0].split(","))) == 2), key=lambda c: c[1])  # off the diagonal
    page.click_element(f"td[data-cell='{cell}']")
    assert page.wait_for("document.querySelectorAll('#gallery img').length") == min(count, 6)
    assert page.evaluate("document.querySelector('#gallery h3').textContent").endswith(
        f"{count} images" + (" (showing the first 6)" if count > 6 else ""))
    box = page.evaluate("(() => { const r = document.getElementById('story').getBoundingClientRect(); "
                        "return [r.left + scrollX, r.top + scrollY, r.width, r.height]; })()")
    page.screenshot(shots(tmp_path) / "explainer-story.png", dict(zip(("x", "y", "width", "height"), box)))


def test_a_course_resnet_page_recomputes_deep_units_through_its_blocks(browser, tmp_path):
    torch.manual_seed(0)
    net = cnnlab.create_model("resnet18-cifar").eval()
    x = torch.rand(1, 3, 32, 32)
    page_file = build_page(net, x, ["noise"], [str(k) for k in range(10)], max_maps=4).save(tmp_path / "r.html").path
    real = leaf_outputs(net, x)
    page = opened(browser, page_file)
    assert page.problems() == []
    layers = page.evaluate("D.layers.map(L => [L.name, L.type, !!L.op, L.op && (L.op.src || null)])")
    for kind in ("Conv2d", "BatchNorm2d", "ReLU"):  # the deepest of each: BN and ReLU read their input via `src`
        # the course networks' BatchNorm is KerasBatchNorm2d (Keras' moving variance): a BatchNorm2d all the same
        index, (name, _, _, _) = max((i, row) for i, row in enumerate(layers) if row[1].endswith(kind) and row[2])
        y = real[name][0]
        c, i, j = 1, y.shape[1] - 1, 0
        assert click_unit(page, index, c, i, j) == pytest.approx(float(y[c, i, j]), abs=TOLERANCE), name
    assert any(row[3] for row in layers if row[1].endswith("BatchNorm2d"))


def test_grouped_depthwise_and_torch_layers_match_pytorch(browser, tmp_path):
    from torch import nn

    from cnnlab import layers as L

    torch.manual_seed(1)
    net = nn.Sequential(L.SeparableConv2d(3, 4, 3, stride=2, padding="same"), nn.LeakyReLU(0.1),
                        nn.Conv2d(4, 6, 3, padding=1, groups=2), nn.GELU(), nn.MaxPool2d(3, 2, padding=1),
                        nn.Sigmoid(), nn.AvgPool2d(2, padding=1), L.GlobalPool2d(), nn.Linear(6, 3)).eval()
    x = torch.rand(1, 3, 10, 10)
    path = build_page(net, x, ["one"], list("abc")).save(tmp_path / "grouped.html").path
    real = leaf_outputs(net, x)
    page = opened(browser, path)
    assert page.problems() == []
    for name, (c, i, j) in {"0.depthwise": (2, 4, 0), "0.pointwise": (3, 0, 4), "1": (1, 2, 2), "2": (5, 4, 1),
                            "3": (4, 0, 0), "4": (3, 2, 2), "5": (0, 1, 0), "6": (2, 0, 1), "7": (5, 0, 0),
                            "8": (2, 0, 0)}.items():
        y = real[name][0]
        expected = float(y[c, i, j] if y.dim() == 3 else y[c])
        assert click_unit(page, layer_index(page, name), c, i, j) == pytest.approx(expected, abs=TOLERANCE), name
