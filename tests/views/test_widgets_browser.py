"""Widget panels in a real browser: every notebook run from JupyterLab's UI in headless Chromium.

Each notebook (quick profile, injected the way papermill injects parameters, in a temporary copy)
runs all its cells from the UI; then every slider, dropdown and toggle of every panel is moved
through its extremes. The test fails on a kernel error or widget-callback traceback, a panel shown
more than once, a control that changes nothing, or an update slower than the bound. A deliberately
broken notebook checks that each of those defects is caught. Select with `-m browser`, skip with
`-m "not browser"`; the tests skip (with the reason) only where Chromium or Playwright is missing.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import nbformat
import pytest
from jupyterlab_driver import (
    SCREENSHOT_DIRS,
    JupyterLab,
    PanelReport,
    chromium_path,
    exercise_panels,
    run_all,
)

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted(p.name for p in (REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
RUN_TIMEOUT_S = 900.0  # one notebook's "run all" (quick profile) on a loaded 2-core machine
UPDATE_BOUND_S = 60.0  # one control move until the panel shows the new output


@pytest.fixture(scope="module")
def lab_page(baseline_cache):
    """(JupyterLab, page, root, screenshot folder); the root avoids "pytest" in its path (see JupyterLab)."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="the Playwright Python package is not installed")
    chromium = chromium_path()
    if chromium is None:
        pytest.skip("Chromium is not installed (apt-get install chromium); browser tests need it")
    root = Path(tempfile.mkdtemp(prefix="compresslab-browser-"))
    shots = Path(tempfile.mkdtemp(prefix="compresslab-screenshots-"))
    SCREENSHOT_DIRS.append(shots)
    env = dict(os.environ, COMPRESSLAB_RESULTS_DIR=str(root / "results"), COMPRESSLAB_CACHE=str(baseline_cache))
    try:
        with JupyterLab(root, env) as lab, sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            yield lab, page, root, shots
            browser.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _quick_copy(source: Path, root: Path) -> str:
    """The notebook with profile="quick" injected after its parameters cell, as papermill does."""
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    nb = parameterize_notebook(load_notebook_node(str(source)), {"profile": "quick"})
    nbformat.write(nb, root / source.name)
    return source.name


def _check(lab_page, name: str, expected_panels: int, update_bound: float = UPDATE_BOUND_S) -> PanelReport:
    lab, page, root, shots = lab_page
    report = PanelReport(name)
    report.run_seconds = run_all(page, lab, name, RUN_TIMEOUT_S)
    exercise_panels(page, report, update_bound, shots)
    page.screenshot(path=str(shots / f"{Path(name).stem}.png"))
    assert report.panels == expected_panels, f"{name}: {report.panels} panels shown, {expected_panels} expected"
    return report


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_notebook_panels_in_jupyterlab(lab_page, notebook):
    nb = nbformat.read(REPO / "notebooks" / notebook, as_version=4)
    expected = sum(1 for c in nb.cells if c.cell_type == "code" and "panel(" in c.source)
    report = _check(lab_page, _quick_copy(REPO / "notebooks" / notebook, lab_page[2]), expected)
    assert report.checks, f"{notebook}: no control was moved"
    problems = report.problems(UPDATE_BOUND_S)
    assert not problems, f"{notebook}: " + "; ".join(problems)
    controls = {c.control for c in report.checks}
    print(f"{notebook}: ran in {report.run_seconds:.0f} s; {len(report.checks)} moves of {len(controls)} controls, "
          f"slowest update {max(c.seconds for c in report.checks):.1f} s; screenshots in {lab_page[3]}")


BROKEN = '''
from IPython.display import display

from compresslab.views import panel


def fine(x):
    return panel.View(metrics={"x": x})


box = panel.build_panel(fine, {"x": panel.slider(0, 1)}, {"x": 0.5})
display(box)
display(box)  # defect 1: the same panel shown twice


def ignores_y(x, y):
    return panel.View(metrics={"x": x})  # defect 2: the "y" slider is wired to nothing


panel.panel(ignores_y, {"x": panel.slider(0, 1), "y": panel.slider(0, 1)}, {"x": 0.5, "y": 0.5})


def raises_at_the_top(x):
    if x > 0.9:
        raise RuntimeError("callback failed at the slider's maximum")  # defect 3
    return panel.View(metrics={"x": x})


panel.panel(raises_at_the_top, {"x": panel.slider(0, 1)}, {"x": 0.5})
'''


def test_broken_panels_are_caught(lab_page):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(BROKEN)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, lab_page[2] / "broken_panels.ipynb")
    # its renders take milliseconds: a short bound keeps the wait for the dead slider short
    report = _check(lab_page, "broken_panels.ipynb", expected_panels=3, update_bound=10.0)
    problems = report.problems(10.0)
    assert any("displayed more than once" in p for p in problems), problems
    assert any("'y'" in p and "changed nothing" in p for p in problems), problems
    assert not any("'x'" in p and "changed nothing" in p for p in problems), problems
    assert any("RuntimeError: callback failed at the slider's maximum" in p for p in problems), problems
