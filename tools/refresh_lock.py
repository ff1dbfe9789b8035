#!/usr/bin/env python3
"""Refresh requirements/lock.txt, the tested versions of every dependency, and environment.yml's pins.

    python tools/refresh_lock.py              # resolve the newest versions, test them, write the lock
    python tools/refresh_lock.py --dry-run    # resolve and print what would change; write nothing
    python tools/refresh_lock.py --all        # test with the whole test suite, not only deployment
    python tools/refresh_lock.py --python python3.10 --keep-venv
    python tools/refresh_lock.py --tests "tests/deploy/test_deploy_onnx.py -x"

The steps, in a temporary folder:

1. resolve: ``uv pip compile --universal`` resolves pyproject.toml with the ``dev`` extra (which
   includes ``deploy``) for Python 3.10 to 3.12 into a candidate lock, honouring the constraint files
   pip is configured with (``pip config list``: a machine's cap on torch, say). uv is taken from PATH,
   from the running Python, or installed with pip into the temporary folder.
2. check: the candidate pins every dependency of pyproject.toml inside its range for each Python,
   and respects the constraint files.
3. install: a fresh venv (``--python``) gets ``pip install -e ".[dev]" -c CANDIDATE``; then every
   locked package that applies there must be installed at its locked version.
4. test: pytest in that venv, by default the deployment and notebook tests
   (``tests/deploy/test_deploy*.py tests/notebooks/test_notebook_07.py``). COMPRESSLAB_DATA defaults to a copy of
   ../shared/data when that exists.
5. write: only if all of that passed, requirements/lock.txt and environment.yml's pin list are
   replaced (each written to a temporary file in its own folder, then ``os.replace``), and the
   changed versions are printed (old -> new).

A failing step leaves both files as they were and exits non-zero, naming the step.

The pure parts (parse a lock, diff two locks, render environment.yml's pins, check a lock against
pyproject.toml or against the installed distributions) are plain functions used by tests/project/test_lock.py.
Needs only the standard library and ``packaging``.
"""

from __future__ import annotations

import argparse
import datetime
import glob
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pip's vendored copy of the same parser
    from pip._vendor import tomli as tomllib  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parent.parent
LOCK = Path("requirements") / "lock.txt"
ENVIRONMENT = Path("environment.yml")
PROJECT = "compresslab"
EXTRAS = ("dev",)
TARGET_PYTHONS = ("3.10", "3.11", "3.12")
CANDIDATE = "candidate-lock.txt"  # the candidate lock's name in the temporary folder
DEFAULT_TESTS = ("tests/deploy/test_deploy*.py", "tests/notebooks/test_notebook_07.py")
BEGIN_PINS = "# pins from requirements/lock.txt (written by tools/refresh_lock.py; do not edit by hand)"
END_PINS = "# end of pins"

Lock = dict[str, list["Pin"]]


class StepError(RuntimeError):
    """A refresh step failed; the message says why."""


@dataclass(frozen=True)
class Pin:
    """One line of a lock: ``name==version`` for the environments its marker selects."""

    name: str  # canonical (PEP 503) name
    version: str
    marker: str = ""  # "" applies everywhere

    def applies(self, environment: Mapping[str, str] | None = None) -> bool:
        """Whether the pin applies in ``environment`` (marker variables; default: this Python)."""
        return not self.marker or Marker(self.marker).evaluate(
            dict(environment) if environment is not None else None)

    def __str__(self) -> str:
        return f"{self.name}=={self.version}" + (f" ; {self.marker}" if self.marker else "")


# ---------------------------------------------------------------------------------------------
# pure functions


def parse_lock(text: str) -> Lock:
    """Parse a lock (a pip constraints file of ``name==version ; marker`` lines) into {name: pins}.

    Comments, blank lines and ``--hash`` options (with backslash continuations) are skipped; names
    are canonicalized. Anything a pip constraints file may not hold, or that is not an exact pin (an
    option such as ``-e``, a URL or ``file://`` requirement, a range), raises ValueError.

    >>> parse_lock("numpy==2.2.6 ; python_full_version < '3.11'\\nNumPy==2.4.6 ; "
    ...            "python_full_version >= '3.11'\\n")["numpy"][1].version
    '2.4.6'
    """
    lock: Lock = {}
    for number, line in _logical_lines(text):
        if line.startswith("-"):
            raise ValueError(f"line {number}: {line!r}: options such as -e/-r/--index-url do not "
                             "belong in a lock (pip constraints reject -e)")
        try:
            requirement = Requirement(line)
        except InvalidRequirement as error:
            raise ValueError(f"line {number}: {line!r}: {error}") from error
        specifiers = list(requirement.specifier)
        if requirement.url or len(specifiers) != 1 or specifiers[0].operator != "==" \
                or "*" in specifiers[0].version:
            raise ValueError(f"line {number}: {line!r} is not an exact pin name==version")
        name = canonicalize_name(requirement.name)
        marker = str(requirement.marker) if requirement.marker else ""
        lock.setdefault(name, []).append(Pin(name, specifiers[0].version, marker))
    return lock


