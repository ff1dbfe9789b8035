"""Grading outside the student's kernel: honest and gamed submissions, per-student cases, reports,
feedback, and the student release without solutions."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import nbformat
import pytest

from compresslab.exercises import building, checks, grading, releasing, submission, worker
from compresslab.running import cli

SOLUTIONS = building.solutions()


def read(path: Path):
    return nbformat.read(str(path), as_version=4)


def solved(source: str) -> str:
    """A solution cell as a student would write it: the solution kept, the markers and hints dropped."""
    return "\n".join(line for line in source.splitlines() if not line.strip().startswith("### "))


def make(stem: str, solve: tuple[str, ...] = (), replace: dict[str, str] | None = None,
         checks_as: str | None = "keep", extra: tuple[str, ...] = ()):
    """The student notebook of `stem` with functions solved (as in the solution) or replaced by other
    code; check cells kept, deleted (checks_as=None) or replaced by `checks_as`; extra cells appended."""
    nb = read(building.EXERCISE_DIR / f"{stem}.ipynb")
    by_id = {c.id: c for c in read(SOLUTIONS[stem]).cells}
    cells = []
    for cell in nb.cells:
        defined = cell.source.split("def ", 1)[1].split("(", 1)[0] if cell.source.startswith("def ") else None
        if defined in solve:
            cell.source = solved(by_id[cell.id].source)
        elif defined in (replace or {}):
            cell.source = replace[defined]
        if "checks.check_" in cell.source and checks_as != "keep":
            if checks_as is None:
                continue
            cell.source = checks_as
        cells.append(cell)
    nb.cells = cells + [nbformat.v4.new_code_cell(source) for source in extra]
    return nb


def graded(nb, stem: str, student: str = "s1", timeout: float = 120) -> dict[str, dict]:
    """{check: row} from the grading worker's own routine, run in this process."""
    names = building.checks_in(read(SOLUTIONS[stem]))
    return {r["check"]: r for r in worker.run_checks(nb, names, student, timeout)["rows"]}


def statuses(rows: dict[str, dict]) -> dict[str, str]:
    return {k: r["status"] for k, r in rows.items()}


QUANT_FUNCTIONS = ("choose_qparams", "quantize_affine", "fake_quantize", "rounding_regularizer", "bits_target")
FAKE_CHECKS = 'print("[ok] all cases match the reference.")'
REDEFINED = ("from compresslab.exercises import checks\n"
             "checks.check_quantize_affine = lambda fn: print('[ok] quantize_affine: all 4 cases match.')\n"
             "checks.CHECKS['fake_quantize'] = lambda fn: None\n"
             "def check_fake_quantize(fn):\n    return None\n"
             "check_fake_quantize(None)")


# ----------------------------------------------------------------- check cells cannot change a grade

@pytest.mark.parametrize("stem", sorted(SOLUTIONS))
def test_every_solution_passes_the_grader(stem):
    """No false alarm: the instructor's functions pass every check, reference guard included."""
    rows = graded(read(SOLUTIONS[stem]), stem, student="any")
    assert list(rows) == building.checks_in(read(SOLUTIONS[stem]))
    assert set(statuses(rows).values()) == {"passed"}, rows


def test_deleted_edited_or_redefined_checks_change_nothing():
    honest = statuses(graded(make("03_quantization", QUANT_FUNCTIONS), "03_quantization"))
    assert honest == dict.fromkeys(QUANT_FUNCTIONS, "passed")
    deleted = make("03_quantization", QUANT_FUNCTIONS, checks_as=None)
    edited = make("03_quantization", QUANT_FUNCTIONS, checks_as=FAKE_CHECKS, extra=(REDEFINED,))
    assert statuses(graded(deleted, "03_quantization")) == honest
    assert statuses(graded(edited, "03_quantization")) == honest
    # an unsolved notebook whose checks were faked or redefined is still unsolved
    stub = make("03_quantization", checks_as=FAKE_CHECKS, extra=(REDEFINED,))
    assert set(statuses(graded(stub, "03_quantization")).values()) == {"not_implemented"}
    # a wrong answer still fails, whatever its check cells say
    wrong = make("03_quantization", ("choose_qparams",), checks_as=FAKE_CHECKS, extra=(REDEFINED,), replace={
        "quantize_affine": "def quantize_affine(x, scale, zero_point, qmin, qmax):\n"
                           "    return torch.clamp(torch.floor(x / scale) + zero_point, qmin, qmax).to(torch.int32)"})
    rows = graded(wrong, "03_quantization")
    assert rows["choose_qparams"]["status"] == "passed" and rows["quantize_affine"]["status"] == "failed"
    assert "NEAREST" in rows["quantize_affine"]["hint"]


