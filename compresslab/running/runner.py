"""Running notebooks headless with papermill: parameters, sweeps, outputs and summaries.

Every execution has a per-cell timeout and runs with COMPRESSLAB_HEADLESS=1, so widget panels
render statically and no cell can wait forever.
"""

from __future__ import annotations

import ast
import datetime as _dt
import itertools
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from compresslab.core.data import REPO_ROOT
from compresslab.core.results import SUFFIX, load_runs, read
from compresslab.core.validate import check_choice, check_int
from compresslab.running.params import check_values
from compresslab.running.progress import register_engine

__all__ = [
    "NOTEBOOK_DIR",
    "PROFILES",
    "CELL_TIMEOUT",
    "notebooks",
    "resolve",
    "parameters",
    "check_parameters",
    "check_cell_timeout",
    "defaults",
    "parse_value",
    "expand_grid",
    "split_values",
    "RunResult",
    "execute",
    "export_html",
    "default_out_dir",
    "run_many",
    "write_summary",
]

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
PROFILES = ("quick", "full")
CELL_TIMEOUT = {"quick": 600, "full": 3600}


def notebooks(directory: Path = NOTEBOOK_DIR) -> dict[str, Path]:
    """Notebook name (file stem) -> path, in order."""
    return {p.stem: p for p in sorted(directory.glob("[0-9][0-9]_*.ipynb"))}


def resolve(name: str, directory: Path = NOTEBOOK_DIR) -> Path:
    """A notebook by full stem ('01_magnitude_pruning'), number ('01', '1') or topic ('magnitude_pruning')."""
    known = notebooks(directory)
    if name in known:
        return known[name]
    matches = [p for stem, p in known.items()
               if stem.split("_", 1)[0].lstrip("0") == name.lstrip("0") or stem.split("_", 1)[1] == name]
    if len(matches) == 1:
        return matches[0]
    raise ValueError(f"notebook={name!r} is not known; choose one of {list(known)} (or 'all')")


def parameters(path: Path) -> dict[str, dict]:
    """The papermill parameters of a notebook: name -> {'default': source text, 'type': inferred type}."""
    import papermill

    params = papermill.inspect_notebook(str(path))
    return {k: {"default": v["default"], "type": v.get("inferred_type_name", "None"), "help": v.get("help", "")}
            for k, v in params.items()}


def check_parameters(path: Path, values: Mapping[str, object], known: Mapping[str, dict] | None = None) -> None:
    """ValueError before anything runs: an unknown name, or a value of the wrong type or outside
    what its declaration (running/params.py) allows, named with the allowed values.

    `known`: the notebook's `parameters(path)`, if already read."""
    known = parameters(path) if known is None else known
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"{path.stem}: unknown parameter(s) {unknown}; valid: {sorted(known)}")
    try:
        check_values(path.stem, values)
    except TypeError as err:  # a wrong type is a bad value on the command line
        raise ValueError(str(err)) from None


def check_cell_timeout(seconds: object) -> int:
    """A cell timeout: a positive whole number of seconds (ValueError otherwise)."""
    try:
        return check_int("", "cell_timeout", seconds, 1, None)
    except TypeError as err:
        raise ValueError(str(err)) from None


def defaults(path: Path) -> dict[str, object]:
    """The values of a notebook's parameters cell (literals), by name."""
    return {name: ast.literal_eval(info["default"]) for name, info in parameters(path).items()}


def parse_value(text: str) -> object:
    """A command-line value: a Python literal if it parses as one (0.9, True, 'x', (1, 2)), else the string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def expand_grid(params: Mapping[str, Sequence[str]]) -> list[dict[str, object]]:
    """{'a': ['1,2'], 'b': ['x']} -> [{'a': 1, 'b': 'x'}, {'a': 2, 'b': 'x'}]: one run per combination."""
    keys = list(params)
    choices = []
    for key in keys:
        values: list[object] = []
        for text in params[key]:
            values.extend(parse_value(part) for part in split_values(text))
        choices.append(values)
    return [dict(zip(keys, combo)) for combo in itertools.product(*choices)] if keys else [{}]


def split_values(text: str) -> list[str]:
    """Split 'v1,v2' on top-level commas (commas inside brackets or quotes stay)."""
    parts, depth, quote, current = [], 0, "", ""
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        current += ch
    parts.append(current)
    return [p.strip() for p in parts if p.strip()]


@dataclass
class RunResult:
    notebook: str
    parameters: dict
    output: Path
    seconds: float
    ok: bool
    error: str = ""
    results: dict = field(default_factory=dict)


def _run_label(params: Mapping[str, object]) -> str:
    if not params:
        return ""
    text = "__".join(f"{k}={v}" for k, v in params.items())
    return "".join(ch if ch.isalnum() or ch in "=._-" else "-" for ch in text)[:120]


def execute(
    path: Path,
    out_dir: Path,
    values: Mapping[str, object] | None = None,
    profile: str = "quick",
    cell_timeout: int | None = None,
    html: bool = True,
    log=print,
    progress_label: str | None = None,
) -> RunResult:
    """Run one notebook with papermill into `out_dir` (executed .ipynb, results JSON, HTML).

    With `progress_label`, the running cell, its section and the elapsed time are shown on stderr
    (one updating line on a terminal, a line per section otherwise)."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    check_choice("", "profile", profile, PROFILES)
    if cell_timeout is not None:
        check_cell_timeout(cell_timeout)
    params = {"profile": profile, **dict(values or {})}
    check_parameters(path, params)
    out_dir.mkdir(parents=True, exist_ok=True)
    output = out_dir / path.name
    results_path = out_dir / f"{path.stem}{SUFFIX}"
    results_path.unlink(missing_ok=True)  # never report an earlier run's numbers
    env_before = {k: os.environ.get(k) for k in ("COMPRESSLAB_HEADLESS", "COMPRESSLAB_RESULTS_DIR", "COMPRESSLAB_QUIET", "PATH", "MPLBACKEND")}
    os.environ["COMPRESSLAB_HEADLESS"] = "1"
    os.environ["COMPRESSLAB_RESULTS_DIR"] = str(out_dir.resolve())
    os.environ.setdefault("COMPRESSLAB_QUIET", "1")
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    start = time.perf_counter()
    ok, error = True, ""
    try:
        papermill.execute_notebook(
            str(path), str(output), parameters=params, kernel_name="python3", progress_bar=False,
            execution_timeout=cell_timeout or CELL_TIMEOUT[profile], cwd=str(path.parent), log_output=False,
            engine_name=register_engine(), progress_label=progress_label,
        )
    except PapermillExecutionError as err:
        ok, error = False, f"cell {err.exec_count}: {err.ename}: {err.evalue}"
    except Exception as err:  # noqa: BLE001 - timeouts and kernel deaths are reported the same way
        ok, error = False, f"{type(err).__name__}: {err}"
    finally:
        for key, value in env_before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    seconds = time.perf_counter() - start
    results = read(results_path)["metrics"] if results_path.exists() else {}  # kept for failed checks too
    if ok and not results:
        ok, error = False, f"the notebook recorded no results ({results_path.name} missing)"
    if html and output.exists():
        try:
            export_html(output)
        except Exception as err:  # noqa: BLE001 - a failed export must not hide the run's result
            log(f"  (HTML export failed: {err})")
    return RunResult(path.stem, params, output, seconds, ok, error, results)


