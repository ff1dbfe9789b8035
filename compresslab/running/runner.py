"""Running notebooks headless with papermill: parameters, sweeps, outputs and summaries.

Every execution has a per-cell timeout and runs with COMPRESSLAB_HEADLESS=1, so widget panels
render statically and no cell can wait forever. The kernel's environment is passed to it, never
set on this process, so runs can execute concurrently (running/sweep.py runs sweeps on Dask).
"""

from __future__ import annotations

import ast
import datetime as _dt
import itertools
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from compresslab.core.locations import notebook_dir, require_dir
from compresslab.core.profiles import PROFILES
from compresslab.core.results import SUFFIX, read
from compresslab.core.validate import check_bool, check_choice, check_int
from compresslab.running.params import check_values
from compresslab.running.progress import register_engine
from compresslab.running.summary import write_summary

__all__ = [
    "NOTEBOOK_DIR", "CELL_TIMEOUT", "MAX_THREADS", "notebooks", "resolve", "parameters",
    "check_parameters", "check_cell_timeout", "defaults", "parse_value", "expand_grid",
    "split_values", "RunResult", "run_label", "cpu_cores", "threads_per_run", "thread_env",
    "recorded", "execute", "kernel_env", "export_html", "default_out_dir", "run_many"
]

NOTEBOOK_DIR = notebook_dir()  # core.locations: $COMPRESSLAB_NOTEBOOKS, the checkout, or the installed package
CELL_TIMEOUT = {"quick": 600, "full": 3600}
MAX_THREADS = 1024


def notebooks(directory: Path = NOTEBOOK_DIR) -> dict[str, Path]:
    """Notebook name (file stem) -> path, in order (ValueError in one line if `directory` is not a folder)."""
    require_dir(Path(directory), "notebooks", "COMPRESSLAB_NOTEBOOKS")
    return {p.stem: p for p in sorted(Path(directory).glob("[0-9][0-9]_*.ipynb"))}


def resolve(name: str, directory: Path = NOTEBOOK_DIR) -> Path:
    """A notebook by full stem ('01_magnitude_pruning'), number ('01', '1') or topic ('magnitude_pruning'),
    or the path of any notebook file ('my/sweep.ipynb')."""
    if name.endswith(".ipynb") and Path(name).is_file():
        return Path(name).resolve()
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
    """One run: its executed notebook (`output`), outcome and recorded metrics (`results`); on Dask
    also the attempts it took, the worker and the torch threads it ran with; `resumed` when an
    earlier execution's recorded results were reused instead of running it again."""

    notebook: str
    parameters: dict
    output: Path
    seconds: float
    ok: bool
    error: str = ""
    results: dict = field(default_factory=dict)
    attempts: int = 1
    worker: str = ""
    threads: int | None = None
    resumed: bool = False


def run_label(params: Mapping[str, object]) -> str:
    """The folder name of a run: 'sparsity=0.9__seed=1' ('' for no parameters)."""
    if not params:
        return ""
    text = "__".join(f"{k}={v}" for k, v in params.items())
    return "".join(ch if ch.isalnum() or ch in "=._-" else "-" for ch in text)[:120]


