"""Data-test fixtures: a local HTTP server and small archives built in the official formats."""
from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import io
import pickle
import socket
import struct
import tarfile
import threading
import urllib.error
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@dataclass
class LocalServer:
    """A directory served over HTTP on 127.0.0.1, recording requested paths."""

    root: Path
    base: str
    hits: list[str] = field(default_factory=list)

    def url(self, name: str) -> str:
        """The URL of a file in root."""
        return f"{self.base}/{name}"


@dataclass
class FakeDataset:
    """A built fake: archive or files served, their md5s, and what loading must give."""

    url: str
    md5: str
    expected: dict[str, tuple[np.ndarray, np.ndarray]]
    classes: list[str]
    path: Path


@pytest.fixture
def http_server(tmp_path: Path):
    """Serve tmp_path/'served' on an ephemeral 127.0.0.1 port for the duration of a test."""
    root = tmp_path / "served"
    root.mkdir()
    hits: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            hits.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield LocalServer(root, f"http://127.0.0.1:{server.server_address[1]}", hits)
    server.shutdown()
    server.server_close()


@pytest.fixture
def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/cifar-10-python.tar.gz"


def md5_of(path: Path) -> str:
    """Hex md5 of a file."""
    return hashlib.md5(path.read_bytes()).hexdigest()


def random_batch(rng: np.random.Generator, n: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """n random CIFAR rows (uint8 N×3072) and labels."""
    return rng.integers(0, 256, (n, 3072), dtype=np.uint8), rng.integers(0, num_classes, n)


def pickle_bytes(obj, protocol: int) -> bytes:
    """Pickle as the official files are: a dict with bytes keys."""
    return pickle.dumps(obj, protocol=protocol)


def cifar10_members(seed: int = 0, protocol: int = 2) -> tuple[dict[str, bytes], dict]:
    """Official cifar-10-batches-py member files (4 images per train batch, 6 test) and expectations."""
    rng = np.random.default_rng(seed)
    files, parts = {}, {"train": [], "test": []}
    for i, name in enumerate([f"data_batch_{b}" for b in range(1, 6)] + ["test_batch"]):
        data, labels = random_batch(rng, 6 if name == "test_batch" else 4, 10)
        files[name] = pickle_bytes({b"batch_label": f"batch {i}".encode(), b"labels": [int(x) for x in labels],
                                    b"data": data, b"filenames": [b"x.png"] * len(labels)}, protocol)
        parts["test" if name == "test_batch" else "train"].append((data, labels))
    files["batches.meta"] = pickle_bytes({b"label_names": [c.encode() for c in CIFAR10_CLASSES],
                                          b"num_cases_per_batch": 4, b"num_vis": 3072}, protocol)
    return files, _expected(parts)


def cifar100_members(seed: int = 1) -> tuple[dict[str, bytes], dict]:
    """Official cifar-100-python member files (train 8, test 5) and expectations per label mode."""
    rng = np.random.default_rng(seed)
    files, expected = {}, {}
    for split, n in (("train", 8), ("test", 5)):
        data, fine = random_batch(rng, n, 100)
        coarse = fine // 5
        files[split] = pickle_bytes({b"data": data, b"fine_labels": fine.tolist(),
                                     b"coarse_labels": coarse.tolist(), b"filenames": [b"a.png"] * n}, 2)
        expected[split] = (_to_images(data), fine)
        expected[f"{split}-coarse"] = (_to_images(data), coarse)
    files["meta"] = pickle_bytes({b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
                                  b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)]}, 2)
    return files, expected


def _to_images(data: np.ndarray) -> np.ndarray:
    """CIFAR rows → N×3×32×32."""
    return data.reshape(-1, 3, 32, 32)


def _expected(parts: dict) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Concatenate per-batch (data, labels) into per-split (images, labels)."""
    return {s: (_to_images(np.concatenate([d for d, _ in p])), np.concatenate([y for _, y in p]))
            for s, p in parts.items()}


def write_folder(folder: Path, files: dict[str, bytes]) -> Path:
    """Write member files into a folder (an already extracted copy)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, payload in files.items():
        (folder / name).write_bytes(payload)
    return folder


