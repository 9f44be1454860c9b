"""Fuzzing: hostile command lines and damaged files, through the entry points a user has.

Two families, both driven by hypothesis:

- **command lines**: every command's arguments read from the real parser (``cli.build_parser``), with
  values of every type (huge, negative, NaN, inf, empty, unicode, hex, paths that are files, folders,
  missing, under a file, FIFOs, symlink loops, non-UTF-8 or too long), run through ``cnnlab.cli.main``
  in this process. Where a valid configuration would start a training, the body of the run
  (``runs.run._train_locked``: data, model, fit) is replaced by a stub, so each case is fast while the
  option checks, the run-directory lock and every other command run for real;
- **files**: every kind cnnlab reads (CIFAR batch, IDX, image, checkpoint, history.json, config.json,
  CBAPD spec, Keras HDF5, ONNX, tar/zip archive), made from a valid sample and damaged by truncation at
  every length class, bit flips, overwritten or inserted bytes, random bytes, another kind's bytes, or
  (for JSON) values of the wrong type, then read through the public entry point that reads it.

Every case must end without a traceback: the only exception allowed is CnnlabError, and ``main``
returns 0 or 2 (argparse's usage errors are 2 as well). Every case runs under a deadline (SIGALRM:
a hang fails the case instead of the suite) and must write nothing outside its temporary directory.
No case reaches the network: downloads meet a refusing ``urlopen`` and an offline torch hub.

``CNNLAB_FUZZ_EXAMPLES=N`` sets the examples per test (benchmarks/fuzz.py runs ten thousand cases and
writes the outcome counts given by ``CNNLAB_FUZZ_REPORT=PATH``).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gzip
import hashlib
import io
import json
import os
import shutil
import signal
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections import Counter, defaultdict
from pathlib import Path
from typing import Callable, Iterator
from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from cnnlab import cli
from cnnlab.data import cifar, load_dataset, mnist
from cnnlab.engine.history import History
from cnnlab.errors import CnnlabError
from cnnlab.runs import run as run_module
from cnnlab.runs.config import RunConfig
from conftest import cifar10_members, idx_bytes

h5py = pytest.importorskip("h5py")
pytest.importorskip("onnxruntime")

EXAMPLES = int(os.environ.get("CNNLAB_FUZZ_EXAMPLES", "0"))
CASE_SECONDS = 60.0  # per case: generous for a busy 2-core machine, finite for a hang
TINY_SPEC = "name: tiny\ninput: 1x32x32\nC(4,3,s2,same) B A(relu) P(max,2,s2) D(0.2)\nF\nDense(classes)\n"
SAMPLE_RUN = ["--dataset", "digits", "--limit-train", "32", "--limit-val", "16", "--batch-size", "16",
              "--epochs", "1", "--seed", "3", "--no-progress"]
OUTCOMES: defaultdict[str, Counter] = defaultdict(Counter)  # test → outcome → cases (for benchmarks/fuzz.py)


def fuzz_settings(default: int) -> settings:
    """``default`` examples (CNNLAB_FUZZ_EXAMPLES overrides), no hypothesis deadline (ours is SIGALRM), no database."""
    return settings(max_examples=EXAMPLES or default, deadline=None, database=None, print_blob=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large, HealthCheck.large_base_example])


# ---- the harness: deadline, no network, nothing written outside, the verdict ----------------------------

class CaseTimeout(BaseException):
    """Raised by SIGALRM inside a case that overran its deadline (a BaseException: no handler swallows it)."""


MEMORY_HEADROOM = 6 << 30  # bytes a case may allocate beyond what the process holds: far above any legitimate case


@pytest.fixture(autouse=True, scope="module")
def bounded_memory() -> Iterator[None]:
    """Cap the address space (``RLIMIT_AS``) so that a case asking for absurd memory fails as that case (an
    ``out of memory`` line is then a failure), instead of the kernel's OOM killer ending the whole run."""
    import resource

    held = int(Path("/proc/self/statm").read_text().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    previous = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (held + MEMORY_HEADROOM, previous[1]))
    yield
    resource.setrlimit(resource.RLIMIT_AS, previous)


