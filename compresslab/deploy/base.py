"""One interface for every deployment runtime: export, optionally quantize, run a batch, report bytes.

    adapter = deploy.adapter("onnxruntime")
    deployed = adapter.export(model, example, DeployOptions(precision="int8", threads=1),
                              calibration=calib, workdir=tmp)
    logits = deployed(x)            # torch in, torch out (float32 logits)
    deployed.file_bytes             # the bytes of the file the runtime loads
    deployed.with_threads(2)        # the same file, loaded again with another thread count

Each runtime lives in its own module (`runtime_<name>`) and registers an `Adapter` subclass here.
Runtimes are optional packages: `available()` says which are importable and, for the others, one
sentence naming what to install; `adapter(name)` raises `MissingRuntime` with that sentence.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import importlib.util
import io
import logging
import os
import sys
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from compresslab.core.validate import check_choice, check_int

__all__ = [
    "PRECISIONS",
    "quiet",
    "plain_rich_console",
    "MissingRuntime",
    "DeployOptions",
    "Deployed",
    "Adapter",
    "register",
    "adapter",
    "adapters",
    "available",
    "missing_message",
    "to_numpy",
    "plain_copy",
]

# fp32: the float model as is; fp16: float16 weights; bf16: the runtime computes in bfloat16;
# int8: weights and activations in int8 (static, calibrated); int8_dynamic: int8 weights, activations
# quantized on the fly per batch; int8_weights: weight-only / palettized compression (file size).
PRECISIONS = ("fp32", "fp16", "bf16", "int8", "int8_dynamic", "int8_weights")


class MissingRuntime(ImportError):
    """A runtime's Python package is not installed; the message says what to install."""


@dataclass(frozen=True)
class DeployOptions:
    """How to build one deployed model.

    precision: one of PRECISIONS (each adapter lists the ones it supports);
    threads: intra-op threads of the runtime's session (>= 1; set explicitly, never the default);
    batch_size: the batch a fixed-shape runtime (LiteRT) is converted for; others take any batch;
    calibration_batch: batch size for feeding calibration images to a quantizer.
    """

    precision: str = "fp32"
    threads: int = 1
    batch_size: int = 1
    calibration_batch: int = 100

    def __post_init__(self) -> None:
        owner = "DeployOptions"
        check_choice(owner, "precision", self.precision, PRECISIONS)
        check_int(owner, "threads", self.threads, 1, 4096)
        check_int(owner, "batch_size", self.batch_size, 1, 2**16)
        check_int(owner, "calibration_batch", self.calibration_batch, 1, 10**6)


def plain_copy(model: nn.Module) -> nn.Module:
    """A CPU copy of `model` in eval mode with every parameter and buffer contiguous (NCHW): the
    exporters expect the default layout (a cached convnet may hold channels_last weights)."""
    model = copy.deepcopy(model).cpu().eval()
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            t.data = t.data.contiguous()
    return model


def to_numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """A C-contiguous float32 array (runtimes reject strided views such as channels_last tensors)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().contiguous().numpy()
    return np.ascontiguousarray(x, dtype=np.float32)


@dataclass
class Deployed(ABC):
    """A model loaded in a runtime: call it on a batch (torch or numpy, NCHW) to get float32 logits."""

    runtime: str
    precision: str
    path: Path
    threads: int
    options: DeployOptions
    notes: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.runtime} {self.precision}"

    @property
    def file_bytes(self) -> int:
        """Bytes on disk of everything the runtime loads (a directory counts all its files)."""
        p = Path(self.path)
        if p.is_dir():
            return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
        return p.stat().st_size

    @abstractmethod
    def run(self, x: np.ndarray) -> np.ndarray:
        """Logits for one float32 NCHW batch."""

    @abstractmethod
    def with_threads(self, threads: int) -> Deployed:
        """The same file loaded again with `threads` intra-op threads."""

    def __call__(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(self.run(to_numpy(x)), dtype=np.float32))


class Adapter(ABC):
    """One runtime: `export(model, example, options, calibration, workdir) -> Deployed`.

    Subclasses set `name`, `title` (for messages), `packages` (import names checked by `available`),
    `install` (a clause saying how to install them) and `precisions`; `requirement()` may add a further condition
    (a GPU) and returns None when the runtime can be used here.
    """

    name: str = ""
    title: str = ""
    packages: tuple[str, ...] = ()
    install: str = ""
    precisions: tuple[str, ...] = ("fp32",)
    fixed_batch: bool = False  # True: one converted file per batch size (options.batch_size)
    can_run: bool = True  # False: converts and compresses here, cannot execute (Core ML off macOS)

    def requirement(self) -> str | None:
        """None if usable here, else one sentence saying why not (missing package, no GPU).
        Looks the packages up without importing them (importing some prints pages of notices)."""
        for pkg in self.packages:
            if pkg in sys.modules and sys.modules[pkg] is None:  # import blocked
                return missing_message(self.title or self.name, self.install)
            try:
                found = importlib.util.find_spec(pkg.split(".")[0]) is not None
            except (ImportError, ValueError):
                found = False
            if not found:
                return missing_message(self.title or self.name, self.install)
        return None

    def check(self, options: DeployOptions) -> None:
        """Raise MissingRuntime if the runtime cannot be used, ValueError for an unsupported precision."""
        why = self.requirement()
        if why is not None:
            raise MissingRuntime(why)
        if options.precision not in self.precisions:
            raise ValueError(f"DeployOptions.precision={options.precision!r} is not supported by "
                             f"{self.name}; it supports {self.precisions}")

    @abstractmethod
    def export(self, model: nn.Module, example: torch.Tensor, options: DeployOptions,
               calibration: torch.Tensor | None = None, workdir: str | os.PathLike = ".") -> Deployed:
        """Write the runtime's file for `model` (traced on `example`) into `workdir` and load it."""


