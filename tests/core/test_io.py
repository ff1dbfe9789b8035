"""core.io: the one atomic write. Oracle: the file's bytes, the folder's listing, and the old file
surviving a failure midway."""

import json
import os
import stat

import pytest
import torch

from compresslab.core import io


def _listing(folder):
    return sorted(p.name for p in folder.iterdir())


def test_write_bytes_creates_folders_and_replaces(tmp_path):
    target = tmp_path / "a" / "b" / "x.bin"
    assert io.write_bytes_atomic(target, b"first") == 5
    assert io.write_bytes_atomic(target, b"second!") == 7
    assert target.read_bytes() == b"second!"
    assert _listing(target.parent) == ["x.bin"]


def test_text_json_and_torch_round_trip(tmp_path):
    io.write_text_atomic(tmp_path / "t.md", "π ≈ 3.14\n")
    assert (tmp_path / "t.md").read_text(encoding="utf-8") == "π ≈ 3.14\n"
    payload = {"z": 1, "a": [0.5, None, "s"]}
    io.write_json_atomic(tmp_path / "r.json", payload)
    text = (tmp_path / "r.json").read_text()
    assert json.loads(text) == payload and list(json.loads(text)) == ["z", "a"]  # order kept
    assert text == json.dumps(payload, indent=2)
    state = {"w": torch.randn(3, 4), "step": 7}
    n = io.torch_save_atomic(state, tmp_path / "s.pt")
    loaded = torch.load(tmp_path / "s.pt")
    assert n == (tmp_path / "s.pt").stat().st_size
    assert torch.equal(loaded["w"], state["w"]) and loaded["step"] == 7
    assert _listing(tmp_path) == ["r.json", "s.pt", "t.md"]


class _Boom(Exception):
    pass


def test_failure_midway_keeps_old_file_and_removes_temp(tmp_path, monkeypatch):
    target = tmp_path / "keep.json"
    io.write_json_atomic(target, {"version": 1})

    def failing_replace(src, dst):
        raise _Boom("disk full while renaming")

    monkeypatch.setattr(io.os, "replace", failing_replace)
    with pytest.raises(_Boom):
        io.write_json_atomic(target, {"version": 2})
    assert json.loads(target.read_text()) == {"version": 1}
    assert _listing(tmp_path) == ["keep.json"]


def test_failure_while_serializing_leaves_nothing(tmp_path):
    class Unpicklable:
        def __reduce__(self):
            raise _Boom("cannot pickle")

    target = tmp_path / "m.pt"
    io.torch_save_atomic({"ok": 1}, target)
    with pytest.raises(_Boom):
        io.torch_save_atomic({"bad": Unpicklable()}, target)
    assert torch.load(target) == {"ok": 1}
    assert _listing(tmp_path) == ["m.pt"]


def test_failure_while_writing_removes_temp(tmp_path, monkeypatch):
    target = tmp_path / "x.bin"
    io.write_bytes_atomic(target, b"old")
    real_fsync = io.os.fsync
    calls = []

    def failing_fsync(fd):
        calls.append(fd)
        raise OSError("I/O error")

    monkeypatch.setattr(io.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="I/O error"):
        io.write_bytes_atomic(target, b"new")
    monkeypatch.setattr(io.os, "fsync", real_fsync)
    assert calls and target.read_bytes() == b"old"
    assert _listing(tmp_path) == ["x.bin"]


def test_json_rejects_what_json_cannot_hold_before_touching_disk(tmp_path):
    with pytest.raises(TypeError):
        io.write_json_atomic(tmp_path / "bad.json", {"x": object()})
    assert _listing(tmp_path) == []


@pytest.mark.skipif(not hasattr(os, "fchmod"), reason="file modes are POSIX")
@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_an_atomic_write_gets_the_mode_a_plain_write_gets(tmp_path, mask):
    """Oracle: a file made by open() under the same umask. Not the 0600 of a temporary file, so others
    can read a shared cache, handout folder or results folder when the umask lets them."""
    before = os.umask(mask)
    try:
        plain = tmp_path / "plain.txt"
        with open(plain, "w") as f:
            f.write("x")
        atomic = tmp_path / "atomic.txt"
        io.write_text_atomic(atomic, "x")
        io.write_json_atomic(tmp_path / "a.json", {"a": 1})
        io.write_bytes_atomic(atomic, b"again")  # replacing keeps the same rule
    finally:
        os.umask(before)
    expected = stat.S_IMODE(plain.stat().st_mode)
    assert expected == 0o666 & ~mask
    for path in (atomic, tmp_path / "a.json"):
        assert stat.S_IMODE(path.stat().st_mode) == expected, (oct(stat.S_IMODE(path.stat().st_mode)), oct(expected))