@contextlib.contextmanager
def deadline(seconds: float = CASE_SECONDS) -> Iterator[None]:
    """Fail the case if it runs longer than ``seconds`` (a hang, an endless read)."""
    def expire(signum, frame):
        raise CaseTimeout(f"the case ran longer than {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def offline(*args, **kwargs):
    raise urllib.error.URLError("fuzzing: no network")


def listing(folder: Path) -> set[str]:
    """The entries of a folder (where an escaping write would land)."""
    return set(os.listdir(folder)) if folder.is_dir() else set()


@contextlib.contextmanager
def confined(root: Path) -> Iterator[None]:
    """Run inside ``root/work`` with caches under ``root``; afterwards nothing may have appeared beside ``root``,
    in the repository or in the filesystem's top level."""
    watched = [root.parent, Path(__file__).resolve().parents[1], Path("/")]
    before = [listing(w) for w in watched]
    (root / "work").mkdir(parents=True, exist_ok=True)
    env = {"CNNLAB_DATA": str(root / "data"), "HOME": str(root / "home"), "TORCH_HOME": str(root / "torch"),
           "MPLCONFIGDIR": str(root / "mpl")}
    with mock.patch.dict(os.environ, env), mock.patch.object(urllib.request, "urlopen", offline), \
            mock.patch.object(torch.hub, "download_url_to_file", offline), contextlib.chdir(root / "work"):
        yield
    for folder, old in zip(watched, before):
        assert listing(folder) <= old, f"written outside the case's directory: {sorted(listing(folder) - old)}"


def verdict(test: str, call: Callable[[], object]) -> str:
    """Run one case: only CnnlabError may escape; returns (and counts) the outcome."""
    try:
        with deadline():
            call()
        outcome = "ok"
    except CnnlabError as e:
        assert "out of memory" not in str(e), f"{test} asked for more than {MEMORY_HEADROOM >> 30} GB: {e}"
        outcome = "CnnlabError"
    OUTCOMES[test][outcome] += 1
    return outcome


def run_main(argv: list[str], capsys) -> int:
    """``cnnlab ARGV`` in this process: its exit code, after checking that a failure is one error line."""
    try:
        code = cli.main(argv)
    except SystemExit as e:  # argparse: --help (0) or a usage error (2)
        code = e.code
    _, err = capsys.readouterr()
    assert code in (0, 2), f"exit code {code} for {argv}:\n{err}"
    assert "Traceback" not in err, err
    assert "out of memory" not in err, f"{argv} asked for more than {MEMORY_HEADROOM >> 30} GB:\n{err}"
    if code == 2:
        assert len([line for line in err.splitlines() if line.startswith("cnnlab: error:")]) == 1, err
    return code


def cli_case(test: str, argv: list[str], capsys) -> str:
    """One command line; returns (and counts) its outcome, ``exit 0`` or ``exit 2``."""
    with deadline():
        outcome = f"exit {run_main(argv, capsys)}"
    OUTCOMES[test][outcome] += 1
    return outcome


@contextlib.contextmanager
def stubbed_training() -> Iterator[None]:
    """Replace the body of a run (data, model, fit) once its directory is locked: the CLI, the options'
    validation and the lock run for real; the run returns a one-epoch history and writes its config."""
    def body(cfg: RunConfig, run_dir: Path, *args, **kwargs) -> History:
        cfg.save(run_dir / "config.json")
        history = History()
        history.append(epoch=1, loss=1.0, accuracy=0.5, val_loss=1.0, val_accuracy=0.5, lr=cfg.base_lr, seconds=1.0,
                       images_per_sec=32.0)
        history.run_dir = run_dir
        return history

    with mock.patch.object(run_module, "_train_locked", body):
        yield


@pytest.fixture(scope="module", autouse=True)
def report() -> Iterator[None]:
    """With CNNLAB_FUZZ_REPORT, add this module's outcome counts to that JSON file."""
    yield
    path = os.environ.get("CNNLAB_FUZZ_REPORT")
    if path:
        old = json.loads(Path(path).read_text()) if Path(path).exists() else {}
        for test, counts in OUTCOMES.items():
            merged = Counter(old.get(test, {}))
            merged.update(counts)
            old[test] = dict(merged)
        Path(path).write_text(json.dumps(old, indent=1, sort_keys=True) + "\n")


# ---- samples: one valid file of every kind ----------------------------------------------------------------

class Samples:
    """A trained tiny run (checkpoints, history, config, ONNX export), its spec, and one valid file of each kind."""

    def __init__(self, root: Path, spec: Path, run: Path, files: dict[str, bytes]) -> None:
        self.root, self.spec, self.run, self.files = root, spec, run, files

    def __repr__(self) -> str:  # short: hypothesis prints the arguments of a failing case
        return f"Samples({self.root})"


def png_bytes(mode: str = "RGB", size: tuple[int, int] = (32, 32)) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, 90).save(buf, format="PNG")
    return buf.getvalue()


