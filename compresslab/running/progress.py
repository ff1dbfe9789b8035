"""Live progress for notebook runs, and the papermill engine that reports it.

`CellProgress` shows which section and cell of a notebook is running and for how long: one line
rewritten in place on a terminal (refreshed every second), plain lines at each new section
otherwise (logs, CI). `ProgressEngine` is papermill's nbclient engine with two changes: it calls
`CellProgress.cell` before every cell, and it starts the kernel on IPC sockets in a private folder
instead of TCP, so the kernel has no unencrypted-TCP warning to print (and no port to take). It
also takes the kernel's environment and working folder as arguments (`kernel_env`, `kernel_cwd`)
rather than from this process, so several runs can execute at once in one process.
"""

from __future__ import annotations

import functools
import re
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

__all__ = ["section_titles", "CellProgress", "ProgressEngine", "ENGINE_NAME", "register_engine"]

ENGINE_NAME = "compresslab"
_HEADING = re.compile(r"^\s{0,3}#{1,3}\s+(.+?)\s*#*\s*$", re.M)


def section_titles(cells: Sequence) -> list[str]:
    """For each cell, the title of the last Markdown heading (#, ## or ###) at or before it ('' before any)."""
    titles, current = [], ""
    for cell in cells:
        if cell.get("cell_type") == "markdown":
            source = cell.get("source", "")
            source = "".join(source) if isinstance(source, list) else source
            found = _HEADING.findall(source)
            if found:
                current = re.sub(r"[*_`]", "", found[-1]).strip()
        titles.append(current)
    return titles


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}:{secs:02d}"


class CellProgress:
    """Progress of one notebook run: `label  cell i/N · section · m:ss` (see the module docstring)."""

    def __init__(self, label: str, cells: Sequence, stream: TextIO | None = None, width: int = 100):
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.titles = section_titles(cells)
        self.code_index = {}
        for i, cell in enumerate(cells):
            if cell.get("cell_type") == "code":
                self.code_index[i] = len(self.code_index) + 1
        self.total = len(self.code_index)
        self.width = width
        self.start = time.monotonic()
        self.current = ""
        self.section = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._ticker: threading.Thread | None = None

    def text(self, now: float | None = None) -> str:
        elapsed = (time.monotonic() if now is None else now) - self.start
        line = f"{self.label}  {self.current} · {_clock(elapsed)}"
        return line if len(line) <= self.width else line[: self.width - 1] + "…"

    def cell(self, index: int) -> None:
        """Called as cell `index` (position among all cells) starts."""
        number = self.code_index.get(index)
        if number is None:
            return
        title = self.titles[index] if index < len(self.titles) else ""
        with self._lock:
            self.current = f"cell {number}/{self.total}" + (f" · {title}" if title else "")
            if self.tty:
                self._draw()
            elif title != self.section:
                self.stream.write(self.text() + "\n")
                self.stream.flush()
            self.section = title
        if self.tty and self._ticker is None:
            self._ticker = threading.Thread(target=self._tick, daemon=True)
            self._ticker.start()

    def _draw(self) -> None:
        self.stream.write("\r\033[K" + self.text())
        self.stream.flush()

    def _tick(self) -> None:
        while not self._stop.wait(1.0):
            with self._lock:
                self._draw()

    def close(self) -> None:
        """Stop refreshing and clear the line (the runner then prints its summary line)."""
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(2)
        if self.tty:
            with self._lock:
                self.stream.write("\r\033[K")
                self.stream.flush()


def _engine_class():
    from jupyter_client.manager import KernelManager
    from papermill.engines import NBClientEngine

    class ProgressEngine(NBClientEngine):
        """nbclient execution with per-cell progress and an IPC-transport kernel."""

        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, progress_label: str | None = None,
                                     progress_stream: TextIO | None = None, kernel_env: dict | None = None,
                                     kernel_cwd: str | None = None, **kwargs):
            progress = None if progress_label is None else CellProgress(progress_label, nb_man.nb.cells, progress_stream)
            if progress is not None:
                original = nb_man.cell_start

                def cell_start(cell, cell_index=None, **kw):
                    if cell_index is not None:
                        progress.cell(cell_index)
                    return original(cell, cell_index, **kw)

                nb_man.cell_start = cell_start
            sockets = Path(tempfile.mkdtemp(prefix="compresslab-kernel-"))
            km = KernelManager(kernel_name=kernel_name, transport="ipc", ip=str(sockets / "kernel"))
            launch = {k: v for k, v in (("env", kernel_env), ("cwd", kernel_cwd)) if v is not None}
            if launch:  # the kernel's environment and folder, without touching this process's (thread-safe)
                km.start_kernel = functools.partial(km.start_kernel, **launch)
            try:
                return super().execute_managed_notebook(nb_man, kernel_name, km=km, **kwargs)
            finally:
                if progress is not None:
                    progress.close()
                if km.has_kernel:  # nbclient leaves a kernel it did not create running: stop it here
                    km.shutdown_kernel(now=True)
                km.cleanup_resources()
                shutil.rmtree(sockets, ignore_errors=True)

    return ProgressEngine


ProgressEngine = None  # the class, once `register_engine()` has built it (papermill is imported lazily)


def register_engine() -> str:
    """Register the engine with papermill (once) and return its name for `execute_notebook(engine_name=...)`."""
    global ProgressEngine
    from papermill.engines import papermill_engines

    if ProgressEngine is None:
        ProgressEngine = _engine_class()
        papermill_engines.register(ENGINE_NAME, ProgressEngine)
    return ENGINE_NAME