def test_only_definitions_run():
    code = submission.student_code(nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("%matplotlib inline\nimport math\nEPS = torch.finfo(torch.float32).eps\n"
                                  "ds = data.load('mnist')\nprint('hello')\nchecks.x = 1\nN = 3"),
        nbformat.v4.new_code_cell("def f(x):\n    return x + N\nf(1)"),
        nbformat.v4.new_code_cell("def broken(:\n"),
    ]))
    kept = [type(stmt).__name__ for _, module in code.modules for stmt in module.body]
    assert kept == ["Import", "Assign", "Assign", "FunctionDef"] and code.skipped == 4
    assert code.problems == ["cell 2: syntax error, line 1: invalid syntax"] or "cell 2: syntax error" in code.problems[0]
    namespace = {"torch": __import__("torch")}
    assert submission.execute(code, namespace) == [] and namespace["f"](1) == 4


def test_a_submission_that_tampers_with_the_grader_gets_no_points():
    tamper = "def sneaky(x=checks.CHECKS.clear()):\n    return x"
    nb = make("01_pruning", ("magnitude_mask", "global_magnitude_masks", "cubic_sparsity", "pruning_target"),
              extra=("from compresslab.exercises import checks", tamper))
    rows = graded(nb, "01_pruning")
    assert set(statuses(rows).values()) == {"error"}
    assert all("changed the grader" in r["message"] for r in rows.values())
    checks.CHECKS.update({name: getattr(checks, f"check_{name}") for name in checks.REFERENCES})  # undo for later tests


# ----------------------------------------------------------------- calling the reference scores 0

def test_calls_of_the_reference_are_caught_statically_and_at_run_time():
    nb = make("03_quantization", ("choose_qparams", "rounding_regularizer", "bits_target"), replace={
        "quantize_affine": "def quantize_affine(x, scale, zero_point, qmin, qmax):\n"  # hidden from the syntax check
                           "    return getattr(quantops, 'quantize' + '_affine')(x, scale, zero_point, qmin, qmax)",
        "fake_quantize": "def fake_quantize(x, scale, zero_point, qmin, qmax):\n"
                         "    return quantops.fake_quantize(x, scale, zero_point, qmin, qmax)"})
    rows = graded(nb, "03_quantization")
    assert statuses(rows) == {"choose_qparams": "passed", "quantize_affine": "reference_used",
                              "fake_quantize": "reference_used", "rounding_regularizer": "passed", "bits_target": "passed"}
    assert "line 2: calls the package's fake_quantize" in rows["fake_quantize"]["message"]
    assert "quantize_affine" in rows["quantize_affine"]["message"] and "Score 0" in rows["quantize_affine"]["message"]


def test_reference_through_a_helper_an_alias_or_a_swallowed_error_is_caught():
    helper = ("def _mask(w, s):\n    try:\n        return mask_ops.magnitude_mask(w, s)\n"
              "    except Exception:\n        return torch.ones_like(w)\n\n\n"
              "def magnitude_mask(w, sparsity):\n    return _mask(w, sparsity)")
    alias = ("from compresslab.techniques.masks import global_magnitude_masks as gm\n\n\n"
             "def global_magnitude_masks(weights, sparsity):\n    return gm(weights, sparsity)")
    nb = make("01_pruning", ("cubic_sparsity", "pruning_target"), replace={
        "magnitude_mask": helper, "global_magnitude_masks": alias})
    rows = graded(nb, "01_pruning")
    assert statuses(rows) == {"magnitude_mask": "reference_used", "global_magnitude_masks": "reference_used",
                              "cubic_sparsity": "passed", "pruning_target": "passed"}
    assert "gm is the package's reference" in rows["global_magnitude_masks"]["message"]


def test_using_other_package_functions_is_allowed():
    survivors = ("def prune_survivors(w, mask, rate):\n    keep = mask.bool()\n    n = int(keep.sum())\n"
                 "    new = torch.zeros(mask.shape)\n"
                 "    new[keep] = mask_ops.magnitude_mask(w.detach()[keep], round(rate * n) / n if n else 0.0)\n"
                 "    return new")
    rows = graded(make("02_lottery", replace={"prune_survivors": survivors}), "02_lottery")
    assert rows["prune_survivors"]["status"] == "passed"


def test_missing_functions_timeouts_and_errors_are_graded(tmp_path):
    """Through the grading process, as `compresslab check` runs it: the time limit interrupts the
    student's code with SIGALRM, which belongs in a process of its own (not in the test runner,
    where native libraries loaded by other tests keep threads of their own)."""
    nb = make("01_pruning", ("magnitude_mask",), replace={
        "global_magnitude_masks": "def global_masks(weights, sparsity):\n    return {}",
        "cubic_sparsity": "def cubic_sparsity(*args):\n    while True:\n        pass",
        "pruning_target": "def pruning_target():\n    return 1 / 0"})
    path = tmp_path / "01_pruning.ipynb"
    nbformat.write(nb, path)
    rows = {r["check"]: r for r in grading.grade_one(path, "s1", timeout=1).rows}
    assert statuses(rows) == {"magnitude_mask": "passed", "global_magnitude_masks": "missing",
                              "cubic_sparsity": "timeout", "pruning_target": "error"}
    assert "ZeroDivisionError" in rows["pruning_target"]["message"]


