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

import numpy as np
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
    (["train", "baseline-cifar", "--val", "1.5"], "--val must be 'test', 'dev' or a fraction"),
    (["train", "baseline-cifar", "--optimizer", "rmsprop"], "argument --optimizer: invalid choice: 'rmsprop'"),
    (["train", "vgg16cifar"], "unknown model 'vgg16cifar'. Did you mean 'vgg16-cifar'"),
    (["train", "baseline-cifar", "--dataset", "imagenet"], "unknown dataset 'imagenet': choose one of"),
    (["train", "baseline-cifar", "--device", "tpu9"], "unknown --device 'tpu9'"),
    (["summary", "vgg16", "--input", "3x0x32"], "expected CxHxW such as 3x32x32, not '3x0x32'"),
    (["summary", "lenet5-cifar", "--input", "3x5000x5000"], "at most 64 channels and 1024 pixels a side"),
    (["summary", "baseline-cifar", "--num-classes", "100000000"], "at most 100,000 classes"),
    (["summary", "vgg16", "--input", "3x1x1"], "vgg16 cannot take 1x1 images (a feature map shrinks to nothing)"),
    (["summary", "kim-cnn", "--input", "20000"], "at most 10,000 tokens a sentence, not '20000'"),
    (["summary", "kim-cnn", "--input", "3x32x32"], "kim-cnn reads token ids: give --input as a sentence length L"),
    (["summary", "vgg16", "--input", "56"], "vgg16 reads images: give --input as CxHxW"),
    (["summary", "kim-cnn", "--model-option", "windows=3,,5"], "windows takes comma-separated values such as 3,4,5"),
    (["import-keras", "baseline-cifar", "w.h5", "--out", "o", "--input", "56"], "expected CxHxW such as 3x32x32, not '56'"),
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
    (lambda _: b"just some text, not a checkpoint\n", "is not a checkpoint or weights file"),
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


def test_eval_of_an_image_folder_run_uses_its_validation_images_by_default(tmp_path, tiny_spec, capsys):
    odd_images(tmp_path / "pictures" / "a")
    odd_images(tmp_path / "pictures" / "b")
    run = str(tmp_path / "run")
    assert cli(["train", tiny_spec, "--dataset", str(tmp_path / "pictures"), "--val", "0.25", "--epochs", "1",
                "--batch-size", "4", "--no-progress", "--run-dir", run], capsys)[0] == 0
    code, out, err = cli(["eval", run], capsys)
    assert code == 0 and f"{run}/best.pt on val (4 images): loss " in out, err
    assert "has no test split: use --split val" in fails(["eval", run, "--split", "test"], capsys)


# ---- issue 16: damaged checkpoints, hostile files, values that used to end in a traceback ----------------

def copy_run(digits_run: Path, to: Path) -> Path:
    """A private copy of the shared digits run (its checkpoints, config and history)."""
    to.mkdir()
    for name in ("best.pt", "last.pt", "config.json", "history.json", "history.csv"):
        (to / name).write_bytes((digits_run / name).read_bytes())
    return to


