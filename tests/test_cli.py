"""Bad and hostile input, end to end through `cnnlab.cli.main`: exit code 2, one `cnnlab: error:` line,
no traceback, nothing executed, nothing lost. The unit-level versions live in test_data.py,
test_engine.py and test_spec.py; these check that the command line reports them the same way."""
from __future__ import annotations

import dataclasses
import errno
import io
import os
import pickle
import sys
import tarfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from cnnlab.cli import main
from cnnlab.data import cifar
from cnnlab.engine import load_checkpoint, save_checkpoint
from conftest import cifar10_members, md5_of, write_folder, write_tar_gz

TINY_SPEC = "input: 1x32x32\nC(4,3,s2,same) B A(relu) P(max,2,s2)\nF\nDense(classes)\n"
QUICK = ["--limit-train", "32", "--limit-val", "8", "--batch-size", "16", "--no-progress"]


@pytest.fixture
def tiny_spec(tmp_path) -> str:
    path = tmp_path / "tiny.cbapd"
    path.write_text(TINY_SPEC)
    return str(path)


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    """Run every command inside tmp_path, so a default runs/ directory could only appear there."""
    monkeypatch.chdir(tmp_path)


def cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `cnnlab ARGV` run in this process."""
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def fails(argv: list[str], capsys) -> str:
    """The one error line of a command that must fail cleanly."""
    code, _, err = cli(argv, capsys)
    assert code == 2 and "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("cnnlab: error:")]
    assert len(lines) == 1, err
    return lines[0]


# ---- invalid command lines ---------------------------------------------------------------------

@pytest.mark.parametrize("argv,words", [
    (["train", "baseline-cifar", "--epochs", "-1"], "--epochs: must be at least 1 (got -1) (see `cnnlab train --help`)"),
    (["train", "baseline-cifar", "--epochs", "two"], "--epochs: expected a whole number, not 'two'"),
    (["train", "baseline-cifar", "--batch-size", "0"], "--batch-size: must be at least 1"),
    (["train", "baseline-cifar", "--lr", "-0.1"], "--lr must be positive"),
    (["train", "baseline-cifar", "--lr", "1e39"], "--lr must be positive and finite in float32"),
    (["train", "baseline-cifar", "--lr", "nan"], "--lr must be positive"),
    (["train", "baseline-cifar", "--momentum", "1.5"], "--momentum must be in [0, 1)"),
    (["train", "baseline-cifar", "--warmup-epochs", "-2"], "--warmup-epochs must be >= 0"),
    (["train", "baseline-cifar", "--checkpoint-every", "-3"], "--checkpoint-every must be >= 0"),
    (["train", "baseline-cifar", "--val", "1.5"], "--val must be 'test' or a fraction"),
    (["train", "baseline-cifar", "--optimizer", "rmsprop"], "argument --optimizer: invalid choice: 'rmsprop'"),
    (["train", "vgg16cifar"], "unknown model 'vgg16cifar'. Did you mean 'vgg16-cifar'"),
    (["train", "baseline-cifar", "--dataset", "imagenet"], "unknown dataset 'imagenet': choose one of"),
    (["train", "baseline-cifar", "--device", "tpu9"], "unknown --device 'tpu9'"),
    (["summary", "vgg16", "--input", "3x0x32"], "expected CxHxW such as 3x32x32, not '3x0x32'"),
    (["models", "zzz*"], "no model matches 'zzz*'"),
    (["eval", "no/such/run"], "no run directory or checkpoint at no/such/run"),
    (["bogus"], "invalid choice: 'bogus'"),
    ([], "the following arguments are required: COMMAND"),
])
def test_invalid_values_are_one_line(argv, words, capsys):
    assert words in fails(argv, capsys)
    assert not Path("runs").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_asking_for_a_missing_gpu_is_one_line(capsys):
    assert "--device cuda needs a CUDA GPU" in fails(["train", "baseline-cifar", "--device", "cuda"], capsys)


@pytest.mark.parametrize("text,words", [
    (b"input: 1x32x32\nC(4,3,same) Q(2)\nF\nDense(classes)\n", ":2:13: unknown layer 'Q'"),
    (b"input: 1x32x32\nC(4,3\nF\n", ":2:2: unbalanced '('"),
    (b"input: 1x32x32\nC(0,3) F Dense(classes)\n", ":2:3: C filters must be a whole number >= 1"),
    (b"", ":1:1: the spec has no layers"),
    (b"\xff\xfe garbage", "cannot read spec file"),
])
def test_malformed_spec_files_are_one_line_with_the_position(tmp_path, text, words, capsys):
    spec = tmp_path / "bad.cbapd"
    spec.write_bytes(text)
    for argv in (["train", str(spec), *QUICK], ["summary", str(spec)]):
        assert words in fails(argv, capsys)


# ---- checkpoints: code, damage, another architecture ---------------------------------------------

class Payload:
    """Unpickling this runs a shell command (it would create the marker file)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_checkpoint_crafted_to_run_code_is_refused_not_executed(tmp_path, capsys):
    marker = tmp_path / "pwned"
    torch.save({"format": "cnnlab-checkpoint-v1", "model_name": "baseline-cifar", "x": Payload(marker)},
               tmp_path / "evil.pt")
    for argv in (["eval", str(tmp_path / "evil.pt")], ["predict", str(tmp_path / "evil.pt"), str(tmp_path)]):
        assert "refusing to load" in fails(argv, capsys)
    assert not marker.exists()


