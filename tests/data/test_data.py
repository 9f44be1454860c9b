"""Data package: checked downloads, safe extraction and unpickling, every loader, ImageSet helpers."""
from __future__ import annotations

import dataclasses
import io
import os
import pickle
import shutil
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.data import ImageSet, cache_dir, dataset_info, fetch, list_datasets, load_dataset, safe_extract
from cnnlab.data import cifar, mnist
from cnnlab.data.folder import read_folder
from cnnlab.data.safe_pickle import load_pickle
from cnnlab.errors import CnnlabError
from conftest import idx_bytes, md5_of, write_tar_gz


def serve_cifar(monkeypatch, name: str, fake) -> None:
    """Point a CIFAR source at the local server."""
    monkeypatch.setitem(cifar.SOURCES, name, dataclasses.replace(cifar.SOURCES[name], url=fake.url, md5=fake.md5,
                                                                 size=fake.path.stat().st_size))


def serve_idx(monkeypatch, name: str, mirrors: list[str], md5s: dict[str, str], sizes: dict[str, int]) -> None:
    """Point an IDX source at local mirrors with the fake files' md5s and sizes."""
    source = mnist.SOURCES[name]
    splits = {s: tuple((f, md5s[f], sizes[f]) for f, _, _ in pair) for s, pair in source.splits.items()}
    monkeypatch.setitem(mnist.SOURCES, name, dataclasses.replace(source, mirrors=tuple(mirrors), splits=splits))


def listing(folder: Path) -> list[str]:
    """Every path under folder, relative, sorted."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def assert_matches(images: ImageSet, expected: tuple[np.ndarray, np.ndarray]) -> None:
    """Images and labels equal the expected arrays."""
    assert images.images.dtype == torch.uint8 and images.images.is_contiguous()
    assert np.array_equal(images.images.numpy(), expected[0])
    assert np.array_equal(images.labels.numpy(), expected[1])


# ---- CIFAR ---------------------------------------------------------------------------------------

def test_cifar10_download_extract_load_then_reuse(monkeypatch, tmp_path, http_server, cifar10_archive):
    serve_cifar(monkeypatch, "cifar10", cifar10_archive)
    root = tmp_path / "data"
    train = load_dataset("cifar10", "train", root=root)
    test = load_dataset("cifar10", "test", root=root)
    assert_matches(train, cifar10_archive.expected["train"])
    assert_matches(test, cifar10_archive.expected["test"])
    assert train.classes == cifar10_archive.classes and train.shape == (3, 32, 32) and len(train) == 20
    assert sorted(p.name for p in root.iterdir()) == ["cifar-10-batches-py", "cifar-10-python.tar.gz"]
    hits = len(http_server.hits)
    load_dataset("CIFAR-10", root=root)
    shutil.rmtree(root / "cifar-10-batches-py")
    assert_matches(load_dataset("cifar10", root=root, download=False), cifar10_archive.expected["train"])
    assert len(http_server.hits) == hits


def test_cifar100_fine_and_coarse(monkeypatch, tmp_path, cifar100_archive):
    serve_cifar(monkeypatch, "cifar100", cifar100_archive)
    fine = load_dataset("cifar100", "test", root=tmp_path)
    coarse = load_dataset("cifar100", "train", root=tmp_path, label_mode="coarse")
    assert_matches(fine, cifar100_archive.expected["test"])
    assert_matches(coarse, cifar100_archive.expected["train-coarse"])
    assert fine.num_classes == 100 and coarse.num_classes == 20


def test_existing_extracted_copy_used_without_archive(cifar10_extracted):
    folder, expected = cifar10_extracted
    for root in (folder.parent, folder):
        assert_matches(load_dataset("cifar10", "train", root=root, download=False), expected["train"])
    assert not list(folder.parent.glob("*.tar.gz"))


def test_missing_cifar_without_download_says_where(tmp_path):
    with pytest.raises(CnnlabError, match="cifar-10-batches-py"):
        load_dataset("cifar10", root=tmp_path, download=False)


class _RunsCommand:
    """A pickle payload that would run a shell command when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("payload", ["os.system", "builtins.eval", "builtins.getattr"])
