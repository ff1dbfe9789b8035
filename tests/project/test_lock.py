"""The lock file (requirements/lock.txt), environment.yml's pins and tools/refresh_lock.py.

Fast and offline: nothing is resolved or installed. The refresh's orchestration runs with fake
resolve/install/test steps writing into tmp_path. With COMPRESSLAB_EXPECT_LOCK=1 (.ci/run sets it)
the running environment must hold exactly the locked versions.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]
SPEC = importlib.util.spec_from_file_location("refresh_lock", REPO / "tools" / "refresh_lock.py")
refresh_lock = importlib.util.module_from_spec(SPEC)
sys.modules["refresh_lock"] = refresh_lock  # dataclasses look their module up by name
SPEC.loader.exec_module(refresh_lock)
Pin = refresh_lock.Pin

LOCK_PATH = REPO / "requirements" / "lock.txt"
PYTHONS = ("3.10", "3.11", "3.12")
RUNTIMES = ("torch", "torchvision", "torchao", "onnx", "onnxruntime", "onnxscript", "openvino",
            "nncf", "executorch", "coremltools")


@pytest.fixture(scope="module")
def lock() -> dict:
    return refresh_lock.parse_lock(LOCK_PATH.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def requirements() -> list[Requirement]:
    return refresh_lock.project_requirements((REPO / "pyproject.toml").read_text(encoding="utf-8"))


# --- the lock itself ---------------------------------------------------------------------------


def test_lock_parses_and_is_a_valid_constraints_file(lock):
    text = LOCK_PATH.read_text(encoding="utf-8")
    assert text.startswith("#") and "DO NOT EDIT BY HAND" in text
    assert "tools/refresh_lock.py" in text and "uv pip compile" in text
    body = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert not [line for line in body if line.lstrip().startswith("-") or "file://" in line]
    assert "compresslab" not in lock  # pip constraints reject the project (it is installed -e)
    assert len(lock) > 50
    for name in RUNTIMES:
        assert name in lock, name


def test_project_requirements_expand_the_dev_and_deploy_extras(requirements):
    names = {Requirement(str(requirement)).name for requirement in requirements}
    assert {"torch", "numpy", "pytest", "ruff", "onnxruntime", "openvino", "executorch"} <= names
    assert "compresslab" not in names


@pytest.mark.parametrize("python", PYTHONS)
def test_every_dependency_is_pinned_inside_its_range(lock, requirements, python):
    assert refresh_lock.check_lock_covers(lock, requirements, [python]) == []
    pins = refresh_lock.pins_for(lock, refresh_lock.target_environment(python))
    for requirement in requirements:
        assert requirement.specifier.contains(pins[requirement.name.lower()], prereleases=True)


def test_torch_respects_the_machine_cap(lock):
    files = refresh_lock.pip_constraint_files()
    if not files:
        pytest.skip("pip is configured with no constraint file here: no cap to respect")
    caps = refresh_lock.read_constraints(files)
    assert any(cap.name == "torch" for cap in caps), f"no torch cap in {files}"
    assert refresh_lock.check_lock_covers(lock, caps, PYTHONS, required=False) == []


def test_pyproject_bounds_the_runtimes_but_not_torch(requirements):
    by_name = {requirement.name: requirement for requirement in requirements}
    assert str(by_name["torch"].specifier) == ""
    for name in ("onnx", "onnxruntime", "onnxscript", "openvino", "nncf", "executorch",
                 "coremltools", "torchao"):
        assert any(spec.operator == "<" for spec in by_name[name].specifier), name


def test_environment_yml_agrees_with_the_lock(lock, requirements):
    text = (REPO / "environment.yml").read_text(encoding="utf-8")
    assert text.startswith("# conda env create -f environment.yml")
    expected = refresh_lock.render_environment_pins(lock, [r.name for r in requirements])
    assert refresh_lock.environment_pins(text) == expected
    try:
        import yaml
    except ImportError:
        yaml = None
    if yaml is not None:  # the file is valid YAML, and conda's pip list holds what pip needs
        document = yaml.safe_load(text)
        assert document["channels"] == ["conda-forge"]
        conda, pip = document["dependencies"][:-1], document["dependencies"][-1]["pip"]
        assert conda == ["python>=3.10,<3.13", "pip"]
        assert pip[:2] == ["-c requirements/lock.txt", "-e .[dev]"]
        assert pip[2:] == expected


# --- the pure functions on hand-made locks ---------------------------------------------------

OLD = """\
# a comment
numpy==2.2.6 ; python_full_version < '3.11'
    # via compresslab
numpy==2.4.6 ; python_full_version >= '3.11'
Torch==2.13.0
gone==1.0
"""
NEW = """\
numpy==2.2.6 ; python_full_version < '3.11'
numpy==2.5.0 ; python_full_version >= '3.11'
torch==2.14.1 \\
    --hash=sha256:0000
