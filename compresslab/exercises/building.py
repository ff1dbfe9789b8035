"""Exercise notebooks: student notebooks built from solution sources, and headless grading.

One source of truth: the instructor's solution notebooks `exercises/solutions/NN_topic.ipynb`.
Markers (each on a line of its own, indented like the code around it):

    ### BEGIN SOLUTION            the solution; in the student notebook a code region becomes
    ### HINT: text                  "# YOUR CODE HERE", the hint as comments, and
    ...solution...                  raise NotImplementedError("<function>: not written yet ...")
    ### END SOLUTION              a markdown region (a model answer) becomes "*Write your answer here.*"
    ### BEGIN HIDDEN / ### END HIDDEN   removed from the student notebook (instructor-only lines)

`build()` writes `exercises/NN_topic.ipynb` for every solution (outputs cleared, metadata
`compresslab = {exercise, checks, source}`); `build(check=True)` only reports stale files.

`grade(paths)` runs notebooks headless through `runner.execute` (per-cell timeout,
COMPRESSLAB_HEADLESS=1) with every code cell tagged `raises-exception`, so a failing exercise does
not stop the others; each `checks.check_*` call records its outcome in the run folder
(`checks.CHECKS_FILE`), and the grade lists every check the exercise's solution calls: passed,
failed, not implemented, error, or not run.
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
import re
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from compresslab.core.data import REPO_ROOT
from compresslab.core.io import write_json_atomic, write_text_atomic

__all__ = [
    "EXERCISE_DIR",
    "SOLUTION_DIR",
    "ANSWER_STUB",
    "solutions",
    "strip_solutions",
    "checks_in",
    "student_notebook",
    "render",
    "build",
    "STATUSES",
    "Grade",
    "exercise_of",
    "expected_checks",
    "grade_one",
    "notebook_paths",
    "grade",
    "load_grades",
]

EXERCISE_DIR = REPO_ROOT / "exercises"
SOLUTION_DIR = EXERCISE_DIR / "solutions"
BEGIN, END, HINT = "### BEGIN SOLUTION", "### END SOLUTION", "### HINT:"
BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN", "### END HIDDEN"
ANSWER_STUB = "*Write your answer here.*"
CHECK_CALL = re.compile(r"\bchecks\.check_(\w+)\s*\(")
DEF_LINE = re.compile(r"^(\s*)(?:async\s+)?def\s+(\w+)\s*\(")


# ----------------------------------------------------------------- building student notebooks

def solutions(directory: Path = SOLUTION_DIR) -> dict[str, Path]:
    """Exercise id (file stem, e.g. '01_pruning') -> solution notebook path, in order."""
    return {p.stem: p for p in sorted(Path(directory).glob("[0-9][0-9]_*.ipynb"))}


def _indent(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


def _enclosing_function(lines: list[str], index: int, indent: str) -> str | None:
    for line in reversed(lines[:index]):
        match = DEF_LINE.match(line)
        if match and len(match.group(1)) < len(indent):
            return match.group(2)
    return None


def strip_solutions(source: str, cell_type: str = "code", where: str = "cell") -> str:
    """The student version of one cell's source: solution regions replaced by stubs, hidden ones removed.

    Raises ValueError (naming `where` and the line) for an unmatched or nested marker."""
    lines = source.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        stripped = lines[i].strip()
        if stripped in (END, END_HIDDEN):
            raise ValueError(f"{where}: line {i + 1}: {stripped!r} without a matching BEGIN")
        if stripped not in (BEGIN, BEGIN_HIDDEN):
            if stripped.startswith("### BEGIN") or stripped.startswith("### END"):
                raise ValueError(f"{where}: line {i + 1}: unknown marker {stripped!r}; use {BEGIN!r}, {END!r}, "
                                 f"{BEGIN_HIDDEN!r} or {END_HIDDEN!r}")
            out.append(lines[i])
            i += 1
            continue
        end_marker = END if stripped == BEGIN else END_HIDDEN
        start, indent = i, _indent(lines[i])
        i += 1
        body: list[str] = []
        while i < len(lines) and lines[i].strip() != end_marker:
            if lines[i].strip() in (BEGIN, BEGIN_HIDDEN, END, END_HIDDEN):
                raise ValueError(f"{where}: line {i + 1}: {lines[i].strip()!r} inside the region opened at line "
                                 f"{start + 1} (regions do not nest)")
            body.append(lines[i])
            i += 1
        if i == len(lines):
            raise ValueError(f"{where}: line {start + 1}: {stripped!r} is never closed by {end_marker!r}")
        i += 1  # skip the END marker
        if stripped == BEGIN_HIDDEN:
            continue
        hint = " ".join(line.strip()[len(HINT):].strip() for line in body if line.strip().startswith(HINT))
        if cell_type == "markdown":
            out.append(ANSWER_STUB + (f" *Hint: {hint}*" if hint else ""))
            continue
        function = _enclosing_function(lines, start, indent) or "this exercise"
        out.append(f"{indent}# YOUR CODE HERE")
        if hint:
            out.extend(f"{indent}# {part}" for part in _wrap("Hint: " + hint, 96 - len(indent)))
        message = f"{function}: not written yet" + (" (see the hint above)" if hint else "")
        out.append(f"{indent}raise NotImplementedError({message!r})")
    return "\n".join(out)


def _wrap(text: str, width: int) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width=max(width, 40), subsequent_indent="  ") or [text]


def checks_in(nb) -> list[str]:
    """The exercise functions a notebook checks, in order of their first `checks.check_<name>(` call."""
    names: list[str] = []
    for cell in nb.cells:
        if cell.cell_type == "code":
            for name in CHECK_CALL.findall(cell.source):
                if name not in names:
                    names.append(name)
    return names


def student_notebook(solution_path: Path):
    """The student notebook (a NotebookNode) generated from one solution notebook."""
    import nbformat

    from compresslab.exercises import checks

    nb = nbformat.read(str(solution_path), as_version=4)
    names = checks_in(nb)
    unknown = [n for n in names if n not in checks.CHECKS]
    if unknown:
        raise ValueError(f"{solution_path.name}: calls unknown checks {unknown}; known: {sorted(checks.CHECKS)}")
    student = copy.deepcopy(nb)
    cells = []
    for index, cell in enumerate(nb.cells):
        new = copy.deepcopy(cell)
        new.source = strip_solutions(cell.source, cell.cell_type, f"{solution_path.name}, cell {index}")
        if cell.source.strip() and not new.source.strip():
            continue  # a cell that was hidden entirely
        if new.cell_type == "code":
            new.outputs = []
            new.execution_count = None
        new.metadata = {k: v for k, v in cell.metadata.items() if k in ("tags", "jupyter", "editable", "deletable")}
        cells.append(new)
    student.cells = cells
    student.metadata = {k: v for k, v in nb.metadata.items() if k in ("kernelspec", "language_info")}
    student.metadata["compresslab"] = {
        "exercise": solution_path.stem,
        "checks": names,
        "source": f"solutions/{solution_path.name}",
        "generated": "by `compresslab exercises build` from the solution notebook; edit that, not this file",
    }
    nbformat.validate(student)
    return student


def render(solution_path: Path) -> str:
    """The exact text of the student notebook for `solution_path`."""
    import nbformat

    text = nbformat.writes(student_notebook(solution_path))
    return text if text.endswith("\n") else text + "\n"


def build(check: bool = False, solution_dir: Path = SOLUTION_DIR, out_dir: Path = EXERCISE_DIR) -> list[Path]:
    """Write every student notebook (or, with check=True, write nothing); return the stale/changed ones."""
    sources = solutions(solution_dir)
    if not sources:
        raise ValueError(f"no solution notebooks (NN_name.ipynb) in {solution_dir}")
    changed = []
    for stem, path in sources.items():
        target = Path(out_dir) / f"{stem}.ipynb"
        text = render(path)
        if target.exists() and target.read_text(encoding="utf-8") == text:
            continue
        changed.append(target)
        if not check:
            write_text_atomic(target, text)
    return changed


# ----------------------------------------------------------------- grading

STATUSES = ("passed", "failed", "not_implemented", "error", "not_run")


@dataclass
class Grade:
    """The graded checks of one executed notebook."""

    notebook: str
    exercise: str | None
    rows: list[dict] = field(default_factory=list)  # check, status, message
    seconds: float = 0.0
    output: str = ""
    run_error: str = ""

    @property
    def passed(self) -> int:
        return sum(r["status"] == "passed" for r in self.rows)

    @property
    def total(self) -> int:
        return len(self.rows)

    @property
    def ok(self) -> bool:
        return self.total > 0 and self.passed == self.total

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed, "total": self.total, "ok": self.ok}

    def table(self) -> str:
        width = max([len("check")] + [len(r["check"]) for r in self.rows])
        lines = [f"{self.notebook}" + (f" (exercise {self.exercise})" if self.exercise else "")
                 + f": {self.passed}/{self.total} checks passed",
                 f"  {'check'.ljust(width)}  {'result'.ljust(15)}  detail"]
        for r in self.rows:
            detail = _detail(r)
            lines.append(f"  {r['check'].ljust(width)}  {r['status'].replace('_', ' ').ljust(15)}  {detail[:110]}")
        if self.run_error and (self.total == 0 or any(r["status"] == "not_run" for r in self.rows)):
            lines.append(f"  (the run stopped or failed: {self.run_error.splitlines()[0][:160]})")
        return "\n".join(lines)


def _detail(row: dict) -> str:
    """One line for the grading table: a failed check's case and problem, else its message's first line."""
    lines = [line.strip() for line in row["message"].strip().splitlines() if line.strip()]
    if row["status"] == "not_implemented":
        return "the function still raises NotImplementedError"
    if row["status"] == "failed":
        found = {key: line.split(":", 1)[1].strip() for line in lines for key in ("case", "problem")
                 if line.startswith(key + ":")}
        if found:
            return "; ".join(found[k] for k in ("problem", "case") if k in found)
    return lines[0] if lines else ""


def exercise_of(nb, path: Path) -> str | None:
    """The exercise a notebook belongs to: its metadata, else a solution stem inside its file name."""
    meta = nb.metadata.get("compresslab", {}) if isinstance(nb.metadata.get("compresslab"), dict) else {}
    if meta.get("exercise"):
        return str(meta["exercise"])
    for stem in solutions():
        if stem in path.stem:
            return stem
    return None


def expected_checks(nb, path: Path) -> tuple[str | None, list[str]]:
    """(exercise id, the checks to grade): the solution's list for a known exercise (so a deleted
    check cell counts as not run), else the checks the notebook itself calls."""
    import nbformat

    exercise = exercise_of(nb, path)
    known = solutions()
    if exercise in known:
        return exercise, checks_in(nbformat.read(str(known[exercise]), as_version=4))
    return exercise, checks_in(nb)


def _tagged_copy(nb, directory: Path, name: str) -> Path:
    """A copy whose code cells (but the parameters cell) carry `raises-exception`: execution goes on after an error."""
    import nbformat

    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            if "outputs" in cell:
                cell.outputs = []
            tags = list(cell.metadata.get("tags", []))
            if "parameters" not in tags and "raises-exception" not in tags:
                cell.metadata["tags"] = tags + ["raises-exception"]
    path = directory / name
    nbformat.write(nb, str(path))
    return path


def grade_one(path: Path, out_dir: Path, profile: str = "quick", cell_timeout: int | None = None, log=print) -> Grade:
    """Execute one notebook headless, all cells, and grade its checks."""
    import nbformat

    from compresslab.exercises import checks
    from compresslab.running import runner

    path = Path(path)
    try:
        nb = nbformat.read(str(path), as_version=4)
    except Exception as err:  # noqa: BLE001 - an unreadable submission is graded, not a crash
        return Grade(path.name, None, run_error=f"cannot read the notebook: {err}")
    exercise, names = expected_checks(nb, path)
    out_dir.mkdir(parents=True, exist_ok=True)
    ledger = out_dir / checks.CHECKS_FILE
    if ledger.exists():
        ledger.unlink()
    result = None
    with tempfile.TemporaryDirectory(prefix="compresslab-check-") as tmp:
        tagged = _tagged_copy(nb, Path(tmp), path.name)
        try:
            result = runner.execute(tagged, out_dir, {}, profile, cell_timeout, html=False, log=log)
            run_error = "" if result.ok else result.error
        except ValueError as err:  # e.g. no `profile` parameter in the notebook
            run_error = str(err)
    try:
        recorded = checks.read_ledger(ledger)
    except ValueError as err:
        recorded, run_error = {}, f"{run_error}; {err}".strip("; ")
    rows = []
    for name in names + [n for n in recorded if n not in names]:
        entry = recorded.get(name)
        if entry is None:
            rows.append({"check": name, "status": "not_run", "message": "the check cell did not run"})
        else:
            status = entry.get("status") or ("passed" if entry.get("passed") else "failed")
            rows.append({"check": name, "status": status if status in STATUSES else "failed",
                         "message": str(entry.get("message", ""))})
    return Grade(path.name, exercise, rows, result.seconds if result else 0.0,
                 str(result.output) if result else "", run_error)


def notebook_paths(paths: list[str | Path]) -> list[Path]:
    """Files as given; a folder contributes its *.ipynb files (sorted, not recursive)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(q for q in p.glob("*.ipynb") if not q.name.startswith("."))
            if not found:
                raise ValueError(f"{p}: no .ipynb files in this folder")
            out.extend(found)
        elif p.suffix == ".ipynb" and p.exists():
            out.append(p)
        else:
            raise ValueError(f"{p}: not a notebook (.ipynb) or a folder of notebooks")
    return out


