"""Shared fixtures: offline data, a private baseline cache, tiny synthetic data, notebook runs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"

os.environ.setdefault("COMPRESSLAB_QUIET", "1")
os.environ.setdefault("COMPRESSLAB_HEADLESS", "1")


def pytest_configure(config: pytest.Config) -> None:
    """Point COMPRESSLAB_DATA at offline copies: the given folder, <repo>/data, or ../shared/data."""
    if os.environ.get("COMPRESSLAB_DATA"):
        return
    if (REPO / "data" / "MNIST" / "raw" / "train-images-idx3-ubyte.gz").exists():
        return
    if SHARED_DATA.exists():
        scratch = (Path(config.cache.mkdir("compresslab-data")) if getattr(config, "cache", None)
                   else REPO / ".cache" / "data")
        for folder in ("MNIST", "FashionMNIST"):
            if not (scratch / folder).exists():
                shutil.copytree(SHARED_DATA / folder, scratch / folder)
        os.environ["COMPRESSLAB_DATA"] = str(scratch)


def pytest_terminal_summary(terminalreporter) -> None:
    """Name the folders where the browser tests saved their screenshots."""
    from jupyterlab_driver import SCREENSHOT_DIRS

    for folder in SCREENSHOT_DIRS:
        terminalreporter.write_line(f"browser test screenshots: {folder}")


@pytest.fixture(scope="session", autouse=True)
def baseline_cache(tmp_path_factory):
    """Baselines go to a session cache unless COMPRESSLAB_CACHE is set (then runs reuse it)."""
    if not os.environ.get("COMPRESSLAB_CACHE"):
        os.environ["COMPRESSLAB_CACHE"] = str(tmp_path_factory.mktemp("baselines"))
    yield Path(os.environ["COMPRESSLAB_CACHE"])


def make_tiny_variational(spread: float, seed: int = 0):
    """A 784-16-10 variational MLP (`techniques.variational`) whose log sigma^2 scatters around
    log theta^2 with standard deviation `spread`: log alpha on both sides of any threshold near 0."""
    from torch import nn

    from compresslab.techniques import variational

    torch.manual_seed(seed)
    vd = variational.to_variational(nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.ReLU(), nn.Linear(16, 10)))
    with torch.no_grad():
        for layer in variational.variational_layers(vd).values():
            layer.log_sigma2.copy_(torch.log(layer.weight ** 2) + torch.randn_like(layer.weight) * spread)
    return vd


def make_tiny_dataset(n_train: int = 256, n_test: int = 128, n_val: int = 64, seed: int = 0):
    """A learnable synthetic 10-class problem in the MNIST layout: class c lights up block c."""
    from compresslab.core.data import Dataset, Split

    gen = torch.Generator().manual_seed(seed)

    def split(n: int) -> Split:
        labels = torch.randint(0, 10, (n,), generator=gen)
        images = torch.randint(0, 60, (n, 28, 28), generator=gen, dtype=torch.int64)
        for i, c in enumerate(labels.tolist()):
            r, col = divmod(c, 5)
            images[i, 4 + 10 * r:12 + 10 * r, 1 + 5 * col:5 + 5 * col] += 190
        return Split(images.clamp(0, 255).to(torch.uint8), labels, 0.2, 0.3)

    return Dataset("tiny", split(n_train), split(n_test), split(n_val) if n_val else None,
                   tuple(str(i) for i in range(10)), {"name": "tiny", "seed": seed, "n_train": n_train})


@pytest.fixture
def tiny_data():
    return make_tiny_dataset()


@pytest.fixture(scope="session")
def run_notebook(tmp_path_factory):
    """run_notebook(name, **params) executes a notebook with profile='quick' once per session and
    returns its RunResult (recorded metrics in .results); a failed run fails the test with the cell error."""
    from compresslab.running import runner

    done: dict = {}

    def run(name: str, **params):
        key = (name, tuple(sorted(params.items())))
        if key not in done:
            out = tmp_path_factory.mktemp(name)
            done[key] = runner.execute(runner.resolve(name), out, params, profile="quick", cell_timeout=900, html=False)
        result = done[key]
        assert result.ok, f"{name} failed: {result.error}\nexecuted notebook: {result.output}"
        return result

    return run


@pytest.fixture(scope="session")
def png_per_cell():
    """png_per_cell(path) -> the number of PNG outputs of each code cell of an executed notebook."""
    import nbformat

    def count(path) -> list[int]:
        executed = nbformat.read(path, as_version=4)
        return [sum("image/png" in o.get("data", {}) for o in c.get("outputs", []))
                for c in executed.cells if c.cell_type == "code"]

    return count