_REGISTRY: dict[str, Callable[[], Adapter]] = {}
RUNTIME_PREFIX = "runtime_"  # every module compresslab.deploy.runtime_* holds one adapter


def register(cls: type[Adapter]) -> type[Adapter]:
    """Class decorator: make `cls` reachable as adapter(cls.name)."""
    _REGISTRY[cls.name] = cls
    return cls


def _load_modules() -> None:
    """Import every runtime_* module of this package, so each registers its adapter."""
    import pkgutil

    package = importlib.import_module("compresslab.deploy")
    for info in pkgutil.iter_modules(package.__path__):
        if info.name.startswith(RUNTIME_PREFIX):
            importlib.import_module(f"compresslab.deploy.{info.name}")


def adapters() -> dict[str, Adapter]:
    """Every known adapter, installed or not, by name."""
    _load_modules()
    return {name: cls() for name, cls in _REGISTRY.items()}


def adapter(name: str) -> Adapter:
    """The adapter called `name`; MissingRuntime (one sentence, what to install) if unusable here."""
    known = adapters()
    if name not in known:
        raise ValueError(f"runtime={name!r} is not known; known runtimes: {sorted(known)}")
    found = known[name]
    why = found.requirement()
    if why is not None:
        raise MissingRuntime(why)
    return found


def available(names: Sequence[str] | None = None) -> dict[str, str | None]:
    """name -> None if usable here, else the one-sentence reason (never raises, never a traceback)."""
    known = adapters()
    return {name: known[name].requirement() for name in (names or known)}


def missing_message(runtime: str, install: str, detail: str = "") -> str:
    """The one sentence shown for a runtime that cannot be used here; `install` says how to get it.

    >>> missing_message("ONNX Runtime", "install it with `pip install onnxruntime`")
    'ONNX Runtime is not installed here: install it with `pip install onnxruntime`.'
    """
    why = f" ({detail.splitlines()[0][:120]})" if detail and "No module named" not in detail else ""
    return f"{runtime} is not installed here{why}: {install}."


@contextlib.contextmanager
def native_stderr_captured() -> Iterator[None]:
    """Hold back a runtime's log lines on stderr: those its bindings write through Python's
    sys.stderr and those native code writes straight to file descriptor 2. The text is dropped when
    the block succeeds and written to stderr when it raises, so a failure keeps the runtime's reason."""
    import tempfile

    python_side = io.StringIO()
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no usable descriptor 2 (an embedded interpreter)
        saved = None
    with tempfile.TemporaryFile() as held:
        if saved is not None:
            os.dup2(held.fileno(), 2)
        try:
            with contextlib.redirect_stderr(python_side):
                yield
        except BaseException:
            if saved is not None:
                os.dup2(saved, 2)
                held.seek(0)
                sys.stderr.write(held.read(1 << 16).decode(errors="replace"))
            sys.stderr.write(python_side.getvalue()[-(1 << 16):])
            raise
        finally:
            if saved is not None:
                os.dup2(saved, 2)
                os.close(saved)


@contextlib.contextmanager
def plain_rich_console() -> Iterator[None]:
    """While inside, `rich`'s global console (NNCF's progress bars draw on it) writes plain text to a
    discarded buffer instead of rendering, in a Jupyter kernel, a live ipywidgets display: a widget
    opened by a package's progress bar is a comm that a headless run must not wait on. Nothing happens
    when rich is not loaded."""
    import sys

    if "rich" not in sys.modules:
        yield
        return
    import rich

    console = rich.get_console()
    saved = dict(console.__dict__)
    rich.reconfigure(file=io.StringIO(), force_jupyter=False, force_terminal=False)
    try:
        yield
    finally:
        console.__dict__ = saved


@contextlib.contextmanager
def quiet(loggers: Sequence[str], stderr: bool = False) -> Iterator[None]:
    """Silence a runtime's chatter while it converts or loads: the named loggers at ERROR, warnings
    ignored, stdout (and with `stderr`, stderr) swallowed, rich's progress displays kept out of the
    notebook (`plain_rich_console`); everything restored afterwards."""
    found = [logging.getLogger(name) for name in loggers]
    levels = [lg.level for lg in found]
    for lg in found:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                (contextlib.redirect_stderr(io.StringIO()) if stderr else contextlib.nullcontext()), \
                plain_rich_console():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(found, levels):
            lg.setLevel(level)

