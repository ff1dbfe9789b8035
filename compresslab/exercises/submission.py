"""A submitted notebook as the grader sees it: the student's code, not the student's kernel.

`student_code(nb)` keeps, from every code cell, only the top-level statements that define things:
imports, function and class definitions, and assignments of simple values (literals and
expressions of torch / math / numpy calls). Everything else (check calls, prints, data loading,
training, an assignment to `checks.…`) is left out, so a submission is graded on its functions,
whatever its check cells say.

`reference_uses(node, names, namespace)` inspects one function's syntax tree for a use of the
package's reference implementation of that function; `tripwire(objects)` replaces the reference
objects everywhere in the package (and in the student's namespace) while the student's function
runs, so an indirect call is caught too.
"""

from __future__ import annotations

import ast
import contextlib
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

__all__ = [
    "SIMPLE_CALL_ROOTS",
    "StudentCode",
    "student_code",
    "reference_uses",
    "ReferenceUsed",
    "tripwire",
    "package_fingerprint",
]

SIMPLE_CALL_ROOTS = frozenset({
    "torch", "math", "np", "numpy", "F", "nn", "float", "int", "bool", "str", "tuple", "list", "dict", "set",
    "frozenset", "range", "len", "min", "max", "abs", "round", "sorted", "sum", "OrderedDict", "namedtuple",
})
_DEFINITIONS = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


@dataclass
class StudentCode:
    """The definitions of a submission, cell by cell, and what was left out or could not be read."""

    modules: list[tuple[int, ast.Module]] = field(default_factory=list)  # (cell index, kept statements)
    functions: dict[str, ast.FunctionDef] = field(default_factory=dict)  # last definition of each name
    skipped: int = 0
    problems: list[str] = field(default_factory=list)


def _root(node: ast.AST) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Call, ast.Subscript)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def _simple_value(node: ast.AST) -> bool:
    """A value safe and cheap to evaluate: no name `checks`, calls only of torch/math/numpy/builtins."""
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name) and sub.id in ("checks", "exercises"):
            return False
        if isinstance(sub, (ast.Lambda, ast.NamedExpr, ast.Await, ast.Yield, ast.YieldFrom)):
            return False
        if isinstance(sub, ast.Call) and _root(sub.func) not in SIMPLE_CALL_ROOTS:
            return False
    return True


def _keep(stmt: ast.stmt) -> bool:
    if isinstance(stmt, _DEFINITIONS):
        return True
    if isinstance(stmt, ast.Assign):
        return all(isinstance(t, ast.Name) for t in stmt.targets) and _simple_value(stmt.value)
    if isinstance(stmt, ast.AnnAssign):
        return isinstance(stmt.target, ast.Name) and (stmt.value is None or _simple_value(stmt.value))
    return False


def _python_source(source: str) -> str:
    """A cell's source with IPython magics and shell lines blanked (line numbers kept)."""
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.split("\n"))


def student_code(nb) -> StudentCode:
    """The definitions of every code cell of notebook `nb`, in order (see the module docstring)."""
    code = StudentCode()
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or not cell.source.strip():
            continue
        try:
            tree = ast.parse(_python_source(cell.source), filename=f"<cell {index}>")
        except SyntaxError as err:
            code.problems.append(f"cell {index}: syntax error, line {err.lineno}: {err.msg}")
            continue
        kept = [stmt for stmt in tree.body if _keep(stmt)]
        code.skipped += len(tree.body) - len(kept)
        if kept:
            code.modules.append((index, ast.Module(body=kept, type_ignores=[])))
        for stmt in kept:
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                code.functions[stmt.name] = stmt
    return code


def execute(code: StudentCode, namespace: dict) -> list[str]:
    """Run the kept statements one by one in `namespace`; a line per import or definition that raised
    (an assignment that fails, e.g. one naming a result of the experiment, is simply left out)."""
    problems = []
    for index, module in code.modules:
        for stmt in module.body:
            try:
                exec(compile(ast.Module(body=[stmt], type_ignores=[]), f"<submission cell {index}>", "exec"),  # noqa: S102
                     namespace)
            except Exception as err:  # noqa: BLE001 - a broken statement is reported, the others still run
                if not isinstance(stmt, (ast.Assign, ast.AnnAssign)):
                    problems.append(f"cell {index}, line {stmt.lineno}: {type(err).__name__}: {err}")
    return problems


