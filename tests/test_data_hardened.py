"""Hostile and broken input to the data layer (issue 16): archives that try to write outside their folder,
servers that stall or never stop, named pipes, deep images, empty splits and damaged batches."""
from __future__ import annotations

import errno
import io
import os
import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest

from cnnlab.data import safe_extract
from cnnlab.errors import CnnlabError


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
