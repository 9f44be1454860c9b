"""The notebook's rich display: summaries, histories, evaluations and comparisons as HTML."""
from __future__ import annotations

import html
import re

import numpy as np
import torch
from torch import nn

from cnnlab import layers as L
from cnnlab.engine.history import History
from cnnlab.explain.notebook import confusion_table, eval_html, history_rows, report_html
from cnnlab.explain.summary import summarize
from cnnlab.runs.run import EvalResult


def cells(fragment: str) -> list[list[str]]:
    """The text of every table row's cells (header and body)."""
    rows = re.findall(r"<tr>(.*?)</tr>", fragment)
    return [[html.unescape(c) for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", r)] for r in rows]


def test_a_summary_shows_the_same_rows_as_its_text():
    model = nn.Sequential(L.Conv2d(1, 4, 3, padding="same"), nn.ReLU(), L.GlobalPool2d(), nn.Linear(4, 2))
    s = summarize(model, (1, 8, 8))
    page = s._repr_html_()
    table = cells(page)
    assert table[0][:3] == ["Layer (type)", "Output Shape", "Param #"]
    assert table[1][:3] == ["0 (Conv2d)", "(N, 4, 8, 8)", "40"] and len(table) == 1 + len(s.rows)
    assert "total params: 50" in page and "MACs per image" in page


def test_a_history_shows_a_row_per_epoch_and_its_curves():
    h = History()
    h.append(epoch=1, loss=1.5, accuracy=0.25, lr=1e-3, seconds=2.0, images_per_sec=500)
    h.append(epoch=2, loss=1.0, accuracy=0.5, val_loss=0.9, val_accuracy=0.625, lr=1e-3, seconds=2.0,
             images_per_sec=510)
    rows = history_rows(h.to_dict())
    assert rows[0] == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds", "images_per_sec"]
    assert rows[1:] == [["1", "1.5000", "0.2500", "", "", "0.001", "2.0", "500"],
                        ["2", "1.0000", "0.5000", "0.9000", "0.6250", "0.001", "2.0", "510"]]
    page = h._repr_html_()
    assert cells(page)[1:] == rows[1:] and 'src="data:image/png;base64,' in page
    assert "no epoch yet" in History()._repr_html_()


def test_an_evaluation_shows_accuracy_per_class_and_the_confusion_matrix():
    confusion = torch.tensor([[3, 1], [0, 4]])
    result = EvalResult(0.25, 0.875, ["cat", "dog"], confusion, "run/best.pt", "test", 8)
    page = result._repr_html_()
    assert "run/best.pt on test (8 images)</b>: loss 0.2500 - accuracy 0.8750" in page
    table = cells(page)
    assert ["cat", "0.7500", "3", "4"] in table and ["dog", "1.0000", "4", "4"] in table
    assert ["true \\ predicted", "cat", "dog"] in table and ["cat", "3", "1"] in table
    assert "rgba(31,119,180,0.75)" in confusion_table(confusion.numpy(), ["cat", "dog"])  # shaded by row share


def test_many_classes_get_the_confusion_picture_instead_of_a_table():
    k = 30
    page = eval_html("big", 1.0, 0.5, [f"c{i}" for i in range(k)], np.eye(k, dtype=np.int64))
    assert "true \\ predicted" not in page and "data:image/png;base64," in page


def test_a_comparison_shows_settings_table_and_curves():
    rows = [["model", "params"], ["net", "1,234"]]
    page = report_html(rows, "dataset digits", b"\x89PNG")
    assert "<p>dataset digits.</p>" in page and cells(page) == rows and "base64,iVBORw==" in page


def test_a_sentence_network_summary_shows_tokens_not_pixels():
    from cnnlab.models import create_model

    s = summarize(create_model("kim-cnn", vocab_size=30, embedding_dim=8, maps=2), (12,))
    page = s._repr_html_()
    table = cells(page)
    assert table[1][:2] == ["embed (Embedding)", "(N, 12 tokens, 8 ch)"] and len(table) == 1 + len(s.rows)
    assert "input: (N, 12) token ids" in page and "MACs per sentence" in page
    assert "receptive field in input tokens (all = whole sentence)" in page and "pixels" not in page
