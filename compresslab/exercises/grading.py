"""Grading submissions outside the student's kernel.

`grade_one(path)` starts a fresh Python process (`compresslab.exercises.worker`) that runs only
the submission's definitions and calls the checks of the installed package on them, with random
cases drawn for the student (`student_id`, by default from the file name). The checks to grade
come from the instructor's solution notebook of that exercise, never from the submission, so a
deleted, edited or redefined check cell changes nothing. Written answers (markdown cells tagged
`answer`) are collected next to the checks for manual grading. `grade(paths)` grades many and
writes the reports (`reporting.write_reports`).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import secrets
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from compresslab.exercises.building import ANSWER_STUB, checks_in, solutions

__all__ = [
    "STATUSES",
    "Grade",
    "exercise_of",
    "expected_checks",
    "student_id_of",
    "answers_of",
    "grade_one",
    "notebook_paths",
    "grade",
    "load_grades",
]

STATUSES = ("passed", "failed", "not_implemented", "missing", "reference_used", "timeout", "error")
ANSWER_TAG = "answer"


@dataclass
class Grade:
    """The graded checks and written answers of one submission."""

    notebook: str
    exercise: str | None
    student: str | None = None
    rows: list[dict] = field(default_factory=list)  # check, status, message, hint, seconds
    answers: list[dict] = field(default_factory=list)  # question, answer, rubric, model
    seconds: float = 0.0
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
        who = f" [student {self.student}]" if self.student else ""
        lines = [f"{self.notebook}" + (f" (exercise {self.exercise})" if self.exercise else "") + who
                 + f": {self.passed}/{self.total} checks passed",
                 f"  {'check'.ljust(width)}  {'result'.ljust(15)}  detail"]
        for r in self.rows:
            lines.append(f"  {r['check'].ljust(width)}  {r['status'].replace('_', ' ').ljust(15)}  {detail(r)[:110]}")
        if self.run_error:
            lines.append(f"  (problems: {self.run_error.splitlines()[0][:160]})")
        return "\n".join(lines)


def detail(row: dict) -> str:
    """One line for a table: a failed check's problem and case, else its message's first line."""
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
    if meta.get("exercise") in solutions():
        return str(meta["exercise"])
    for stem in solutions():
        if stem in Path(path).stem:
            return stem
    return str(meta["exercise"]) if meta.get("exercise") else None


def expected_checks(nb, path: Path) -> tuple[str | None, list[str]]:
    """(exercise id, the checks to grade): always the solution's list for a known exercise."""
    import nbformat

    exercise = exercise_of(nb, path)
    known = solutions()
    if exercise in known:
        return exercise, checks_in(nbformat.read(str(known[exercise]), as_version=4))
    return exercise, []


def student_id_of(path: Path, exercise: str | None) -> str:
    """The student a file belongs to: its name without the exercise id (alice_01_pruning -> alice),
    else its folder's name (alice/01_pruning.ipynb -> alice)."""
    path = Path(path)
    rest = path.stem.replace(exercise, "") if exercise else path.stem
    rest = re.sub(r"^[\W_]+|[\W_]+$", "", rest)
    return rest or path.parent.name or path.stem


def _text(cell) -> str:
    return cell.source.strip()


def answers_of(nb, exercise: str | None) -> list[dict]:
    """The written answers (markdown cells tagged `answer`), with their question and the solution's
    rubric and model answer (matched by cell id, else by order)."""
    import nbformat

    model: list[dict] = []
    if exercise in solutions():
        from compresslab.exercises.building import answer_key

        model = answer_key(nbformat.read(str(solutions()[exercise]), as_version=4))
    by_id = {m["id"]: m for m in model}
    out = []
    cells = nb.cells
    for i, cell in enumerate(c for c in cells if ANSWER_TAG in c.metadata.get("tags", [])):
        key = by_id.get(cell.get("id")) or (model[i] if i < len(model) else {})
        answer = _text(cell)
        out.append({"question": key.get("question", ""), "answer": "" if answer.startswith(ANSWER_STUB) else answer,
                    "rubric": key.get("rubric", ""), "model": key.get("model", "")})
    return out


