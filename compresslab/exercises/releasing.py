"""The student distribution: `compresslab exercises release OUT_DIR`.

Writes the student notebooks (rendered from the solutions, exactly as `build` makes them), a
README for students and DATA.md (where the datasets go), and nothing else: no solution notebook,
no model answer, no rubric. Before returning it searches everything it wrote for every line of
every solution region (`building.solution_lines`) and fails if one is found.
"""

from __future__ import annotations

from pathlib import Path

from compresslab.core.io import write_text_atomic
from compresslab.exercises.building import (
    SOLUTION_DIR,
    render,
    solution_lines,
    solutions,
    visible_text,
)

__all__ = ["STUDENT_README", "DATA_README", "leaks", "release"]

STUDENT_README = """# Compression exercises

One notebook per technique. In each, you write the central functions yourself, then an
experiment uses *your* functions, an open target asks you to make a choice that is measured, and
a few questions ask you to explain what you saw.

## Setup

    pip install compresslab          # or the install command your course gives
    export COMPRESSLAB_DATA=/path/to/data    # see DATA.md

Open a notebook in JupyterLab and work top to bottom.

## Working on an exercise

- Replace each `raise NotImplementedError(...)` with your code, run the cell, then run the check
  cell below it. `[ok] ...` means every case matches; otherwise you see the case, what was
  expected, what your function returned, and a hint.
- Stuck? Below each exercise cell are collapsed hints: open the first (the idea) before the
  second (more specific). None of them is the answer.
- Use plain torch operations. Calling the package's own version of the function you are writing
  scores 0 for that function.
- Keep what your functions need inside the functions, or as constants at the top level of a cell:
  the grader runs only the imports, definitions and constant assignments of your notebook, in a
  fresh process, with random cases drawn for you (your numbers differ from your neighbour's).
- Written answers go in the cells that say *Write your answer here.*; they are graded by hand.

## Handing in

Save the notebook (outputs do not matter) and hand in the `.ipynb` file named as your course
asks, for example `<your id>_<notebook name>.ipynb`.
"""

DATA_README = """# Data

The notebooks use MNIST (and Fashion-MNIST). `compresslab.core.data.load` looks for the files
in, in order: an explicit `root=`, the folder in `$COMPRESSLAB_DATA`, then `data/` of the
package's repository. Put the original archives in `<root>/MNIST/raw/` (and
`<root>/FashionMNIST/raw/`); with network access they are downloaded there on first use.
Your course may hand out a ready folder: point `COMPRESSLAB_DATA` at it.
"""


def leaks(out_dir: Path, solution_dir: Path = SOLUTION_DIR) -> list[tuple[str, str]]:
    """(file, solution line) for every solution line found in a file under `out_dir`."""
    import nbformat

    books = [nbformat.read(str(path), as_version=4) for path in solutions(solution_dir).values()]
    visible = " ".join(visible_text(nb) for nb in books)  # e.g. `with torch.no_grad():` in an experiment
    lines = {line for nb in books for line in solution_lines(nb, visible=visible)}
    found = []
    for path in sorted(Path(out_dir).rglob("*")):
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        flat = " ".join(text.replace("\\n", "\n").replace('\\"', '"').split())
        found += [(str(path), line) for line in lines if line in flat]
    return found


def release(out_dir: Path, solution_dir: Path = SOLUTION_DIR) -> list[Path]:
    """Write the student distribution into `out_dir` (see the module docstring); the files written."""
    out_dir, solution_dir = Path(out_dir).resolve(), Path(solution_dir).resolve()
    if out_dir == solution_dir or solution_dir in out_dir.parents or out_dir in solution_dir.parents:
        raise ValueError(f"{out_dir}: the release must not contain, or be inside, the solutions ({solution_dir})")
    sources = solutions(solution_dir)
    if not sources:
        raise ValueError(f"no solution notebooks (NN_name.ipynb) in {solution_dir}")
    written = []
    for stem, path in sources.items():
        target = out_dir / f"{stem}.ipynb"
        write_text_atomic(target, render(path))
        written.append(target)
    for name, text in (("README.md", STUDENT_README), ("DATA.md", DATA_README)):
        write_text_atomic(out_dir / name, text)
        written.append(out_dir / name)
    found = leaks(out_dir, solution_dir)
    if found:
        raise RuntimeError(f"solution text in the release: {found[0][0]}: {found[0][1]!r} "
                           f"({len(found)} line(s)); fix the solution notebook's markers")
    return written
