"""Exercise notebooks: building student versions from the solutions, keeping them in sync, running
them, and grading with `compresslab check`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nbformat
import pytest

from compresslab import exercises
from compresslab.exercises import checks
from compresslab.running import cli, runner

SOLUTIONS = exercises.solutions()
STEMS = sorted(SOLUTIONS)


def student_path(stem: str) -> Path:
    return exercises.EXERCISE_DIR / f"{stem}.ipynb"


def read(path: Path):
    return nbformat.read(str(path), as_version=4)


# ----------------------------------------------------------------- the build transform

def test_code_region_becomes_a_stub_with_the_hint():
    source = (
        "def f(x):\n"
        '    """Doc."""\n'
        "    ### BEGIN SOLUTION\n"
        "    ### HINT: use x + 1\n"
        "    ### HINT: (nothing else)\n"
        "    y = x + 1\n"
        "    return y\n"
        "    ### END SOLUTION\n"
        "\n"
        "print(f)"
    )
    out = exercises.strip_solutions(source)
    assert "y = x + 1" not in out and "### " not in out
    assert '    """Doc."""\n    # YOUR CODE HERE\n    # Hint: use x + 1 (nothing else)\n' in out
    assert "    raise NotImplementedError('f: not written yet (see the hint above)')" in out
    assert out.endswith("\nprint(f)")
    namespace: dict = {}
    exec(compile(out.replace("print(f)", ""), "stub", "exec"), namespace)
    with pytest.raises(NotImplementedError, match="f: not written yet"):
        namespace["f"](1)


def test_region_without_hint_and_nested_function_names():
    source = "class A:\n    def method(self):\n        ### BEGIN SOLUTION\n        return 1\n        ### END SOLUTION\n"
    out = exercises.strip_solutions(source)
    assert "        raise NotImplementedError('method: not written yet')" in out and "Hint" not in out


def test_markdown_answers_and_hidden_regions():
    md = "**Q1.** Why?\n### BEGIN SOLUTION\n### HINT: think of zero\nBecause.\n### END SOLUTION"
    out = exercises.strip_solutions(md, "markdown")
    assert "Because" not in out and exercises.ANSWER_STUB in out and "think of zero" in out
    code = "x = 1\n### BEGIN HIDDEN\nassert x == 1\n### END HIDDEN\nprint(x)"
    assert exercises.strip_solutions(code) == "x = 1\nprint(x)"


@pytest.mark.parametrize("source, message", [
    ("### BEGIN SOLUTION\nx = 1\n", "never closed"),
    ("x = 1\n### END SOLUTION", "without a matching BEGIN"),
    ("### BEGIN SOLUTION\n### BEGIN HIDDEN\n### END HIDDEN\n### END SOLUTION", "do not nest"),
    ("### BEGIN SOLUTIONS\nx\n### END SOLUTION", "unknown marker"),
])
def test_malformed_markers_are_reported_with_the_line(source, message):
    with pytest.raises(ValueError, match=message) as info:
        exercises.strip_solutions(source, where="demo.ipynb, cell 3")
    assert "demo.ipynb, cell 3: line" in str(info.value)


def test_a_cell_that_is_entirely_hidden_is_dropped(tmp_path):
    cells = [nbformat.v4.new_code_cell("profile = 'quick'"), nbformat.v4.new_code_cell("### BEGIN HIDDEN\nx = 1\n### END HIDDEN"),
             nbformat.v4.new_code_cell("checks.check_cubic_sparsity(cubic_sparsity)")]
    nb = nbformat.v4.new_notebook(cells=cells)
    path = tmp_path / "07_demo.ipynb"
    nbformat.write(nb, str(path))
    student = exercises.student_notebook(path)
    assert [c.source for c in student.cells] == ["profile = 'quick'", "checks.check_cubic_sparsity(cubic_sparsity)"]
    assert student.metadata["compresslab"]["checks"] == ["cubic_sparsity"]
    nb.cells.append(nbformat.v4.new_code_cell("checks.check_nonexistent(f)"))
    nbformat.write(nb, str(path))
    with pytest.raises(ValueError, match="unknown checks"):
        exercises.student_notebook(path)


# ----------------------------------------------------------------- the committed notebooks

def test_six_exercises_with_two_to_four_checks_each():
    assert STEMS == ["01_pruning", "02_lottery", "03_quantization", "04_distillation", "05_lowrank",
                     "06_huffman_deep_compression"]
    for stem, path in SOLUTIONS.items():
        names = exercises.checks_in(read(path))
        assert 2 <= len(names) <= 4, (stem, names)
        assert set(names) <= set(checks.CHECKS)


def test_generated_notebooks_are_up_to_date():
    stale = exercises.build(check=True)
    assert not stale, f"out of date: {[p.name for p in stale]}; run `compresslab exercises build`"
    assert cli.main(["exercises", "build", "--check"]) == 0


def test_a_changed_solution_makes_its_student_notebook_stale(tmp_path, capsys):
    sources = tmp_path / "solutions"
    shutil.copytree(exercises.SOLUTION_DIR, sources)
    nb = read(sources / "01_pruning.ipynb")
    nb.cells[0].source += "\n\nOne more sentence."
    nbformat.write(nb, str(sources / "01_pruning.ipynb"))
    stale = exercises.build(check=True, solution_dir=sources)
    assert [p.name for p in stale] == ["01_pruning.ipynb"]
    written = exercises.build(solution_dir=sources, out_dir=tmp_path / "out")
    assert len(written) == len(STEMS)
    assert exercises.build(check=True, solution_dir=sources, out_dir=tmp_path / "out") == []


@pytest.mark.parametrize("stem", STEMS)
def test_student_notebook_hides_the_solutions(stem):
    solution, student = read(SOLUTIONS[stem]), read(student_path(stem))
    text = json.dumps([c.source for c in student.cells])
    for marker in ("BEGIN SOLUTION", "END SOLUTION", "### HINT", "BEGIN HIDDEN"):
        assert marker not in text
    meta = student.metadata["compresslab"]
    assert meta["exercise"] == stem and meta["checks"] == exercises.checks_in(solution)
    code = json.dumps([c.source for c in student.cells if c.cell_type == "code"])
    assert code.count("raise NotImplementedError") == len(meta["checks"])
    for nb in (solution, student):  # committed without outputs
        assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code")
    first_code = next(c for c in student.cells if c.cell_type == "code")
    assert first_code.metadata.get("tags") == ["parameters"] and 'profile = "quick"' in first_code.source


@pytest.mark.parametrize("stem", STEMS)
def test_papermill_reads_every_parameter(stem):
    first_code = next(c for c in read(SOLUTIONS[stem]).cells if c.cell_type == "code")
    assigned = [line.split("=")[0].strip() for line in first_code.source.splitlines() if "=" in line]
    assert list(runner.parameters(SOLUTIONS[stem])) == assigned and assigned[0] == "profile"


def exercise_namespace(path: Path) -> dict:
    """Run a notebook's parameter and setup cells and every exercise-function cell (no data, no kernel)."""
    nb = read(path)
    namespace: dict = {}
    seen_check = False
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        if "checks.check_" in cell.source:
            seen_check = True
            continue
        defines_exercise = "### BEGIN SOLUTION" in cell.source or "# YOUR CODE HERE" in cell.source
        if seen_check and not defines_exercise:
            continue
        source = "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith("%"))
        exec(compile(source, f"{path.name}", "exec"), namespace)
    return namespace


