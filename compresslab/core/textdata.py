"""A byte-level text corpus every machine has: the Python standard library's own source files.

The files are read from the running interpreter's installation (`sysconfig`'s "stdlib" folder), so
nothing downloads. Each file goes to train, validation or test by a hash of its relative path
(a file never straddles two splits, and the assignment does not depend on which other files
exist); within a split the files are taken in the order of that hash up to a fixed byte budget.
The same Python version gives the same bytes on every machine; the SHA-256 of each split goes into
the dataset's fingerprint (and so into the baseline cache key and the recorded results).

`TextSplit` has the batch interface of `data.Split` (`len`, `batches`, `num_batches`, `tensors`), so
the one training loop trains a language model unchanged: x is a (B, T) window of bytes and y the
same window shifted by one byte, a next-byte target at every position.
"""

from __future__ import annotations

import hashlib
import os
import sys
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from compresslab.core.data import Dataset
from compresslab.core.validate import check_float, check_int

__all__ = [
    "CORPUS",
    "EXCLUDED_DIRS",
    "LOAD_OPTIONS",
    "stdlib_root",
    "corpus_files",
    "split_of",
    "TextSplit",
    "TextDataset",
    "load_corpus",
]

CORPUS = "pystdlib"
EXCLUDED_DIRS = ("site-packages", "dist-packages", "test", "tests", "idlelib", "__pycache__", "lib2to3")
LOAD_OPTIONS = ("train_bytes", "val_bytes", "test_bytes", "block_size")
SEPARATOR = b"\n\n"  # between two files


def stdlib_root() -> Path:
    """The folder of the running interpreter's standard library (sysconfig's 'stdlib' path)."""
    return Path(sysconfig.get_paths()["stdlib"])


