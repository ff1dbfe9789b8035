"""Where the notebooks, exercises, data and cache are found: environment variable, then the source
checkout, then (installed package) the files shipped inside it and the per-user folders; and a
wheel installed outside any checkout runs `compresslab list` from an unrelated folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from compresslab.core import locations

ROOT = Path(__file__).resolve().parents[2]
VARS = ("COMPRESSLAB_NOTEBOOKS", "COMPRESSLAB_EXERCISES", "COMPRESSLAB_DATA", "COMPRESSLAB_CACHE",
        "XDG_DATA_HOME", "XDG_CACHE_HOME")


@pytest.fixture
def clean_env(monkeypatch):
    for name in VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_in_the_checkout_everything_is_beside_the_package(clean_env):
    assert locations.checkout_root() == ROOT
    assert locations.notebook_dir() == ROOT / "notebooks"
    assert locations.exercise_dir() == ROOT / "exercises"
    assert locations.data_dir() == ROOT / "data"
    assert locations.cache_dir() == ROOT / ".cache" / "compresslab"


def test_environment_variables_come_first(clean_env, tmp_path):
    for name, fn in (("COMPRESSLAB_NOTEBOOKS", locations.notebook_dir), ("COMPRESSLAB_EXERCISES", locations.exercise_dir),
                     ("COMPRESSLAB_DATA", locations.data_dir), ("COMPRESSLAB_CACHE", locations.cache_dir)):
        clean_env.setenv(name, str(tmp_path / name))
        assert fn() == tmp_path / name


def test_an_installed_package_uses_its_own_files_and_the_user_folders(clean_env, tmp_path):
    package = tmp_path / "site-packages" / "compresslab"
    package.mkdir(parents=True)
    clean_env.setattr(locations, "PACKAGE_DIR", package)
    clean_env.setenv("HOME", str(tmp_path / "home"))
    assert locations.checkout_root() is None
    assert locations.notebook_dir() == package / "workbook_notebooks"
    assert locations.exercise_dir() == package / "workbook_exercises"
    assert locations.data_dir() == tmp_path / "home" / ".local" / "share" / "compresslab" / "data"
    assert locations.cache_dir() == tmp_path / "home" / ".cache" / "compresslab"
    clean_env.setenv("XDG_DATA_HOME", str(tmp_path / "xd"))
    clean_env.setenv("XDG_CACHE_HOME", str(tmp_path / "xc"))
    assert locations.data_dir() == tmp_path / "xd" / "compresslab" / "data"
    assert locations.cache_dir() == tmp_path / "xc" / "compresslab"


def test_a_missing_folder_is_one_line_naming_the_setting(tmp_path):
    with pytest.raises(ValueError, match=r"^no notebooks folder at .*: set COMPRESSLAB_NOTEBOOKS to the folder"):
        locations.require_dir(tmp_path / "nope", "notebooks", "COMPRESSLAB_NOTEBOOKS")
    from compresslab.running import runner

    with pytest.raises(ValueError, match="COMPRESSLAB_NOTEBOOKS"):
        runner.notebooks(tmp_path / "nope")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The project built as a wheel and installed (no dependencies) into a folder of its own."""
    base = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(base / "dist"), str(ROOT)], check=True, capture_output=True, timeout=600)
    wheel = next((base / "dist").glob("compresslab-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(base / "site"),
                    str(wheel)], check=True, capture_output=True, timeout=600)
    return base / "site"


def _run_installed(site: Path, cwd: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k not in VARS}
    environment.update({"PYTHONPATH": str(site), "HOME": str(cwd), **(env or {})})
    return subprocess.run([sys.executable, "-m", "compresslab.running.cli", *args], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=300)


def test_an_installed_wheel_lists_its_notebooks_from_any_folder(installed, tmp_path):
    probe = subprocess.run([sys.executable, "-c", "import compresslab, sys; print(compresslab.__file__)"],
                           cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(installed)},
                           capture_output=True, text=True, check=True)
    assert probe.stdout.strip().startswith(str(installed))  # the installed copy, not the checkout
    shipped = sorted(p.name for p in (installed / "compresslab" / "workbook_notebooks").glob("*.ipynb"))
    assert shipped == sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert (installed / "compresslab" / "workbook_exercises" / "solutions").is_dir()
    out = _run_installed(installed, tmp_path, "list")
    assert out.returncode == 0, out.stderr
    for stem in (p.stem for p in (ROOT / "notebooks").glob("*.ipynb")):
        assert stem in out.stdout


def test_an_installed_wheel_names_the_setting_when_the_notebooks_are_gone(installed, tmp_path):
    out = _run_installed(installed, tmp_path, "list", env={"COMPRESSLAB_NOTEBOOKS": str(tmp_path / "gone")})
    assert out.returncode != 0
    assert "COMPRESSLAB_NOTEBOOKS" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.notebook
def test_an_installed_wheel_runs_a_notebook_from_any_folder(installed, tmp_path):
    """`compresslab run 01 --profile quick` outside the checkout: the shipped notebook runs, with the
    data and cache folders named by their settings, and writes its run into the current folder."""
    data = os.environ.get("COMPRESSLAB_DATA") or str(ROOT / "data")
    out = _run_installed(installed, tmp_path, "run", "01", "--profile", "quick", "--no-progress",
                         env={"COMPRESSLAB_DATA": data, "COMPRESSLAB_CACHE": str(tmp_path / "cache"),
                              "COMPRESSLAB_HEADLESS": "1"})
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    recorded = list((tmp_path / "runs").rglob("01_magnitude_pruning.results.json"))
    assert len(recorded) == 1 and any((tmp_path / "cache").iterdir())