def test_malicious_batch_refused_and_never_runs(cifar10_extracted, tmp_path, payload):
    folder, _ = cifar10_extracted
    marker = tmp_path / "pwned"
    evil = {"os.system": _RunsCommand(marker),
            "builtins.eval": _Reduce(eval, (f"open({str(marker)!r}, 'w')",)),
            "builtins.getattr": _Reduce(getattr, ("", "join"))}[payload]
    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": evil, b"labels": []}, protocol=2))
    function = payload.split(".")[-1]
    refused = rf"refusing to load .*data_batch_3.*contains code \(GLOBAL [\w.]*{function}\)"
    with pytest.raises(CnnlabError, match=refused):
        load_dataset("cifar10", root=folder, download=False)
    assert not marker.exists()


@dataclasses.dataclass
class _Reduce:
    """Pickles as a call of fn(*args)."""

    fn: object
    args: tuple

    def __reduce__(self):
        return self.fn, self.args


def test_truncated_batch_names_file_and_fix(cifar10_extracted):
    folder, _ = cifar10_extracted
    batch = folder / "data_batch_2"
    batch.write_bytes(batch.read_bytes()[:500])
    with pytest.raises(CnnlabError, match=r"data_batch_2.*truncated or corrupt.*delete .*re-run"):
        load_dataset("cifar10", root=folder, download=False)


@pytest.mark.parametrize("bad", [{b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]},
                                 {b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]},
                                 {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]},
                                 {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}])
def test_malformed_batch_structure_rejected(cifar10_extracted, bad):
    folder, _ = cifar10_extracted
    (folder / "test_batch").write_bytes(pickle.dumps(bad, protocol=4))
    with pytest.raises(CnnlabError, match="test_batch is not a valid CIFAR batch"):
        load_dataset("cifar10", "test", root=folder, download=False)


def test_safe_pickle_accepts_protocol_5_arrays(tmp_path):
    path = tmp_path / "p5"
    path.write_bytes(pickle.dumps({b"data": np.arange(6, dtype=np.uint8), b"n": np.int64(3)}, protocol=5))
    loaded = load_pickle(path)
    assert loaded[b"data"].tolist() == list(range(6)) and loaded[b"n"] == 3



def test_safe_pickle_takes_latin1_bytes_and_refuses_any_other_codec(tmp_path):
    """Protocol 2 pickles bytes as _codecs.encode(str, 'latin1'); a fuzzed 'matin1' once escaped as LookupError."""
    path = tmp_path / "p2"
    path.write_bytes(pickle.dumps({b"data": b"\x00\xff"}, protocol=2))
    assert load_pickle(path) == {b"data": b"\x00\xff"}
    for codec in (b"matin1", b"zlib__"):
        path.write_bytes(path.read_bytes().replace(b"latin1", codec))
        with pytest.raises(CnnlabError, match=r"truncated or corrupt \(UnpicklingError: _codecs.encode with"):
            load_pickle(path)
        path.write_bytes(pickle.dumps({b"data": b"\x00\xff"}, protocol=2))

# ---- download ------------------------------------------------------------------------------------

def test_wrong_md5_errors_and_leaves_nothing(tmp_path, cifar10_archive):
    dest = tmp_path / "dl"
    with pytest.raises(CnnlabError, match="md5 .* expected 0{32}.*removed"):
        fetch(cifar10_archive.url, "0" * 32, dest, size=cifar10_archive.path.stat().st_size)
    assert listing(dest) == []


def test_offline_error_is_one_clear_line(tmp_path, closed_port_url):
    dest = tmp_path / "dl"
    with pytest.raises(CnnlabError) as info:
        fetch(closed_port_url, "0" * 32, dest, size=100)
    message = str(info.value)
    assert "\n" not in message and closed_port_url in message and "manually" in message
    assert str(dest / "cifar-10-python.tar.gz") in message and "CNNLAB_DATA" in message
    assert listing(dest) == []


def test_missing_file_on_server_is_reported(tmp_path, http_server):
    with pytest.raises(CnnlabError, match="cannot download .*nothing.tar.gz"):
        fetch(http_server.url("nothing.tar.gz"), "0" * 32, tmp_path / "dl", size=100)
    assert listing(tmp_path / "dl") == []


def test_existing_good_file_reused_corrupt_moved_aside(tmp_path, http_server, cifar10_archive):
    def get() -> Path:
        return fetch(cifar10_archive.url, cifar10_archive.md5, tmp_path, size=cifar10_archive.path.stat().st_size)

    path = get()
    hits = len(http_server.hits)
    assert get() == path and len(http_server.hits) == hits
    path.write_bytes(b"garbage")
    with pytest.raises(CnnlabError, match="corrupt.*moved aside.*re-run"):
        get()
    assert not path.exists() and path.with_name(path.name + ".corrupt").exists()
    assert md5_of(get()) == cifar10_archive.md5