def write_tar_gz(path: Path, prefix: str, files: dict[str, bytes]) -> Path:
    """A .tar.gz holding prefix/<name> for each file."""
    with tarfile.open(path, "w:gz") as tf:
        for name, payload in files.items():
            info = tarfile.TarInfo(f"{prefix}/{name}")
            info.size = len(payload)
            tf.addfile(info, io.BytesIO(payload))
    return path


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX encoding of a uint8 array: magic 0,0,8,ndim then big-endian sizes."""
    return bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def idx_files(seed: int) -> tuple[dict[str, bytes], dict]:
    """The four official MNIST-format gz files (train 7, test 3) and expectations."""
    rng = np.random.default_rng(seed)
    files, expected = {}, {}
    for split, prefix, n in (("train", "train", 7), ("test", "t10k", 3)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        files[f"{prefix}-images-idx3-ubyte.gz"] = gzip.compress(idx_bytes(images))
        files[f"{prefix}-labels-idx1-ubyte.gz"] = gzip.compress(idx_bytes(labels))
        expected[split] = (images[:, None], labels.astype(np.int64))
    return files, expected


@pytest.fixture
def cifar10_archive(http_server: LocalServer) -> FakeDataset:
    """A served cifar-10-python.tar.gz in the official layout."""
    files, expected = cifar10_members()
    path = write_tar_gz(http_server.root / "cifar-10-python.tar.gz", "cifar-10-batches-py", files)
    return FakeDataset(http_server.url(path.name), md5_of(path), expected, CIFAR10_CLASSES, path)


@pytest.fixture
def cifar100_archive(http_server: LocalServer) -> FakeDataset:
    """A served cifar-100-python.tar.gz in the official layout."""
    files, expected = cifar100_members()
    path = write_tar_gz(http_server.root / "cifar-100-python.tar.gz", "cifar-100-python", files)
    return FakeDataset(http_server.url(path.name), md5_of(path), expected, [f"fine{i}" for i in range(100)], path)


@pytest.fixture
def idx_mirror(http_server: LocalServer) -> tuple[str, dict[str, str], dict]:
    """A served MNIST-format mirror folder: (base URL, md5 per file, expectations)."""
    files, expected = idx_files(seed=2)
    mirror = write_folder(http_server.root / "mnist", files)
    return http_server.url("mnist/"), {n: md5_of(mirror / n) for n in files}, expected


@pytest.fixture
def cifar10_extracted(tmp_path: Path) -> tuple[Path, dict]:
    """An extracted cifar-10-batches-py as prepare_cifar10.py writes it (protocol 4), no archive."""
    files, expected = cifar10_members(seed=3, protocol=4)
    return write_folder(tmp_path / "existing" / "cifar-10-batches-py", files), expected


def blobs(n: int = 96, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two classes of 1x4x4 images: dark or bright, with noise (a linear layer separates them)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=g)
    noise = torch.randint(0, 100, (n, 1, 4, 4), generator=g)
    return (noise + 120 * labels.view(-1, 1, 1, 1)).to(torch.uint8), labels


def _tiny_fit(run_dir: Path, callbacks=(), epochs: int = 4, **options):
    """A real fit of a linear classifier (with dropout) on the blobs, 4 steps per epoch: (History, model)."""
    from torch import nn

    from cnnlab.data.loader import TensorLoader
    from cnnlab.engine import FitConfig, fit

    images, labels = blobs()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Dropout(0.1), nn.Linear(16, 2))
    cfg = FitConfig(epochs=epochs, batch_size=16, **options)
    train = TensorLoader(images[:64], labels[:64], 16, seed=0)
    val = TensorLoader(images[64:], labels[64:], 32, shuffle=False)
    return fit(model, train, val, cfg, run_dir, progress=False, callbacks=list(callbacks)), model


@pytest.fixture
def tiny_fit():
    """``tiny_fit(run_dir, callbacks=(), epochs=4, **FitConfig options) -> (History, model)``: a real fit in a second."""
    return _tiny_fit


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-epoch baseline-cifar run on 96 embedded digits images, shared by the predict/export tests."""
    from cnnlab.cli import main

    run = tmp_path_factory.mktemp("runs") / "baseline-cifar-digits"
    args = ["train", "baseline-cifar", "--epochs", "1", "--limit-train", "96", "--limit-val", "64", "--run-dir", str(run),
            "--no-progress"]
    assert main(args) == 0
    return run


@pytest.fixture
def hub_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch hub directory, so no real cached weights are used."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    return tmp_path / "hub"


@pytest.fixture
def hub(hub_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch hub directory where no download can succeed (offline)."""

    def offline(url, dst, *args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return hub_dir


def weights_bytes(state: dict) -> tuple[bytes, str]:
    """A state dict as torch.save writes it, and the sha256 prefix a torchvision file name would carry."""
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue(), hashlib.sha256(buf.getvalue()).hexdigest()[:8]


@pytest.fixture
def fake_weights(monkeypatch: pytest.MonkeyPatch):
    """``fake(model, state, base=None) -> (entry, bytes)``: the model's default weights entry renamed to carry
    the hash of ``state``'s file (served from ``base`` when given), so a fake file passes the hash check."""
    from dataclasses import replace

    from cnnlab.models import model_info, registry

    def fake(model: str, state: dict, base: str | None = None):
        data, digest = weights_bytes(state)
        info = model_info(model)
        default = info.weights[0]
        url = f"{base or default.url.rsplit('/', 1)[0]}/{model}-{digest}.pth"
        entry = replace(default, url=url)
        monkeypatch.setitem(registry._REGISTRY, model, replace(info, weights=(entry, *info.weights[1:])))
        return entry, data

    return fake


@pytest.fixture
def cached_weights(hub: Path, fake_weights):
    """``cache(model, state) -> path``: ``state`` as the model's default weights file in the (offline) hub cache."""

    def cache(model: str, state: dict) -> Path:
        entry, data = fake_weights(model, state)
        path = entry.cache_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    return cache


@pytest.fixture
def one_thread():
    """Small CPU passes run fastest on one thread, and do not fight parallel test runs for cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# A spec network with TF "same" pads that are asymmetric: a 4x4 stride-2 conv on 15 px pads 1 on top, 2 below; the
# 3x3 stride-2 average pool on 8 px pads nothing before, 1 after.
STRIDED_SPEC = """name: strided
input: 3x15x15
classes: 4
C(5,4,s2,same) B A(relu) P(avg,3,s2,same) | C(6,3,same) A(tanh) P(max,2,s2,same) D(0.1) | F | Dense(7,relu) | Dense(classes)
"""


@pytest.fixture
def strided_net() -> torch.nn.Module:
    """STRIDED_SPEC built, in eval mode, with BatchNorm statistics and affine values as after training."""
    from cnnlab.spec import build, parse_spec

    torch.manual_seed(0)
    net = build(parse_spec(STRIDED_SPEC))
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2), m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return net.eval()


def leaf_outputs(net: torch.nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every named leaf module's output for ``x``, straight from PyTorch."""
    seen: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_hook(lambda m, a, y, n=n: seen.setdefault(n, y.detach().clone()))
             for n, m in net.named_modules() if not list(m.children())]
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    return seen