def _logical_lines(text: str) -> Iterable[tuple[int, str]]:
    """Yield (first line number, requirement text) with comments and ``--hash`` options removed."""
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = (pending + line).strip()
        pending = ""
        line = " ".join(word for word in line.split() if not word.startswith("--hash"))
        if line:
            yield start, line
    if pending.strip():
        yield start, pending.strip()


def describe(pins: Sequence[Pin]) -> str:
    """One package's pins as text: ``2.4.6``, or ``2.2.6 [marker]; 2.4.6 [marker]``; ``-`` if none."""
    if not pins:
        return "-"
    if len(pins) == 1 and not pins[0].marker:
        return pins[0].version
    return "; ".join(f"{pin.version} [{pin.marker}]" if pin.marker else pin.version
                     for pin in pins)


@dataclass(frozen=True)
class Change:
    """A package whose pins differ between two locks (``old``/``new`` as ``describe`` writes them)."""

    name: str
    old: str
    new: str

    def __str__(self) -> str:
        if self.old == "-":
            return f"+ {self.name} {self.new}"
        if self.new == "-":
            return f"- {self.name} {self.old}"
        return f"  {self.name} {self.old} -> {self.new}"


def diff_locks(old: Lock, new: Lock) -> list[Change]:
    """The packages added, removed or re-pinned from ``old`` to ``new``, sorted by name.

    >>> [str(c) for c in diff_locks({"a": [Pin("a", "1")]}, {"a": [Pin("a", "2")]})]
    ['  a 1 -> 2']
    """
    changes = []
    for name in sorted(set(old) | set(new)):
        before, after = describe(old.get(name, [])), describe(new.get(name, []))
        if before != after:
            changes.append(Change(name, before, after))
    return changes


def target_environment(python: str, platform: str = "linux",
                       machine: str = "x86_64") -> dict[str, str]:
    """Marker variables of CPython ``python`` (``3.11`` or ``3.11.7``) on ``platform``/``machine``."""
    full = python if python.count(".") >= 2 else python + ".0"
    system = {"linux": "Linux", "darwin": "Darwin", "win32": "Windows"}.get(platform, platform)
    return {
        "implementation_name": "cpython",
        "implementation_version": full,
        "os_name": "nt" if platform == "win32" else "posix",
        "platform_machine": machine,
        "platform_release": "",
        "platform_system": system,
        "platform_version": "",
        "python_full_version": full,
        "platform_python_implementation": "CPython",
        "python_version": ".".join(full.split(".")[:2]),
        "sys_platform": platform,
        "extra": "",
    }


def pins_for(lock: Lock, environment: Mapping[str, str] | None = None) -> dict[str, str]:
    """{name: version} of the pins that apply in ``environment`` (default: this Python).

    Two different versions of one package applying at once raise ValueError.
    """
    chosen: dict[str, str] = {}
    for name, pins in lock.items():
        versions = {pin.version for pin in pins if pin.applies(environment)}
        if len(versions) > 1:
            raise ValueError(f"{name}: several pins apply at once: {sorted(versions)}")
        if versions:
            chosen[name] = versions.pop()
    return chosen


def project_requirements(pyproject_text: str, extras: Iterable[str] = EXTRAS) -> list[Requirement]:
    """The dependencies pyproject.toml names: the base ones plus ``extras``, with the extras the
    project names of itself (``compresslab[deploy]`` inside ``dev``) expanded; self-references dropped.
    """
    project = tomllib.loads(pyproject_text)["project"]
    own = canonicalize_name(project["name"])
    optional = project.get("optional-dependencies", {})
    requirements: list[Requirement] = []
    seen: set[str] = set()
    todo = [(line, "") for line in project.get("dependencies", [])]
    todo += [("", extra) for extra in extras]
    while todo:
        line, extra = todo.pop(0)
        if extra:
            if extra in seen:
                continue
            seen.add(extra)
            todo += [(item, "") for item in optional.get(extra, [])]
            continue
        requirement = Requirement(line)
        if canonicalize_name(requirement.name) == own:
            todo += [("", name) for name in sorted(requirement.extras)]
        else:
            requirements.append(requirement)
    return requirements


