"""Atomic file writes: one implementation, used by the results, the baseline cache, the exercise
builder and the compressed-file writer.

A write goes to a temporary file in the target's folder, is flushed and fsynced, then renamed over
the target with `os.replace` (atomic on POSIX and Windows). A reader therefore sees either the old
file or the new one, never a half-written one; if anything fails midway the old file is left intact
and the temporary file is removed. The file gets the mode a plain `open(path, "w")` would give it
(0666 less the process's umask), not the 0600 of a temporary file, so a shared cache, a handout folder
or a results folder stays readable by the others the umask allows.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from glob import escape as glob_escape
from pathlib import Path

__all__ = ["remove_stale_temporaries", "write_bytes_atomic", "write_text_atomic", "write_json_atomic", "torch_save_atomic"]


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable where the platform allows opening a folder."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    """The process's umask, read without changing it where the platform tells it (Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: read it by setting it, then put it back at once
    os.umask(mask)
    return mask


def _alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (one owned by another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True
    return True


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files a writer of `path` killed mid-write left behind (returns them).

    A temporary file is `.<name>.<pid>.<random>.tmp` beside the target; it is stale when no process
    with that id runs any more. Temporaries of a live writer are left alone.

    >>> import pathlib, tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     target = pathlib.Path(folder) / "x.bin"
    ...     _ = (target.parent / f".x.bin.{2**22 + 1}.abc.tmp").write_bytes(b"half")  # no such process
    ...     [p.name for p in remove_stale_temporaries(target)]
    ['.x.bin.4194305.abc.tmp']
    """
    path = Path(path)
    removed = []
    try:
        candidates = list(path.parent.glob(f".{glob_escape(path.name)}.*.tmp"))
    except OSError:
        return removed
    for tmp in candidates:
        pid = tmp.name[len(path.name) + 2:].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            try:
                tmp.unlink()
                removed.append(tmp)
            except OSError:
                pass
    return removed


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> int:
    """Replace the file at `path` by `data` atomically; returns the number of bytes written.

    >>> import pathlib, tempfile
    >>> folder = tempfile.TemporaryDirectory()
    >>> target = pathlib.Path(folder.name) / "sub" / "x.bin"
    >>> write_bytes_atomic(target, b"abc")
    3
    >>> target.read_bytes()
    b'abc'
    >>> [p.name for p in target.parent.iterdir()]  # no temporary file left behind
    ['x.bin']
    >>> folder.cleanup()
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_dir():
        raise IsADirectoryError(f"cannot write the file {path}: a folder of that name is in the way")
    remove_stale_temporaries(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if hasattr(os, "fchmod"):
                os.fchmod(f.fileno(), 0o666 & ~_umask())
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return len(data)


def write_text_atomic(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> int:
    """`write_bytes_atomic` of `text` encoded (UTF-8 by default); returns the bytes written.

    >>> import pathlib, tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     target = pathlib.Path(folder) / "note.md"
    ...     n = write_text_atomic(target, "héllo")
    ...     n, target.read_text(encoding="utf-8")
    (6, 'héllo')
    """
    return write_bytes_atomic(path, text.encode(encoding))


def write_json_atomic(path: str | os.PathLike, payload: object, indent: int | None = 2) -> int:
    """`payload` as JSON (keys in insertion order, `indent` spaces), written atomically.

    >>> import pathlib, tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     target = pathlib.Path(folder) / "r.json"
    ...     _ = write_json_atomic(target, {"b": 1, "a": [1.5, None]}, indent=None)
    ...     target.read_text()
    '{"b": 1, "a": [1.5, null]}'
    """
    return write_text_atomic(path, json.dumps(payload, indent=indent, sort_keys=False))


def torch_save_atomic(obj: object, path: str | os.PathLike) -> int:
    """`torch.save(obj)` serialized in memory, then written atomically; returns the bytes written.

    >>> import pathlib, tempfile, torch
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     target = pathlib.Path(folder) / "t.pt"
    ...     n = torch_save_atomic({"w": torch.arange(3)}, target)
    ...     n == target.stat().st_size, torch.load(target)["w"].tolist()
    (True, [0, 1, 2])
    """
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return write_bytes_atomic(path, buffer.getvalue())