def export_html(notebook: Path) -> Path:
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_filename(str(notebook))
    target = notebook.with_suffix(".html")
    target.write_text(body, encoding="utf-8")
    return target


def default_out_dir() -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path.cwd() / "runs" / stamp


def run_many(
    names: Sequence[str], profile: str, grid: Mapping[str, Sequence[str]], out_dir: Path | None = None,
    cell_timeout: int | None = None, log=print, show_progress: bool = True,
) -> tuple[list[RunResult], Path]:
    """Run notebooks x parameter grid; write summary.md / summary.html; return the results and out dir.

    `show_progress`: the running cell and section of each notebook, live on stderr."""
    paths = list(notebooks().values()) if list(names) == ["all"] else [resolve(n) for n in names]
    combos = expand_grid(grid)
    check_choice("", "profile", profile, PROFILES)
    if cell_timeout is not None:
        check_cell_timeout(cell_timeout)
    for path in paths:  # validate every name and value before spending minutes on the first run
        known = parameters(path)
        for combo in combos:
            check_parameters(path, {"profile": profile, **combo}, known)
    out_dir = out_dir or default_out_dir()
    runs: list[RunResult] = []
    total = len(paths) * len(combos)
    for i, (path, combo) in enumerate(itertools.product(paths, combos), start=1):
        label = _run_label(combo)
        target = out_dir / path.stem / label if label else out_dir / path.stem
        log(f"[{i}/{total}] {path.stem} {label} (profile={profile}) running ...")
        result = execute(path, target, combo, profile, cell_timeout, log=log,
                         progress_label=f"[{i}/{total}] {path.stem} {label}".rstrip() if show_progress else None)
        runs.append(result)
        if result.ok:
            log(f"[{i}/{total}] {path.stem} {label} ok in {result.seconds:.0f} s -> {result.output}")
        else:
            log(f"[{i}/{total}] {path.stem} {label} FAILED after {result.seconds:.0f} s: {result.error}\n"
                f"    executed notebook: {result.output}")
    write_summary(out_dir, runs)
    return runs, out_dir


HEADLINE_LIMIT = 12


def write_summary(out_dir: Path, runs: Sequence[RunResult]) -> None:
    """summary.md and summary.html: a row per run with status, time and scalar headline metrics."""
    table = load_runs(out_dir) if any(r.ok for r in runs) else None
    rows = []
    for r in runs:
        row = {"notebook": r.notebook, "status": "ok" if r.ok else "failed", "seconds": round(r.seconds, 1)}
        row.update({f"param.{k}": v for k, v in r.parameters.items()})
        scalars = [(k, v) for k, v in r.results.items() if isinstance(v, (int, float, str, bool)) or v is None]
        row.update(dict(scalars[:HEADLINE_LIMIT]))
        if not r.ok:
            row["error"] = r.error[:200]
        rows.append(row)
    columns: list[str] = []
    for row in rows:
        columns.extend(c for c in row if c not in columns)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row.get(c, "")) for c in columns) + " |")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "summary.md").write_text("# compresslab run summary\n\n" + "\n".join(lines) + "\n")
    import pandas as pd

    html = pd.DataFrame(rows, columns=columns).to_html(index=False, na_rep="")
    if table is not None and len(table):
        html += "<h2>All recorded metrics</h2>" + table.to_html(index=False, na_rep="")
    (out_dir / "summary.html").write_text(f"<html><body><h1>compresslab run summary</h1>{html}</body></html>")


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "/")