@pytest.mark.parametrize("stem", STEMS)
def test_solution_functions_pass_their_checks(stem, capsys, monkeypatch):
    monkeypatch.delenv("COMPRESSLAB_RESULTS_DIR", raising=False)
    namespace = exercise_namespace(SOLUTIONS[stem])
    for name in exercises.checks_in(read(SOLUTIONS[stem])):
        checks.CHECKS[name](namespace[name])
        assert f"[ok] {name}" in capsys.readouterr().out


@pytest.mark.parametrize("stem", STEMS)
def test_student_stubs_get_the_friendly_message(stem, monkeypatch):
    monkeypatch.delenv("COMPRESSLAB_RESULTS_DIR", raising=False)
    namespace = exercise_namespace(student_path(stem))
    for name in exercises.checks_in(read(student_path(stem))):
        with pytest.raises(checks.ExerciseNotDone, match=f"{name} is not implemented yet"):
            checks.CHECKS[name](namespace[name])


def test_expected_checks_come_from_the_solution(tmp_path):
    nb = read(student_path("01_pruning"))
    nb.cells = [c for c in nb.cells if "check_cubic_sparsity" not in c.source]  # a deleted check cell
    renamed = tmp_path / "alice_submission.ipynb"
    nbformat.write(nb, str(renamed))
    exercise, names = exercises.expected_checks(read(renamed), renamed)
    assert exercise == "01_pruning" and names == ["magnitude_mask", "global_magnitude_masks", "cubic_sparsity"]
    del nb.metadata["compresslab"]
    exercise, _ = exercises.expected_checks(nb, tmp_path / "bob_01_pruning.ipynb")
    assert exercise == "01_pruning"