def keras_weights_bytes(path: Path) -> bytes:
    """A Keras 3 ``.weights.h5`` for the tiny spec (conv 3x3x1x4, batch norm of 4, dense 256→10)."""
    rng = np.random.default_rng(0)
    shapes = {"conv2d": [(3, 3, 1, 4), (4,)], "batch_normalization": [(4,)] * 4, "dense": [(256, 10), (10,)]}
    with h5py.File(path, "w") as f:
        for layer, arrays in shapes.items():
            for i, shape in enumerate(arrays):
                f.create_dataset(f"layers/{layer}/vars/{i}", data=rng.random(shape, dtype=np.float32) + 0.5)
    return path.read_bytes()


def archive_bytes(files: dict[str, bytes], kind: str) -> bytes:
    """The CIFAR-10 members as a .tar.gz or a .zip under cifar-10-batches-py/."""
    buf = io.BytesIO()
    if kind == "zip":
        with zipfile.ZipFile(buf, "w") as zf:
            for name, payload in files.items():
                zf.writestr(f"cifar-10-batches-py/{name}", payload)
    else:
        with tarfile.open(fileobj=buf, mode="w:gz") as tf:
            for name, payload in files.items():
                info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
                info.size = len(payload)
                tf.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> Samples:
    root = tmp_path_factory.mktemp("fuzz-samples")
    spec = root / "tiny.cbapd"
    spec.write_text(TINY_SPEC)
    run = root / "run"
    with contextlib.chdir(root):
        assert cli.main(["train", str(spec), *SAMPLE_RUN, "--run-dir", str(run)]) == 0
        assert cli.main(["export", str(run), "--onnx", "--out", str(run / "model.onnx")]) == 0
    cifar_files, _ = cifar10_members(seed=9)
    idx = idx_bytes(np.arange(3 * 28 * 28, dtype=np.uint8).reshape(3, 28, 28))
    files = {
        "checkpoint": (run / "best.pt").read_bytes(), "last": (run / "last.pt").read_bytes(),
        "history": (run / "history.json").read_bytes(), "config": (run / "config.json").read_bytes(),
        "onnx": (run / "model.onnx").read_bytes(), "spec": TINY_SPEC.encode(), "image": png_bytes(),
        "cifar-batch": cifar_files["data_batch_1"], "cifar-meta": cifar_files["batches.meta"],
        "idx": idx, "idx-gz": gzip.compress(idx), "hdf5": keras_weights_bytes(root / "w.weights.h5"),
        "tar": archive_bytes(cifar_files, "tar"), "zip": archive_bytes(cifar_files, "zip"),
    }
    return Samples(root, spec, run, files)


# ---- damage ---------------------------------------------------------------------------------------------