def grade_one(path: Path, student_id: str | None = None, timeout: float = 300, log=print) -> Grade:
    """Grade one submission in a fresh process (see the module docstring)."""
    import nbformat

    path = Path(path)
    start = time.perf_counter()
    try:
        nb = nbformat.read(str(path), as_version=4)
    except Exception as err:  # noqa: BLE001 - an unreadable submission is graded, not a crash
        return Grade(path.name, None, student_id, run_error=f"cannot read the notebook: {err}")
    exercise, names = expected_checks(nb, path)
    student = student_id or student_id_of(path, exercise)
    grade = Grade(path.name, exercise, student, answers=answers_of(nb, exercise))
    if not names:
        grade.run_error = f"not an exercise of this course (known: {', '.join(solutions())})"
        return grade
    nonce = secrets.token_hex(16)
    request = {"notebook": str(path.resolve()), "checks": names, "student_id": student, "timeout": timeout,
               "nonce": nonce}
    env = {**os.environ, "COMPRESSLAB_HEADLESS": "1", "MPLBACKEND": "Agg"}
    try:
        proc = subprocess.run([sys.executable, "-m", "compresslab.exercises.worker"], input=json.dumps(request) + "\n",
                              capture_output=True, text=True, timeout=timeout * (len(names) + 1) + 60, env=env,
                              cwd=str(path.parent))
        answer = [line[len(nonce):] for line in proc.stdout.splitlines() if line.startswith(nonce)]
        if not answer:
            raise RuntimeError(f"the grading process gave no result (exit {proc.returncode}): "
                               f"{(proc.stderr or proc.stdout).strip()[-800:]}")
        result = json.loads(answer[-1])
        grade.rows, grade.run_error = result["rows"], "; ".join(result["problems"])
    except (subprocess.TimeoutExpired, RuntimeError, json.JSONDecodeError) as err:
        grade.rows = [{"check": n, "status": "error", "message": str(err)[:3000], "hint": "", "seconds": 0.0}
                      for n in names]
        grade.run_error = str(err).splitlines()[0] if str(err) else type(err).__name__
    grade.seconds = round(time.perf_counter() - start, 2)
    return grade


def notebook_paths(paths: list[str | Path]) -> list[Path]:
    """Files as given; a folder contributes its *.ipynb files (sorted, recursive, checkpoints skipped)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(q for q in p.rglob("*.ipynb")
                           if not any(part.startswith(".") for part in q.relative_to(p).parts))
            if not found:
                raise ValueError(f"{p}: no .ipynb files in this folder")
            out.extend(found)
        elif p.suffix == ".ipynb" and p.exists():
            out.append(p)
        else:
            raise ValueError(f"{p}: not a notebook (.ipynb) or a folder of notebooks")
    return out


def grade(paths: list[str | Path], out_dir: Path | None = None, student_id: str | None = None,
          timeout: float = 300, log=print) -> tuple[list[Grade], Path]:
    """Grade every notebook; write grades.json, grades.md, gradebook.csv, answers.md and one
    feedback page per submission under `out_dir` (default runs/check-<timestamp>/)."""
    from compresslab.exercises import reporting

    files = notebook_paths(paths)
    out_dir = Path(out_dir) if out_dir else Path.cwd() / "runs" / f"check-{_dt.datetime.now():%Y%m%d-%H%M%S}"
    grades = []
    for i, path in enumerate(files, start=1):
        log(f"[{i}/{len(files)}] grading {path} ...")
        g = grade_one(path, student_id, timeout)
        grades.append(g)
        log(g.table())
    reporting.write_reports(grades, out_dir)
    return grades, out_dir


def load_grades(out_dir: Path) -> dict:
    """The grades.json written by `grade`."""
    return json.loads((Path(out_dir) / "grades.json").read_text())
