"""Damaged unpacked IDX files give an error naming the file, never silently wrong data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from compresslab.core import data

FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _source() -> Path:
    return data.resolve_root(None) / "MNIST" / "raw"


@pytest.fixture
def root(tmp_path):
    """A data root whose MNIST/raw holds links to the real unpacked files (replace one to damage it)."""
    src = _source()
    if not all((src / f).is_file() for f in FILES):
        pytest.skip("needs the unpacked MNIST files")
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in FILES:
        os.symlink(src / f, raw / f)
    return tmp_path


def _replace(root: Path, name: str, content: bytes) -> Path:
    path = root / "MNIST" / "raw" / name
    path.unlink()
    path.write_bytes(content)
    return path


def _original(name: str) -> bytes:
    return (_source() / name).read_bytes()


def _fails(root: Path, path: Path, match: str) -> None:
    with pytest.raises(ValueError, match=match) as info:
        data.load("mnist", root=root)
    assert str(path) in str(info.value)


def test_intact_copy_loads(root):
    ds = data.load("mnist", root=root, test_subset=100)
    assert len(ds.train) == 60000 and int(ds.train.labels.max()) == 9


def test_label_out_of_range(root):
    labels = bytearray(_original("t10k-labels-idx1-ubyte"))
    labels[8 + 17] = 200
    _fails(root, _replace(root, "t10k-labels-idx1-ubyte", bytes(labels)), "label 200")


def test_garbage_pixels(root):
    images = _original("t10k-images-idx3-ubyte")
    noise = torch.randint(0, 256, (len(images) - 16,), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    _fails(root, _replace(root, "t10k-images-idx3-ubyte", images[:16] + noise.numpy().tobytes()), "pixel mean")


def test_truncated_file_is_named_not_reported_missing(root):
    images = _original("t10k-images-idx3-ubyte")
    _fails(root, _replace(root, "t10k-images-idx3-ubyte", images[: len(images) // 2]), "truncated")


def test_wrong_magic(root):
    labels = bytearray(_original("t10k-labels-idx1-ubyte"))
    labels[3] = 0x03
    _fails(root, _replace(root, "t10k-labels-idx1-ubyte", bytes(labels)), "magic number")


def test_image_and_label_counts_must_agree(root):
    path = _replace(root, "t10k-labels-idx1-ubyte", _original("train-labels-idx1-ubyte"))
    _fails(root, path, "10000 images but")


def test_missing_files_still_say_where_to_put_them(tmp_path, monkeypatch):
    import torchvision

    class Offline:
        def __init__(self, *args, **kwargs):
            raise RuntimeError("offline")

    monkeypatch.setattr(torchvision.datasets, "MNIST", Offline)
    with pytest.raises(FileNotFoundError, match="Put these four files"):
        data.load("mnist", root=tmp_path)