def lengths(n: int) -> st.SearchStrategy[int]:
    """Truncation points of every class: empty, a byte, a header, a quarter, half, all but one, anywhere."""
    fixed = sorted({min(n, k) for k in (0, 1, 2, 4, 8, 16, 64, n // 4, n // 2, n - 1)})
    return st.one_of(st.sampled_from(fixed), st.integers(0, n))


@st.composite
def damaged(draw, sample: bytes, others: tuple[bytes, ...]) -> bytes:
    """``sample`` truncated, bit-flipped, overwritten, extended, replaced by random bytes or by another kind."""
    n = len(sample)
    how = draw(st.sampled_from(("truncate", "flip", "overwrite", "insert", "random", "other", "zero-tail")))
    if how == "truncate":
        return sample[:draw(lengths(n))]
    if how == "random":
        return draw(st.binary(max_size=512))
    if how == "other":
        return draw(st.sampled_from(others))
    at = draw(st.integers(0, max(n - 1, 0)))
    if how == "insert":
        return sample[:at] + draw(st.binary(min_size=1, max_size=64)) + sample[at:]
    if how == "overwrite":
        patch = draw(st.binary(min_size=1, max_size=64))
        return sample[:at] + patch + sample[at + len(patch):]
    if how == "zero-tail":
        return sample[:at] + bytes(n - at)
    data = bytearray(sample)
    for position in draw(st.lists(st.integers(0, max(n - 1, 0)), min_size=1, max_size=8)):
        data[position] ^= 1 << draw(st.integers(0, 7))
    return bytes(data)


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                       max_size=4), max_leaves=12)


@st.composite
def damaged_json(draw, sample: bytes, others: tuple[bytes, ...]) -> bytes:
    """Byte damage, or valid JSON with wrong types: one known key given any value, or any JSON at all."""
    how = draw(st.sampled_from(("bytes", "field", "any")))
    if how == "bytes":
        return draw(damaged(sample, others))
    if how == "any":
        return json.dumps(draw(JSON_VALUES)).encode()
    data = json.loads(sample)
    data[draw(st.sampled_from(sorted(data)))] = draw(JSON_VALUES)
    return json.dumps(data, allow_nan=True).encode()


def others(s: Samples, kind: str) -> tuple[bytes, ...]:
    return tuple(v for k, v in sorted(s.files.items()) if k != kind)


def case_dir(s: Samples) -> Path:
    """A fresh directory for one case (removed by ``cleanup``)."""
    (s.root / "cases").mkdir(exist_ok=True)
    return Path(tempfile.mkdtemp(dir=s.root / "cases"))


@contextlib.contextmanager
def one_case(s: Samples) -> Iterator[Path]:
    """A fresh, confined case directory, removed afterwards so ten thousand cases stay small on disk."""
    folder = case_dir(s)
    try:
        with confined(folder):
            yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def copy_run(s: Samples, to: Path) -> Path:
    shutil.copytree(s.run, to)
    return to


# ---- file fuzzing: each kind through its public entry point ---------------------------------------------
# A case function writes one file (valid or damaged) where cnnlab reads it and runs the entry point; it
# returns the outcomes. The sanity test gives every case function its valid sample: all must succeed.

def checkpoint_case(s: Samples, blob: bytes, capsys, which: str = "best.pt") -> list[str]:
    with one_case(s) as case:
        run = copy_run(s, case / "run")
        (run / which).write_bytes(blob)
        (case / "img.png").write_bytes(s.files["image"])
        outcomes = [cli_case("checkpoint: eval", ["eval", str(run / which)], capsys),
                    cli_case("checkpoint: predict", ["predict", str(run / which), str(case / "img.png")], capsys)]
        if which == "last.pt":
            outcomes.append(cli_case("checkpoint: resume", ["train", str(s.spec), *SAMPLE_RUN, "--run-dir", str(run)],
                                     capsys))
    return outcomes


def history_case(s: Samples, blob: bytes, capsys) -> list[str]:
    with one_case(s) as case:
        (case / "run").mkdir()
        (case / "run" / "history.json").write_bytes(blob)
        return [cli_case("history.json: plot", ["plot", str(case / "run")], capsys)]


def config_case(s: Samples, blob: bytes, capsys) -> list[str]:
    with one_case(s) as case, stubbed_training():
        run = copy_run(s, case / "runs" / "tiny-digits")
        (run / "config.json").write_bytes(blob)
        return [cli_case("config.json: compare", ["compare", str(s.spec), *SAMPLE_RUN, "--run-dir", str(case / "runs"),
                                                  "--out", str(case / "report")], capsys),
                verdict("config.json: RunConfig.load", lambda: RunConfig.load(run / "config.json"))]


def spec_case(s: Samples, blob: bytes, capsys) -> list[str]:
    with one_case(s) as case, stubbed_training():
        (case / "net.cbapd").write_bytes(blob)
        return [cli_case("cbapd: summary", ["summary", str(case / "net.cbapd"), "--num-classes", "10"], capsys),
                cli_case("cbapd: train", ["train", str(case / "net.cbapd"), *SAMPLE_RUN, "--run-dir", str(case / "r")],
                         capsys)]


def image_case(s: Samples, blob: bytes, capsys) -> list[str]:
    with one_case(s) as case:
        for name in ("a", "b"):
            (case / "pics" / name).mkdir(parents=True)
            (case / "pics" / name / "ok.png").write_bytes(s.files["image"])
        (case / "pics" / "a" / "fuzzed.png").write_bytes(blob)
        return [cli_case("image: predict", ["predict", str(s.run), str(case / "pics" / "a" / "fuzzed.png")], capsys),
                verdict("image: image folder", lambda: load_dataset(str(case / "pics"), "train"))]


def cifar_case(s: Samples, blob: bytes, capsys, member: str = "data_batch_1") -> list[str]:
    files, _ = cifar10_members(seed=9)
    with one_case(s) as case:
        folder = case / "data" / "cifar-10-batches-py"
        folder.mkdir(parents=True)
        for name, payload in {**files, member: blob}.items():
            (folder / name).write_bytes(payload)
        return [verdict("cifar batch: load_dataset", lambda: load_dataset("cifar10", "train", root=case / "data"))]


def forged_mnist(folder: Path) -> dict:
    """SOURCES with the md5 and size of the files in ``folder`` (a tampered mirror with tampered checksums)."""
    official = mnist.SOURCES["mnist"]
    splits = {split: tuple((name, hashlib.md5((folder / name).read_bytes()).hexdigest(), (folder / name).stat().st_size)
                           for name, _, _ in pair) for split, pair in official.splits.items()}
    return {**mnist.SOURCES, "mnist": dataclasses.replace(official, splits=splits)}


def idx_case(s: Samples, blob: bytes, capsys, compressed: bool = False) -> list[str]:
    """``blob`` as the training images: a raw IDX file gzipped here, or (``compressed``) the .gz file itself."""
    labels = gzip.compress(idx_bytes(np.array([1, 2, 3], dtype=np.uint8)))
    with one_case(s) as case:
        folder = case / "data" / "mnist"
        folder.mkdir(parents=True)
        (folder / "train-images-idx3-ubyte.gz").write_bytes(blob if compressed else gzip.compress(blob))
        for name in ("train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
            (folder / name).write_bytes(labels)
        with mock.patch.object(mnist, "SOURCES", forged_mnist(folder)):
            return [verdict("idx: load_dataset", lambda: load_dataset("mnist", "train", root=case / "data"))]


def archive_case(s: Samples, blob: bytes, capsys, kind: str = "tar") -> list[str]:
    """``blob`` as cifar-10-python.tar.gz, its checksum forged to match (a tampered mirror), then extracted."""
    forged = dataclasses.replace(cifar.SOURCES["cifar10"], md5=hashlib.md5(blob).hexdigest())
    with one_case(s) as case, mock.patch.dict(cifar.SOURCES, {"cifar10": forged}):
        (case / "data").mkdir()
        (case / "data" / "cifar-10-python.tar.gz").write_bytes(blob)
        return [verdict(f"{kind} archive: load_dataset", lambda: load_dataset("cifar10", "test", root=case / "data"))]


def hdf5_case(s: Samples, blob: bytes, capsys) -> list[str]:
    with one_case(s) as case:
        (case / "w.weights.h5").write_bytes(blob)
        return [cli_case("hdf5: import-keras", ["import-keras", str(s.spec), str(case / "w.weights.h5"), "--out",
                                                str(case / "out"), "--input", "1x32x32", "--dataset", "mnist"], capsys)]


def onnx_case(s: Samples, blob: bytes, capsys) -> list[str]:
    with one_case(s) as case:
        (case / "m.onnx").write_bytes(blob)
        (case / "img.png").write_bytes(s.files["image"])
        return [cli_case("onnx: predict", ["predict", "--onnx", str(case / "m.onnx"), str(case / "img.png")], capsys)]


# sample → (case function, its keyword arguments): every kind of file, and each variant of its entry point
CASES: dict[str, tuple[Callable[..., list[str]], dict]] = {
    "checkpoint": (checkpoint_case, {"which": "best.pt"}), "last": (checkpoint_case, {"which": "last.pt"}),
    "history": (history_case, {}), "config": (config_case, {}), "spec": (spec_case, {}), "image": (image_case, {}),
    "cifar-batch": (cifar_case, {}), "cifar-meta": (cifar_case, {"member": "batches.meta"}),
    "idx": (idx_case, {}), "idx-gz": (idx_case, {"compressed": True}),
    "tar": (archive_case, {"kind": "tar"}), "zip": (archive_case, {"kind": "zip"}),
    "hdf5": (hdf5_case, {}), "onnx": (onnx_case, {}),
}
SPEC_TOKENS = st.sampled_from(["C(", "B", "A(relu)", "P(max,2,s2)", "D(0.2)", "F", "Dense(", ")", ",", "x", "0", "-1",
                               "64", "same", "s2", "\n", " ", "input:", "name:", "#", "(", "classes", "é"])


def test_every_valid_sample_passes_its_entry_point(samples, capsys):
    """The fuzz starts from files cnnlab reads: undamaged, each one succeeds where it is read."""
    for kind, (case, options) in CASES.items():
        outcomes = case(samples, samples.files[kind], capsys, **options)
        assert set(outcomes) <= {"ok", "exit 0"}, f"{kind}: {outcomes}"


@fuzz_settings(20)
@given(data=st.data())
def test_fuzz_checkpoints_through_eval_predict_and_resume(samples, data, capsys):
    kind = data.draw(st.sampled_from(("checkpoint", "last")))
    case, options = CASES[kind]
    case(samples, data.draw(damaged(samples.files[kind], others(samples, kind))), capsys, **options)


@fuzz_settings(20)
@given(data=st.data())
def test_fuzz_json_files_history_and_config(samples, data, capsys):
    kind = data.draw(st.sampled_from(("history", "config")))
    CASES[kind][0](samples, data.draw(damaged_json(samples.files[kind], others(samples, kind))), capsys)


@fuzz_settings(20)
@given(data=st.data())
def test_fuzz_cbapd_specs_through_summary_and_train(samples, data, capsys):
    text = samples.files["spec"]
    if data.draw(st.booleans()):
        blob = text[:data.draw(lengths(len(text)))] + "".join(data.draw(st.lists(SPEC_TOKENS, max_size=12))).encode()
    else:
        blob = data.draw(damaged(text, others(samples, "spec")))
    spec_case(samples, blob, capsys)


@fuzz_settings(20)
@given(data=st.data())
def test_fuzz_images_through_predict_and_an_image_folder(samples, data, capsys):
    sample = data.draw(st.sampled_from([samples.files["image"], png_bytes("L", (3, 70)), png_bytes("RGBA", (1, 1))]))
    image_case(samples, data.draw(damaged(sample, others(samples, "image"))), capsys)


@fuzz_settings(40)
@given(data=st.data())
def test_fuzz_dataset_files_cifar_idx_and_archives(samples, data, capsys):
    kind = data.draw(st.sampled_from(("cifar-batch", "cifar-meta", "idx", "idx-gz", "tar", "zip")))
    case, options = CASES[kind]
    case(samples, data.draw(damaged(samples.files[kind], others(samples, kind))), capsys, **options)


@fuzz_settings(20)
@given(data=st.data())
def test_fuzz_keras_hdf5_and_onnx_models(samples, data, capsys):
    kind = data.draw(st.sampled_from(("hdf5", "onnx")))
    CASES[kind][0](samples, data.draw(damaged(samples.files[kind], others(samples, kind))), capsys)


# ---- command-line fuzzing: every command's arguments from the real parser -------------------------------

def hostile_paths(root: Path, s: Samples) -> list[str]:
    """Paths of every awkward kind, all inside ``root`` (a relative name lands in the working directory),
    among them a private copy of the trained run and its spec, which a command may write into."""
    run, spec = copy_run(s, root / "run"), root / "tiny.cbapd"
    spec.write_text(TINY_SPEC)
    files = root / "inputs"
    files.mkdir(parents=True, exist_ok=True)
    (files / "text.txt").write_text("not what you think\n")
    (files / "empty").write_bytes(b"")
    (files / "folder").mkdir(exist_ok=True)
    (files / "image.png").write_bytes(s.files["image"])
    (files / "history-only").mkdir(exist_ok=True)
    (files / "history-only" / "history.json").write_bytes(s.files["history"])
    if not (files / "fifo").exists():
        os.mkfifo(files / "fifo")
    if not (files / "loop").is_symlink():
        (files / "loop").symlink_to(files / "loop")
    odd = files / os.fsdecode(b"caf\xe9.png")
    odd.write_bytes(s.files["image"])
    return [str(p) for p in (files / "text.txt", files / "empty", files / "folder", files / "image.png",
                             files / "history-only", files / "fifo", files / "loop", odd, files / "missing",
                             files / "text.txt" / "under", files / ("x" * 300), run, run / "best.pt",
                             run / "model.onnx", spec)] + ["", ".", "-", "runs"]


ODD_NUMBERS = ["nan", "-inf", "inf", "1e309", "-0", "0", "1", "2", "0x1f", "1_000", " 3 ", "1e-320", "٣", "3x32x32",
               "1x1x1", "65x32x32", "3x1025x8", "3,32,32", "0.5", "1/2", "3/2/1"]  # specials, shapes, layers
NUMBERS = st.one_of(st.integers(-2**70, 2**70).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr),
                    st.sampled_from(ODD_NUMBERS))
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"), max_size=12)
FAST_MODELS = ["baseline-cifar", "lenet5-cifar", "fast-cifar", "resnet18", "nosuchnet", "vgg16cifar"]  # quick to build


Command = tuple[str, ...]  # the words naming a (sub-)command: ("train",), ("explain", "conv")


def parsers(parser: argparse.ArgumentParser, prefix: Command = ()) -> Iterator[tuple[Command, argparse.ArgumentParser]]:
    """(command words, parser) of every command and sub-command (``explain conv`` …)."""
    sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
    if sub is None:
        yield prefix, parser
        return
    for name, child in sub.choices.items():
        yield from parsers(child, (*prefix, name))


COMMANDS = dict(parsers(cli.build_parser()))


def value_of(action: argparse.Action, paths: list[str], spec: str) -> st.SearchStrategy[str]:
    """Values for one argument: its own kind (a choice, a model, a path, a number, a shape) or anything hostile."""
    hostile = st.one_of(NUMBERS, TEXT, st.sampled_from(paths))
    if action.choices:
        return st.one_of(st.sampled_from(sorted(map(str, action.choices))), hostile)
    if action.dest in ("model", "models"):
        return st.one_of(st.sampled_from([*FAST_MODELS, spec]), hostile)
    if action.dest in ("dataset", "pretrained"):
        return st.one_of(st.sampled_from(["digits", "cifar10", "mnist", "imagenet", "IMAGENET1K_V1"]), hostile)
    return hostile


NARGS = {None: (1, 1), "?": (0, 1), "*": (0, 3), "+": (1, 3)}  # how many values an argument takes


@st.composite
def arguments(draw, parser: argparse.ArgumentParser, paths: list[str], spec: str) -> list[str]:
    """A random selection of a command's arguments with random values (the required ones usually present)."""
    argv: list[str] = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        required = action.required or not action.option_strings
        if not draw(st.booleans()) and not (required and draw(st.integers(0, 9))):
            continue
        if action.nargs == 0:
            argv.append(draw(st.sampled_from(action.option_strings)))
            continue
        count = draw(st.integers(*NARGS.get(action.nargs, (1, 1))))
        values = [draw(value_of(action, paths, spec)) for _ in range(count)]
        if action.option_strings:
            for value in values or [""]:
                argv += [draw(st.sampled_from(action.option_strings)), value]
        else:
            argv += values
    return argv


@fuzz_settings(200)
@given(data=st.data())
def test_fuzz_every_command_line_option_with_hostile_values(samples, data, capsys):
    words = data.draw(st.sampled_from(sorted(COMMANDS)))
    with one_case(samples) as case, stubbed_training():
        paths = hostile_paths(case, samples)
        argv = [*words, *data.draw(arguments(COMMANDS[words], paths, str(case / "tiny.cbapd")))]
        cli_case(f"argv: {' '.join(words)}", argv, capsys)
