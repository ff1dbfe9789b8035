"""Exercise notebooks: student notebooks built from the instructor's solution notebooks.

One source of truth: the solution notebooks `exercises/solutions/NN_topic.ipynb`.
Markers (each on a line of its own, indented like the code around it):

    ### BEGIN SOLUTION            the solution; in the student notebook a code region becomes
    ### HINT 1: text                "# YOUR CODE HERE" and raise NotImplementedError(...), and the
    ### HINT 2: text                hints go to a markdown cell below it, each collapsed (<details>):
    ...solution...                  hint 1 the idea, hint 2 more specific, never the answer.
    ### END SOLUTION              In a markdown cell the region is a model answer: the student's cell
                                  becomes "*Write your answer here.*", tagged `answer`;
    ### RUBRIC: text              (inside a markdown region) how to grade the answer, for the report.
    ### BEGIN HIDDEN / ### END HIDDEN   removed from the student notebook (instructor-only lines)

`build()` writes `exercises/NN_topic.ipynb` for every solution (outputs cleared, metadata
`compresslab = {exercise, checks, source}`); `build(check=True)` only reports stale files.
Grading is in `grading.py`, releasing to students in `releasing.py`.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

from compresslab.core.io import write_text_atomic
from compresslab.core.locations import exercise_dir

__all__ = [
    "EXERCISE_DIR",
    "SOLUTION_DIR",
    "ANSWER_STUB",
    "solutions",
    "split_solutions",
    "strip_solutions",
    "hints_markdown",
    "answer_key",
    "visible_text",
    "solution_lines",
    "checks_in",
    "student_notebook",
    "render",
    "build",
]

EXERCISE_DIR = exercise_dir()  # core.locations: $COMPRESSLAB_EXERCISES, the checkout, or the installed package
SOLUTION_DIR = EXERCISE_DIR / "solutions"
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
HINT = re.compile(r"^### HINT(?: ([12]))?:(.*)$")
RUBRIC = "### RUBRIC:"
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


def _tiers(body: list[str]) -> list[str]:
    """The hint texts of a region, tier 1 then tier 2 (lines of one tier are joined)."""
    tiers: dict[int, list[str]] = {}
    for line in body:
        match = HINT.match(line.strip())
        if match:
            tiers.setdefault(int(match.group(1) or 1), []).append(match.group(2).strip())
    return [" ".join(tiers[k]) for k in sorted(tiers)]


def split_solutions(source: str, cell_type: str = "code", where: str = "cell") -> tuple[str, list[tuple[str, list[str]]]]:
    """(the student version of one cell's source, [(function, [hint 1, hint 2])] of its regions).

    Raises ValueError (naming `where` and the line) for an unmatched or nested marker."""
    lines = source.split("\n")
    out: list[str] = []
    hints: list[tuple[str, list[str]]] = []
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
        tiers = _tiers(body)
        if cell_type == "markdown":
            out.append(ANSWER_STUB)
            if tiers:
                out.extend(["", hints_markdown(None, tiers)])
            continue
        function = _enclosing_function(lines, start, indent) or "this exercise"
        if tiers:
            hints.append((function, tiers))
        out.append(f"{indent}# YOUR CODE HERE")
        message = f"{function}: not written yet" + (" (hints in the cell below)" if tiers else "")
        out.append(f"{indent}raise NotImplementedError({message!r})")
    return "\n".join(out), hints


def strip_solutions(source: str, cell_type: str = "code", where: str = "cell") -> str:
    """The student version of one cell's source (see `split_solutions`)."""
    return split_solutions(source, cell_type, where)[0]


TIER_TITLES = ("Hint 1: the idea", "Hint 2: more specific")


def hints_markdown(function: str | None, tiers: list[str]) -> str:
    """Collapsed hints (HTML <details>), to open one at a time."""
    head = f"**Stuck on `{function}`?** Open one hint at a time; try again after each." if function else ""
    blocks = [f"<details><summary>{TIER_TITLES[k] if k < len(TIER_TITLES) else f'Hint {k + 1}'}</summary>\n\n{text}\n\n</details>"
              for k, text in enumerate(tiers)]
    return "\n\n".join([head] + blocks if head else blocks)


def _region_lines(source: str) -> list[str]:
    lines, inside, out = source.split("\n"), False, []
    for line in lines:
        if line.strip() == BEGIN:
            inside = True
        elif line.strip() == END:
            inside = False
        elif inside:
            out.append(line)
    return out


def answer_key(nb) -> list[dict]:
    """Per markdown model answer of a solution notebook: {id, question, rubric, model}."""
    key, question = [], ""
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        if BEGIN not in cell.source:
            question = re.sub(r"^#+ .*\n+", "", cell.source.strip())  # without a section heading
            continue
        body = _region_lines(cell.source)
        rubric = " ".join(line.strip()[len(RUBRIC):].strip() for line in body if line.strip().startswith(RUBRIC))
        model = "\n".join(line for line in body if not line.strip().startswith("### ")).strip()
        key.append({"id": cell.get("id"), "question": question, "rubric": rubric, "model": model})
    return key


def visible_text(nb) -> str:
    """Everything a student sees of notebook `nb` (solution regions removed), whitespace-normalised."""
    return " ".join(" ".join(split_solutions(c.source, c.cell_type)[0].split()) for c in nb.cells)


def solution_lines(nb, min_chars: int = 16, visible: str = "") -> list[str]:
    """The lines of every solution region (code and model answers), whitespace-normalised, at least
    `min_chars` long, that appear nowhere else in the notebook (nor in `visible`): the text that must
    never reach a student."""
    visible = visible_text(nb) + " " + visible
    out = []
    for cell in nb.cells:
        for line in _region_lines(cell.source):
            text = " ".join(line.split())
            if len(text) >= min_chars and not text.startswith("### ") and text not in visible and text not in out:
                out.append(text)
    return out


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
        new.source, hints = split_solutions(cell.source, cell.cell_type, f"{solution_path.name}, cell {index}")
        if cell.source.strip() and not new.source.strip():
            continue  # a cell that was hidden entirely
        if new.cell_type == "code":
            new.outputs = []
            new.execution_count = None
        new.metadata = {k: v for k, v in cell.metadata.items() if k in ("tags", "jupyter", "editable", "deletable")}
        if cell.cell_type == "markdown" and BEGIN in cell.source:
            new.metadata["tags"] = list(dict.fromkeys(list(new.metadata.get("tags", [])) + ["answer"]))
        cells.append(new)
        for n, (function, tiers) in enumerate(hints):
            hint_cell = nbformat.v4.new_markdown_cell(hints_markdown(function, tiers))
            hint_cell.id = f"{cell.get('id', index)}-hints{n if n else ''}"[:64]
            hint_cell.metadata = {"tags": ["hints"]}
            cells.append(hint_cell)
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
