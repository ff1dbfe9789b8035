"""The cache of trained baselines: train once, reuse in every notebook and sweep.

An entry is keyed by a hash of everything that changes its numbers: model name and arguments, the
data fingerprint, the training config (seed included), the device type, torch's intra-op thread
count and torch's version. It stores a SHA-256 of its weights; on load the key, format, every
field, the parameter names, shapes, dtypes, finiteness and that hash are checked before any weight
reaches the model, so a damaged entry is retrained from the fresh initialisation a clean run
uses, never trusted.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from compresslab.core import locations, models
from compresslab.core.data import Dataset
from compresslab.core.io import torch_save_atomic
from compresslab.core.training import TrainConfig, evaluate, get_device, seed_everything, train

__all__ = [
    "CACHE_FORMAT",
    "Baseline",
    "cache_key",
    "weights_digest",
    "entry_lock",
    "pretrained",
]

CACHE_FORMAT = 3  # 2: thread count and device in the key, weights hash in the entry; 3: accuracies in percent


def _usable_cache_dir() -> Path:
    """locations.cache_dir(), created if missing; raises NotADirectoryError in one line before any
    training if it cannot be (a file in the way, a folder that cannot be created such as one in /proc)."""
    path = locations.cache_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise NotADirectoryError(f"the baseline cache {path} (COMPRESSLAB_CACHE) is not a usable folder "
                                 f"({err.strerror or type(err).__name__}): point COMPRESSLAB_CACHE at a folder") from None
    if not path.is_dir():
        raise NotADirectoryError(f"the baseline cache {path} (COMPRESSLAB_CACHE) is not a usable folder: "
                                 "point COMPRESSLAB_CACHE at a folder")
    return path


@dataclass
class Baseline:
    """A trained model and where it came from; accuracy: its test accuracy in percent."""

    model: nn.Module
    accuracy: float
    key: str
    from_cache: bool
    train_seconds: float
    history: dict


def cache_key(model_name: str, model_kwargs: dict, data: Dataset, config: TrainConfig,
              device: str = "cpu") -> tuple[str, dict]:
    """(short hash, spec) of what determines a baseline's weights."""
    spec = {
        "format": CACHE_FORMAT,
        "model": model_name,
        "model_kwargs": model_kwargs,
        "data": data.fingerprint,
        "train": asdict(config),
        "device": device,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    text = json.dumps(spec, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20], spec


def weights_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes, in key order."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


_FIELDS = {"format": int, "key": str, "state_dict": dict, "accuracy": float, "train_seconds": float,
           "history": dict, "weights_sha256": str}


def _check_entry(entry: object, key: str, model: nn.Module) -> dict:
    """The entry if it is complete, for `key`, and fits `model` exactly; else ValueError saying why."""
    if not isinstance(entry, dict):
        raise ValueError(f"entry is a {type(entry).__name__}, not a dict")
    for name, kind in _FIELDS.items():
        if name not in entry:
            raise ValueError(f"field {name!r} is missing")
        if not isinstance(entry[name], kind) or isinstance(entry[name], bool):
            raise ValueError(f"field {name!r} is a {type(entry[name]).__name__}, not a {kind.__name__}")
    if entry["format"] != CACHE_FORMAT or entry["key"] != key:
        raise ValueError("key or format does not match")
    if not 0.0 <= entry["accuracy"] <= 100.0:
        raise ValueError(f"accuracy {entry['accuracy']} is not in [0, 100] (percent)")
    state, expected = entry["state_dict"], model.state_dict()
    if set(state) != set(expected):
        raise ValueError(f"parameters differ: missing {sorted(set(expected) - set(state))}, "
                         f"unexpected {sorted(set(state) - set(expected))}")
    for name, ref in expected.items():
        t = state[name]
        if not isinstance(t, torch.Tensor) or t.shape != ref.shape or t.dtype != ref.dtype:
            raise ValueError(f"{name} does not match the model's {ref.dtype} {tuple(ref.shape)}")
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise ValueError(f"non-finite weights in {name}")
    if weights_digest(state) != entry["weights_sha256"]:
        raise ValueError("the weights' SHA-256 does not match the one stored with them")
    return entry


def _load_cached(path: Path, key: str, model: nn.Module) -> dict | None:
    """The validated cache entry at `path`, or None (with a warning) if absent or unusable.

    `model` is only the template here: nothing is loaded into it."""
    if not path.exists():
        return None
    try:
        return _check_entry(torch.load(path, map_location="cpu", weights_only=True), key, model)
    except Exception as err:  # noqa: BLE001 - any unreadable entry is retrained
        warnings.warn(f"cached baseline {path.name} is unusable ({err}); retraining", stacklevel=3)
        return None


@contextmanager
def entry_lock(path: Path) -> Iterator[bool]:
    """Hold an exclusive lock on `<entry>.lock` next to the cache entry at `path` (fcntl.flock).

    Two processes on one machine that need the same untrained baseline at once: the first trains
    and stores it under the lock, the second waits and then loads the stored entry. Yields True
    while locked, False where no lock can be taken (no fcntl, a read-only cache folder): the
    atomic writes still keep every entry whole then, at worst trained twice.
    """
    try:
        import fcntl
    except ImportError:  # not a POSIX system
        fcntl = None
    fd = None
    if fcntl is not None:
        try:
            fd = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o666)  # less the umask, as open()
        except OSError:
            fd = None
    if fd is None:
        yield False
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield True
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def pretrained(
    model_name: str,
    data: Dataset,
    config: TrainConfig,
    model_kwargs: dict | None = None,
    progress: bool | None = None,
    device: str = "auto",
) -> Baseline:
    """Train `model_name` on `data` with `config`, or reuse the cached result of exactly that.

    The cache key hashes model name and arguments, the data fingerprint, the training config (its
    seed included), the device type, torch.get_num_threads() and torch's version. Writes are
    atomic; a corrupt, incomplete or mismatched entry is retrained from the seeded initialisation.
    Looking up and training-and-storing happen under `entry_lock`, so concurrent runs on one
    machine train a missing entry once. A run that ends with non-finite weights is returned with a
    warning but not cached.
    """
    model_kwargs = dict(model_kwargs or {})
    dev = get_device(device)
    key, spec = cache_key(model_name, model_kwargs, data, config, dev.type)
    path = _usable_cache_dir() / f"{model_name}-{data.name}-{key}.pt"
    seed_everything(config.seed)
    model = models.create(model_name, **model_kwargs)
    with entry_lock(path):  # one process trains and stores; another asking meanwhile waits, then loads
        entry = _load_cached(path, key, model)
        if entry is not None:
            model.load_state_dict(entry["state_dict"], strict=True)
            models.prepare_model(model)  # the layout `train` leaves: a cached convnet computes like a fresh one
            model.to(dev).eval()
            return Baseline(model, entry["accuracy"], key, True, entry["train_seconds"], entry["history"])
        model.to(dev)
        history = train(model, data, config, progress=progress)
        accuracy = evaluate(model, data.test).accuracy
        state_dict = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        if not all(torch.isfinite(v).all() for v in state_dict.values() if v.is_floating_point()):
            warnings.warn(f"training {model_name} ended with non-finite weights (lower lr?): not cached", stacklevel=2)
        else:
            try:
                torch_save_atomic(
                    {"format": CACHE_FORMAT, "key": key, "spec": json.dumps(spec, default=str), "state_dict": state_dict,
                     "accuracy": float(accuracy), "train_seconds": float(history.seconds),
                     "history": history.to_dict(), "weights_sha256": weights_digest(state_dict)},
                    path,
                )
            except OSError as err:  # a folder where the entry should be, a full or read-only disk
                warnings.warn(f"could not store the baseline at {path} ({err}): trained, not cached", stacklevel=2)
        return Baseline(model, accuracy, key, False, history.seconds, history.to_dict())