# ---- sentence data in the official formats (no ../shared needed) --------------------------------------
POSITIVE_WORDS = ("good", "great", "fun", "moving", "witty", "superb")
NEGATIVE_WORDS = ("bad", "dull", "boring", "awful", "tedious", "flat")
FILLER = ("the", "film", "is", "a", "story", "and", "it", "'s", "plot", "movie", "really", "quite")


def sentences(label: int, n: int, seed: int) -> list[str]:
    """n lower-cased, tokenised sentences whose sentiment words give their label away (1 positive, 0 negative)."""
    rng = np.random.default_rng(seed)
    words = POSITIVE_WORDS if label else NEGATIVE_WORDS
    out = []
    for _ in range(n):
        body = list(rng.choice(FILLER, rng.integers(3, 9)))
        body.insert(int(rng.integers(0, len(body) + 1)), str(rng.choice(words)))
        out.append(" ".join(body) + " .")
    return out


def write_text_sets(root: Path, n: int = 120) -> Path:
    """mr, sst2 and trec under root as their authors distribute them (small, with a learnable signal)."""
    mr = root / "rt-polaritydata"
    mr.mkdir(parents=True, exist_ok=True)
    (mr / "rt-polarity.pos").write_bytes(("\n".join(sentences(1, n, 1)) + " caf\xe9 \x85 \n").encode("latin-1"))
    (mr / "rt-polarity.neg").write_bytes(("\n".join(sentences(0, n, 2)) + "\n").encode("latin-1"))
    sst = root / "sst2"
    sst.mkdir(exist_ok=True)
    for name, seed in (("train", 3), ("dev", 4)):
        lines = [f"1 {s}" for s in sentences(1, n // 2, seed)] + [f"0 {s}" for s in sentences(0, n // 2, seed + 10)]
        (sst / f"stsa.binary.{name}").write_text("\n".join(lines) + "\n")
    trec = root / "trec"
    trec.mkdir(exist_ok=True)
    questions = {"HUM:ind": "Who was the first man to", "LOC:city": "Where is the city of",
                 "NUM:date": "When did the war of", "DESC:def": "What is the meaning of"}
    rng = np.random.default_rng(5)
    lines = [f"{label} {start} {rng.choice(FILLER)} {rng.choice(FILLER)} ?" for label, start in questions.items()
             for _ in range(n // 4)]
    (trec / "train_5500.label").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    return root


@pytest.fixture(scope="session")
def text_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root holding mr, sst2 (train and dev) and trec (train) in their official formats."""
    return write_text_sets(tmp_path_factory.mktemp("text"))


TINY_KIM = ["--model-option", "embedding_dim=16", "--model-option", "maps=8"]


@pytest.fixture(scope="session")
def text_run(text_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small kim-cnn trained for 10 epochs on the sst2 fixture (validation on its dev file; from Kim's zero output
    layer Adadelta needs a few epochs of these 15 steps to get going)."""
    from cnnlab.cli import main

    run = tmp_path_factory.mktemp("runs") / "kim-cnn-sst2"
    args = ["train", "kim-cnn", "--dataset", "sst2", "--data-dir", str(text_root), "--epochs", "10", "--batch-size", "8",
            *TINY_KIM, "--run-dir", str(run), "--no-progress"]
    assert main(args) == 0
    return run


def write_word2vec_binary(path: Path, vectors: dict[str, list[float]]) -> Path:
    """A word2vec .bin: 'COUNT DIM' header, then 'word ' and float32 bytes per word (newline-separated)."""
    dim = len(next(iter(vectors.values())))
    body = b"".join(w.encode() + b" " + np.asarray(v, dtype="<f4").tobytes() + b"\n" for w, v in vectors.items())
    path.write_bytes(f"{len(vectors)} {dim}\n".encode() + body)
    return path