def corpus_files(root: str | os.PathLike, suffix: str = ".py", exclude: tuple[str, ...] = EXCLUDED_DIRS) -> list[str]:
    """Relative POSIX paths of the `suffix` files under `root`, sorted, skipping `exclude` folders."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"corpus root {root} is not a folder")
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in exclude)
        for name in filenames:
            if name.endswith(suffix):
                out.append(Path(dirpath, name).relative_to(root).as_posix())
    return sorted(out)


def _hash(relpath: str) -> int:
    return int.from_bytes(hashlib.sha256(relpath.encode()).digest()[:8], "big")


def split_of(relpath: str, val_share: float = 0.1, test_share: float = 0.1) -> str:
    """'train', 'val' or 'test' for a file, from u = sha256(path) / 2^64 in [0, 1): test when
    u < test_share, val when u < test_share + val_share, train otherwise.

    >>> [split_of(p) for p in ("abc.py", "json/decoder.py")] == [split_of(p) for p in ("abc.py", "json/decoder.py")]
    True
    >>> split_of("x.py", val_share=0.0, test_share=0.0)
    'train'
    """
    u = _hash(relpath) / 2**64
    return "test" if u < test_share else "val" if u < test_share + val_share else "train"


@dataclass(frozen=True)
class TextSplit:
    """One split: its bytes as a uint8 tensor (N,), cut into windows of block_size + 1 bytes.

    len(split) = max(0, N // block_size - 1) windows; window i starts at offset + i * block_size
    (offset 0 in order; a seeded offset in [0, block_size) when shuffled, so every epoch sees the
    bytes cut at other places), x = bytes[s : s + T], y = bytes[s + 1 : s + T + 1]."""

    data: torch.Tensor
    block_size: int
    files: tuple[str, ...] = ()
    unit = "windows"

    def __post_init__(self) -> None:
        if self.data.dtype != torch.uint8 or self.data.dim() != 1:
            raise ValueError(f"data must be a 1-D uint8 tensor, got {self.data.dtype} {tuple(self.data.shape)}")
        check_int("TextSplit", "block_size", self.block_size, 1, None)

    def __len__(self) -> int:
        return max(0, len(self.data) // self.block_size - 1)

    @property
    def n_bytes(self) -> int:
        return len(self.data)

    def _windows(self, starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        idx = starts[:, None] + torch.arange(self.block_size + 1)
        w = self.data[idx].long()
        return w[:, :-1], w[:, 1:]

    def tensors(self, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The first `limit` windows (all by default) in order, as (x, y) of shape (n, T)."""
        n = len(self) if limit is None else min(limit, len(self))
        return self._windows(torch.arange(n) * self.block_size)

    def batches(self, batch_size: int, shuffle: bool = False, seed: int = 0, drop_last: bool = False,
                device: torch.device | str = "cpu") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (x, y) int64 batches of windows; shuffled (order and offset) by a generator seeded by `seed`."""
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        n = len(self)
        offset, order = 0, torch.arange(n)
        if shuffle:
            gen = torch.Generator().manual_seed(seed)
            offset = int(torch.randint(0, self.block_size, (1,), generator=gen))
            order = torch.randperm(n, generator=gen)
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            x, y = self._windows(offset + order[start:start + batch_size] * self.block_size)
            yield x.to(device), y.to(device)

    def num_batches(self, batch_size: int, drop_last: bool = False) -> int:
        return len(self) // batch_size if drop_last else -(-len(self) // batch_size)

    def text(self, start: int = 0, n: int = 200) -> str:
        """n bytes from `start`, decoded as UTF-8 (undecodable bytes replaced)."""
        return bytes(self.data[start:start + n].tolist()).decode("utf-8", "replace")


@dataclass(frozen=True)
class TextDataset(Dataset):
    """A `data.Dataset` whose splits are TextSplits (classes: the 256 byte values)."""

    files: dict = field(default_factory=dict)

    def summary(self) -> str:
        """'<name>: train a bytes (f files), validation b bytes, test c bytes; windows of T bytes'."""
        parts = [f"{label} {s.n_bytes:,} bytes ({len(s.files)} files)"
                 for label, s in (("train", self.train), ("validation", self.val), ("test", self.test)) if s is not None]
        return f"{self.name}: " + ", ".join(parts) + f"; windows of {self.train.block_size} bytes"


def _take(root: Path, files: list[str], budget: int) -> tuple[bytes, tuple[str, ...]]:
    """Concatenate files (SEPARATOR between) until `budget` bytes; the last one is cut at the budget."""
    out, used = bytearray(), []
    for rel in files:
        if len(out) >= budget:
            break
        out += (root / rel).read_bytes() + SEPARATOR
        used.append(rel)
    return bytes(out[:budget]), tuple(used)


def load_corpus(root: str | os.PathLike | None = None, train_bytes: int = 2_000_000, val_bytes: int = 100_000,
                test_bytes: int = 200_000, block_size: int = 128, val_share: float = 0.1,
                test_share: float = 0.1) -> TextDataset:
    """The byte corpus of the `.py` files under `root` (default: the standard library), split by file.

    Each split takes its files (see `split_of`) in the order of their path hash until its byte budget;
    ValueError if a split gets fewer than 2 windows. The fingerprint holds the budgets, the Python
    version, the number of files and the SHA-256 of every split's bytes."""
    owner = "load_corpus"
    for name, value in (("train_bytes", train_bytes), ("val_bytes", val_bytes), ("test_bytes", test_bytes)):
        check_int(owner, name, value, 0 if name == "val_bytes" else 1, 1 << 34)
    check_int(owner, "block_size", block_size, 1, 1 << 16)
    check_float(owner, "val_share", val_share, 0, 1)
    check_float(owner, "test_share", test_share, 0, 1, lo_open=True)
    base = stdlib_root() if root is None else Path(root)
    files = sorted(corpus_files(base), key=_hash)
    groups: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for rel in files:
        groups[split_of(rel, val_share, test_share)].append(rel)
    splits, fingerprint = {}, {"name": CORPUS if root is None else Path(root).name, "block_size": block_size,
                               "python": sys.version.split()[0], "n_files": len(files)}
    for name, budget in (("train", train_bytes), ("val", val_bytes), ("test", test_bytes)):
        if name == "val" and budget == 0:
            splits[name] = None
            continue
        raw, used = _take(base, groups[name], budget)
        split = TextSplit(torch.frombuffer(bytearray(raw), dtype=torch.uint8).clone(), block_size, used)
        if len(split) < 2:
            raise ValueError(f"{owner}: the {name} split has {len(raw)} bytes from {len(used)} files under {base}, "
                             f"fewer than 3 windows of {block_size}: give more files or a smaller block_size")
        splits[name] = split
        fingerprint[f"{name}_bytes"] = len(raw)
        fingerprint[f"{name}_sha256"] = hashlib.sha256(raw).hexdigest()
    name = fingerprint["name"]
    return TextDataset(name, splits["train"], splits["test"], splits["val"], tuple(str(b) for b in range(256)),
                       fingerprint, {k: list(s.files) for k, s in splits.items() if s is not None})