def test_cache_dir_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("CNNLAB_DATA", str(tmp_path))
    assert cache_dir() == tmp_path
    monkeypatch.delenv("CNNLAB_DATA")
    assert cache_dir() == Path.home() / ".cache" / "cnnlab" / "data"


# ---- extraction ----------------------------------------------------------------------------------

def test_truncated_archive_extracts_nothing(tmp_path, cifar10_archive):
    archive = tmp_path / "cut.tar.gz"
    archive.write_bytes(cifar10_archive.path.read_bytes()[:-200])
    dest = tmp_path / "out"
    with pytest.raises(CnnlabError, match="truncated or corrupt"):
        safe_extract(archive, dest)
    assert listing(dest) == []


def _tar_with(path: Path, member: tarfile.TarInfo) -> Path:
    """A tar.gz holding one good file and then `member`."""
    with tarfile.open(path, "w:gz") as tf:
        good = tarfile.TarInfo("pkg/good.txt")
        good.size = 2
        tf.addfile(good, io.BytesIO(b"ok"))
        member.size = 4 if member.type == tarfile.REGTYPE else 0
        tf.addfile(member, io.BytesIO(b"evil") if member.type == tarfile.REGTYPE else None)
    return path


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


@pytest.mark.parametrize("member", [
    _member("../evil"), _member("pkg/../../evil"), _member("/tmp/cnnlab-evil-abs"),
    _member("pkg/link", tarfile.SYMTYPE, "../../.."), _member("pkg/link", tarfile.SYMTYPE, "/etc"),
    _member("pkg/hard", tarfile.LNKTYPE, "../outside"), _member("pkg/dev", tarfile.CHRTYPE),
], ids=["dotdot", "nested-dotdot", "absolute", "symlink-up", "symlink-abs", "hardlink", "device"])
def test_escaping_tar_members_refused_nothing_extracted(tmp_path, member):
    archive = _tar_with(tmp_path / "evil.tar.gz", member)
    dest = tmp_path / "out" / "inner"
    with pytest.raises(CnnlabError, match="refusing to extract"):
        safe_extract(archive, dest)
    assert listing(tmp_path / "out") == ["inner"]
    assert not Path("/tmp/cnnlab-evil-abs").exists()