def grade(paths: list[str | Path], out_dir: Path | None = None, profile: str = "quick",
          cell_timeout: int | None = 300, log=print) -> tuple[list[Grade], Path]:
    """Grade each notebook into its own folder under `out_dir`; write grades.json and grades.md there."""

    files = notebook_paths(paths)
    out_dir = Path(out_dir) if out_dir else Path.cwd() / "runs" / f"check-{_dt.datetime.now():%Y%m%d-%H%M%S}"
    grades, used = [], set()
    for i, path in enumerate(files, start=1):
        label = f"{path.parent.name}__{path.stem}" if path.parent.name else path.stem
        base, n = label, 2
        while label in used:
            label, n = f"{base}_{n}", n + 1
        used.add(label)
        log(f"[{i}/{len(files)}] grading {path} ...")
        g = grade_one(path, out_dir / label, profile, cell_timeout, log=lambda *_: None)
        grades.append(g)
        log(g.table())
    passed, total = sum(g.passed for g in grades), sum(g.total for g in grades)
    write_json_atomic(out_dir / "grades.json", {"passed": passed, "total": total,
                                                "notebooks": [g.to_dict() for g in grades]})
    write_text_atomic(out_dir / "grades.md", "\n\n".join(g.table() for g in grades)
                      + f"\n\nscore: {passed}/{total}\n")
    return grades, out_dir


def load_grades(out_dir: Path) -> dict:
    """The grades.json written by `grade`."""
    return json.loads((Path(out_dir) / "grades.json").read_text())
