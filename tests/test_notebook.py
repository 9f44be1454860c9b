"""docs/tour.ipynb runs from top to bottom in a real Jupyter kernel, and shows what it promises."""
from __future__ import annotations

import os
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

import cnnlab

TOUR = Path(__file__).resolve().parents[1] / "docs" / "tour.ipynb"


def outputs(cell) -> list[dict]:
    return cell.get("outputs", [])


def mime(cell, kind: str) -> str:
    """The concatenated ``kind`` (text/html, image/png …) outputs of a code cell."""
    return "".join(o.get("data", {}).get(kind, "") for o in outputs(cell))


def stream(cell) -> str:
    return "".join(o.get("text", "") for o in outputs(cell) if o.get("output_type") == "stream")


def code_cell(nb, starts: str):
    """The code cell whose source starts with ``starts``."""
    return next(c for c in nb.cells if c.cell_type == "code" and c.source.startswith(starts))


@pytest.fixture(scope="module")
def executed(tmp_path_factory) -> nbformat.NotebookNode:
    nb = nbformat.read(TOUR, as_version=4)
    assert all(not outputs(c) for c in nb.cells), "commit docs/tour.ipynb with its outputs stripped"
    work = tmp_path_factory.mktemp("tour")
    source = str(Path(cnnlab.__file__).resolve().parents[1])  # the kernel imports the cnnlab under test
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH")) if p))
        NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(work)}}).execute()
    nb.metadata["work"] = str(work)
    return nb


def test_the_tour_runs_without_error_and_shows_every_step(executed):
    assert all(o.get("output_type") != "error" for c in executed.cells for o in outputs(c))
    assert mime(code_cell(executed, 'cnnlab.show("digits"'), "image/png")
    assert "<b>Model: SpecNet</b>" in mime(code_cell(executed, "from cnnlab.explain import summarize"), "text/html")
    assert "ceil(32 / 1) = 32" in stream(code_cell(executed, "from cnnlab.explain import compare_kernels"))
    history = mime(code_cell(executed, "from pathlib import Path"), "text/html")
    assert history.count("<tr>") == 1 + 3  # the header and three epochs
    assert mime(code_cell(executed, 'cnnlab.plot("runs/tour")'), "image/png")
    evaluation = mime(code_cell(executed, 'cnnlab.evaluate("runs/tour")'), "text/html")
    assert "on test (360 images)" in evaluation and "true \\ predicted" in evaluation
    assert re.search(r"digit\.png \d: 0\.\d{3}", stream(code_cell(executed, "from PIL import Image")))
    assert mime(code_cell(executed, 'cnnlab.visualize("runs/tour"'), "text/html").count("<img") == 2
    assert "<td>lenet5-cifar</td>" in mime(code_cell(executed, "cnnlab.compare("), "text/html")


def test_training_in_the_notebook_draws_a_widget_and_writes_the_run(executed):
    train = code_cell(executed, "from pathlib import Path")
    widgets = [o for o in outputs(train) if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert len(widgets) == 3  # one progress bar per epoch
    assert stream(train).count("saved best.pt") >= 1 and "\r" not in stream(train)
    assert (Path(executed.metadata["work"]) / "runs" / "tour" / "best.pt").is_file()
