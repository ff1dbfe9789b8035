"""Drive notebooks in a real JupyterLab through headless Chromium (Playwright), for the browser tests.

`JupyterLab` starts a private server on a free localhost port with a random token and private
config/runtime folders. `run_all` opens a notebook, runs every cell from the UI and collects every
error the kernel publishes (cell errors and widget-callback tracebacks). `exercise_panels` moves
every control of every widget panel through its extremes and reports what a user would notice:
a panel shown twice, a control that changes nothing, a callback that raises, an update too slow.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

SCREENSHOT_DIRS: list[Path] = []  # folders the browser tests saved screenshots to (named in the summary)
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")


def chromium_path() -> str | None:
    """Debian's Chromium (or $COMPRESSLAB_CHROMIUM), if installed."""
    env = os.environ.get("COMPRESSLAB_CHROMIUM")
    for path in ((env,) if env else ()) + CHROMIUM_CANDIDATES:
        if path and Path(path).exists():
            return path
    return shutil.which("chromium")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class JupyterLab:
    """A private JupyterLab server serving `root`; use as a context manager.

    The root must not contain "pytest" or "papermill" in its path: the workbook's widget panels treat
    a kernel whose parent command line names a notebook runner as headless."""

    def __init__(self, root: Path, env: dict[str, str] | None = None, start_timeout: float = 180.0):
        self.root = Path(root)
        self.port = _free_port()
        self.token = secrets.token_hex(16)
        self.private = Path(tempfile.mkdtemp(prefix="compresslab-lab-private-"))
        self.env = dict(os.environ if env is None else env)
        self.env.pop("COMPRESSLAB_HEADLESS", None)
        self.env.update(JUPYTER_CONFIG_DIR=str(self.private / "config"),
                        JUPYTER_RUNTIME_DIR=str(self.private / "runtime"),
                        IPYTHONDIR=str(self.private / "ipython"))
        self.start_timeout = start_timeout
        self.log_path = self.private / "lab.log"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> JupyterLab:
        cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ip=127.0.0.1",
               f"--port={self.port}", f"--IdentityProvider.token={self.token}",
               f"--ServerApp.root_dir={self.root}", "--LabApp.expose_app_in_browser=True",
               "--ServerApp.open_browser=False", "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=self.log_path.open("w"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with {self.proc.returncode}: {self.log_path.read_text()[-2000:]}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/status?token={self.token}", timeout=2)
                return self
            except OSError:
                time.sleep(0.5)
        self.__exit__(None, None, None)
        raise TimeoutError(f"JupyterLab did not answer within {self.start_timeout:.0f} s; log: {self.log_path}")

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.private, ignore_errors=True)

    def url(self, notebook: str) -> str:
        """The notebook in a fresh workspace (`reset`): no tab of an earlier notebook is restored."""
        return f"http://127.0.0.1:{self.port}/lab/tree/{notebook}?reset&token={self.token}"


# JavaScript run in the page. `jupyterapp` is exposed by --LabApp.expose_app_in_browser.
_KERNEL_READY = """(path) => {
  const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  return !!(w && w.context && w.context.path === path && w.sessionContext && w.sessionContext.session
            && w.sessionContext.session.kernel
            && w.sessionContext.session.kernel.connectionStatus === 'connected'
            && w.sessionContext.session.kernel.status === 'idle');
}"""
_LISTEN = """() => {
  window.__errors = [];
  const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
  kernel.iopubMessage.connect((_, msg) => {
    const type = msg.header.msg_type;
    if (type === 'error') {
      window.__errors.push(msg.content.ename + ': ' + msg.content.evalue);
    } else if (type === 'stream' && msg.content.name === 'stderr' && msg.content.text.includes('Traceback')) {
      window.__errors.push(msg.content.text.slice(-1500));
    }
  });
}"""
_ALL_DONE = """() => {
  const w = window.jupyterapp.shell.currentWidget;
  const kernel = w.sessionContext.session.kernel;
  if (kernel.status !== 'idle') return false;
  const cells = w.content.widgets.filter(c => c.model.type === 'code' && c.model.sharedModel.getSource().trim());
  return cells.every(c => c.model.executionCount !== null && !c.node.querySelector('.jp-InputPrompt').textContent.includes('*'));
}"""
_IDLE = "() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status === 'idle'"


@dataclass
class ControlCheck:
    """One move of one control: where it went, whether the panel's output changed, how long it took."""

    panel: int
    control: str
    target: str
    changed: bool
    seconds: float