def check_lock_covers(lock: Lock, requirements: Iterable[Requirement],
                      pythons: Iterable[str] = TARGET_PYTHONS, *, required: bool = True) -> list[str]:
    """Problems (empty if none): a requirement without a pin for a target Python on Linux x86-64
    (unless ``required`` is False, as for constraint files), or whose pin lies outside its range."""
    problems = []
    requirements = list(requirements)
    for python in pythons:
        environment = target_environment(python)
        try:
            chosen = pins_for(lock, environment)
        except ValueError as error:
            problems.append(f"Python {python}: {error}")
            continue
        for requirement in requirements:
            if requirement.marker and not requirement.marker.evaluate(environment):
                continue
            name = canonicalize_name(requirement.name)
            version = chosen.get(name)
            if version is None:
                if required:
                        problems.append(f"Python {python}: no pin for {requirement}")
            elif not requirement.specifier.contains(version, prereleases=True):
                problems.append(f"Python {python}: {name}=={version} is outside {requirement}")
    return problems


def check_installed(lock: Lock, environment: Mapping[str, str] | None = None,
                    installed: Mapping[str, str] | None = None) -> list[str]:
    """Problems (empty if none): each pin that applies in ``environment`` (default: this Python)
    whose package is missing from ``installed`` ({name: version}; default: this Python's
    distributions, read with importlib.metadata) or installed at another version."""
    if installed is None:
        installed = installed_versions()
    installed = {canonicalize_name(name): version for name, version in installed.items()}
    problems = []
    for name, version in sorted(pins_for(lock, environment).items()):
        have = installed.get(name)
        if have is None:
            problems.append(f"{name}=={version} is not installed")
        elif have != version:
            problems.append(f"{name} {have} is installed, the lock says {version}")
    return problems


def installed_versions() -> dict[str, str]:
    """{canonical name: version} of the distributions the running Python sees (first one wins)."""
    versions: dict[str, str] = {}
    for distribution in metadata.distributions():
        name = distribution.metadata["Name"]
        if name:
            versions.setdefault(canonicalize_name(name), distribution.version)
    return versions


def render_environment_pins(lock: Lock, names: Iterable[str]) -> list[str]:
    """environment.yml's pin list: ``name==version`` (``; marker`` where versions differ) for each of
    ``names`` (the direct dependencies), sorted; a name the lock lacks raises KeyError.

    >>> render_environment_pins({"b": [Pin("b", "1")], "a": [Pin("a", "2")]}, ["B", "a"])
    ['a==2', 'b==1']
    """
    lines = []
    for name in sorted({canonicalize_name(name) for name in names}):
        lines += [str(pin) for pin in lock[name]]
    return lines


def update_environment_yml(text: str, pins: Sequence[str]) -> str:
    """``text`` (environment.yml) with the items between the BEGIN_PINS and END_PINS comment lines
    replaced by ``pins``, indented like the BEGIN_PINS line; ValueError if the markers are missing."""
    lines = text.splitlines(keepends=True)
    begin = [i for i, line in enumerate(lines) if line.strip() == BEGIN_PINS]
    end = [i for i, line in enumerate(lines) if line.strip() == END_PINS]
    if len(begin) != 1 or len(end) != 1 or end[0] < begin[0]:
        raise ValueError(f"environment.yml needs one {BEGIN_PINS!r} line and one {END_PINS!r} "
                         "line after it")
    indent = lines[begin[0]][: len(lines[begin[0]]) - len(lines[begin[0]].lstrip())]
    quote = "'"  # YAML single-quoted scalars: the markers' double quotes stay as they are
    items = [f"{indent}- {quote}{pin.replace(quote, quote * 2)}{quote}\n" for pin in pins]
    return "".join(lines[: begin[0] + 1] + items + lines[end[0]:])


