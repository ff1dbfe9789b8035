"""Datasets: MNIST and Fashion-MNIST as in-memory uint8 tensors with a fast batch iterator.

Images stay uint8 in memory (60k x 28 x 28 = 47 MB); each batch is normalised on the fly,
x = (u / 255 - mean) / std, so the training loop never touches PIL or per-sample transforms.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import torch

from compresslab.core.locations import data_dir

__all__ = [
    "DATASETS",
    "check_dataset_name",
    "read_idx",
    "check_archives",
    "resolve_root",
    "Split",
    "Dataset",
    "load",
]

# name -> (torchvision class name, folder under root, per-pixel mean, std, class names)
DATASETS: dict[str, tuple[str, str, float, float, tuple[str, ...]]] = {
    "mnist": ("MNIST", "MNIST", 0.1307, 0.3081, tuple(str(d) for d in range(10))),
    "fashion_mnist": (
        "FashionMNIST",
        "FashionMNIST",
        0.2860,
        0.3530,
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    ),
}
RAW_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def check_dataset_name(name: str) -> str:
    """Return `name` if known, else raise ValueError listing the known datasets."""
    if name not in DATASETS:
        raise ValueError(f"dataset={name!r} is not known; choose one of {sorted(DATASETS)}")
    return name


def resolve_root(root: str | os.PathLike | None = None) -> Path:
    """Dataset root: explicit `root`, else `locations.data_dir()` ($COMPRESSLAB_DATA, the checkout's
    data/, or the per-user data folder)."""
    return Path(root) if root is not None else data_dir()


@dataclass(frozen=True)
class Split:
    """One split held in memory: uint8 images (N, 28, 28) and int64 labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor
    mean: float
    std: float

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 3:
            raise ValueError(f"images must be uint8 (N, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, H, W) -> float (B, 1, H, W) with x = (u/255 - mean) / std."""
        return ((images.float() / 255.0 - self.mean) / self.std).unsqueeze(1)

    def tensors(self, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The first `limit` examples (all by default), normalised, as (x, y)."""
        n = len(self) if limit is None else min(limit, len(self))
        return self.normalise(self.images[:n]), self.labels[:n]

    def batches(
        self,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        device: torch.device | str = "cpu",
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield normalised (x, y) batches; shuffled with a generator seeded by `seed`."""
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        n = len(self)
        if shuffle:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        else:
            order = torch.arange(n)
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            idx = order[start:start + batch_size]
            yield self.normalise(self.images[idx]).to(device), self.labels[idx].to(device)

    def num_batches(self, batch_size: int, drop_last: bool = False) -> int:
        return len(self) // batch_size if drop_last else -(-len(self) // batch_size)


@dataclass(frozen=True)
class Dataset:
    """Train / optional validation / test splits of one dataset, plus how they were made."""

    name: str
    train: Split
    test: Split
    val: Split | None
    classes: tuple[str, ...]
    fingerprint: dict = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (1, *self.train.images.shape[1:])


IDX_MAGIC = {"images": 0x00000803, "labels": 0x00000801}  # unsigned bytes, 3 or 1 dimensions
IMAGE_SIZE = (28, 28)
PIXEL_TOLERANCE = (0.05, 0.1)  # |mean - expected| and |std - expected| allowed, pixels in [0, 1]


def read_idx(path: Path, kind: str, num_classes: int = 10) -> torch.Tensor:
    """One unpacked IDX file: uint8 images (N, 28, 28) or int64 labels (N,), validated.

    Checks the magic number, the declared dimensions against the file's length (no truncation,
    no trailing bytes), the image size and the label range; ValueError naming the file otherwise."""
    data = path.read_bytes()
    ndim = 3 if kind == "images" else 1
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: {len(data)} bytes is shorter than an IDX {kind} header ({header} bytes)")
    magic = int.from_bytes(data[:4], "big")
    if magic != IDX_MAGIC[kind]:
        raise ValueError(f"{path}: magic number {magic:#010x}, expected {IDX_MAGIC[kind]:#010x} for IDX {kind}")
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    expected = header + math.prod(dims)
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "followed by extra bytes"
        raise ValueError(f"{path}: {what}: its header declares {dims} ({expected} bytes), the file has {len(data)}")
    if kind == "images" and tuple(dims[1:]) != IMAGE_SIZE:
        raise ValueError(f"{path}: images of {dims[1]}x{dims[2]} pixels, expected {IMAGE_SIZE[0]}x{IMAGE_SIZE[1]}")
    values = torch.frombuffer(bytearray(data), dtype=torch.uint8, offset=header).reshape(dims)
    if kind == "labels":
        if len(values) and int(values.max()) >= num_classes:
            raise ValueError(f"{path}: label {int(values.max())} outside the {num_classes} classes [0, {num_classes - 1}]")
        return values.long()
    return values


def _check_pair(name: str, images: torch.Tensor, labels: torch.Tensor, image_file: Path, label_file: Path) -> None:
    """Same count of images and labels, pixel statistics like the dataset's (not garbage)."""
    if len(images) != len(labels):
        raise ValueError(f"{image_file} holds {len(images)} images but {label_file} holds {len(labels)} labels")
    if not len(images):
        raise ValueError(f"{image_file}: no images")
    _, _, mean, std, _ = DATASETS[name]
    pixels = images.float() / 255.0
    got_mean, got_std = float(pixels.mean()), float(pixels.std())
    if abs(got_mean - mean) > PIXEL_TOLERANCE[0] or abs(got_std - std) > PIXEL_TOLERANCE[1]:
        raise ValueError(f"{image_file}: pixel mean {got_mean:.3f} / std {got_std:.3f} are not {name}'s "
                         f"({mean:.3f} / {std:.3f}): the file does not hold {name} images")


def check_archives(name: str, raw: Path) -> None:
    """Every archive (.gz) of `name` present in `raw` matches torchvision's MD5 for it: a truncated or
    corrupted one raises ValueError naming it (torchvision would otherwise try to download it again
    and report a download error on a machine that never went online)."""
    import torchvision

    for filename, md5 in getattr(getattr(torchvision.datasets, DATASETS[name][0]), "resources", ()):
        archive = raw / Path(filename).name
        if not archive.is_file():
            continue
        digest = hashlib.md5(usedforsecurity=False)
        with archive.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        if digest.hexdigest() != md5:
            raise ValueError(f"{archive}: the archive failed its checksum (MD5 {digest.hexdigest()}, expected {md5}): "
                             "it is truncated or corrupted; replace it with a good copy or delete it")


def _unpacked(raw: Path) -> list[Path]:
    return [raw / f.removesuffix(".gz") for f in RAW_FILES]


@lru_cache(maxsize=4)
def _read_raw(name: str, root: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train images, train labels, test images, test labels), validated, from <root>/<folder>/raw/.

    The unpacked IDX files are read directly; when they are missing, torchvision downloads (if online)
    and unpacks the archives first."""
    cls_name, folder, *_ = DATASETS[name]
    raw = Path(root) / folder / "raw"
    files = _unpacked(raw)
    if not all(f.is_file() for f in files):
        import torchvision

        check_archives(name, raw)
        try:
            getattr(torchvision.datasets, cls_name)(root, train=True, download=True)
        except Exception as err:  # noqa: BLE001 - a failed download or a damaged archive
            if not all(f.is_file() for f in files):
                raise FileNotFoundError(
                    f"{name}: could not find or download the dataset ({err}).\n"
                    f"Put these four files into {raw}/ (or set COMPRESSLAB_DATA to a folder that has "
                    f"{folder}/raw/ with them): {', '.join(RAW_FILES)}"
                ) from None
    x_train, y_train, x_test, y_test = (read_idx(f, "images" if "images" in f.name else "labels") for f in files)
    _check_pair(name, x_train, y_train, files[0], files[1])
    _check_pair(name, x_test, y_test, files[2], files[3])
    return x_train, y_train, x_test, y_test


def load(
    name: str,
    root: str | os.PathLike | None = None,
    val_size: int = 0,
    train_subset: int | None = None,
    test_subset: int | None = None,
    seed: int = 0,
) -> Dataset:
    """Load `name` into memory.

    `val_size` examples are carved from the training set (a seeded random split, disjoint from
    the rest of train); `train_subset` / `test_subset` keep only the first n examples of what
    remains (after the seeded shuffle for train), for quick runs.
    """
    check_dataset_name(name)
    if val_size < 0:
        raise ValueError(f"val_size={val_size} must be >= 0")
    for field_name, value in (("train_subset", train_subset), ("test_subset", test_subset)):
        if value is not None and value < 1:
            raise ValueError(f"{field_name}={value} must be >= 1 or None")
    root_path = resolve_root(root)
    x_train, y_train, x_test, y_test = _read_raw(name, str(root_path))
    _, _, mean, std, classes = DATASETS[name]
    if val_size >= len(y_train):
        raise ValueError(f"val_size={val_size} must be < {len(y_train)} (the training set size)")
    order = torch.randperm(len(y_train), generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = order[:val_size], order[val_size:]
    if train_subset is not None:
        train_idx = train_idx[:train_subset]
    if val_size == 0 and train_subset is None:
        train_idx = torch.arange(len(y_train))  # keep the canonical order when nothing is carved
    train = Split(x_train[train_idx], y_train[train_idx], mean, std)
    val = Split(x_train[val_idx], y_train[val_idx], mean, std) if val_size else None
    n_test = len(y_test) if test_subset is None else min(test_subset, len(y_test))
    test = Split(x_test[:n_test], y_test[:n_test], mean, std)
    fingerprint = {
        "name": name, "val_size": val_size, "train_subset": train_subset,
        "test_subset": test_subset, "seed": seed, "n_train": len(train),
    }
    return Dataset(name, train, test, val, classes, fingerprint)