def test_grade_table_and_paths(tmp_path):
    grade = exercises.Grade("a.ipynb", "01_pruning", [
        {"check": "magnitude_mask", "status": "passed", "message": "all 8 cases match the reference"},
        {"check": "cubic_sparsity", "status": "not_run", "message": "the check cell did not run"}], run_error="boom")
    assert (grade.passed, grade.total, grade.ok) == (1, 2, False)
    table = grade.table()
    assert "1/2 checks passed" in table and "not run" in table and "boom" in table
    with pytest.raises(ValueError, match="not a notebook"):
        exercises.notebook_paths([tmp_path / "missing.ipynb"])
    with pytest.raises(ValueError, match="no .ipynb"):
        exercises.notebook_paths([tmp_path])
    assert exercises.notebook_paths([exercises.SOLUTION_DIR]) == list(SOLUTIONS.values())


# ----------------------------------------------------------------- executing notebooks (slow)

@pytest.fixture(scope="session")
def graded_solutions(tmp_path_factory):
    """`compresslab check exercises/solutions` once per session: (exit code, grades.json)."""
    out = tmp_path_factory.mktemp("graded-solutions")
    code = cli.main(["check", str(exercises.SOLUTION_DIR), "--out", str(out)])
    return code, exercises.load_grades(out), out


@pytest.mark.notebook
def test_solutions_pass_every_check_when_executed(graded_solutions):
    code, grades, out = graded_solutions
    assert code == 0
    assert grades["passed"] == grades["total"] == sum(len(exercises.checks_in(read(p))) for p in SOLUTIONS.values())
    for g in grades["notebooks"]:
        assert g["ok"] and not g["run_error"], (g["notebook"], g["run_error"], g["rows"])
        assert all(r["status"] == "passed" for r in g["rows"])
    for stem in STEMS:  # every solution ran to its end: its results (and hidden instructor asserts) passed
        results_file = out / f"solutions__{stem}" / f"{stem}.results.json"
        assert json.loads(results_file.read_text())["metrics"]["profile"] == "quick"


@pytest.mark.notebook
@pytest.mark.parametrize("stem", STEMS)
def test_student_notebook_stops_at_the_first_stub_with_the_friendly_message(stem, tmp_path):
    result = runner.execute(student_path(stem), tmp_path, {}, "quick", cell_timeout=300, html=False)
    assert not result.ok and "ExerciseNotDone" in result.error
    first = exercises.checks_in(read(student_path(stem)))[0]
    executed = read(result.output)
    errors = [(c, o) for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert len(errors) == 1
    cell, error = errors[0]
    assert f"checks.check_{first}(" in cell.source and error.ename == "ExerciseNotDone"
    assert f"{first} is not implemented yet" in error.evalue
    assert len(error.traceback) == 1 and "Traceback" not in error.traceback[0]  # a message, not a traceback
    later = executed.cells[executed.cells.index(cell) + 1:]
    assert all(c.get("execution_count") is None for c in later if c.cell_type == "code")


@pytest.mark.notebook
def test_check_scores_a_partly_solved_and_an_unsolved_notebook(tmp_path, capsys):
    solution = read(SOLUTIONS["01_pruning"])
    partly = read(student_path("01_pruning"))
    by_id = {c.id: c for c in solution.cells}
    for cell in partly.cells:
        if "def magnitude_mask(" in cell.source:
            cell.source = solved(by_id[cell.id].source)
    submissions = tmp_path / "submissions"
    submissions.mkdir()
    nbformat.write(partly, str(submissions / "alice_01_pruning.ipynb"))
    shutil.copy(student_path("04_distillation"), submissions / "bob_04_distillation.ipynb")
    out = tmp_path / "grades"
    code = cli.main(["check", str(submissions), "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 1
    grades = {g["notebook"]: g for g in exercises.load_grades(out)["notebooks"]}
    alice, bob = grades["alice_01_pruning.ipynb"], grades["bob_04_distillation.ipynb"]
    assert {r["check"]: r["status"] for r in alice["rows"]} == {
        "magnitude_mask": "passed", "global_magnitude_masks": "not_implemented", "cubic_sparsity": "not_implemented"}
    assert (alice["passed"], alice["total"]) == (1, 3)
    assert (bob["passed"], bob["total"]) == (0, 2) and {r["status"] for r in bob["rows"]} == {"not_implemented"}
    assert "alice_01_pruning.ipynb: 1/3" in printed and "bob_04_distillation.ipynb: 0/2" in printed
    assert "score: 1/5 checks passed" in printed


def solved(source: str) -> str:
    """A solution cell as a student would write it: the solution kept, the markers and hints dropped."""
    return "\n".join(line for line in source.splitlines() if not line.strip().startswith("### "))


def test_solved_cell_is_the_solution_without_markers(capsys):
    """Guards the partly solved notebook above: the cell it substitutes passes its check."""
    cell = next(c for c in read(SOLUTIONS["01_pruning"]).cells if "def magnitude_mask(" in c.source)
    namespace: dict = {}
    exec("import torch\n" + solved(cell.source), namespace)
    checks.check_magnitude_mask(namespace["magnitude_mask"])
    assert "[ok] magnitude_mask" in capsys.readouterr().out