def cpu_cores() -> int:
    """The cores this process may run on (its CPU affinity where the platform tells it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def threads_per_run(cores: int, concurrent: int) -> int:
    """Torch threads for each of `concurrent` runs sharing `cores` cores: cores // concurrent, at least 1.

    >>> threads_per_run(2, 2), threads_per_run(16, 3), threads_per_run(2, 4)
    (1, 5, 1)
    """
    return max(1, cores // max(1, concurrent))


def thread_env(threads: int) -> dict[str, str]:
    """The kernel environment that fixes torch's thread count before torch loads.

    >>> thread_env(2)["OMP_NUM_THREADS"], thread_env(2)["OMP_WAIT_POLICY"]
    ('2', 'PASSIVE')
    """
    check_int("", "threads", threads, 1, MAX_THREADS)
    n = str(threads)
    return {"OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n, "COMPRESSLAB_THREADS": n,
            "OMP_WAIT_POLICY": "PASSIVE"}


def _plain(value: object) -> object:
    return json.loads(json.dumps(value, default=str))


def recorded(target: Path, stem: str, params: Mapping[str, object]) -> dict | None:
    """The metrics recorded in `target` by an earlier run of notebook `stem` with `params` (every
    one of them recorded with the same value), else None."""
    path = target / f"{stem}{SUFFIX}"
    if not path.is_file():
        return None
    try:
        payload = read(path)
    except ValueError:
        return None
    same = payload["notebook"] == stem and all(
        k in payload["parameters"] and _plain(payload["parameters"][k]) == _plain(v) for k, v in params.items())
    return payload["metrics"] if same and payload["metrics"] else None


def execute(
    path: Path,
    out_dir: Path,
    values: Mapping[str, object] | None = None,
    profile: str = "quick",
    cell_timeout: int | None = None,
    html: bool = True,
    log=print,
    progress_label: str | None = None,
    threads: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> RunResult:
    """Run one notebook with papermill into `out_dir` (executed .ipynb, results JSON, HTML).

    With `progress_label`, the running cell, its section and the elapsed time are shown on stderr
    (one updating line on a terminal, a line per section otherwise). With `threads`, the kernel's
    torch uses that many threads (`thread_env`); otherwise it inherits this process's settings.
    `environ`: the environment the kernel starts from (default: this process's)."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    check_choice("", "profile", profile, PROFILES)
    if cell_timeout is not None:
        check_cell_timeout(cell_timeout)
    params = {"profile": profile, **dict(values or {})}
    check_parameters(path, params)
    env = kernel_env(out_dir, threads, environ)
    out_dir.mkdir(parents=True, exist_ok=True)
    output = out_dir / path.name
    results_path = out_dir / f"{path.stem}{SUFFIX}"
    results_path.unlink(missing_ok=True)  # never report an earlier run's numbers
    start = time.perf_counter()
    ok, error = True, ""
    try:
        papermill.execute_notebook(
            str(path.resolve()), str(output), parameters=params, kernel_name="python3", progress_bar=False,
            execution_timeout=cell_timeout or CELL_TIMEOUT[profile], log_output=False,
            engine_name=register_engine(), progress_label=progress_label,
            kernel_env=env, kernel_cwd=str(path.resolve().parent),
        )
    except PapermillExecutionError as err:
        ok, error = False, f"cell {err.exec_count}: {err.ename}: {err.evalue}"
    except Exception as err:  # noqa: BLE001 - timeouts and kernel deaths are reported the same way
        ok, error = False, f"{type(err).__name__}: {err}"
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


def kernel_env(out_dir: Path, threads: int | None = None, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a run's kernel: `environ` (default this process's), headless and quiet,
    recording into `out_dir`, this interpreter first on PATH, and `thread_env(threads)` when given."""
    env = dict(os.environ if environ is None else environ)
    env.update({"COMPRESSLAB_HEADLESS": "1", "COMPRESSLAB_RESULTS_DIR": str(out_dir.resolve()),
                "MPLBACKEND": "module://matplotlib_inline.backend_inline",
                "PATH": os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")})
    env.setdefault("COMPRESSLAB_QUIET", "1")
    if threads is not None:
        env.update(thread_env(threads))
    return env


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
    cell_timeout: int | None = None, log=print, show_progress: bool = True, *, workers: int | None = None,
    scheduler: str | None = None, client=None, retries: int = 0, resume: bool = False, threads: int | None = None,
) -> tuple[list[RunResult], Path]:
    """Run notebooks x parameter grid; write summary.md, .html and .csv; return the results and out dir.

    By default one run after another in this process (`show_progress`: the running cell and
    section, live on stderr). On Dask (running/sweep.py): `workers` local worker processes, the
    cluster whose scheduler is at `scheduler`, or an existing distributed `client`; `retries`
    resubmissions of a run lost with its worker; a progress bar over runs. `resume`: reuse the
    results already recorded in `out_dir` for the same notebook and parameters. `threads`: torch
    threads per run (default: inherited when sequential, cores / concurrent runs on Dask).
    A failed run never stops the others."""
    from compresslab.running import sweep

    config = sweep.SweepConfig(workers, scheduler, retries, threads)
    check_bool("", "resume", resume)
    on_dask = client is not None or config.workers is not None or config.scheduler is not None
    if client is not None and (config.workers is not None or config.scheduler is not None):
        raise ValueError("give client (an existing Dask client) or workers/scheduler, not both")
    if retries and not on_dask:
        raise ValueError(f"retries={retries} applies to runs on Dask workers: give workers, scheduler or client")
    if resume and out_dir is None:
        raise ValueError("resume needs out_dir: the output folder of the sweep to resume")
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
    plan = [(path, combo, out_dir / path.stem / run_label(combo) if combo else out_dir / path.stem)
            for path, combo in itertools.product(paths, combos)]
    total = len(plan)
    runs: list[RunResult | None] = [None] * total
    for i, (path, combo, target) in enumerate(plan):
        metrics = recorded(target, path.stem, {"profile": profile, **combo}) if resume else None
        if metrics is not None:
            runs[i] = RunResult(path.stem, {"profile": profile, **combo}, target / path.name, 0.0, True,
                                results=metrics, resumed=True)
            log(f"[{i + 1}/{total}] {path.stem} {run_label(combo)} resumed: results recorded in {target}")
    todo = [i for i, run in enumerate(runs) if run is None]
    if on_dask and todo:
        done = sweep.run_sweep(config, client, [plan[i] for i in todo], profile, cell_timeout, log, show_progress,
                               [i + 1 for i in todo], total)
        for i, result in zip(todo, done):
            runs[i] = result
    elif todo and threads is not None:
        log(f"torch threads per run: {threads} (OMP_NUM_THREADS, MKL_NUM_THREADS, OPENBLAS_NUM_THREADS, "
            "COMPRESSLAB_THREADS)")
    for i in todo if not on_dask else ():
        path, combo, target = plan[i]
        label = run_label(combo)
        log(f"[{i + 1}/{total}] {path.stem} {label} (profile={profile}) running ...")
        result = execute(path, target, combo, profile, cell_timeout, log=log, threads=threads,
                         progress_label=f"[{i + 1}/{total}] {path.stem} {label}".rstrip() if show_progress else None)
        runs[i] = result
        if result.ok:
            log(f"[{i + 1}/{total}] {path.stem} {label} ok in {result.seconds:.0f} s -> {result.output}")
        else:
            log(f"[{i + 1}/{total}] {path.stem} {label} FAILED after {result.seconds:.0f} s: {result.error}\n"
                f"    executed notebook: {result.output}")
    finished = [r for r in runs if r is not None]
    write_summary(out_dir, finished)
    return finished, out_dir
