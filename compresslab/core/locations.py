"""Where the workbook's files live: the notebooks, the exercises, the datasets and the baseline cache.

Each is, in order: its environment variable; else the source checkout the package runs from (an
editable install: the folder with pyproject.toml and notebooks/); else, for an installed package,
the notebooks and exercises shipped inside it (`compresslab/workbook_notebooks`,
`compresslab/workbook_exercises`) and the platform's per-user folders for data and cache:

    notebooks   $COMPRESSLAB_NOTEBOOKS   <checkout>/notebooks        <package>/workbook_notebooks
    exercises   $COMPRESSLAB_EXERCISES   <checkout>/exercises        <package>/workbook_exercises
    data        $COMPRESSLAB_DATA        <checkout>/data             $XDG_DATA_HOME/compresslab/data
                                                                     (~/.local/share/compresslab/data)
    cache       $COMPRESSLAB_CACHE       <checkout>/.cache/compresslab  $XDG_CACHE_HOME/compresslab
                                                                     (~/.cache/compresslab)
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["PACKAGE_DIR", "checkout_root", "notebook_dir", "exercise_dir", "data_dir", "cache_dir", "require_dir"]

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # the installed (or checked-out) compresslab package


def checkout_root() -> Path | None:
    """The source checkout holding this package (pyproject.toml and notebooks/ beside it), or None
    for an installed package."""
    root = PACKAGE_DIR.parent
    return root if (root / "pyproject.toml").is_file() and (root / "notebooks").is_dir() else None


def _from(env: str, in_checkout: str, installed: Path) -> Path:
    value = os.environ.get(env)
    if value:
        return Path(value)
    root = checkout_root()
    return root / in_checkout if root is not None else installed


def _user_dir(env: str, fallback: str) -> Path:
    base = os.environ.get(env)
    return Path(base) if base else Path.home() / fallback


def notebook_dir() -> Path:
    """The folder of the workbook's notebooks (see the module's table)."""
    return _from("COMPRESSLAB_NOTEBOOKS", "notebooks", PACKAGE_DIR / "workbook_notebooks")


def exercise_dir() -> Path:
    """The folder of the exercises (student notebooks; their solutions in solutions/)."""
    return _from("COMPRESSLAB_EXERCISES", "exercises", PACKAGE_DIR / "workbook_exercises")


def data_dir() -> Path:
    """The datasets' root (torchvision layout: MNIST/raw/, FashionMNIST/raw/)."""
    return _from("COMPRESSLAB_DATA", "data", _user_dir("XDG_DATA_HOME", ".local/share") / "compresslab" / "data")


def cache_dir() -> Path:
    """The baseline cache's folder."""
    return _from("COMPRESSLAB_CACHE", ".cache/compresslab", _user_dir("XDG_CACHE_HOME", ".cache") / "compresslab")


def require_dir(path: Path, what: str, setting: str) -> Path:
    """`path` if it is a folder; else ValueError in one line naming what is missing and the setting
    (environment variable) that chooses it."""
    if not path.is_dir():
        raise ValueError(f"no {what} folder at {path}: set {setting} to the folder that holds them")
    return path
