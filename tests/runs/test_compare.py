"""cnnlab compare: trains each network, reuses finished runs, resumes on a re-run, writes the report."""
import base64
import math
import re

import cnnlab
from cnnlab.cli import main
from cnnlab.runs.compare import RunStats, markdown_table, table_rows, text_table
from cnnlab.engine.history import History

TRAIN = ["--limit-train", "48", "--limit-val", "32", "--batch-size", "16", "--no-progress"]


def test_compare_trains_reuses_resumes_and_reports(tmp_path, capsys):
    runs, out = tmp_path / "runs", tmp_path / "report"
    args = ["compare", "baseline-cifar", "lenet5-cifar", "--run-dir", str(runs), "--out", str(out), *TRAIN]
    assert main([*args, "--epochs", "1"]) == 0
    first = capsys.readouterr()
    assert [line.split()[0] for line in first.out.splitlines()[:3]] == ["model", "baseline-cifar", "lenet5-cifar"]
    assert {p.name for p in runs.iterdir()} == {"baseline-cifar-digits", "lenet5-cifar-digits"}

    assert main([*args, "--epochs", "1"]) == 0
    assert capsys.readouterr().err.count("finished run in") == 2

    assert main([*args, "--epochs", "1", "--limit-train", "40"]) == 2  # another experiment: not silently reused
    assert "different limit_train: pass --fresh" in capsys.readouterr().err

    assert main([*args, "--epochs", "2"]) == 0  # each run continues from its epoch 1
    assert capsys.readouterr().err.count("Resuming") == 2
    assert all(len(History.load(runs / d)) == 2 for d in ("baseline-cifar-digits", "lenet5-cifar-digits"))

    md = (out / "report.md").read_text()
    assert "| model | params | MFLOPs |" in md and "| baseline-cifar | 198,194 |" in md and "(curves.png)" in md
    page = (out / "report.html").read_text()
    png = base64.b64decode(re.search(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page).group(1))
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png == (out / "curves.png").read_bytes()
    assert "<td>lenet5-cifar</td>" in page and "src=\"curves.png\"" not in page

    report = cnnlab.compare(["baseline-cifar", "lenet5-cifar"], out=tmp_path / "errors", run_dir=runs, curves="error",
                            progress=False, epochs=2, limit_train=48, limit_val=32, batch_size=16)  # both reused
    assert "![training and validation error of every run](curves.png)" in report.markdown.read_text()
    assert "<td>lenet5-cifar</td>" in report._repr_html_() and report.curves.read_bytes()[:4] == b"\x89PNG"


def test_table_formats_missing_values_and_aligns():
    stats = RunStats("net", "runs/net", 1234, 5_000_000, 1, 0.5, 0.75, math.nan, math.nan, math.nan, 2.0, 100.0)
    rows = table_rows([stats])
    assert rows[1] == ["net", "1,234", "5.0", "1", "0.5000", "0.7500", "-", "-", "-", "2.0", "100"]
    assert markdown_table(rows).splitlines()[1].startswith("|:---|---:|")
    lines = text_table(rows).splitlines()
    assert len({len(line) for line in lines}) == 1
