"""Exercise notebooks: building student versions from the solutions (stubs, tiered hints, answer
cells), keeping them in sync, and running them. Grading is tested in test_grading.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nbformat
import pytest

from compresslab.exercises import building, checking, checks, submission
from compresslab.running import cli, runner

SOLUTIONS = building.solutions()
STEMS = sorted(SOLUTIONS)


def student_path(stem: str) -> Path:
    return building.EXERCISE_DIR / f"{stem}.ipynb"


def read(path: Path):
    return nbformat.read(str(path), as_version=4)


# ----------------------------------------------------------------- the build transform

def test_code_region_becomes_a_stub_and_its_hints_a_collapsed_cell():
    source = (
        "def f(x):\n"
        '    """Doc."""\n'
        "    ### BEGIN SOLUTION\n"
        "    ### HINT 1: think of adding\n"
        "    ### HINT 2: use x + 1\n"
        "    ### HINT 2: (nothing else)\n"
        "    y = x + 1\n"
        "    return y\n"
        "    ### END SOLUTION\n"
        "\n"
        "print(f)"
    )
    out, hints = building.split_solutions(source)
    assert "y = x + 1" not in out and "### " not in out and "Hint" not in out
    assert '    """Doc."""\n    # YOUR CODE HERE\n' in out
    assert "    raise NotImplementedError('f: not written yet (hints in the cell below)')" in out
    assert out.endswith("\nprint(f)") and building.strip_solutions(source) == out
    assert hints == [("f", ["think of adding", "use x + 1 (nothing else)"])]
    namespace: dict = {}
    exec(compile(out.replace("print(f)", ""), "stub", "exec"), namespace)
    with pytest.raises(NotImplementedError, match="f: not written yet"):
        namespace["f"](1)
    md = building.hints_markdown("f", hints[0][1])
    first, second = md.index("<details><summary>Hint 1"), md.index("<details><summary>Hint 2")
    assert "`f`" in md and first < md.index("think of adding") < second < md.index("use x + 1")
    assert md.count("</details>") == 2  # each collapsed until opened


def test_region_without_hint_and_nested_function_names():
    source = "class A:\n    def method(self):\n        ### BEGIN SOLUTION\n        return 1\n        ### END SOLUTION\n"
    out = building.strip_solutions(source)
    assert "        raise NotImplementedError('method: not written yet')" in out and "Hint" not in out


def test_markdown_answers_and_hidden_regions():
    md = "**Q1.** Why?\n### BEGIN SOLUTION\n### HINT: think of zero\nBecause.\n### RUBRIC: 2 points: zero\n### END SOLUTION"
    out = building.strip_solutions(md, "markdown")
    assert "Because" not in out and building.ANSWER_STUB in out and "think of zero" in out and "<details>" in out
    assert "RUBRIC" not in out and "2 points" not in out
    key = building.answer_key(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("**Q1.** Why?"),
                                                               nbformat.v4.new_markdown_cell(md)]))
    assert [(k["question"], k["rubric"], k["model"]) for k in key] == [("**Q1.** Why?", "2 points: zero", "Because.")]
    code = "x = 1\n### BEGIN HIDDEN\nassert x == 1\n### END HIDDEN\nprint(x)"
    assert building.strip_solutions(code) == "x = 1\nprint(x)"


@pytest.mark.parametrize("source, message", [
    ("### BEGIN SOLUTION\nx = 1\n", "never closed"),
    ("x = 1\n### END SOLUTION", "without a matching BEGIN"),
    ("### BEGIN SOLUTION\n### BEGIN HIDDEN\n### END HIDDEN\n### END SOLUTION", "do not nest"),
    ("### BEGIN SOLUTIONS\nx\n### END SOLUTION", "unknown marker"),
])
def test_malformed_markers_are_reported_with_the_line(source, message):
    with pytest.raises(ValueError, match=message) as info:
        building.strip_solutions(source, where="demo.ipynb, cell 3")
    assert "demo.ipynb, cell 3: line" in str(info.value)


def test_a_cell_that_is_entirely_hidden_is_dropped(tmp_path):
    cells = [nbformat.v4.new_code_cell("profile = 'quick'"), nbformat.v4.new_code_cell("### BEGIN HIDDEN\nx = 1\n### END HIDDEN"),
             nbformat.v4.new_code_cell("checks.check_cubic_sparsity(cubic_sparsity)")]
    nb = nbformat.v4.new_notebook(cells=cells)
    path = tmp_path / "07_demo.ipynb"
    nbformat.write(nb, str(path))
    student = building.student_notebook(path)
    assert [c.source for c in student.cells] == ["profile = 'quick'", "checks.check_cubic_sparsity(cubic_sparsity)"]
    assert student.metadata["compresslab"]["checks"] == ["cubic_sparsity"]
    nb.cells.append(nbformat.v4.new_code_cell("checks.check_nonexistent(f)"))
    nbformat.write(nb, str(path))
    with pytest.raises(ValueError, match="unknown checks"):
        building.student_notebook(path)


# ----------------------------------------------------------------- the committed notebooks

def test_seven_exercises_each_with_functions_and_one_open_target():
    assert STEMS == ["01_pruning", "02_lottery", "03_quantization", "04_distillation", "05_lowrank",
                     "06_huffman_deep_compression", "07_structured"]
    for stem, path in SOLUTIONS.items():
        names = building.checks_in(read(path))
        targets = [n for n in names if n in checks.TARGETS]
        assert 3 <= len(names) <= 5 and len(targets) == 1 and names[-1] == targets[0], (stem, names)
        assert set(names) <= set(checks.CHECKS)
        assert len(building.answer_key(read(path))) >= 2 and all(k["rubric"] for k in building.answer_key(read(path)))


def test_generated_notebooks_are_up_to_date():
    stale = building.build(check=True)
    assert not stale, f"out of date: {[p.name for p in stale]}; run `compresslab exercises build`"
    assert cli.main(["exercises", "build", "--check"]) == 0


def test_a_changed_solution_makes_its_student_notebook_stale(tmp_path, capsys):
    sources = tmp_path / "solutions"
    shutil.copytree(building.SOLUTION_DIR, sources)
    nb = read(sources / "01_pruning.ipynb")
    nb.cells[0].source += "\n\nOne more sentence."
    nbformat.write(nb, str(sources / "01_pruning.ipynb"))
    stale = building.build(check=True, solution_dir=sources)
    assert [p.name for p in stale] == ["01_pruning.ipynb"]
    written = building.build(solution_dir=sources, out_dir=tmp_path / "out")
    assert len(written) == len(STEMS)
    assert building.build(check=True, solution_dir=sources, out_dir=tmp_path / "out") == []


@pytest.mark.parametrize("stem", STEMS)
def test_student_notebook_hides_the_solutions(stem):
    solution, student = read(SOLUTIONS[stem]), read(student_path(stem))
    text = json.dumps([c.source for c in student.cells])
    for marker in ("BEGIN SOLUTION", "END SOLUTION", "### HINT", "BEGIN HIDDEN"):
        assert marker not in text
    meta = student.metadata["compresslab"]
    assert meta["exercise"] == stem and meta["checks"] == building.checks_in(solution)
    code = json.dumps([c.source for c in student.cells if c.cell_type == "code"])
    assert code.count("raise NotImplementedError") == len(meta["checks"])
    hint_cells = [c for c in student.cells if "hints" in c.metadata.get("tags", [])]
    assert len(hint_cells) == len(meta["checks"])  # two tiers for every function and the open target
    assert all(c.cell_type == "markdown" and c.source.count("<details>") == 2 for c in hint_cells)
    answers = [c for c in student.cells if "answer" in c.metadata.get("tags", [])]
    assert len(answers) == len(building.answer_key(solution)) and all(c.source == building.ANSWER_STUB for c in answers)
    for nb in (solution, student):  # committed without outputs
        assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code")
    first_code = next(c for c in student.cells if c.cell_type == "code")
    assert first_code.metadata.get("tags") == ["parameters"] and 'profile = "quick"' in first_code.source


def key_expressions(nb) -> dict[str, str]:
    """Per exercise function: the longest line of its solution (whitespace-normalised)."""
    out = {}
    for cell in nb.cells:
        if cell.cell_type == "code" and "### BEGIN SOLUTION" in cell.source:
            name = cell.source.split("def ", 1)[1].split("(", 1)[0]
            body = cell.source.split("### BEGIN SOLUTION", 1)[1].split("### END SOLUTION", 1)[0]
            lines = [" ".join(line.split()) for line in body.splitlines() if not line.strip().startswith("###")]
            out[name] = max(lines, key=len)
    return out


@pytest.mark.parametrize("stem", STEMS)
def test_no_hint_contains_the_solution(stem):
    """Notebook hints (both tiers) and the checks' messages never hold a line of a solution, in
    particular not its key expression."""
    solution = read(SOLUTIONS[stem])
    lines = set(building.solution_lines(solution)) | set(key_expressions(solution).values())
    assert len(key_expressions(solution)) == len(building.checks_in(solution))
    hints = [" ".join(h.split()) for c in solution.cells for _, tiers in building.split_solutions(c.source, c.cell_type)[1]
             for h in tiers]
    assert len(hints) == 2 * len(building.checks_in(solution))
    check_sources = " ".join(" ".join(p.read_text().split()) for p in (Path(checks.__file__).parent).glob("*_checks.py"))
    for line in lines:
        assert not any(line in h for h in hints), line
    for line in key_expressions(solution).values():
        assert line not in check_sources, line


@pytest.mark.parametrize("stem", STEMS)
def test_papermill_reads_every_parameter(stem):
    first_code = next(c for c in read(SOLUTIONS[stem]).cells if c.cell_type == "code")
    assigned = [line.split("=")[0].strip() for line in first_code.source.splitlines() if "=" in line]
    assert list(runner.parameters(SOLUTIONS[stem])) == assigned and assigned[0] == "profile"


def exercise_namespace(path: Path) -> dict:
    """The definitions of a notebook, as the grader runs them (no data, no kernel)."""
    namespace: dict = {}
    code = submission.student_code(read(path))
    assert submission.execute(code, namespace) == []
    return namespace


@pytest.mark.parametrize("stem", STEMS)
def test_solution_functions_pass_their_checks(stem, capsys, monkeypatch):
    monkeypatch.delenv("COMPRESSLAB_RESULTS_DIR", raising=False)
    namespace = exercise_namespace(SOLUTIONS[stem])
    for name in building.checks_in(read(SOLUTIONS[stem])):
        checks.CHECKS[name](namespace[name])
        assert f"[ok] {name}" in capsys.readouterr().out


@pytest.mark.parametrize("stem", STEMS)
def test_student_stubs_get_the_friendly_message(stem, monkeypatch):
    monkeypatch.delenv("COMPRESSLAB_RESULTS_DIR", raising=False)
    namespace = exercise_namespace(student_path(stem))
    for name in building.checks_in(read(student_path(stem))):
        with pytest.raises(checking.ExerciseNotDone, match=f"{name} is not implemented yet"):
            checks.CHECKS[name](namespace[name])


# ----------------------------------------------------------------- executing notebooks (slow)

@pytest.mark.notebook
@pytest.mark.parametrize("stem", STEMS)
def test_solution_runs_to_its_end(stem, tmp_path):
    """The whole solution notebook (experiment, open target, hidden instructor asserts) runs headless."""
    result = runner.execute(SOLUTIONS[stem], tmp_path, {}, "quick", cell_timeout=300, html=False)
    assert result.ok, result.error
    assert json.loads((tmp_path / f"{stem}.results.json").read_text())["metrics"]["profile"] == "quick"


@pytest.mark.notebook
@pytest.mark.parametrize("stem", STEMS)
def test_student_notebook_stops_at_the_first_stub_with_the_friendly_message(stem, tmp_path):
    result = runner.execute(student_path(stem), tmp_path, {}, "quick", cell_timeout=300, html=False)
    assert not result.ok and "ExerciseNotDone" in result.error
    first = building.checks_in(read(student_path(stem)))[0]
    executed = read(result.output)
    errors = [(c, o) for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert len(errors) == 1
    cell, error = errors[0]
    assert f"checks.check_{first}(" in cell.source and error.ename == "ExerciseNotDone"
    assert f"{first} is not implemented yet" in error.evalue
    assert len(error.traceback) == 1 and "Traceback" not in error.traceback[0]  # a message, not a traceback
    later = executed.cells[executed.cells.index(cell) + 1:]
    assert all(c.get("execution_count") is None for c in later if c.cell_type == "code")


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
