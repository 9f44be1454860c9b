"""ONNX export: agrees with PyTorch to 1e-4, carries the class names, predicts through onnxruntime."""
import sys

import pytest
import torch

import cnnlab
from cnnlab.cli import main
from cnnlab.runs.card import RunCard
from cnnlab.runs.export import export_onnx, onnx_bytes, onnx_max_difference
from cnnlab.runs.predict import ONNX_META_KEY, onnx_predictor, predict_files, torch_predictor
from cnnlab.runs.run import build_model
from cnnlab.errors import CnnlabError
from cnnlab.models.transfer import transfer_meta


def test_export_then_predict_with_onnxruntime_agrees_with_pytorch(digits_run, tmp_path, capsys):
    out = tmp_path / "model.onnx"
    assert main(["export", str(digits_run), "--onnx", "--out", str(out)]) == 0
    assert f"ONNX model → {out}" in capsys.readouterr().out
    onnx_logits, spec = onnx_predictor(out)
    torch_logits, torch_spec = torch_predictor(digits_run)
    assert spec == torch_spec
    x = torch.rand(5, 1, 32, 32)
    assert (onnx_logits(x) - torch_logits(x)).abs().max() < 1e-4
    from test_predict import write_digits

    images = write_digits(tmp_path / "img", 2)
    assert main(["predict", "--onnx", str(out), *map(str, images), "--top-k", "2"]) == 0
    onnx_rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    torch_rows = [[p.path, *[v for name, prob in p.top for v in (name, prob)]]
                  for p in predict_files(torch_logits, torch_spec, images, k=2)[0]]
    for got, want in zip(onnx_rows, torch_rows, strict=True):
        assert got[0] == want[0] and got[1::2] == want[1::2]
        assert [float(v) for v in got[2::2]] == pytest.approx(want[2::2], abs=1e-3)


def test_transfer_model_exports_within_tolerance(tmp_path):
    card = RunCard("resnet18", 4, 3, (32, 32), tuple("abcd"),
                   transfer=transfer_meta("resnet18", "imagenet", [8], "max", "backbone"))
    model = build_model(card).eval()
    path = export_onnx(model, card, tmp_path / "t.onnx")
    assert onnx_max_difference(path, model, card) < 1e-4


def test_onnx_file_without_description_and_missing_extra(tmp_path, monkeypatch):
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    raw = tmp_path / "raw.onnx"
    raw.write_bytes(onnx_bytes(model, RunCard("raw", 2, 1, (2, 2), ("a", "b"))))
    with pytest.raises(CnnlabError, match="cnnlab export RUN_DIR --onnx"):
        onnx_predictor(raw)
    with pytest.raises(CnnlabError, match="no ONNX model"):
        onnx_predictor(tmp_path / "absent.onnx")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(CnnlabError, match=r"pip install 'cnnlab\[onnx\]'"):
        onnx_predictor(raw)
    with pytest.raises(CnnlabError, match=r"pip install 'cnnlab\[onnx\]'"):
        export_onnx(model, RunCard("raw", 2, 1, (2, 2), ("a", "b")), tmp_path / "x.onnx")


def test_an_onnx_model_whose_padding_arithmetic_is_damaged_is_refused_before_it_runs(digits_run, tmp_path):
    """Fuzzed constants in the TF-"same" padding arithmetic once made onnxruntime allocate or compute for minutes;
    ONNX's shape inference (constants propagated) now judges the model before it runs."""
    import onnx
    from onnx import numpy_helper

    good = tmp_path / "good.onnx"
    cnnlab.export(digits_run, format="onnx", out=good)
    proto = onnx.load(str(good))
    constants = [n.attribute[0].t for n in proto.graph.node if n.op_type == "Constant"]
    value = next(t for t in constants if numpy_helper.to_array(t).dtype.kind == "i" and numpy_helper.to_array(t).any())
    value.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(value) * 3000, value.name))
    onnx.save(proto, str(tmp_path / "bad.onnx"))
    with pytest.raises(CnnlabError, match=r"bad.onnx: ONNX cannot work out its tensors' shapes .*export it again"):
        onnx_predictor(tmp_path / "bad.onnx")
    onnx_predictor(good)


def test_an_onnx_model_whose_metadata_is_not_utf8_is_one_line(digits_run, tmp_path):
    """A fuzzed byte in the cnnlab description once escaped as UnicodeDecodeError from onnxruntime."""
    good = tmp_path / "good.onnx"
    cnnlab.export(digits_run, format="onnx", out=good)
    data = good.read_bytes()
    start = data.index(b"{", data.rindex(ONNX_META_KEY.encode()))  # the value of the metadata entry
    (tmp_path / "bad.onnx").write_bytes(data[:start] + b"\x80" + data[start + 1:])
    with pytest.raises(CnnlabError, match=r"bad.onnx: its metadata is damaged \(not UTF-8 text\)"):
        onnx_predictor(tmp_path / "bad.onnx")


def test_an_onnx_model_that_fails_inside_onnxruntime_is_one_line(digits_run, tmp_path):
    """A fuzzed weight shape once escaped from session.run as onnxruntime's InvalidArgument (Gemm mismatch)."""
    model = tmp_path / "m.onnx"
    cnnlab.export(digits_run, format="onnx", out=model)
    logits_of, _ = onnx_predictor(model)
    with pytest.raises(CnnlabError, match=r"m.onnx failed on a 1x16x16 input \(.*\): it is damaged or not the network"):
        logits_of(torch.rand(2, 1, 16, 16))
