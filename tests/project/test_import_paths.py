"""One import path per public name: every name is reached through the module that defines it.

A module that imports a name from another compresslab module does not pass it on (no re-export
fronts, no star imports), and no private name (`_x`) crosses a module boundary. Checked over the
package, the tests, the tools, the notebooks and the exercise solutions."""

from __future__ import annotations

import ast
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_table(root: Path = ROOT) -> dict[str, tuple[set[str], dict[str, str]]]:
    """module -> (names it defines at top level, name -> the compresslab module it imports it from)."""
    table = {}
    for path in (root / "compresslab").rglob("*.py"):
        defined: set[str] = set()
        imported: dict[str, str] = {}
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                defined.add(node.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                defined |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("compresslab"):
                imported |= {a.asname or a.name: node.module for a in node.names}
        table[_module_name(path)] = (defined, imported)
    return table


def misrouted(source: str, table: dict[str, tuple[set[str], dict[str, str]]], aliases=None) -> list[str]:
    """Every use in `source` of a compresslab name through a module that does not define it, and
    every private name imported from another module. `aliases`: module aliases bound elsewhere
    (a notebook's earlier cells)."""
    tree = ast.parse(source)
    aliases = {} if aliases is None else aliases
    found = []

    def passes_on(module: str, name: str) -> bool:
        defined, imported = table.get(module, (set(), {}))
        return f"{module}.{name}" not in table and name not in defined and name in imported

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            aliases |= {a.asname: a.name for a in node.names if a.asname and a.name in table}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("compresslab"):
            for a in node.names:
                if a.name == "*":
                    found.append(f"line {node.lineno}: from {node.module} import *")
                elif f"{node.module}.{a.name}" in table:
                    aliases[a.asname or a.name] = f"{node.module}.{a.name}"
                elif a.name.startswith("_"):
                    found.append(f"line {node.lineno}: private {a.name} from {node.module}")
                elif passes_on(node.module, a.name):
                    found.append(f"line {node.lineno}: {a.name} from {node.module}, which only passes it on")
        elif isinstance(node, ast.ImportFrom) and node.level and any(a.name.startswith("_") for a in node.names):
            found.append(f"line {node.lineno}: private name from a sibling module")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            module = aliases[node.value.id]
            if passes_on(module, node.attr):
                found.append(f"line {node.lineno}: {node.value.id}.{node.attr}, which {module} only passes on")
    return found


def _code_cells(path: Path) -> list[str]:
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return ["\n".join("#" + line if line.lstrip().startswith(("%", "!")) else line
                      for line in "".join(c["source"]).splitlines())
            for c in cells if c["cell_type"] == "code"]


def test_the_check_finds_fronts_stars_and_private_names():
    table = {"compresslab.a": ({"f", "_g"}, {}), "compresslab.front": ({"h"}, {"f": "compresslab.a"}),
             "compresslab.pkg": (set(), {}), "compresslab.pkg.mod": ({"k"}, {})}
    assert misrouted("from compresslab.a import f\nfrom compresslab.front import h", table) == []
    assert misrouted("from compresslab.pkg import mod\nmod.k()", table) == []
    assert len(misrouted("from compresslab.front import f", table)) == 1
    assert len(misrouted("from compresslab import front\nfront.f()\nfront.h()", table)) == 1
    assert len(misrouted("import compresslab.front as F\nF.f()", table)) == 1
    assert len(misrouted("from compresslab.a import _g", table)) == 1
    assert len(misrouted("from .a import _g", table)) == 1
    assert len(misrouted("from compresslab.a import *", table)) == 1
    # a notebook's later cell uses an alias bound in an earlier one
    assert len(misrouted("front.f()", table, {"front": "compresslab.front"})) == 1


def test_every_name_is_imported_from_the_module_that_defines_it():
    table = module_table()
    found = {}
    for path in [*(ROOT / "compresslab").rglob("*.py"), *(ROOT / "tests").rglob("*.py"),
                 *(ROOT / "tools").glob("*.py")]:
        if problems := misrouted(path.read_text(encoding="utf-8"), table):
            found[str(path.relative_to(ROOT))] = problems
    for path in [*(ROOT / "notebooks").glob("*.ipynb"), *(ROOT / "exercises" / "solutions").glob("*.ipynb")]:
        aliases: dict[str, str] = {}
        for i, cell in enumerate(_code_cells(path)):
            if problems := misrouted(cell, table, aliases):
                found[f"{path.relative_to(ROOT)} cell {i}"] = problems
    assert not found, found