# ----------------------------------------------------------------- per-student cases

def test_student_ids_seed_the_cases():
    wrong = make("03_quantization", replace={  # right on small inputs, wrong (floor) on the random ones
        "quantize_affine": "def quantize_affine(x, scale, zero_point, qmin, qmax):\n"
                           "    r = torch.round if x.numel() < 10 else torch.floor\n"
                           "    return torch.clamp(r(x / scale) + zero_point, qmin, qmax).to(torch.int32)"})
    message = {s: graded(wrong, "03_quantization", s)["quantize_affine"]["message"] for s in ("alice", "bob")}
    assert message["alice"] == graded(wrong, "03_quantization", "alice")["quantize_affine"]["message"]
    assert message["alice"] != message["bob"] and "300 random values" in message["alice"]
    assert grading.student_id_of(Path("in/alice_01_pruning.ipynb"), "01_pruning") == "alice"
    assert grading.student_id_of(Path("in/01_pruning-bob.ipynb"), "01_pruning") == "bob"
    assert grading.student_id_of(Path("in/carol/01_pruning.ipynb"), "01_pruning") == "carol"


# ----------------------------------------------------------------- end to end: `compresslab check`

ANSWER = "Because one range per tensor is set by the largest weight of the matrix."


@pytest.fixture(scope="module")
def checked(tmp_path_factory):
    """Three submissions graded by the CLI, each in its own process: (exit code, out dir, grades)."""
    folder = tmp_path_factory.mktemp("submissions")
    alice = make("03_quantization", QUANT_FUNCTIONS[:2] + ("rounding_regularizer", "bits_target"), checks_as=None, replace={
        "fake_quantize": "def fake_quantize(x, scale, zero_point, qmin, qmax):\n"
                         "    return quantops.fake_quantize(x, scale, zero_point, qmin, qmax)"})
    bob = make("03_quantization", QUANT_FUNCTIONS)
    for cell in bob.cells:
        if "answer" in cell.metadata.get("tags", []):
            cell.source = ANSWER
            break
    carol = make("04_distillation", ("soft_targets", "distillation_target"), replace={
        "kd_loss": "def kd_loss(s, t, y, temperature, alpha):\n"
                   "    soft = F.kl_div(F.softmax(s / temperature, -1), F.log_softmax(t / temperature, -1),\n"
                   "                    reduction='batchmean', log_target=True)\n"
                   "    return alpha * temperature**2 * soft + (1 - alpha) * F.cross_entropy(s, y)"})
    nbformat.write(alice, str(folder / "alice_03_quantization.ipynb"))
    nbformat.write(bob, str(folder / "bob_03_quantization.ipynb"))
    (folder / "carol").mkdir()
    nbformat.write(carol, str(folder / "carol" / "04_distillation.ipynb"))
    out = tmp_path_factory.mktemp("grades")
    code = cli.main(["check", str(folder), "--out", str(out)])
    grades = {g["student"]: g for g in grading.load_grades(out)["notebooks"]}
    return code, out, grades


def test_check_grades_each_submission_in_a_fresh_process(checked):
    code, out, grades = checked
    assert code == 1 and set(grades) == {"alice", "bob", "carol"}
    rows = {s: {r["check"]: r["status"] for r in g["rows"]} for s, g in grades.items()}
    assert rows["alice"] == {"choose_qparams": "passed", "quantize_affine": "passed",
                             "fake_quantize": "reference_used", "rounding_regularizer": "passed", "bits_target": "passed"}
    assert rows["bob"] == dict.fromkeys(QUANT_FUNCTIONS, "passed") and grades["bob"]["ok"]
    assert rows["carol"] == {"soft_targets": "passed", "kd_loss": "failed", "distillation_target": "passed"}


