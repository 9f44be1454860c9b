"""HTML for Jupyter: the rich display (``_repr_html_``) of summaries, histories, comparisons and evaluations.

Pure functions from plain values (a Summary, a history dict, table rows, a confusion matrix) to an
HTML fragment; each class displays itself with a one-line ``_repr_html_`` that calls one of them.
Pictures are inlined as base64 PNG, so a saved notebook still shows them without the run directory.
"""
from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping, Sequence

import numpy as np

from .summary import Summary, _table_lines, format_input, input_units

STYLE = ("<style>.cnnlab table{border-collapse:collapse;margin:4px 0}"
         ".cnnlab th,.cnnlab td{border:1px solid #ccc;padding:2px 8px;text-align:right;"
         "font-variant-numeric:tabular-nums}"
         ".cnnlab th:first-child,.cnnlab td:first-child{text-align:left;white-space:pre}"
         ".cnnlab img{max-width:100%}</style>")
CONFUSION_TABLE_MAX = 20  # classes up to which the confusion matrix is an HTML table; beyond, a picture


def block(*parts: str) -> str:
    """The parts inside one styled ``<div class="cnnlab">``."""
    return f'{STYLE}<div class="cnnlab">{"".join(parts)}</div>'


def html_table(rows: Sequence[Sequence[str]]) -> str:
    """A header row and body rows of display strings as an HTML table (names left, numbers right)."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def png_img(png: bytes, alt: str) -> str:
    """An ``<img>`` carrying the PNG itself (base64)."""
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def summary_html(s: Summary) -> str:
    """The summary's table (the same cells as its text) and its totals."""
    positions, one = input_units(s)  # pixels of an image, or tokens of a sentence
    totals = [("input", format_input(s)), ("total params", f"{s.total_params:,}"),
              ("trainable params", f"{s.trainable_params:,}"), ("non-trainable params", f"{s.non_trainable_params:,}"),
              ("Keras total params", f"{s.keras_total_params:,} (with BatchNorm moving mean/variance)"),
              (f"MACs per {one}", f"{s.total_macs:,} ({s.gflops:.4f} GFLOPs)")]
    items = "".join(f"<li>{name}: {html.escape(value)}</li>" for name, value in totals)
    return block(f"<b>Model: {html.escape(s.model_name)}</b>", html_table(_table_lines(s)), f"<ul>{items}</ul>",
                 f"<small>RF: receptive field in input {positions} (all = whole {one}); Jump: input {positions} "
                 "between outputs.</small>")


def _cell(column: str, value: float) -> str:
    """One history value as the per-epoch line prints it ("" where the epoch has none)."""
    if value is None or math.isnan(value):
        return ""
    if column == "epoch":
        return str(int(value))
    if column == "lr":
        return f"{value:.3g}"
    if column == "seconds":
        return f"{value:.1f}"
    return f"{value:,.0f}" if column == "images_per_sec" else f"{value:.4f}"


def history_rows(history: Mapping[str, Sequence[float]]) -> list[list[str]]:
    """Header and one row per epoch, over the columns that hold a value in some epoch."""
    columns = [c for c, values in history.items() if any(v is not None and not math.isnan(v) for v in values)]
    epochs = len(history.get("epoch") or [])
    return [columns, *([_cell(c, history[c][i]) for c in columns] for i in range(epochs))]


def history_html(history: Mapping[str, Sequence[float]]) -> str:
    """A table per epoch and the course figure (accuracy and loss curves) inline."""
    from .plots import history_figure, png_bytes

    if not history.get("epoch"):
        return block("<b>History</b>: no epoch yet")
    return block(f"<b>History</b>: {len(history['epoch'])} epoch(s)", html_table(history_rows(history)),
                 png_img(png_bytes(history_figure(history)), "training and validation accuracy and loss"))


def report_html(rows: Sequence[Sequence[str]], settings: str, png: bytes) -> str:
    """A comparison: its shared settings, the table and the overlaid curves."""
    return (f"<p>{html.escape(settings)}.</p>{html_table(rows)}<p>MFLOPs: forward floating-point operations per "
            "image (2 per multiply-add). s/epoch and img/s: training time, averaged over epochs.</p>"
            f"{png_img(png, 'curves of every run')}")


def confusion_table(confusion: np.ndarray, classes: Sequence[str]) -> str:
    """Counts (rows: true class, columns: predicted), each cell shaded by its share of the row."""
    shares = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    head = "<th>true \\ predicted</th>" + "".join(f"<th>{html.escape(c)}</th>" for c in classes)
    body = ""
    for name, counts, row in zip(classes, confusion, shares):
        cells = "".join(f'<td style="background:rgba(31,119,180,{s:.2f});color:{"#fff" if s > 0.5 else "inherit"}">'
                        f"{int(n)}</td>" for n, s in zip(counts, row))
        body += f"<tr><th>{html.escape(name)}</th>{cells}</tr>"
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def eval_html(title: str, loss: float, accuracy: float, classes: Sequence[str], confusion: np.ndarray) -> str:
    """An evaluation: loss and accuracy, accuracy per class, and the confusion matrix."""
    totals = confusion.sum(axis=1)
    correct = np.diag(confusion)
    per_class = [["class", "accuracy", "correct", "images"]] + [
        [c, f"{k / max(n, 1):.4f}", str(int(k)), str(int(n))] for c, k, n in zip(classes, correct, totals)]
    if len(classes) <= CONFUSION_TABLE_MAX:
        matrix = confusion_table(confusion, classes)
    else:
        from .plots import confusion_figure, png_bytes

        matrix = png_img(png_bytes(confusion_figure(confusion, classes)), "row-normalised confusion matrix")
    return block(f"<p><b>{html.escape(title)}</b>: loss {loss:.4f} - accuracy {accuracy:.4f}</p>",
                 f"<details open><summary>accuracy per class</summary>{html_table(per_class)}</details>",
                 f"<details open><summary>confusion matrix</summary>{matrix}</details>")


__all__ = ["block", "confusion_table", "eval_html", "history_html", "history_rows", "html_table", "png_img",
           "report_html", "summary_html"]
