"""Grade reports for the instructor and feedback for the students.

`write_reports(grades, out_dir)` writes
- grades.json: everything, for scripts;
- grades.md: one table per submission, with the hint each student saw on a failed check;
- gradebook.csv: one row per submission (student, exercise, score, each check's status and hint);
- answers.md: the written answers next to the question, the rubric and the model answer, with an
  empty score line per answer for manual grading;
- feedback/<student>__<exercise>.html: one page per submission for the student (results, hints,
  their written answers; no model answers).
"""

from __future__ import annotations

import csv
import html
import io
from pathlib import Path

from compresslab.core.io import write_json_atomic, write_text_atomic

__all__ = ["markdown", "gradebook_csv", "answers_markdown", "feedback_html", "write_reports"]


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def markdown(grades: list) -> str:
    """grades.md: per submission, a table of checks with status, detail and the hint shown."""
    from compresslab.exercises.grading import detail

    parts = ["# Grades", ""]
    for g in grades:
        parts += [f"## {g.student or '?'} · {g.exercise or '?'} ({g.notebook}): {g.passed}/{g.total}", "",
                  "| check | result | detail | hint shown |", "|---|---|---|---|"]
        parts += [f"| {r['check']} | {r['status'].replace('_', ' ')} | {_cell(detail(r))[:200]} | {_cell(r.get('hint', ''))} |"
                  for r in g.rows]
        if g.run_error:
            parts += ["", f"Problems: {_cell(g.run_error)}"]
        if g.answers:
            written = sum(bool(a["answer"]) for a in g.answers)
            parts += ["", f"Written answers: {written}/{len(g.answers)} (see answers.md)"]
        parts.append("")
    passed, total = sum(g.passed for g in grades), sum(g.total for g in grades)
    parts.append(f"score: {passed}/{total}")
    return "\n".join(parts) + "\n"


def gradebook_csv(grades: list) -> str:
    """One row per submission; a status and a hint column per check of any exercise."""
    names: list[str] = []
    for g in grades:
        names += [r["check"] for r in g.rows if r["check"] not in names]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["student", "exercise", "notebook", "passed", "total", "answers_written", "answers_total"]
                    + [c for n in names for c in (n, f"{n}_hint")])
    for g in grades:
        by = {r["check"]: r for r in g.rows}
        writer.writerow([g.student or "", g.exercise or "", g.notebook, g.passed, g.total,
                         sum(bool(a["answer"]) for a in g.answers), len(g.answers)]
                        + [v for n in names for v in (by[n]["status"] if n in by else "", by[n].get("hint", "") if n in by else "")])
    return buffer.getvalue()


def answers_markdown(grades: list) -> str:
    """answers.md: every written answer with its question, rubric and model answer, for manual grading."""
    parts = ["# Written answers", ""]
    for g in grades:
        if not g.answers:
            continue
        parts += [f"## {g.student or '?'} · {g.exercise or '?'} ({g.notebook})", ""]
        for i, a in enumerate(g.answers, start=1):
            parts += [f"### Answer {i}", "", f"**Question.** {a['question'] or '(not found)'}", "",
                      "**Answer.**", "", a["answer"] or "*(no answer written)*", "",
                      f"**Rubric.** {a['rubric'] or '(none)'}", "", f"**Model answer.** {a['model'] or '(none)'}",
                      "", "Score: ___ / 2", ""]
    return "\n".join(parts) + "\n"


STATUS_WORDS = {"passed": "passed", "failed": "not right yet", "not_implemented": "not written yet",
                "missing": "function not found", "reference_used": "used the package's version (0 points)",
                "timeout": "took too long", "error": "raised an error"}


def feedback_html(grade) -> str:
    """A page for the student: each check's result, what went wrong and the hint; their answers."""
    from compresslab.exercises.grading import detail

    e = html.escape
    rows = "".join(f"<tr class='{e(r['status'])}'><td>{e(r['check'])}</td><td>{e(STATUS_WORDS.get(r['status'], r['status']))}</td>"
                   f"<td>{e(detail(r)) if r['status'] != 'passed' else ''}</td><td>{e(r.get('hint', ''))}</td></tr>"
                   for r in grade.rows)
    answers = "".join(f"<h3>Question {i}</h3><p>{e(a['question'])}</p><blockquote>{e(a['answer']) or '<em>no answer</em>'}"
                      "</blockquote>" for i, a in enumerate(grade.answers, start=1))
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'>"
            f"<title>Feedback: {e(grade.exercise or grade.notebook)}</title>"
            "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}td,th{border:1px solid #ccc;"
            "padding:.3em .6em;vertical-align:top}table{border-collapse:collapse}.passed{background:#e8f6e8}"
            ".failed,.error,.timeout,.reference_used{background:#fdecea}</style></head><body>"
            f"<h1>{e(grade.exercise or '')}: {grade.passed}/{grade.total} checks passed</h1>"
            f"<p>Student: {e(grade.student or '?')} · notebook {e(grade.notebook)}</p>"
            "<table><tr><th>function / target</th><th>result</th><th>what went wrong</th><th>hint</th></tr>"
            f"{rows}</table>" + (f"<h2>Your written answers</h2>{answers}<p>These are graded by hand.</p>" if answers else "")
            + "</body></html>\n")


def _label(grade, used: set[str]) -> str:
    base = "__".join(x for x in (grade.student, grade.exercise) if x) or Path(grade.notebook).stem
    base = "".join(c if c.isalnum() or c in "-_." else "_" for c in base)
    label, n = base, 2
    while label in used:
        label, n = f"{base}_{n}", n + 1
    used.add(label)
    return label


def write_reports(grades: list, out_dir: Path) -> Path:
    """Write every report of the module docstring under `out_dir`; returns it."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    passed, total = sum(g.passed for g in grades), sum(g.total for g in grades)
    write_json_atomic(out_dir / "grades.json", {"passed": passed, "total": total,
                                                "notebooks": [g.to_dict() for g in grades]})
    write_text_atomic(out_dir / "grades.md", markdown(grades))
    write_text_atomic(out_dir / "gradebook.csv", gradebook_csv(grades))
    write_text_atomic(out_dir / "answers.md", answers_markdown(grades))
    used: set[str] = set()
    for g in grades:
        write_text_atomic(out_dir / "feedback" / f"{_label(g, used)}.html", feedback_html(g))
    return out_dir