def environment_pins(text: str) -> list[str]:
    """The pin list environment.yml holds between the BEGIN_PINS and END_PINS lines."""
    lines = [line.strip() for line in text.splitlines()]
    if BEGIN_PINS not in lines or END_PINS not in lines:
        raise ValueError("environment.yml has no generated pin list")
    block = lines[lines.index(BEGIN_PINS) + 1: lines.index(END_PINS)]
    items = [line[1:].strip() for line in block if line.startswith("-")]
    return [item[1:-1].replace("''", "'") if item[:1] == item[-1:] == "'" else item.strip('"')
            for item in items]


def lock_header(command: str, uv_version: str, date: str) -> str:
    """The comment lines that open requirements/lock.txt."""
    return (
        "# requirements/lock.txt: the tested versions of compresslab's dependencies (pyproject.toml\n"
        "# with the dev extra) for Python 3.10, 3.11 and 3.12 on Linux x86-64: one universal file,\n"
        "# with environment markers where versions differ. A pip constraints file:\n"
        "#   pip install -e \".[dev]\" -c requirements/lock.txt\n"
        "#\n"
        "# DO NOT EDIT BY HAND. Made by `python tools/refresh_lock.py`, which resolves it with\n"
        f"#   {command}\n"
        f"# ({uv_version}, {date}; the -c files are the machine's pip constraints from\n"
        "# `pip config list`), installs it into a fresh venv, runs the deployment and notebook tests\n"
        "# there and writes this file only if they pass.\n"
    )


# ---------------------------------------------------------------------------------------------
# the orchestration

Resolve = Callable[[Path], None]  # write the candidate lock to this path
Install = Callable[[Path, Path], Path]  # (candidate lock, venv folder) -> the venv's python
Test = Callable[[Path], int]  # (the venv's python) -> pytest's exit status

EXIT_CODES = {"resolve": 2, "check": 3, "install": 4, "test": 5, "write": 6}


def write_atomically(files: Mapping[Path, str]) -> None:
    """Write each file through a temporary file in its own folder and ``os.replace``; the
    replacements happen only after every temporary file was written."""
    done: list[tuple[str, Path]] = []
    try:
        for path, text in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
            handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                                                 suffix=".tmp")
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                stream.write(text)
            os.chmod(temporary, mode)
            done.append((temporary, path))
        for temporary, path in done:
            os.replace(temporary, path)
    finally:
        for temporary, _ in done:
            if os.path.exists(temporary):
                os.remove(temporary)


def refresh(root: Path, workdir: Path, resolve: Resolve, install: Install, test: Test, *,
            constraints: Sequence[Requirement] = (), dry_run: bool = False,
            out: Callable[[str], None] = print) -> int:
    """Resolve, check, install and test a candidate lock in ``workdir``; only if every step passed
    write ``root``'s requirements/lock.txt and environment.yml. Returns the exit status: 0, or
    EXIT_CODES[step] with a message naming the failing step (the files are then unchanged)."""
    lock_path, environment_path = root / LOCK, root / ENVIRONMENT
    candidate = workdir / CANDIDATE

    def failed(step: str, why: object) -> int:
        out(f"refresh_lock: step '{step}' failed: {why}")
        out(f"refresh_lock: {LOCK} and {ENVIRONMENT} are unchanged")
        return EXIT_CODES[step]

    out("refresh_lock: [resolve] the newest versions into a candidate lock")
    try:
        resolve(candidate)
        new = parse_lock(candidate.read_text(encoding="utf-8"))
    except (StepError, OSError, ValueError, subprocess.CalledProcessError) as error:
        return failed("resolve", error)
    old = parse_lock(lock_path.read_text(encoding="utf-8")) if lock_path.exists() else {}
    changes = diff_locks(old, new)
    out(f"refresh_lock: {len(changes)} package(s) change (old -> new):" if changes
        else "refresh_lock: no version changes")
    for change in changes:
        out(str(change))

    out("refresh_lock: [check] the candidate against pyproject.toml and the constraint files")
    try:
        requirements = project_requirements((root / "pyproject.toml").read_text(encoding="utf-8"))
        problems = check_lock_covers(new, requirements)
        problems += check_lock_covers(new, constraints, required=False)
        own = canonicalize_name(tomllib.loads(
            (root / "pyproject.toml").read_text(encoding="utf-8"))["project"]["name"])
        if own in new:
            problems.append(f"the lock pins the project itself ({own}); pip constraints reject that")
        names = [requirement.name for requirement in requirements]
        environment_text = update_environment_yml(
            environment_path.read_text(encoding="utf-8"), render_environment_pins(new, names))
    except (OSError, ValueError, KeyError) as error:
        return failed("check", error)
    if problems:
        return failed("check", "; ".join(problems))
    if dry_run:
        out("refresh_lock: dry run: nothing installed, tested or written")
        return 0

    out(f"refresh_lock: [install] pip install -e \".[dev]\" -c CANDIDATE into {workdir / 'venv'}")
    try:
        python = install(candidate, workdir / "venv")
    except (StepError, OSError, subprocess.CalledProcessError) as error:
        return failed("install", error)

    out("refresh_lock: [test] the tests in the fresh venv")
    try:
        status = test(python)
    except (StepError, OSError) as error:
        return failed("test", error)
    if status != 0:
        return failed("test", f"pytest exited with status {status}")

    try:
        write_atomically({lock_path: candidate.read_text(encoding="utf-8"),
                          environment_path: environment_text})
    except OSError as error:
        return failed("write", error)
    out(f"refresh_lock: wrote {LOCK} and {ENVIRONMENT}; update the versions README.md's "
        "\"Locked versions\" section names")
    return 0