added==0.1 ; sys_platform == 'darwin'
"""


def test_parse_lock_reads_names_versions_and_markers():
    lock = refresh_lock.parse_lock(OLD)
    assert list(lock) == ["numpy", "torch", "gone"]
    assert lock["numpy"] == [Pin("numpy", "2.2.6", 'python_full_version < "3.11"'),
                             Pin("numpy", "2.4.6", 'python_full_version >= "3.11"')]
    assert lock["torch"] == [Pin("torch", "2.13.0")]
    assert refresh_lock.parse_lock(NEW)["torch"] == [Pin("torch", "2.14.1")]


@pytest.mark.parametrize("line", ["-e .", "-e file:///work/main", "compresslab @ file:///x",
                                  "numpy>=2", "numpy", "--index-url https://example.org/simple"])
def test_parse_lock_rejects_what_is_no_pin(line):
    with pytest.raises(ValueError):
        refresh_lock.parse_lock(f"numpy==2.4.6\n{line}\n")


def test_pins_for_evaluates_markers_per_python():
    lock = refresh_lock.parse_lock(NEW)
    on310 = refresh_lock.pins_for(lock, refresh_lock.target_environment("3.10"))
    on312 = refresh_lock.pins_for(lock, refresh_lock.target_environment("3.12"))
    assert on310 == {"numpy": "2.2.6", "torch": "2.14.1"}
    assert on312 == {"numpy": "2.5.0", "torch": "2.14.1"}
    mac = refresh_lock.target_environment("3.12", platform="darwin", machine="arm64")
    assert refresh_lock.pins_for(lock, mac)["added"] == "0.1"


def test_diff_locks_by_hand():
    changes = refresh_lock.diff_locks(refresh_lock.parse_lock(OLD), refresh_lock.parse_lock(NEW))
    assert [str(change) for change in changes] == [
        '+ added 0.1 [sys_platform == "darwin"]',
        "- gone 1.0",
        '  numpy 2.2.6 [python_full_version < "3.11"]; 2.4.6 [python_full_version >= "3.11"] -> '
        '2.2.6 [python_full_version < "3.11"]; 2.5.0 [python_full_version >= "3.11"]',
        "  torch 2.13.0 -> 2.14.1",
    ]
    assert refresh_lock.diff_locks(refresh_lock.parse_lock(OLD), refresh_lock.parse_lock(OLD)) == []


def test_render_and_update_environment_pins_by_hand():
    lock = refresh_lock.parse_lock(NEW)
    pins = refresh_lock.render_environment_pins(lock, ["Torch", "numpy"])
    assert pins == ['numpy==2.2.6 ; python_full_version < "3.11"',
                    'numpy==2.5.0 ; python_full_version >= "3.11"', "torch==2.14.1"]
    text = ("dependencies:\n  - pip:\n      - -e .\n"
            f"      {refresh_lock.BEGIN_PINS}\n      - 'old==1'\n      {refresh_lock.END_PINS}\n"
            "# tail\n")
    updated = refresh_lock.update_environment_yml(text, pins)
    assert updated == (
        "dependencies:\n  - pip:\n      - -e .\n"
        f"      {refresh_lock.BEGIN_PINS}\n"
        "      - 'numpy==2.2.6 ; python_full_version < \"3.11\"'\n"
        "      - 'numpy==2.5.0 ; python_full_version >= \"3.11\"'\n"
        "      - 'torch==2.14.1'\n"
        f"      {refresh_lock.END_PINS}\n# tail\n")
    assert refresh_lock.environment_pins(updated) == pins
    with pytest.raises(ValueError):
        refresh_lock.update_environment_yml("dependencies: []\n", pins)
    with pytest.raises(KeyError):
        refresh_lock.render_environment_pins(lock, ["pandas"])


def test_check_installed_by_hand():
    lock = refresh_lock.parse_lock(NEW)
    environment = refresh_lock.target_environment("3.11")
    good = {"NumPy": "2.5.0", "torch": "2.14.1", "extra-package": "1"}
    assert refresh_lock.check_installed(lock, environment, good) == []
    assert refresh_lock.check_installed(lock, environment, {"numpy": "2.4.6"}) == [
        "numpy 2.4.6 is installed, the lock says 2.5.0",
        "torch==2.14.1 is not installed",
    ]


def test_check_lock_covers_by_hand():
    lock = refresh_lock.parse_lock(NEW)
    wanted = [Requirement("numpy<2.5"), Requirement("torch"), Requirement("pandas")]
    assert refresh_lock.check_lock_covers(lock, wanted, ["3.10", "3.12"]) == [
        "Python 3.10: no pin for pandas",
        "Python 3.12: numpy==2.5.0 is outside numpy<2.5",
        "Python 3.12: no pin for pandas",
    ]
    assert refresh_lock.check_lock_covers(lock, [Requirement("pandas<3")], required=False) == []


# --- the refresh's orchestration, with fake steps --------------------------------------------

PYPROJECT = """\
[project]
name = "demo"
version = "0"
dependencies = ["numpy", "torch"]
[project.optional-dependencies]
dev = ["demo[deploy]"]
deploy = ["added; sys_platform == 'darwin'"]
"""
ENVIRONMENT = f"""\
# conda env create -f environment.yml && conda activate demo
dependencies:
  - pip:
      - -c requirements/lock.txt
      {refresh_lock.BEGIN_PINS}
      - 'numpy==1.0'
      {refresh_lock.END_PINS}