@dataclass
class PanelReport:
    notebook: str
    errors: list[str] = field(default_factory=list)
    panels: int = 0
    duplicates: list[str] = field(default_factory=list)
    checks: list[ControlCheck] = field(default_factory=list)
    run_seconds: float = 0.0
    screenshots: list[Path] = field(default_factory=list)

    def problems(self, update_bound: float) -> list[str]:
        """Everything a user would call a defect, as sentences."""
        out = [f"kernel error: {e}" for e in self.errors]
        out += [f"panel {d} is displayed more than once" for d in self.duplicates]
        out += [f"panel {c.panel}: moving {c.control!r} to {c.target} changed nothing" for c in self.checks if not c.changed]
        out += [f"panel {c.panel}: moving {c.control!r} to {c.target} took {c.seconds:.1f} s (bound {update_bound:.0f} s)"
                for c in self.checks if c.changed and c.seconds > update_bound]
        return out


def run_all(page, lab: JupyterLab, notebook: str, timeout_s: float) -> float:
    """Open `notebook`, run all its cells from the UI, wait until every code cell has run."""
    page.goto(lab.url(notebook))
    page.wait_for_function(_KERNEL_READY, arg=notebook, timeout=timeout_s * 1000)
    page.evaluate(_LISTEN)
    start = time.monotonic()
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    try:
        page.wait_for_function(_ALL_DONE, timeout=timeout_s * 1000, polling=500)
    except Exception:  # a cell that errors stops "run all": the errors say why
        if not page.evaluate("() => window.__errors.length"):
            raise
    return time.monotonic() - start


def _output_html(panel) -> str:
    """What the reader sees in a panel's output: its text and its images (not the HTML, which
    carries ids that change on every render)."""
    output = panel.locator(".widget-output").first
    images = output.locator("img").evaluate_all("els => els.map(e => e.src).join('|')")
    return output.inner_text() + "\n" + images


def _wait_for_change(page, panel, before: str, bound: float) -> tuple[bool, float]:
    """Wait until the panel's output differs from `before` and the kernel is idle again."""
    start = time.monotonic()
    deadline = start + 1.5 * bound  # past the bound it is a defect either way: slow, or unchanged
    while time.monotonic() < deadline:
        page.wait_for_timeout(200)
        if page.evaluate(_IDLE) and _output_html(panel) != before and _output_html(panel).strip():
            return True, time.monotonic() - start
    return False, time.monotonic() - start


def _set_readout(page, readout, text: str) -> None:
    readout.click()
    page.keyboard.press("Control+A")
    page.keyboard.type(text)
    page.keyboard.press("Enter")


def _moves(page, panel_index: int, control, kind: str):
    """Yield (label, target, action) for each move of one control, its extremes included."""
    if kind == "slider":
        readout = control.locator(".widget-readout")
        for label, target in (("its minimum", "-999999999"), ("its maximum", "999999999")):  # clamped to min / max
            yield label, (lambda t=target: _set_readout(page, readout, t)), (lambda: readout.inner_text())
    elif kind == "dropdown":
        select = control.locator("select")
        options = select.locator("option").all_inner_texts()
        for option in options:
            yield option, (lambda o=option: select.select_option(label=o)), (lambda: select.input_value())
    else:
        box = control.locator("input[type=checkbox]")
        for label in ("toggled", "toggled back"):
            yield label, (lambda: box.click()), (lambda: str(box.is_checked()))


def exercise_panels(page, report: PanelReport, update_bound: float, shots: Path | None = None) -> None:
    """Move every control of every `compresslab-panel` through its extremes; fill `report`."""
    panels = page.locator(".compresslab-panel")
    ids = [next((c for c in (panels.nth(i).get_attribute("class") or "").split() if c.startswith("compresslab-panel-")), "?")
           for i in range(panels.count())]
    report.panels = len(set(ids))
    report.duplicates = sorted({i for i in ids if ids.count(i) > 1})
    seen = set()
    for index, panel_id in enumerate(ids):
        if panel_id in seen:
            continue
        seen.add(panel_id)
        panel = panels.nth(index)
        panel.scroll_into_view_if_needed()
        controls = [(c, "slider") for c in panel.locator(".widget-slider").all()]
        controls += [(c, "dropdown") for c in panel.locator(".widget-dropdown").all()]
        controls += [(c, "toggle") for c in panel.locator(".widget-checkbox").all()]
        for control, kind in controls:
            labels = control.locator("label, .widget-label").all_inner_texts()
            name = next((x.strip("\u200b ") for x in labels if x.strip("\u200b ")), kind)
            for label, act, value_of in _moves(page, index, control, kind):
                value_before = value_of()
                before = _output_html(panel)
                act()
                page.wait_for_timeout(300)
                if value_of() == value_before:
                    continue  # already at that value: nothing should change
                changed, seconds = _wait_for_change(page, panel, before, update_bound)
                report.checks.append(ControlCheck(index, name, label, changed, seconds))
        if shots is not None:
            path = shots / f"{Path(report.notebook).stem}-panel{index}.png"
            panel.screenshot(path=str(path))
            report.screenshots.append(path)
    report.errors = page.evaluate("() => window.__errors")