def flip_a_weight_bit(path: Path) -> None:
    """Flip one bit in the middle of the largest tensor record (the bytes of a weight, not a header)."""
    import zipfile

    with zipfile.ZipFile(path) as archive:
        info = max(archive.infolist(), key=lambda i: i.file_size)
    data = bytearray(path.read_bytes())
    data[info.header_offset + 30 + len(info.filename) + info.file_size // 2 + 64] ^= 0x10
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("name", ["best.pt", "last.pt"])
def test_a_flipped_bit_in_a_checkpoint_is_refused_by_eval_and_by_resume(digits_run, tmp_path, name, capsys):
    run = copy_run(digits_run, tmp_path / "run")
    flip_a_weight_bit(run / name)
    line = fails(["eval", str(run), "--which", name[:-3]], capsys)
    assert f"{run / name} is damaged (CRC mismatch in " in line and "use the other checkpoint (best.pt/last.pt)" in line
    if name == "last.pt":
        line = fails(["train", "baseline-cifar", "--epochs", "2", *QUICK[:4], "--run-dir", str(run), "--no-progress"],
                     capsys)
        assert f"{run / name} is damaged (CRC mismatch" in line


@pytest.mark.parametrize("change,words", [
    (lambda c: c["card"].pop("input_size"), "input_size is missing"),
    (lambda c: c["card"].update(input_size="32x32"), "input_size must be two positive whole numbers"),
    (lambda c: c["card"].update(model_kwargs=[1]), "model_kwargs must be a dict"),
    (lambda c: c["card"].update(classes=3), "classes must be a list of class names"),
    (lambda c: c.pop("model"), "does not hold a model's weights"),
    (lambda c: c.update(model={"w": [1, 2]}), "does not hold a model's weights"),
])
def test_a_checkpoint_with_the_marker_but_a_missing_or_ill_typed_field_is_one_line(digits_run, tmp_path, change,
                                                                                   words, capsys):
    ckpt = {k: v for k, v in load_checkpoint(digits_run / "best.pt").items() if k != "format"}
    ckpt["card"] = dict(ckpt["card"])
    change(ckpt)
    save_checkpoint(tmp_path / "odd.pt", ckpt)
    assert words in fails(["eval", str(tmp_path / "odd.pt")], capsys)


@pytest.mark.parametrize("field,value", [("epoch", "one"), ("optimizer", None), ("history", [1]),
                                         ("history", {"epoch": ["x"]}), ("partial", {"bogus": 1.0})])
def test_resuming_a_last_pt_with_a_damaged_training_state_is_one_line(digits_run, tmp_path, field, value, capsys):
    run = copy_run(digits_run, tmp_path / "run")
    ckpt = {k: v for k, v in load_checkpoint(run / "last.pt").items() if k != "format"}
    save_checkpoint(run / "last.pt", {**ckpt, field: value})
    line = fails(["train", "baseline-cifar", "--epochs", "2", *QUICK[:4], "--run-dir", str(run), "--no-progress"],
                 capsys)
    assert f"{run / 'last.pt'}" in line and ("is damaged" in line or "history inside" in line), line


def test_a_pretrained_file_that_is_text_is_one_line(tmp_path, capsys):
    (tmp_path / "weights.pth").write_text("these are not weights\n")
    line = fails(["train", "resnet18", "--pretrained", str(tmp_path / "weights.pth"), *QUICK], capsys)
    assert "weights.pth is not a checkpoint or weights file" in line


@pytest.mark.parametrize("content,words", [
    ('{"epoch": [1, 2], "loss": [0.5', "is damaged (not JSON"),
    ("[1, 2]", "is damaged (not a mapping"),
    ('{"epoch": [1], "loss": ["low"]}', "'loss' is not a list of numbers"),
    ('{"epoch": [1, 2], "loss": [0.5]}', "columns have different lengths"),
    (b"\xff\xfe\x00", "is damaged (not JSON"),
    ("{}", "holds no finished epoch yet"),
])
def test_plot_of_a_corrupt_history_is_one_line(tmp_path, content, words, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "history.json").write_bytes(content if isinstance(content, bytes) else content.encode())
    assert words in fails(["plot", str(run)], capsys)
    assert not (run / "curves.png").exists()


def onnx_with_description(digits_run: Path, tmp_path: Path, description: str) -> Path:
    import onnx

    assert main(["export", str(digits_run), "--onnx", "--out", str(tmp_path / "good.onnx")]) == 0
    proto = onnx.load(str(tmp_path / "good.onnx"))
    next(p for p in proto.metadata_props if p.key == "cnnlab").value = description
    onnx.save(proto, str(tmp_path / "odd.onnx"))
    return tmp_path / "odd.onnx"


@pytest.mark.parametrize("description,words", [
    ("{not json", "its cnnlab model description is not valid JSON"),
    ('{"model_name": "baseline-cifar"}', "num_classes is missing"),
    ('{"model_name": "x", "num_classes": 3, "in_channels": 1, "input_size": [32, 32], "classes": ["a", "b", "c"]}',
     "does not match its cnnlab description"),
])
def test_an_onnx_model_with_a_bad_description_is_one_line(digits_run, tmp_path, description, words, capsys):
    odd = onnx_with_description(digits_run, tmp_path, description)
    Image.new("L", (32, 32), 128).save(tmp_path / "img.png")
    capsys.readouterr()
    assert words in fails(["predict", "--onnx", str(odd), str(tmp_path / "img.png")], capsys)


def keras_file(path: Path, build) -> Path:
    import h5py

    with h5py.File(path, "w") as f:
        build(f)
    return path


def _legacy_without_group(f) -> None:
    f.attrs["layer_names"] = [b"conv2d"]


def _named_variable(f) -> None:
    f.create_dataset("layers/conv2d/vars/kernel", data=np.zeros((5, 5, 3, 6), np.float32))


def _external(f) -> None:
    import h5py

    f.create_group("layers/conv2d/vars")["0"] = h5py.ExternalLink("/etc/passwd", "/x")


def _declared_huge(f) -> None:
    """A compressed array that declares 2 GB of zeros and takes a few KB on disk."""
    f.create_dataset("layers/conv2d/vars/0", shape=(1 << 29,), dtype="f4", chunks=(1 << 20,), compression="gzip")


@pytest.mark.parametrize("build,words", [
    (_declared_huge, "holds 536,870,912 numbers, more than any layer has"),
    (_named_variable, "variable 'kernel' of layers/conv2d/vars is not numbered"),
    (_legacy_without_group, "layer_names names 'conv2d', but the file has no such group"),
    (_external, "it refers to another file (layers/conv2d/vars/0 → /etc/passwd)"),
])
def test_import_keras_of_a_malformed_hdf5_file_is_one_line(tmp_path, build, words, capsys):
    weights = keras_file(tmp_path / "w.weights.h5", build)
    assert words in fails(["import-keras", "baseline-cifar", str(weights), "--out", str(tmp_path / "run")], capsys)
    assert not (tmp_path / "run").exists()


def test_import_keras_never_opens_a_device(tmp_path, capsys):
    line = fails(["import-keras", "baseline-cifar", "/dev/zero", "--out", str(tmp_path / "run")], capsys)
    assert "a character device, not a regular file" in line


@pytest.mark.parametrize("argv,words", [
    (["--time-budget", "inf"], "--time-budget must be positive and finite (got inf)"),
    (["--seed", "-1", "--val", "0.2"], "--seed must be in [0, 4294967295] (got -1)"),
    (["--seed", str(2**64 + 1)], "--seed must be in [0, 4294967295]"),
    (["--resize", "100000"], "--resize must be in [1, 4096] (got 100000)"),
    (["--limit-val", "0"], "--limit-val: must be at least 1 (got 0)"),
])
def test_values_that_once_ended_in_a_traceback_are_one_line(tmp_path, argv, words, capsys):
    assert words in fails(["train", "baseline-cifar", *QUICK, "--run-dir", str(tmp_path / "run"), *argv], capsys)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("layout", ["file", "under a file"])
def test_a_run_dir_that_is_a_file_is_one_line_before_any_work(tmp_path, layout, capsys):
    (tmp_path / "taken").write_text("x")
    run = tmp_path / "taken" if layout == "file" else tmp_path / "taken" / "run"
    line = fails(["train", "baseline-cifar", *QUICK, "--run-dir", str(run)], capsys)
    assert f"--run-dir {run} " in line and "choose another --run-dir" in line
    assert "Training" not in capsys.readouterr().err


def test_an_image_folder_with_one_image_per_class_is_refused_not_trained(tmp_path, capsys):
    for name, shade in (("cats", 10), ("dogs", 200)):
        (tmp_path / "pics" / name).mkdir(parents=True)
        Image.new("RGB", (32, 32), (shade,) * 3).save(tmp_path / "pics" / name / "1.png")
    line = fails(["train", "baseline-cifar", "--dataset", str(tmp_path / "pics"), "--val", "0.2",
                  "--run-dir", str(tmp_path / "run"), "--no-progress"], capsys)
    assert "leaves class" in line and "without a training image" in line
    assert not (tmp_path / "run" / "best.pt").exists()


def test_explainer_writes_one_page_and_an_unreadable_image_is_one_line(digits_run, tmp_path, capsys):
    assert main(["explainer", str(digits_run), "--out", str(tmp_path / "p.html"), "--count", "2", "--max-maps", "3"]) == 0
    out = capsys.readouterr().out
    assert f"explainer page → {tmp_path / 'p.html'}" in out and "2 images" in out and (tmp_path / "p.html").is_file()
    bad = tmp_path / "x.png"
    bad.write_text("not a picture")
    assert main(["explainer", str(digits_run), str(bad), "--out", str(tmp_path / "q.html")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "none of the 1 image(s) could be read" in err and not (tmp_path / "q.html").exists()


def test_summary_of_a_text_model_takes_a_length_model_options_and_depth(capsys):
    """--input L, --model-option (a tuple typed from the factory), --depth and --num-classes on a sentence network."""
    code, out, err = cli(["summary", "kim-cnn", "--input", "20", "--depth", "1", "--num-classes", "3",
                          "--model-option", "windows=2,3", "--model-option", "maps=4",
                          "--model-option", "embedding_dim=8"], capsys)
    assert code == 0, err
    assert "Input: (N, 20) token ids   Output: (N, 3)" in out and "convs (ModuleList)" in out
    assert "Total params: 160,195" in out  # 20,000 x 8 embedding + (8·2·4 + 4) + (8·3·4 + 4) + (8·3 + 3)
    assert "MACs per sentence: 3,608 = " in out  # convolutions over 20 + 2·2 padded tokens (3,584), the head (24)
    assert "RF: receptive field in input tokens (all = whole sentence)" in out
