"""Checkpoint loading: every record's CRC, finite tensors, permissions, code refused with cnnlab's own words."""
from __future__ import annotations

import errno
import re
import os
import zipfile
from pathlib import Path

import pytest
import torch

from cnnlab.engine import checkpoint
from cnnlab.engine.checkpoint import load_checkpoint, read_torch_file, save_checkpoint
from cnnlab.errors import CnnlabError

PATTERN = 1.2345  # a value whose float32 bytes are easy to find in the file


def saved(tmp_path: Path, **state) -> Path:
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"model": {"w": torch.full((256,), PATTERN), "steps": torch.tensor(3)}, **state})
    return path


def flip_bit_in_tensor(path: Path) -> None:
    """Flip one bit inside the stored bytes of the ``w`` tensor (not in the zip's headers)."""
    data = bytearray(path.read_bytes())
    at = data.find(torch.tensor([PATTERN] * 4).numpy().tobytes()) + 40
    data[at] ^= 0x04
    path.write_bytes(bytes(data))


def test_an_intact_checkpoint_loads(tmp_path):
    assert torch.equal(load_checkpoint(saved(tmp_path))["model"]["w"], torch.full((256,), PATTERN))


def test_a_flipped_bit_inside_a_tensor_is_reported_with_the_record_and_what_to_do(tmp_path):
    path = saved(tmp_path)
    flip_bit_in_tensor(path)
    damaged = torch.load(path, weights_only=True)["model"]["w"]
    assert not torch.equal(damaged, torch.full((256,), PATTERN)), "torch alone loads the damaged tensor"
    with pytest.raises(CnnlabError, match=r"last\.pt is damaged \(CRC mismatch in \S+/data/\d+\): use the other "
                                          r"checkpoint \(best\.pt/last\.pt\) or re-train"):
        load_checkpoint(path)


def test_every_record_has_a_crc_that_torch_writes(tmp_path):
    with zipfile.ZipFile(saved(tmp_path)) as archive:
        assert all(info.CRC for info in archive.infolist() if info.file_size)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_tensor_holding_nan_or_infinity_is_damage(tmp_path, value):
    path = tmp_path / "best.pt"
    save_checkpoint(path, {"model": {"conv.weight": torch.tensor([1.0, value])}})
    with pytest.raises(CnnlabError, match=r"best\.pt is damaged \(model\.conv\.weight holds NaN or infinity\)"):
        load_checkpoint(path)


def test_an_unreadable_checkpoint_says_permission_denied(tmp_path, monkeypatch):
    path = saved(tmp_path)

    def denied(name):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(name))

    if os.geteuid() == 0:  # root reads any file: deny the open itself
        monkeypatch.setattr(checkpoint, "open_regular", denied)
    else:
        path.chmod(0)
    with pytest.raises(CnnlabError, match=r"cannot read .*last\.pt: permission denied") as caught:
        load_checkpoint(path)
    assert "corrupt" not in str(caught.value)


class Unlisted:
    """A class torch's weights-only loader does not allow."""


def test_refusing_code_names_it_and_gives_no_advice_to_load_unsafely(tmp_path):
    path = tmp_path / "odd.pt"
    torch.save({"x": Unlisted()}, path)
    with pytest.raises(CnnlabError) as caught:
        load_checkpoint(path)
    text = str(caught.value)
    assert "refusing to load" in text and "Unlisted" in text and "\n" not in text
    assert "Re-running" not in text and "weights_only" not in text and "torch." not in text


@pytest.mark.parametrize("content,words", [
    (b"hello\n", "is not a checkpoint or weights file"),
    (b"PK\x03\x04" + bytes(200), "is damaged (corrupt or truncated"),
    (b"", "is not a checkpoint or weights file"),
])
def test_files_that_are_not_checkpoints_are_named_as_such(tmp_path, content, words):
    path = tmp_path / "x.pt"
    path.write_bytes(content)
    with pytest.raises(CnnlabError, match=re.escape(words)):
        read_torch_file(path)


def test_a_directory_or_device_is_not_read(tmp_path):
    with pytest.raises(CnnlabError, match="a directory, not a regular file"):
        read_torch_file(tmp_path)
    with pytest.raises(CnnlabError, match="a character device, not a regular file"):
        read_torch_file(Path("/dev/zero"))