def test_reports_carry_the_hint_seen_the_answers_and_a_gradebook(checked):
    _, out, grades = checked
    hint = next(r["hint"] for r in grades["carol"]["rows"] if r["check"] == "kd_loss")
    assert "LOG-probabilities" in hint
    assert hint.split(":")[0] in (out / "grades.md").read_text()
    book = list(csv.DictReader(io.StringIO((out / "gradebook.csv").read_text())))
    assert {row["student"]: (row["passed"], row["total"]) for row in book} == {
        "alice": ("4", "5"), "bob": ("5", "5"), "carol": ("2", "3")}
    assert "LOG-probabilities" in next(row for row in book if row["student"] == "carol")["kd_loss_hint"]
    answers = (out / "answers.md").read_text()
    assert ANSWER in answers and "**Rubric.** 2: one range per tensor" in answers and "Score: ___ / 2" in answers
    assert grades["bob"]["answers"][0]["answer"] == ANSWER and grades["alice"]["answers"][0]["answer"] == ""
    page = (out / "feedback" / "carol__04_distillation.html").read_text()
    model_answer = building.answer_key(read(SOLUTIONS["04_distillation"]))[0]["model"]
    assert "LOG-probabilities" in page and "kd_loss" in page and model_answer[:40] not in page
    assert (out / "feedback" / "bob__03_quantization.html").exists()


# ----------------------------------------------------------------- the release

def test_release_has_no_solution_text(tmp_path, capsys):
    out = tmp_path / "release"
    assert cli.main(["exercises", "release", str(out)]) == 0
    names = sorted(p.name for p in out.rglob("*") if p.is_file())
    assert names == sorted(["README.md", "DATA.md"] + [f"{stem}.ipynb" for stem in SOLUTIONS])
    text = "\n".join(p.read_text() for p in out.rglob("*") if p.is_file())
    flat = " ".join(text.replace("\\n", "\n").replace('\\"', '"').split())
    shown = " ".join(building.visible_text(read(p)) for p in SOLUTIONS.values())  # task text of any notebook
    for stem, path in SOLUTIONS.items():
        lines = building.solution_lines(read(path), visible=shown)
        assert len(lines) >= 10, stem
        assert lines, stem
        for line in lines:  # every line of every solution body and model answer
            assert line not in flat, (stem, line)
        for rubric in (k["rubric"] for k in building.answer_key(read(path))):
            assert rubric not in flat
    assert "BEGIN SOLUTION" not in text and "RUBRIC" not in text
    assert releasing.leaks(out) == []
    for stem in SOLUTIONS:  # the released notebooks are exactly the committed student notebooks
        assert (out / f"{stem}.ipynb").read_text() == (building.EXERCISE_DIR / f"{stem}.ipynb").read_text()


def test_a_leak_is_found_and_the_release_stays_outside_the_solutions(tmp_path):
    out = tmp_path / "release"
    releasing.release(out)
    line = building.solution_lines(read(SOLUTIONS["03_quantization"]))[0]
    (out / "notes.txt").write_text(f"x = 1\n    {line}\n")
    assert [hit[1] for hit in releasing.leaks(out)] == [line]
    with pytest.raises(ValueError, match="must not contain"):
        releasing.release(building.SOLUTION_DIR / "out")
    copy = tmp_path / "solutions"
    shutil.copytree(building.SOLUTION_DIR, copy)
    with pytest.raises(ValueError, match="must not contain"):
        releasing.release(tmp_path, solution_dir=copy)


def test_grade_table_and_paths(tmp_path):
    grade = grading.Grade("a.ipynb", "01_pruning", "alice", [
        {"check": "magnitude_mask", "status": "passed", "message": "all 8 cases match the reference", "hint": ""},
        {"check": "cubic_sparsity", "status": "reference_used", "message": "cubic_sparsity calls ...", "hint": ""}],
        run_error="cell 3: boom")
    assert (grade.passed, grade.total, grade.ok) == (1, 2, False)
    table = grade.table()
    assert "1/2 checks passed" in table and "reference used" in table and "boom" in table and "alice" in table
    with pytest.raises(ValueError, match="not a notebook"):
        grading.notebook_paths([tmp_path / "missing.ipynb"])
    with pytest.raises(ValueError, match="no .ipynb"):
        grading.notebook_paths([tmp_path])
    assert grading.notebook_paths([building.SOLUTION_DIR]) == list(SOLUTIONS.values())
    stranger = tmp_path / "essay.ipynb"
    nbformat.write(nbformat.v4.new_notebook(), str(stranger))
    g = grading.grade_one(stranger)
    assert g.total == 0 and "not an exercise" in g.run_error
    assert json.loads(json.dumps(g.to_dict()))["ok"] is False


def test_a_warning_during_grading_is_not_tampering():
    """Python keeps a module's warning registry in its globals and rewrites it whenever the warning
    filters changed; a warning attributed to the grader's module while grading is not a change of
    its code."""
    import warnings

    from compresslab.exercises import submission

    registry = vars(submission).setdefault("__warningregistry__", {})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warnings.warn_explicit("first", UserWarning, "student.py", 1, registry=registry)
    before = submission.package_fingerprint()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a filter change: the next warning resets the registry's version
        warnings.warn_explicit("second", UserWarning, "student.py", 2, registry=registry)
    after = submission.package_fingerprint()
    assert [k for k, v in after.items() if before.get(k, v) != v] == []