# ---------------------------------------------------------------------------------------------
# the real steps


def run(command: Sequence[str | Path], *, capture: bool = True,
        **kwargs) -> subprocess.CompletedProcess:
    """Run ``command`` (printed first); a non-zero exit raises StepError (with the output's tail
    when ``capture``d; otherwise the output went to the terminal)."""
    words = [str(word) for word in command]
    print("  $", shlex.join(words), flush=True)
    result = subprocess.run(words, text=True, capture_output=capture, **kwargs)
    if result.returncode != 0:
        tail = ((result.stdout or "") + (result.stderr or "")).strip().splitlines()[-25:]
        raise StepError(f"{shlex.join(words)} exited with {result.returncode}"
                        + (":\n" + "\n".join(tail) if tail else ""))
    return result


def pip_constraint_files(python: str = sys.executable) -> list[Path]:
    """The constraint files pip is configured with (``pip config list``, ``PIP_CONSTRAINT``)."""
    files: list[str] = []
    result = subprocess.run([python, "-m", "pip", "config", "list"], text=True,
                            capture_output=True)
    for line in result.stdout.splitlines():
        key, _, value = line.partition("=")
        if key.rpartition(".")[2] == "constraint":
            files += value.strip().strip("'\"").split()
    files += os.environ.get("PIP_CONSTRAINT", "").split()
    return [Path(name) for name in dict.fromkeys(files) if Path(name).is_file()]


def read_constraints(files: Iterable[Path]) -> list[Requirement]:
    """The requirements (``torch<=2.14.1``) listed in constraint files; options are skipped."""
    requirements = []
    for path in files:
        for _, line in _logical_lines(path.read_text(encoding="utf-8")):
            if not line.startswith("-"):
                requirements.append(Requirement(line))
    return requirements


def find_uv(workdir: Path) -> list[str]:
    """A command that runs uv: from PATH, from the running Python, else pip-installed in workdir."""
    if shutil.which("uv"):
        return [shutil.which("uv") or "uv"]
    try:
        import uv  # type: ignore[import-not-found]

        return [uv.find_uv_bin()]
    except (ImportError, FileNotFoundError):
        pass
    print("refresh_lock: uv not found; installing it with pip into the temporary folder", flush=True)
    tool = workdir / "uv-tool"
    run([sys.executable, "-m", "venv", tool])
    run([tool / "bin" / "python", "-m", "pip", "install", "--quiet", "uv"])
    return [str(tool / "bin" / "uv")]


def uv_resolver(root: Path, workdir: Path, constraint_files: Sequence[Path]) -> Resolve:
    """The real resolve step: ``uv pip compile --universal`` into the candidate, with a header."""

    def resolve(candidate: Path) -> None:
        uv = find_uv(workdir)
        arguments = ["pip", "compile", "pyproject.toml", "--extra", "dev", "--universal",
                     "--python-version", TARGET_PYTHONS[0], "--no-emit-package", PROJECT]
        for path in constraint_files:
            arguments += ["-c", str(path)]
        body = workdir / "uv-output.txt"
        run([*uv, *arguments, "--upgrade", "--no-header", "--quiet", "-o", body], cwd=root)
        version = " ".join(run([*uv, "--version"]).stdout.split()[:2])  # "uv 0.13.10"
        header = lock_header(shlex.join(["uv", *arguments, "--upgrade"]), version,
                             datetime.date.today().isoformat())
        candidate.write_text(header + body.read_text(encoding="utf-8"), encoding="utf-8")

    return resolve


