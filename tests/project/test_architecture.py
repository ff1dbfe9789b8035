"""The package's layering (docs/architecture.md), read from the source with `ast`: arrows point down
only, the lower layers never pull in the UI libraries, modules stay small, `__all__` is honest."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "compresslab"
MAX_LINES = 450
UI_LIBRARIES = {"matplotlib", "ipywidgets", "IPython", "seaborn"}
NOTEBOOK_LIBRARIES = {"papermill", "nbformat", "nbclient", "nbconvert"}  # running and exercises only
# layer -> the package layers it must never import (at any depth, lazily or not)
FORBIDDEN = {
    "core": {"techniques", "deploy", "combine", "views", "running", "exercises"},
    "techniques": {"deploy", "combine", "views", "running", "exercises"},
    "deploy": {"combine", "views", "running", "exercises"},
    "combine": {"views", "running", "exercises"},
    "views": {"deploy", "running", "exercises"},
}
# the runner sits below exercises (grading runs notebooks); only the CLI, the entry point, sees both
FORBIDDEN_FILES = {"running/runner.py": {"exercises"}}


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _rel(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


def _layer(path: Path) -> str:
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else ""


def _imports(tree: ast.AST, top_level_only: bool = False) -> list[str]:
    """Dotted names of every import in `tree` (`from compresslab import x` gives compresslab.x)."""
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    if top_level_only:  # module level includes imports nested in top-level if/try blocks
        nodes = [n for stmt in nodes for n in ast.walk(stmt)
                 if not isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    names = []
    for node in nodes:
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "compresslab":
                names.extend(f"compresslab.{alias.name}" for alias in node.names)
            else:
                names.append(node.module)
    return names


def _dotted(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def test_import_parser_sees_lazy_nested_and_package_imports():
    tree = ast.parse("import a.b\nfrom compresslab import views\nfrom . import sibling\n"
                     "def f():\n    from compresslab.running import cli\n"
                     "try:\n    import matplotlib.pyplot as plt\nexcept ImportError:\n    pass\n")
    assert set(_imports(tree)) == {"a.b", "compresslab.views", "compresslab.running", "matplotlib.pyplot"}
    assert set(_imports(tree, top_level_only=True)) == {"a.b", "compresslab.views", "matplotlib.pyplot"}


def test_the_layers_exist():
    assert {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()} >= set(FORBIDDEN) | {"running", "exercises"}


@pytest.mark.parametrize("path", _modules(), ids=_rel)
def test_arrows_point_down_only(path):
    forbidden = FORBIDDEN.get(_layer(path), set()) | FORBIDDEN_FILES.get(_rel(path), set())
    wrong = sorted({name for name in _imports(_tree(path))
                    if name.startswith("compresslab.") and name.split(".")[1] in forbidden})
    assert not wrong, f"{_rel(path)} ({_layer(path)}) imports a higher layer: {wrong}"


@pytest.mark.parametrize("path", [p for p in _modules() if _layer(p) in ("core", "techniques", "deploy", "combine")],
                         ids=_rel)
def test_lower_layers_import_no_ui_library_at_module_level(path):
    wrong = sorted({name for name in _imports(_tree(path), top_level_only=True) if name.split(".")[0] in UI_LIBRARIES})
    assert not wrong, f"{_rel(path)} imports {wrong} at module level; only views may"


@pytest.mark.parametrize("path", [p for p in _modules() if _layer(p) not in ("running", "exercises")], ids=_rel)
def test_only_running_and_exercises_touch_notebook_files(path):
    wrong = sorted({name for name in _imports(_tree(path)) if name.split(".")[0] in NOTEBOOK_LIBRARIES})
    assert not wrong, f"{_rel(path)} imports {wrong}; only running and exercises read or execute notebooks"


def test_importing_the_lower_layers_loads_no_ui_library():
    modules = [_dotted(p) for p in _modules() if _layer(p) in ("core", "techniques", "deploy", "combine")]
    code = ("import sys\n" + "".join(f"import {m}\n" for m in modules)
            + f"print(sorted(set({sorted(UI_LIBRARIES)!r}) & {{m.split('.')[0] for m in sys.modules}}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", f"importing core/techniques/deploy/combine loaded {out.stdout.strip()}"


@pytest.mark.parametrize("path", _modules(), ids=_rel)
def test_modules_stay_small(path):
    n = len(path.read_text(encoding="utf-8").splitlines())
    assert n <= MAX_LINES, f"{_rel(path)} has {n} lines (> {MAX_LINES}): split it"


@pytest.mark.parametrize("path", [p for p in _modules() if p.name != "__init__.py"], ids=_rel)
def test_all_lists_public_names_that_exist(path):
    module = importlib.import_module(_dotted(path))
    names = getattr(module, "__all__", None)
    assert names is not None, f"{_rel(path)} has no __all__"
    assert len(names) == len(set(names)), f"{_rel(path)}: duplicates in __all__"
    assert not [n for n in names if n.startswith("_")], f"{_rel(path)}: private names in __all__"
    missing = [n for n in names if not hasattr(module, n)]
    assert not missing, f"{_rel(path)}: __all__ names {missing} that the module does not define"