def reference_uses(node: ast.AST, names: Iterable[str], objects: Iterable[object], namespace: dict) -> list[str]:
    """Places in `node` (a function) that reach the package's reference: attribute `x.<name>` on a
    compresslab module or the checks' REFERENCES, a name bound to a reference object, an import of it."""
    names, objects = set(names), list(objects)
    found = []

    def package_root(expr: ast.AST) -> bool:
        root = _root(expr)
        if root == "compresslab":
            return True
        value = namespace.get(root) if root else None
        module = getattr(value, "__name__", "") if isinstance(value, type(sys)) else getattr(value, "__module__", "")
        return str(module).startswith("compresslab")

    for sub in ast.walk(node):
        line = getattr(sub, "lineno", "?")
        if isinstance(sub, ast.Attribute) and sub.attr in ("REFERENCES", "CHECKS"):
            found.append(f"line {line}: uses the checks' {sub.attr}")
        elif isinstance(sub, ast.Attribute) and sub.attr in names and package_root(sub.value):
            found.append(f"line {line}: calls the package's {sub.attr}")
        elif isinstance(sub, ast.Name) and any(namespace.get(sub.id) is obj for obj in objects):
            found.append(f"line {line}: {sub.id} is the package's reference")
        elif isinstance(sub, ast.ImportFrom) and (sub.module or "").startswith("compresslab") and \
                names & {a.name for a in sub.names}:
            found.append(f"line {line}: imports the package's reference")
        elif isinstance(sub, ast.Constant) and isinstance(sub.value, str) and sub.value in names:
            found.append(f"line {line}: names the package's {sub.value!r} in a string")
    return found


class ReferenceUsed(BaseException):  # noqa: N818 - a BaseException, so `except Exception` in student code cannot swallow it
    """The function under test called the package's reference implementation."""


@contextlib.contextmanager
def tripwire(objects: Iterable[object], namespaces: Iterable[dict] = (), hits: list | None = None) -> Iterator[list]:
    """While inside, every reference to one of `objects` in a compresslab module or in `namespaces`
    raises ReferenceUsed when called (and appends its name to the yielded list)."""
    objects = list(objects)
    hits = [] if hits is None else hits
    patched: list[tuple[dict, str, object]] = []

    def trip_for(label: str) -> Callable:
        def trip(*args, **kwargs):
            hits.append(label)
            raise ReferenceUsed(f"called the package's reference {label}")
        return trip

    tables = [vars(m) for name, m in list(sys.modules.items()) if name.startswith("compresslab") and m is not None]
    for table in tables + list(namespaces):
        for key, value in list(table.items()):
            if any(value is obj for obj in objects):
                patched.append((table, key, value))
                table[key] = trip_for(f"{getattr(value, '__module__', '?')}.{getattr(value, '__qualname__', key)}")
    try:
        yield hits
    finally:
        for table, key, value in reversed(patched):
            table[key] = value


def package_fingerprint() -> dict[str, int]:
    """id() of every function, class and dict in the compresslab modules: a change means tampering."""
    prints = {}
    for name, module in list(sys.modules.items()):
        if not name.startswith("compresslab") or module is None:
            continue
        for key, value in list(vars(module).items()):
            if key == "__warningregistry__":  # kept by Python's warnings machinery, not by the grader
                continue
            if isinstance(value, dict) and name.startswith("compresslab.exercises"):
                prints[f"{name}.{key}"] = hash(tuple((k, id(v)) for k, v in value.items() if isinstance(k, str)))
            elif callable(value):
                prints[f"{name}.{key}"] = id(value)
                code = getattr(value, "__code__", None)
                if code is not None:
                    prints[f"{name}.{key}.__code__"] = id(code)
    return prints