"""


@pytest.fixture
def project(tmp_path):
    root = tmp_path / "repo"
    (root / "requirements").mkdir(parents=True)
    (root / "pyproject.toml").write_text(PYPROJECT)
    (root / "environment.yml").write_text(ENVIRONMENT)
    (root / "requirements" / "lock.txt").write_text("# old\n" + OLD)
    work = tmp_path / "work"
    work.mkdir()
    return root, work


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes()
            for path in sorted(root.rglob("*")) if path.is_file()}


def fake_steps(work: Path, calls: list[str], test_status: int = 0, install_error: bool = False):
    def resolve(candidate: Path) -> None:
        calls.append("resolve")
        candidate.write_text("# new\n" + NEW)

    def install(candidate: Path, venv: Path) -> Path:
        calls.append("install")
        assert candidate.parent == work and venv.parent == work
        if install_error:
            raise refresh_lock.StepError("pip could not install")
        (venv / "bin").mkdir(parents=True)
        return venv / "bin" / "python"

    def test(python: Path) -> int:
        calls.append("test")
        assert python == work / "venv" / "bin" / "python"
        return test_status

    return resolve, install, test


def test_refresh_leaves_the_files_unchanged_when_the_tests_fail(project):
    root, work = project
    before, calls, out = snapshot(root), [], []
    status = refresh_lock.refresh(root, work, *fake_steps(work, calls, test_status=1),
                                  out=out.append)
    assert status == refresh_lock.EXIT_CODES["test"] != 0
    assert calls == ["resolve", "install", "test"]
    assert snapshot(root) == before
    assert "refresh_lock: step 'test' failed: pytest exited with status 1" in out
    assert "  torch 2.13.0 -> 2.14.1" in out  # the changes are printed all the same


def test_refresh_leaves_the_files_unchanged_when_install_fails(project):
    root, work = project
    before, calls, out = snapshot(root), [], []
    status = refresh_lock.refresh(root, work, *fake_steps(work, calls, install_error=True),
                                  out=out.append)
    assert status == refresh_lock.EXIT_CODES["install"]
    assert calls == ["resolve", "install"]
    assert snapshot(root) == before
    assert any("step 'install' failed: pip could not install" in line for line in out)


def test_refresh_rejects_a_candidate_outside_the_constraints(project):
    root, work = project
    before, calls, out = snapshot(root), [], []
    status = refresh_lock.refresh(root, work, *fake_steps(work, calls),
                                  constraints=[Requirement("torch<=2.13.0")], out=out.append)
    assert status == refresh_lock.EXIT_CODES["check"]
    assert calls == ["resolve"]
    assert snapshot(root) == before
    assert any("step 'check' failed" in line and "torch==2.14.1" in line for line in out)


def test_refresh_dry_run_writes_nothing(project):
    root, work = project
    before, calls, out = snapshot(root), [], []
    assert refresh_lock.refresh(root, work, *fake_steps(work, calls), dry_run=True,
                                out=out.append) == 0
    assert calls == ["resolve"]
    assert snapshot(root) == before
    assert "  torch 2.13.0 -> 2.14.1" in out


def test_refresh_writes_lock_and_environment_when_the_tests_pass(project):
    root, work = project
    calls, out = [], []
    assert refresh_lock.refresh(root, work, *fake_steps(work, calls), out=out.append) == 0
    assert calls == ["resolve", "install", "test"]
    assert (root / "requirements" / "lock.txt").read_text() == "# new\n" + NEW
    pins = refresh_lock.environment_pins((root / "environment.yml").read_text())
    assert pins == ['added==0.1 ; sys_platform == "darwin"',
                    'numpy==2.2.6 ; python_full_version < "3.11"',
                    'numpy==2.5.0 ; python_full_version >= "3.11"', "torch==2.14.1"]
    assert (root / "environment.yml").read_text().startswith("# conda env create")
    assert [line for line in out if line.startswith(("+", "-", "  "))] == [
        '+ added 0.1 [sys_platform == "darwin"]', "- gone 1.0",
        '  numpy 2.2.6 [python_full_version < "3.11"]; 2.4.6 [python_full_version >= "3.11"] -> '
        '2.2.6 [python_full_version < "3.11"]; 2.5.0 [python_full_version >= "3.11"]',
        "  torch 2.13.0 -> 2.14.1"]
    assert sorted(path.name for path in root.rglob("*")) == [
        "environment.yml", "lock.txt", "pyproject.toml", "requirements"]  # no temporary left


# --- this environment -----------------------------------------------------------------------


def test_installed_versions_match_the_lock():
    if os.environ.get("COMPRESSLAB_EXPECT_LOCK") != "1":
        pytest.skip("COMPRESSLAB_EXPECT_LOCK is not 1: this environment need not come from the lock "
                    "(.ci/run and tools/refresh_lock.py set it)")
    path = Path(os.environ.get("COMPRESSLAB_LOCK_FILE") or LOCK_PATH)
    lock = refresh_lock.parse_lock(path.read_text(encoding="utf-8"))
    assert refresh_lock.check_installed(lock) == []