def venv_installer(root: Path, python: str) -> Install:
    """The real install step: a fresh venv, ``pip install -e ".[dev]" -c CANDIDATE``, then the
    installed versions checked against the candidate (by this script, run in the venv)."""

    def install(candidate: Path, venv: Path) -> Path:
        run([python, "-m", "venv", venv])
        venv_python = venv / "bin" / "python"
        run([venv_python, "-m", "pip", "install", "--quiet", "--upgrade", "pip"])
        run([venv_python, "-m", "pip", "install", "--quiet", "-e", ".[dev]", "-c", candidate],
            cwd=root, capture=False)
        run([venv_python, Path(__file__).resolve(), "--check-installed", candidate], cwd=root)
        return venv_python

    return install


def pytest_runner(root: Path, workdir: Path, arguments: Sequence[str]) -> Test:
    """The real test step: pytest in the venv (its bin first on PATH), COMPRESSLAB_DATA defaulting
    to a copy of ../shared/data; COMPRESSLAB_EXPECT_LOCK=1 against the candidate lock."""

    def test(python: Path) -> int:
        environment = dict(os.environ)
        shared = root.parent / "shared" / "data"
        if not environment.get("COMPRESSLAB_DATA") and shared.is_dir():
            data = workdir / "data"
            if not data.exists():
                shutil.copytree(shared, data)
                for folder, _, files in os.walk(data):  # the shared copy may be read-only
                    os.chmod(folder, 0o755)
                    for name in files:
                        os.chmod(os.path.join(folder, name), 0o644)
            environment["COMPRESSLAB_DATA"] = str(data)
        bin_folder = str(python.parent)
        environment["PATH"] = bin_folder + os.pathsep + environment.get("PATH", "")
        environment["VIRTUAL_ENV"] = str(python.parent.parent)
        environment["COMPRESSLAB_EXPECT_LOCK"] = "1"
        environment["COMPRESSLAB_LOCK_FILE"] = str(workdir / CANDIDATE)
        expanded: list[str] = []
        for argument in arguments:  # expand tests/deploy/test_deploy*.py here: no shell runs pytest
            matches = sorted(glob.glob(argument, root_dir=root)) if "*" in argument else []
            expanded += matches or [argument]
        command = [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", *expanded]
        print("  $", shlex.join(command), flush=True)
        return subprocess.run(command, cwd=root, env=environment).returncode

    return test


def main(argv: Sequence[str] | None = None) -> int:
    """The command line (see the module's docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--python", default=sys.executable,
                        help="the interpreter for the test venv (default: this one)")
    parser.add_argument("--keep-venv", action="store_true",
                        help="keep the temporary folder (candidate lock and venv); print its path")
    parser.add_argument("--dry-run", action="store_true",
                        help="resolve and print what would change; install, test and write nothing")
    parser.add_argument("--all", action="store_true", help="run every test, not only deployment")
    parser.add_argument("--tests", help="the pytest arguments instead of the default "
                        f"{' '.join(DEFAULT_TESTS)!r}")
    parser.add_argument("--root", type=Path, default=ROOT, help=argparse.SUPPRESS)
    parser.add_argument("--check-installed", type=Path, metavar="LOCK",
                        help="only check that this Python has LOCK's versions installed")
    options = parser.parse_args(argv)

    if options.check_installed:
        problems = check_installed(parse_lock(options.check_installed.read_text(encoding="utf-8")))
        for problem in problems:
            print(f"refresh_lock: {problem}")
        print(f"refresh_lock: {len(problems)} installed version(s) differ from the lock")
        return 1 if problems else 0

    root = options.root.resolve()
    if options.tests is not None:
        tests = shlex.split(options.tests)
    else:
        tests = [] if options.all else list(DEFAULT_TESTS)
    constraint_files = pip_constraint_files()
    workdir = Path(tempfile.mkdtemp(prefix="refresh-lock-"))
    try:
        status = refresh(root, workdir, uv_resolver(root, workdir, constraint_files),
                         venv_installer(root, options.python), pytest_runner(root, workdir, tests),
                         constraints=read_constraints(constraint_files), dry_run=options.dry_run)
    finally:
        if options.keep_venv:
            print(f"refresh_lock: kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
