"""Hostile and broken input to the data layer (issue 16): archives that try to write outside their folder,
servers that stall or never stop, named pipes, deep images, empty splits and damaged batches."""
from __future__ import annotations

import dataclasses
import errno
import gzip
import hashlib
import http.server
import io
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnlab.cli import main
from cnnlab.data import cifar, download, load_dataset, mnist, safe_extract
from cnnlab.data.download import fetch
from cnnlab.data.files import NotARegularFile
from cnnlab.data.folder import read_folder, read_image
from cnnlab.errors import CnnlabError
from conftest import cifar10_members, idx_bytes, md5_of, write_folder


def tree(folder: Path) -> list[str]:
    """Every path under folder (links not followed), relative, sorted."""
    return sorted(os.path.relpath(os.path.join(d, n), folder) for d, dirs, files in os.walk(folder)
                  for n in dirs + files)


# ---- 1. extraction --------------------------------------------------------------------------------

def add(tf: tarfile.TarFile, name: str, kind: bytes = tarfile.REGTYPE, link: str = "", data: bytes = b"") -> None:
    """Append one member of any kind to an open tar."""
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, link, len(data) if kind == tarfile.REGTYPE else 0
    tf.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def long_path_tar(path: Path, dest: Path) -> Path:
    """The CVE-2025-4517 shape: symlinked folders whose expansion passes PATH_MAX, so realpath stops resolving.

    `escape` resolves to the extraction folder's parent and `up` to the one above it, yet both look
    inside to a lexical check and to a realpath that gave up; `up/newfile` then lands two levels out.
    """
    steps = "abcdefghijklmnop"
    staging = len(str(dest)) + len("/.extract-xxxxxxxx") + 1  # safe_extract's staging folder inside dest
    component = "d" * ((os.pathconf(dest.parent, "PC_PATH_MAX") - staging) // (len(steps) + 1))
    with tarfile.open(path, "w") as tf:
        prefix = ""
        for step in steps:
            add(tf, os.path.join(prefix, component), tarfile.DIRTYPE)
            add(tf, os.path.join(prefix, step), tarfile.SYMTYPE, component)
            prefix = os.path.join(prefix, component)
        deep_link = os.path.join(*steps, "l" * 254)
        add(tf, deep_link, tarfile.SYMTYPE, os.path.join(*[".."] * len(steps)))
        add(tf, "escape", tarfile.SYMTYPE, os.path.join(deep_link, ".."))
        add(tf, "up", tarfile.SYMTYPE, "escape/..")
        add(tf, "up/newfile", data=b"written outside")
    return path


def chain_tar(path: Path) -> Path:
    """`b -> c/..` stored before `c -> .`: each link checks out when extracted, together `b` points above."""
    with tarfile.open(path, "w") as tf:
        add(tf, "pkg/good.txt", data=b"ok")
        add(tf, "b", tarfile.SYMTYPE, "c/..")
        add(tf, "c", tarfile.SYMTYPE, ".")
    return path


def one_member_tar(path: Path, name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> Path:
    """A good file, then one member of the given name and kind."""
    with tarfile.open(path, "w:gz") as tf:
        add(tf, "pkg/good.txt", data=b"ok")
        add(tf, name, kind, link, b"evil")
    return path


HOSTILE = {
    "hardlink": ("pkg/hard", tarfile.LNKTYPE, "pkg/good.txt", "is a hard link"),
    "inner-symlink": ("pkg/alias", tarfile.SYMTYPE, "good.txt", "is a symbolic link"),
    "absolute": ("/tmp/cnnlab-evil-abs", tarfile.REGTYPE, "", "has an absolute path"),
    "dotdot": ("pkg/../../evil", tarfile.REGTYPE, "", "climbs out with '..'"),
    "char-device": ("pkg/dev", tarfile.CHRTYPE, "", "is a character device"),
    "block-device": ("pkg/disk", tarfile.BLKTYPE, "", "is a block device"),
    "fifo": ("pkg/pipe", tarfile.FIFOTYPE, "", "is a named pipe"),
    "long-name": ("pkg/" + "x" * 1100, tarfile.REGTYPE, "", "longer than 1024 bytes"),
    "deep": ("/".join(["d"] * 40), tarfile.REGTYPE, "", "deeper than 32 folders"),
    "file-and-folder": ("pkg/good.txt/inner", tarfile.REGTYPE, "", "under a file"),
    "twice": ("pkg/good.txt", tarfile.REGTYPE, "", "appears twice"),
}


def refused(archive: Path, dest: Path, reason: str) -> str:
    """safe_extract's one-line refusal, checked to name the archive, say it was refused and why."""
    with pytest.raises(CnnlabError) as info:
        safe_extract(archive, dest)
    message = str(info.value)
    assert message.startswith(f"refusing to extract {archive}: member ") and reason in message, message
    assert "\n" not in message and "truncated" not in message and len(message) < 400
    return message


def test_long_path_symlinks_that_defeat_realpath_are_refused_and_nothing_lands_outside(tmp_path):
    dest = tmp_path / "out" / "inner"
    dest.mkdir(parents=True)
    archive = long_path_tar(tmp_path / "long.tar", dest)
    refused(archive, dest, "is a symbolic link")
    assert tree(tmp_path / "out") == ["inner"]


def test_a_symlink_chain_resolving_outside_is_refused(tmp_path):
    dest = tmp_path / "out" / "inner"
    refused(chain_tar(tmp_path / "chain.tar"), dest, "is a symbolic link")
    assert tree(tmp_path / "out") == ["inner"]


@pytest.mark.parametrize("case", HOSTILE, ids=list(HOSTILE))
def test_members_other_than_plain_files_and_folders_inside_are_refused(tmp_path, case):
    name, kind, link, reason = HOSTILE[case]
    archive = one_member_tar(tmp_path / "evil.tar.gz", name, kind, link)
    dest = tmp_path / "out" / "inner"
    refused(archive, dest, reason)
    assert tree(tmp_path / "out") == ["inner"] and not Path("/tmp/cnnlab-evil-abs").exists()
    assert sorted(os.listdir(tmp_path)) == ["evil.tar.gz", "out"]


@pytest.mark.parametrize("name, reason", [("../evil.txt", "climbs out"), ("/abs.txt", "absolute path"),
                                          ("C:/win.txt", "absolute path"), ("pkg\\..\\..\\evil.txt", "climbs out")])
def test_zip_members_that_escape_are_refused(tmp_path, name, reason):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok.txt", "ok")
        zf.writestr(name, "evil")
    refused(archive, tmp_path / "out", reason)
    assert tree(tmp_path) == ["evil.zip", "out"]


def test_zip_symlink_member_is_refused(tmp_path):
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("pkg/link")
        info.external_attr = (0o120777 << 16)
        zf.writestr(info, "/etc/passwd")
    refused(archive, tmp_path / "out", "is a symbolic link")
    assert tree(tmp_path / "out") == []


def test_genuine_layouts_extract_with_dot_prefixes_and_folders(tmp_path):
    archive = tmp_path / "ok.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        add(tf, "./", tarfile.DIRTYPE)
        add(tf, "./pkg", tarfile.DIRTYPE)
        add(tf, "./pkg/a.txt", data=b"A")
        add(tf, "pkg/sub/b.txt", data=b"B")
    safe_extract(archive, tmp_path / "t")
    assert tree(tmp_path / "t") == ["pkg", "pkg/a.txt", "pkg/sub", "pkg/sub/b.txt"]
    assert (tmp_path / "t" / "pkg" / "sub" / "b.txt").read_bytes() == b"B"
    assert oct((tmp_path / "t" / "pkg" / "a.txt").stat().st_mode & 0o7777) == oct(0o644 & ~current_umask())


def current_umask() -> int:
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_full_disk_while_extracting_says_so_not_corrupt(tmp_path, monkeypatch):
    archive = one_member_tar(tmp_path / "ok.tar.gz", "pkg/more.txt")

    def no_space(src, dst, length=0):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(shutil, "copyfileobj", no_space)
    with pytest.raises(CnnlabError, match=r"cannot extract .*ok.tar.gz into .*: No space left on device; nothing "
                                          r"was extracted: free disk space"):
        safe_extract(archive, tmp_path / "out")
    assert tree(tmp_path / "out") == []


# ---- 2. downloads ---------------------------------------------------------------------------------

PAYLOAD = bytes(range(256)) * 400  # 102,400 bytes
PAYLOAD_MD5 = hashlib.md5(PAYLOAD).hexdigest()


@contextmanager
def scripted_server(respond):
    """An HTTP server on 127.0.0.1 whose GET runs respond(handler); yields (url, request headers seen)."""
    seen: list[dict[str, str]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(dict(self.headers))
            respond(self)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/file.bin", seen
    finally:
        server.shutdown()
        server.server_close()


def send(handler, status: int, headers: dict[str, str], body: bytes = b"") -> None:
    """Write a status line, headers and body; a client that hung up is not an error."""
    try:
        handler.send_response(status)
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.end_headers()
        handler.wfile.write(body)
    except OSError:
        pass


def ranged(payload: bytes, delay: float = 0.0, stall_after: int | None = None):
    """Serve payload honouring `Range: bytes=N-`; optionally wait first, or stall (≤ 5 s) after some bytes."""
    def respond(handler) -> None:
        start = int(handler.headers.get("Range", "bytes=0-")[6:].rstrip("-") or 0)
        time.sleep(delay)
        headers = {"Content-Length": str(len(payload) - start)}
        if start:
            headers["Content-Range"] = f"bytes {start}-{len(payload) - 1}/{len(payload)}"
        body = payload[start:] if stall_after is None else payload[start:stall_after]
        send(handler, 206 if start else 200, headers, body)
        if stall_after is not None:
            handler.wfile.flush()
            time.sleep(5)
    return respond


def endless(handler) -> None:
    """A body with no length that does not stop by itself: at most 64 MiB or 5 s, until the client hangs up."""
    send(handler, 200, {})
    deadline = time.monotonic() + 5
    for _ in range(1024):
        try:
            handler.wfile.write(b"x" * 65536)
        except OSError:
            return
        if time.monotonic() > deadline:
            return


def huge_length(handler) -> None:
    """Announces a terabyte."""
    send(handler, 200, {"Content-Length": str(10 ** 12)}, b"x" * 1024)


@pytest.fixture
def short_timeout(monkeypatch):
    monkeypatch.setattr(download, "TIMEOUT", 0.5)


def failed_download(url: str, dest: Path, message: str) -> None:
    """Fetching PAYLOAD from url fails within 5 s with an error matching `message` and leaves dest empty."""
    start = time.monotonic()
    with pytest.raises(CnnlabError, match=message):
        fetch(url, PAYLOAD_MD5, dest, size=len(PAYLOAD))
    assert time.monotonic() - start < 5 and tree(dest) == []


def test_a_server_that_accepts_and_never_answers_times_out(tmp_path, short_timeout):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)  # the kernel completes the connection; nobody ever reads or answers
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/file.bin"
        failed_download(url, tmp_path, r"cannot download .*file.bin \(no answer within 0.5 s\)")


def test_an_endless_body_is_stopped_at_the_expected_size_and_removed(tmp_path, short_timeout):
    with scripted_server(endless) as (url, _):
        failed_download(url, tmp_path, r"sent more than the 102,400 bytes .* stopped and removed")


def test_a_content_length_larger_than_expected_is_refused_at_once(tmp_path, short_timeout):
    with scripted_server(huge_length) as (url, _):
        failed_download(url, tmp_path, r"announces 1,000,000,000,000 bytes .* has 102,400")


def test_a_left_over_part_is_resumed_with_a_range_request(tmp_path, short_timeout):
    (tmp_path / "file.bin.part").write_bytes(PAYLOAD[:40_000])
    with scripted_server(ranged(PAYLOAD)) as (url, seen):
        path = fetch(url, PAYLOAD_MD5, tmp_path, size=len(PAYLOAD))
    assert seen[0].get("Range") == "bytes=40000-" and path.read_bytes() == PAYLOAD
    assert tree(tmp_path) == ["file.bin"]


def test_a_left_over_part_starts_over_when_the_server_ignores_ranges(tmp_path, http_server):
    (http_server.root / "file.bin").write_bytes(PAYLOAD)
    dest = tmp_path / "dl"
    dest.mkdir()
    (dest / "file.bin.part").write_bytes(b"junk from an older copy")
    (dest / ".file.bin.1a2b3c4d5e6f.part").write_bytes(b"a random-named part of an earlier cnnlab")
    path = fetch(http_server.url("file.bin"), PAYLOAD_MD5, dest, size=len(PAYLOAD))
    assert path.read_bytes() == PAYLOAD and tree(dest) == ["file.bin"]


def test_a_resumed_part_that_ends_with_the_wrong_md5_is_removed(tmp_path, short_timeout):
    (tmp_path / "file.bin.part").write_bytes(b"\0" * 40_000)
    with scripted_server(ranged(PAYLOAD)) as (url, _):
        failed_download(url, tmp_path, r"md5 .*expected .*the file was removed")


def test_a_part_left_by_a_real_sigkill_is_resumed_by_the_next_run(tmp_path, short_timeout):
    code = ("import sys; from cnnlab.data.download import fetch; "
            "fetch(sys.argv[1], sys.argv[2], sys.argv[3], size=int(sys.argv[4]), progress=False)")
    part = tmp_path / "file.bin.part"
    with scripted_server(ranged(PAYLOAD, stall_after=30_000)) as (url, _):
        child = subprocess.Popen([sys.executable, "-c", code, url, PAYLOAD_MD5, str(tmp_path), str(len(PAYLOAD))],
                                 env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        try:
            deadline = time.monotonic() + 60
            while not (part.exists() and part.stat().st_size == 30_000) and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(10)
    assert child.returncode == -signal.SIGKILL and part.stat().st_size == 30_000
    with scripted_server(ranged(PAYLOAD)) as (url, seen):
        assert fetch(url, PAYLOAD_MD5, tmp_path, size=len(PAYLOAD)).read_bytes() == PAYLOAD
    assert seen[0].get("Range") == "bytes=30000-" and tree(tmp_path) == ["file.bin"]


def test_a_connection_lost_midway_keeps_a_part_to_resume(tmp_path, short_timeout):
    with scripted_server(ranged(PAYLOAD, stall_after=50_000)) as (url, _):
        with pytest.raises(CnnlabError, match=r"cannot download .*no answer within 0.5 s.*re-run to resume"):
            fetch(url, PAYLOAD_MD5, tmp_path, size=len(PAYLOAD))
    assert tree(tmp_path) == ["file.bin.part"] and (tmp_path / "file.bin.part").stat().st_size == 50_000


def test_two_fetches_of_the_same_file_at_once_download_it_once(tmp_path):
    results: list[Path] = []
    with scripted_server(ranged(PAYLOAD, delay=0.3)) as (url, seen):
        threads = [threading.Thread(target=lambda: results.append(fetch(url, PAYLOAD_MD5, tmp_path,
                                                                        size=len(PAYLOAD)))) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    assert len(seen) == 1 and len(results) == 2 and results[0] == results[1]
    assert results[0].read_bytes() == PAYLOAD and tree(tmp_path) == ["file.bin"]


def test_a_verified_file_in_a_read_only_folder_is_used_without_a_lock(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "file.bin").write_bytes(PAYLOAD)
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(shared)]).returncode:
        pytest.skip("chattr +i is not available here")
    try:
        assert fetch("http://127.0.0.1:9/file.bin", PAYLOAD_MD5, shared, size=len(PAYLOAD)) == shared / "file.bin"
        with pytest.raises(CnnlabError, match=r"cannot download into .*shared: Operation not permitted; point"):
            fetch("http://127.0.0.1:9/other.bin", PAYLOAD_MD5, shared, size=len(PAYLOAD))
    finally:
        subprocess.run(["chattr", "-i", str(shared)], check=True)
    assert tree(shared) == ["file.bin"]


def test_progress_bar_goes_to_stderr_only_when_asked_or_on_a_terminal(tmp_path, capsys):
    with scripted_server(ranged(PAYLOAD)) as (url, _):
        fetch(url, PAYLOAD_MD5, tmp_path / "quiet", size=len(PAYLOAD))
        assert capsys.readouterr() == ("", "")
        fetch(url, PAYLOAD_MD5, tmp_path / "shown", size=len(PAYLOAD), progress=True)
    out, err = capsys.readouterr()
    assert out == "" and "file.bin" in err and "100%" in err


def test_every_official_file_declares_its_size_and_https_comes_first():
    remotes = [(s.url,) for s in cifar.SOURCES.values()] + [s.mirrors for s in mnist.SOURCES.values()]
    assert all(urls[0].startswith("https://") for urls in remotes)
    assert all(s.size > 100_000_000 for s in cifar.SOURCES.values())
    assert all(size > 4000 for s in mnist.SOURCES.values() for pair in s.splits.values() for _, _, size in pair)


# ---- 3. named pipes and other non-regular files among images ---------------------------------------

@contextmanager
def fifo_with_watchdog(path: Path, after: float = 3.0):
    """A named pipe at path; if a reader is stuck opening it after `after` s, a writer opens and closes it.

    That bounds a test of code that would block forever: it fails in seconds instead of hanging.
    """
    os.mkfifo(path)
    done = threading.Event()

    def release() -> None:
        if not done.wait(after):
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:  # no reader is waiting
                pass

    watchdog = threading.Thread(target=release, daemon=True)
    watchdog.start()
    try:
        yield path
    finally:
        done.set()
        watchdog.join(5)


def png(path: Path, color=(200, 10, 10)) -> Path:
    """A small RGB PNG."""
    Image.new("RGB", (8, 8), color).save(path)
    return path


def test_a_fifo_named_like_an_image_in_a_class_folder_is_skipped_at_once(tmp_path):
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        png(tmp_path / cls / "x.png")
    start = time.monotonic()
    with fifo_with_watchdog(tmp_path / "a" / "zz.png"):
        images, skipped = read_folder(tmp_path)
    assert time.monotonic() - start < 2.5 and len(images) == 2
    assert [(Path(s.path).name, s.reason) for s in skipped] == [("zz.png", "a named pipe (FIFO), not a regular file: "
                                                                           "not opened")]


def test_read_image_refuses_devices_and_folders_without_opening_them(tmp_path):
    (tmp_path / "dir.png").mkdir()
    os.symlink("/dev/zero", tmp_path / "zero.png")
    for name, kind in (("dir.png", "a directory"), ("zero.png", "a character device")):
        with pytest.raises(NotARegularFile, match=rf"{name} is {kind}, not a regular file"):
            read_image(str(tmp_path / name), (32, 32), "RGB")


def test_predict_skips_a_fifo_and_names_it(digits_run, tmp_path, capsys):
    good = png(tmp_path / "good.png")
    start = time.monotonic()
    with fifo_with_watchdog(tmp_path / "pipe.png") as pipe:
        assert main(["predict", str(digits_run), str(pipe), str(good)]) == 0
    out, err = capsys.readouterr()
    assert time.monotonic() - start < 2.5 and "good.png" in out and "pipe.png" not in out
    assert "pipe.png" in err and "named pipe (FIFO)" in err


# ---- 4. every Pillow mode to 8 bits by one rule ---------------------------------------------------

def read_back(path: Path, mode: str) -> np.ndarray:
    """read_image at the file's own size (so no resampling), as float for means."""
    with Image.open(path) as img:
        size = (img.height, img.width)
    return read_image(str(path), size, mode).astype(np.float64)


def test_a_16_bit_png_reads_back_at_its_8_bit_mean_not_clipped(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 65536, (24, 40)).astype(np.uint16)
    pixels[0, 0] = 0
    Image.fromarray(pixels).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode == "I;16"
    expected = pixels.mean() * 255 / 65535  # ~127, where clipping at 255 read ~254
    for mode, channels in (("L", 1), ("RGB", 3)):
        image = read_back(tmp_path / "deep.png", mode)
        assert image.shape == (channels, 24, 40) and abs(image.mean() - expected) < 0.5
        assert np.array_equal(image[0], np.rint(pixels.astype(np.float64) * 255 / 65535))


@pytest.mark.parametrize("mode, fill, expected_l, expected_rgb", [
    ("1", 1, 255, (255, 255, 255)),
    ("L", 77, 77, (77, 77, 77)),
    ("LA", (200, 100), 200, (200, 200, 200)),  # alpha dropped, grey kept
    ("RGBA", (10, 20, 30, 40), 18, (10, 20, 30)),  # alpha dropped; L is ITU-R 601-2 luma of the colour
    ("I", 32768, 128, (128, 128, 128)),  # 32-bit integers on the 16-bit scale
    ("I", 100_000, 255, (255, 255, 255)),  # … clipped above 65,535
    ("I", -5, 0, (0, 0, 0)),  # … and below 0
    ("F", 0.5, 128, (128, 128, 128)),  # floats on the 0..1 scale
    ("F", 3.0, 255, (255, 255, 255)),
])
def test_every_mode_converts_by_the_documented_rule(tmp_path, mode, fill, expected_l, expected_rgb):
    path = tmp_path / ("x.tif" if mode in ("I", "F") else "x.png")
    Image.new(mode, (6, 4), fill).save(path)
    assert Image.open(path).mode == mode
    assert set(read_back(path, "L").ravel()) == {expected_l}
    assert [set(c.ravel()) for c in read_back(path, "RGB")] == [{v} for v in expected_rgb]


def test_a_palette_image_reads_its_palette_colours(tmp_path):
    image = Image.new("P", (4, 4), 1)
    image.putpalette([0, 0, 0, 250, 100, 5] + [0] * 762)
    image.save(tmp_path / "p.gif", transparency=1)
    assert [set(c.ravel()) for c in read_back(tmp_path / "p.gif", "RGB")] == [{250}, {100}, {5}]


def test_tiff_files_are_images_too(tmp_path):
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        Image.new("I;16", (5, 5), 65535).save(tmp_path / cls / "deep.tif")
        Image.new("F", (5, 5), 0.25).save(tmp_path / cls / "float.TIFF")
    images, skipped = read_folder(tmp_path, size=(5, 5), mode="L")
    assert len(images) == 4 and skipped == [] and sorted(set(images.images.flatten().tolist())) == [64, 255]


# ---- 5. empty splits, unreadable batches, non-integer labels --------------------------------------

QUICK = ["--epochs", "1", "--limit-train", "8", "--limit-val", "4", "--batch-size", "4", "--no-progress"]


def cli_error(argv: list[str], capsys) -> str:
    """The one `cnnlab: error:` line of a command that must fail as a user error (exit 2, no traceback)."""
    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("cnnlab: error:")]
    assert code == 2 and "Traceback" not in err and len(lines) == 1, err
    return lines[0]


def train_cifar(data: Path, tmp_path: Path) -> list[str]:
    return ["train", "baseline-cifar", "--dataset", "cifar10", "--data-dir", str(data), "--run-dir",
            str(tmp_path / "run"), *QUICK]


@pytest.fixture
def cifar_copy(tmp_path) -> Path:
    """An extracted fake CIFAR-10 in the official layout; returns its batches folder."""
    files, _ = cifar10_members(seed=7)
    return write_folder(tmp_path / "data" / "cifar-10-batches-py", files)


def write_batch(path: Path, data: np.ndarray, labels) -> None:
    path.write_bytes(pickle.dumps({b"data": data, b"labels": labels}, protocol=2))


def test_a_training_split_with_no_images_is_one_line(cifar_copy, tmp_path, capsys):
    for i in range(1, 6):
        write_batch(cifar_copy / f"data_batch_{i}", np.zeros((0, 3072), np.uint8), [])
    line = cli_error(train_cifar(cifar_copy.parent, tmp_path), capsys)
    assert f"cifar10 split 'train' has no images (read from {cifar_copy.parent})" in line


def test_an_idx_split_with_no_images_is_refused(monkeypatch, tmp_path):
    files = {"t10k-images-idx3-ubyte.gz": gzip.compress(idx_bytes(np.zeros((0, 28, 28), np.uint8))),
             "t10k-labels-idx1-ubyte.gz": gzip.compress(idx_bytes(np.zeros(0, np.uint8)))}
    place_idx(monkeypatch, tmp_path, files)
    with pytest.raises(CnnlabError, match=r"mnist split 'test' has no images"):
        load_dataset("mnist", "test", root=tmp_path)


def place_idx(monkeypatch, root: Path, files: dict[str, bytes]) -> None:
    """Put IDX files in root/mnist and make the mnist source expect exactly them."""
    folder = write_folder(root / "mnist", files)
    source = mnist.SOURCES["mnist"]
    known = {name: (name, md5_of(folder / name), len(payload)) for name, payload in files.items()}
    splits = {s: tuple(known.get(f[0], f) for f in pair) for s, pair in source.splits.items()}
    monkeypatch.setitem(mnist.SOURCES, "mnist", dataclasses.replace(source, splits=splits))


def test_a_directory_in_place_of_a_cifar_batch_is_one_line(cifar_copy, tmp_path, capsys):
    (cifar_copy / "data_batch_3").unlink()
    (cifar_copy / "data_batch_3").mkdir()
    line = cli_error(train_cifar(cifar_copy.parent, tmp_path), capsys)
    assert f"cannot read {cifar_copy / 'data_batch_3'}: it is a directory, not a regular file" in line


def test_an_unreadable_cifar_batch_says_permission_denied(cifar_copy, tmp_path, monkeypatch, capsys):
    batch = cifar_copy / "data_batch_2"
    batch.chmod(0)
    real_open = os.open

    def denying_open(path, flags, *args):
        if os.fspath(path) == str(batch):  # root reads a mode-000 file anyway: deny it as the kernel would
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", denying_open)
    line = cli_error(train_cifar(cifar_copy.parent, tmp_path), capsys)
    assert f"cannot read {batch}: permission denied" in line and "corrupt" not in line


@pytest.mark.parametrize("labels", [[0.0, 1.7, 2.0, 3.0], np.array([0.5, 1, 2, 3]), [0, 1, "2", 3], [True] * 4])
def test_non_integer_cifar_labels_are_refused_not_truncated(cifar_copy, tmp_path, capsys, labels):
    write_batch(cifar_copy / "data_batch_1", np.zeros((4, 3072), np.uint8), labels)
    line = cli_error(train_cifar(cifar_copy.parent, tmp_path), capsys)
    assert "data_batch_1 is not a valid CIFAR batch ('labels' must be integers, got" in line


@pytest.mark.parametrize("kind, name", [(0x0D, "32-bit floats"), (0x0E, "64-bit floats"), (0x0C, "32-bit integers")])
def test_idx_labels_that_are_not_unsigned_bytes_are_refused(monkeypatch, tmp_path, kind, name):
    labels = bytes([0, 0, kind, 1]) + (3).to_bytes(4, "big") + np.array([0.0, 1.5, 2.0], ">f4").tobytes()
    files = {"t10k-images-idx3-ubyte.gz": gzip.compress(idx_bytes(np.zeros((3, 28, 28), np.uint8))),
             "t10k-labels-idx1-ubyte.gz": gzip.compress(labels)}
    place_idx(monkeypatch, tmp_path, files)
    with pytest.raises(CnnlabError, match=rf"t10k-labels-idx1-ubyte.gz holds {name} \(IDX type 0x{kind:02X}\)"):
        load_dataset("mnist", "test", root=tmp_path)


def test_a_directory_in_place_of_an_idx_file_is_one_line(monkeypatch, tmp_path):
    files = {"t10k-labels-idx1-ubyte.gz": gzip.compress(idx_bytes(np.zeros(3, np.uint8)))}
    place_idx(monkeypatch, tmp_path, files)
    (tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz").mkdir()
    with pytest.raises(CnnlabError, match=r"t10k-images-idx3-ubyte.gz: it is a directory, not a regular file"):
        load_dataset("mnist", "test", root=tmp_path)