@pytest.mark.parametrize("damage,words", [
    (lambda b: b[: len(b) // 2], "corrupt or truncated"),
    (lambda b: b[:100] + bytes(len(b) - 100), "corrupt or truncated"),
    (lambda _: b"just some text, not a checkpoint\n", "corrupt or truncated"),
])
def test_damaged_checkpoints_are_one_line(digits_run, tmp_path, damage, words, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(damage((digits_run / "best.pt").read_bytes()))
    assert words in fails(["eval", str(bad)], capsys)


@pytest.mark.parametrize("change", [{"model_name": "lenet5-cifar"}, {"num_classes": 5, "classes": list("abcde")}])
def test_a_checkpoint_whose_tensors_do_not_fit_is_one_line(digits_run, tmp_path, change, capsys):
    ckpt = load_checkpoint(digits_run / "best.pt")
    card = {**ckpt["card"], **change}
    save_checkpoint(tmp_path / "other.pt", {**{k: v for k, v in ckpt.items() if k != "format"}, "card": card})
    line = fails(["eval", str(tmp_path / "other.pt")], capsys)
    assert "does not fit this model" in line and "another architecture or class count" in line


def test_resuming_a_run_directory_of_another_model_is_refused(digits_run, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.pt").write_bytes((digits_run / "last.pt").read_bytes())
    line = fails(["train", "lenet5-cifar", "--run-dir", str(run), "--epochs", "2", *QUICK[:4]], capsys)
    assert "holds a run with a different model" in line and "--fresh" in line


# ---- datasets: damaged, forged and hostile files -------------------------------------------------

def train_cifar(data_dir: Path) -> list[str]:
    return ["train", "baseline-cifar", "--dataset", "cifar10", "--data-dir", str(data_dir), *QUICK]


@pytest.fixture
def cifar_dir(tmp_path) -> Path:
    """An extracted fake CIFAR-10 in the official layout."""
    files, _ = cifar10_members(seed=5)
    write_folder(tmp_path / "data" / "cifar-10-batches-py", files)
    return tmp_path / "data"


def test_a_truncated_cifar_batch_is_one_line(cifar_dir, capsys):
    batch = cifar_dir / "cifar-10-batches-py" / "data_batch_1"
    batch.write_bytes(batch.read_bytes()[:700])
    assert "data_batch_1: it is truncated or corrupt" in fails(train_cifar(cifar_dir), capsys)


def test_a_cifar_batch_crafted_to_run_code_is_refused_not_executed(cifar_dir, tmp_path, capsys):
    marker = tmp_path / "pwned"
    (cifar_dir / "cifar-10-batches-py" / "data_batch_2").write_bytes(pickle.dumps(Payload(marker)))
    assert "it contains code (GLOBAL" in fails(train_cifar(cifar_dir), capsys)
    assert not marker.exists()


def test_an_archive_with_the_wrong_checksum_is_moved_aside(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    (data / "cifar-10-python.tar.gz").write_bytes(b"\x1f\x8b not the real archive")
    assert "is corrupt (md5 differs" in fails(train_cifar(data), capsys)
    assert sorted(os.listdir(data)) == ["cifar-10-python.tar.gz.corrupt"]


def forge(monkeypatch, archive: Path) -> None:
    """Make an archive pass the checksum, as a tampered mirror with a tampered checksum would."""
    monkeypatch.setitem(cifar.SOURCES, "cifar10", dataclasses.replace(cifar.SOURCES["cifar10"], md5=md5_of(archive)))


def test_a_truncated_archive_extracts_nothing(tmp_path, monkeypatch, capsys):
    files, _ = cifar10_members(seed=6)
    (tmp_path / "data").mkdir()
    archive = write_tar_gz(tmp_path / "data" / "cifar-10-python.tar.gz", "cifar-10-batches-py", files)
    archive.write_bytes(archive.read_bytes()[:-900])
    forge(monkeypatch, archive)
    assert "it is truncated or corrupt" in fails(train_cifar(tmp_path / "data"), capsys)
    assert os.listdir(tmp_path / "data") == ["cifar-10-python.tar.gz"]


@pytest.mark.parametrize("name,kind", [("../escaped.txt", tarfile.REGTYPE), ("/tmp/absolute.txt", tarfile.REGTYPE),
                                       ("cifar-10-batches-py/link", tarfile.SYMTYPE)])
def test_an_archive_whose_paths_escape_is_refused(tmp_path, monkeypatch, name, kind, capsys):
    archive = tmp_path / "data" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tf:
        member = tarfile.TarInfo(name)
        member.type, member.size, member.linkname = kind, 0, "../../outside"
        tf.addfile(member, io.BytesIO(b""))
    forge(monkeypatch, archive)
    assert "refusing to extract" in fails(train_cifar(tmp_path / "data"), capsys)
    assert os.listdir(tmp_path / "data") == ["cifar-10-python.tar.gz"] and not (tmp_path / "escaped.txt").exists()


# ---- image folders and image files ----------------------------------------------------------------

def odd_images(folder: Path) -> None:
    """Images in every awkward mode, size and container a user might have, plus broken files."""
    folder.mkdir(parents=True, exist_ok=True)
    Image.new("CMYK", (40, 30), (0, 80, 160, 0)).save(folder / "cmyk.jpg")
    Image.new("I;16", (17, 5), 40_000).save(folder / "deep.png")
    Image.new("1", (64, 64), 1).save(folder / "bilevel.bmp")
    Image.new("P", (9, 9), 3).save(folder / "palette.gif", transparency=3)
    Image.new("LA", (1, 1), (200, 100)).save(folder / "tiny.png")
    Image.new("RGBA", (300, 7), (10, 20, 30, 40)).save(folder / "wide.webp")
    Image.new("RGB", (32, 32), (1, 2, 3)).save(folder / "really-a-jpeg.png", format="JPEG")
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.jpg").write_text("not an image")
    good = folder / "cmyk.jpg"
    (folder / "cut.jpg").write_bytes(good.read_bytes()[:60])


def test_an_image_folder_with_odd_files_and_non_utf8_names_trains(tmp_path, tiny_spec, capsys, caplog):
    root = tmp_path / "pictures"
    odd_images(root / os.fsdecode(b"caf\xe9"))
    odd_images(root / "two" / os.fsdecode(b"\xff\xfe-nested"))
    (root / "empty-class").mkdir()
    code, out, err = cli(["train", tiny_spec, "--dataset", str(root), "--val", "0.25", "--epochs", "1",
                          "--batch-size", "4", "--no-progress", "--run-dir", str(tmp_path / "run")], capsys)
    assert code == 0 and "Traceback" not in err, err
    assert "10 train / 4 validation images, 2 classes" in err, err  # 14 readable of 20
    skipped = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipped")]
    assert len(skipped) == 7 and "class folder has no images" in skipped[0] and "caf\ufffd" in skipped[1]


@pytest.mark.parametrize("layout", ["nothing", "empty class folders", "only broken files"])
def test_an_image_folder_without_a_readable_image_is_one_line(tmp_path, layout, capsys):
    root = tmp_path / "pictures"
    root.mkdir()
    if layout != "nothing":
        (root / "a").mkdir()
        (root / "b").mkdir()
    if layout == "only broken files":
        (root / "a" / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
        (root / "b" / "y.jpg").write_bytes(b"")
    assert "no readable images in" in fails(["train", "baseline-cifar", "--dataset", str(root), "--val", "0.2"], capsys)


def test_predict_reads_every_mode_size_and_container_and_skips_broken_files(digits_run, tmp_path, capsys):
    odd_images(tmp_path / "in")
    code, out, err = cli(["predict", str(digits_run), str(tmp_path / "in")], capsys)
    assert code == 0 and "Traceback" not in err, err
    assert len(out.splitlines()) == 7
    assert all(name in err for name in ("empty.png", "text.jpg", "cut.jpg"))


def test_non_utf8_paths_print_even_with_a_strict_locale(tmp_path, tiny_spec, monkeypatch, capsys):
    run = tmp_path / os.fsdecode(b"run-\xff")
    strict = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict")
    monkeypatch.setattr(sys, "stdout", strict)
    code, _, err = cli(["train", tiny_spec, "--epochs", "1", *QUICK, "--run-dir", str(run)], capsys)
    assert code == 0 and "Traceback" not in err, err
    strict.flush()
    assert b"Run directory: " in strict.buffer.getvalue() and (run / "last.pt").exists()


# ---- a run directory that cannot be written ---------------------------------------------------------

def test_a_read_only_disk_while_saving_is_one_line_and_keeps_the_previous_checkpoint(tmp_path, tiny_spec, monkeypatch,
                                                                                     capsys):
    """Simulated with a failing rename (root ignores permissions; test_reliability uses chattr +i and RLIMIT_FSIZE)."""
    spec, run = tiny_spec, tmp_path / "run"
    assert cli(["train", spec, "--epochs", "1", *QUICK, "--run-dir", str(run)], capsys)[0] == 0
    before = (run / "last.pt").read_bytes()

    def read_only(*_args, **_kw):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(os, "replace", read_only)
    line = fails(["train", spec, "--epochs", "2", *QUICK, "--run-dir", str(run)], capsys)
    assert "Read-only file system; the previous version (if any) is intact" in line
    assert (run / "last.pt").read_bytes() == before and not list(run.glob(".*.tmp"))


def test_explainer_writes_one_page_and_an_unreadable_image_is_one_line(digits_run, tmp_path, capsys):
    assert main(["explainer", str(digits_run), "--out", str(tmp_path / "p.html"), "--count", "2", "--max-maps", "3"]) == 0
    out = capsys.readouterr().out
    assert f"explainer page → {tmp_path / 'p.html'}" in out and "2 images" in out and (tmp_path / "p.html").is_file()
    bad = tmp_path / "x.png"
    bad.write_text("not a picture")
    assert main(["explainer", str(digits_run), str(bad), "--out", str(tmp_path / "q.html")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "none of the 1 image(s) could be read" in err and not (tmp_path / "q.html").exists()