def test_escaping_zip_member_refused(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok.txt", "ok")
        zf.writestr("../evil.txt", "evil")
    with pytest.raises(CnnlabError, match="refusing to extract"):
        safe_extract(archive, tmp_path / "out")
    assert listing(tmp_path / "out") == []


def test_safe_extract_zip_and_tar_then_refuses_to_overwrite(tmp_path):
    archive = tmp_path / "ok.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("pkg/a.txt", "A")
    safe_extract(archive, tmp_path / "z")
    assert (tmp_path / "z" / "pkg" / "a.txt").read_text() == "A"
    tar = _tar_with(tmp_path / "ok.tar.gz", _member("pkg/more.txt"))
    safe_extract(tar, tmp_path / "t")
    assert (tmp_path / "t" / "pkg" / "more.txt").read_text() == "evil"
    with pytest.raises(CnnlabError, match="already exists"):
        safe_extract(tar, tmp_path / "t")


def test_archive_without_official_folder_rejected(monkeypatch, tmp_path, http_server):
    archive = write_tar_gz(http_server.root / "fake.tar.gz", "wrong-name", {"x": b"1"})
    fake = dataclasses.replace(cifar.SOURCES["cifar10"], url=http_server.url(archive.name), md5=md5_of(archive),
                               size=archive.stat().st_size)
    monkeypatch.setitem(cifar.SOURCES, "cifar10", fake)
    with pytest.raises(CnnlabError, match="not the official archive"):
        load_dataset("cifar10", root=tmp_path / "d")


# ---- MNIST / Fashion-MNIST -----------------------------------------------------------------------

@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_idx_download_with_mirror_fallback(monkeypatch, tmp_path, idx_mirror, closed_port_url, name):
    base, md5s, expected = idx_mirror
    sizes = {f: (tmp_path / "served" / "mnist" / f).stat().st_size for f in md5s}
    serve_idx(monkeypatch, name, [closed_port_url.rsplit("/", 1)[0] + "/", base], md5s, sizes)
    for split in ("train", "test"):
        images = load_dataset(name, split, root=tmp_path)
        assert_matches(images, expected[split])
        assert images.shape == (1, 28, 28) and images.num_classes == 10
    assert load_dataset(name, root=tmp_path, download=False).classes[1] == ("1" if name == "mnist" else "Trouser")


def test_idx_all_mirrors_down_lists_them(monkeypatch, tmp_path, closed_port_url):
    base = closed_port_url.rsplit("/", 1)[0] + "/"
    names = [f for pair in mnist.SOURCES["mnist"].splits.values() for f, _, _ in pair]
    serve_idx(monkeypatch, "mnist", [base, base + "alt/"], dict.fromkeys(names, "0" * 32), dict.fromkeys(names, 100))
    with pytest.raises(CnnlabError, match=r"no mirror .*train-images.*\|.*alt/train-images"):
        load_dataset("mnist", root=tmp_path)
    assert listing(tmp_path / "mnist") == []


def test_offline_mnist_names_every_missing_file_and_where_it_goes(monkeypatch, tmp_path, closed_port_url, idx_mirror):
    _, md5s, _ = idx_mirror
    sizes = {f: (tmp_path / "served" / "mnist" / f).stat().st_size for f in md5s}
    serve_idx(monkeypatch, "mnist", [closed_port_url.rsplit("/", 1)[0] + "/"], md5s, sizes)
    folder = tmp_path / "data" / "mnist"
    folder.mkdir(parents=True)
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes((tmp_path / "served" / "mnist" / "t10k-labels-idx1-ubyte.gz")
                                                      .read_bytes())
    with pytest.raises(CnnlabError) as info:
        load_dataset("mnist", root=tmp_path / "data")
    message = str(info.value)
    assert "\n" not in message and message.startswith("cannot download ")
    assert (f"mnist needs 3 files that are not in {folder}: train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
            "t10k-images-idx3-ubyte.gz; download them all from ") in message
    with pytest.raises(CnnlabError, match=r"not found: allow downloading or place it there — mnist needs 3 files"):
        load_dataset("mnist", "test", root=tmp_path / "data", download=False)


@pytest.mark.parametrize("raw, message", [
    (bytes([0, 0, 9, 3]) + b"\0" * 12, r"holds signed bytes \(IDX type 0x09\)"),
    (bytes([0, 0, 8, 2]) + b"\0" * 12, "bad magic"),
    (idx_bytes(np.zeros((2, 28, 28), np.uint8))[:-5], "truncated"),
])
def test_idx_parse_validates(raw, message):
    with pytest.raises(CnnlabError, match=message):
        mnist.parse_idx(raw, 3, "x.idx")


def test_idx_not_gzip_is_clear(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(b"not gzip at all")
    with pytest.raises(CnnlabError, match="x.gz.*delete it"):
        mnist.read_idx(path, 1)


# ---- digits --------------------------------------------------------------------------------------

def test_digits_embedded_split():
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert (len(train), len(test)) == (1437, 360)
    assert train.shape == test.shape == (1, 32, 32) and train.num_classes == 10
    assert int(train.images.max()) == 255 and int(train.images.min()) == 0
    again = load_dataset("digits", "train")
    assert torch.equal(again.images, train.images) and torch.equal(again.labels, train.labels)
    assert set(test.labels.tolist()) == set(range(10))


# ---- image folder --------------------------------------------------------------------------------

def _image(path: Path, size: tuple[int, int], color, fmt: str | None = None) -> None:
    Image.new("RGB", size, color).save(path, format=fmt)


def test_image_folder_skips_bad_files_and_handles_odd_names(tmp_path, caplog):
    root = tmp_path / "pics"
    (root / "cat").mkdir(parents=True)
    (root / "dog").mkdir()
    (root / "empty").mkdir()
    _image(root / "cat" / "a.png", (40, 20), (255, 0, 0))
    _image(root / "cat" / "b.JPG", (7, 9), (250, 0, 0), "JPEG")
    (root / "cat" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "cat" / "notes.txt").write_text("hello")
    odd = os.path.join(os.fsencode(root / "dog"), b"caf\xe9-\xff.png")
    Image.new("RGB", (64, 64), (0, 0, 255)).save(odd.decode(errors="surrogateescape"), format="PNG")
    _image(root / "dog" / "c.gif", (10, 10), (0, 0, 250), "GIF")

    images, skipped = read_folder(root)
    assert images.classes == ["cat", "dog"] and images.labels.tolist() == [0, 0, 1, 1]
    assert images.shape == (3, 32, 32)
    assert images.images[0, 0].float().mean() > 240 and images.images[3, 2].float().mean() > 240
    reasons = {Path(s.path).name: s.reason for s in skipped}
    assert set(reasons) == {"broken.jpg", "notes.txt", "empty"} and "unreadable" in reasons["broken.jpg"]
    with caplog.at_level("WARNING"):
        gray = load_dataset(f"folder:{root}", size=(16, 24), mode="L")
    assert gray.shape == (1, 16, 24) and "broken.jpg" in caplog.text
    assert load_dataset(str(root), "all").classes == ["cat", "dog"]


def test_image_folder_val_split_and_errors(tmp_path):
    root = tmp_path / "pics"
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(5):
            _image(root / cls / f"{i}.png", (8, 8), (i * 40, 0, 0))
    train = load_dataset(str(root), "train", val_fraction=0.4, seed=1)
    val = load_dataset(str(root), "val", val_fraction=0.4, seed=1)
    assert (len(train), len(val)) == (6, 4) and val.labels.tolist() == [0, 0, 1, 1]
    with pytest.raises(CnnlabError, match="val_fraction"):
        load_dataset(str(root), "val")
    empty = tmp_path / "empty"
    (empty / "cls").mkdir(parents=True)
    with pytest.raises(CnnlabError, match="no readable images"):
        load_dataset(f"folder:{empty}")
    assert dataset_info(f"folder:{root}").num_classes == 2


# ---- dispatch and ImageSet -----------------------------------------------------------------------

def test_dispatch_names_info_and_errors():
    assert list_datasets() == ["cifar10", "cifar100", "mnist", "fashion-mnist", "digits"]
    assert dataset_info("fashion_mnist").input_shape == (1, 28, 28)
    assert dataset_info("cifar100").num_classes == 100
    with pytest.raises(CnnlabError, match="unknown dataset 'imagenet'.*cifar10, cifar100.*folder:PATH"):
        load_dataset("imagenet")
    with pytest.raises(CnnlabError, match="does not take option.*colour"):
        load_dataset("digits", colour=True)
    with pytest.raises(CnnlabError, match="unknown split 'dev'"):
        load_dataset("digits", "dev")


def _toy(n: int = 30, classes: int = 3) -> ImageSet:
    images = torch.arange(n * 4, dtype=torch.int64).remainder(256).to(torch.uint8).reshape(n, 1, 2, 2)
    return ImageSet(images, torch.arange(n) % classes, [str(c) for c in range(classes)], "toy")


def test_imageset_split_is_stratified_deterministic_and_disjoint():
    data = _toy()
    a, b = data.split(0.2, seed=5)
    a2, b2 = data.split(0.2, seed=5)
    assert torch.equal(b.images, b2.images) and (len(a), len(b)) == (24, 6)
    assert torch.bincount(b.labels).tolist() == [2, 2, 2]
    seen = torch.cat([a.images, b.images]).reshape(30, -1)[:, 0].sort().values
    assert torch.equal(seen, data.images.reshape(30, -1)[:, 0].sort().values)
    assert len(data.split(0.1, seed=0, stratify=False)[1]) == 3
    with pytest.raises(CnnlabError):
        data.split(1.0)


def test_imageset_helpers_and_contract():
    data = _toy()
    assert len(data.subset(4)) == 4 and data.subset([3, 1]).labels.tolist() == [0, 1]
    rgb = data.to_rgb()
    assert rgb.shape == (3, 2, 2) and torch.equal(rgb.images[:, 2], data.images[:, 0])
    big = data.resize(6, 4)
    assert big.shape == (1, 6, 4) and big.images.dtype == torch.uint8
    flat = ImageSet(torch.full((2, 3, 8, 8), 77, dtype=torch.uint8), torch.zeros(2, dtype=torch.int64), ["x"], "f")
    assert bool((flat.resize(3, 5).images == 77).all())
    with pytest.raises(CnnlabError, match="uint8"):
        ImageSet(torch.zeros(2, 1, 2, 2), torch.zeros(2, dtype=torch.int64), ["x"], "bad")
    with pytest.raises(CnnlabError, match="labels must lie"):
        ImageSet(torch.zeros(2, 1, 2, 2, dtype=torch.uint8), torch.tensor([0, 5]), ["x"], "bad")
