"""Exercise checks: compare a student's function with the package's reference implementation.

`check_<name>(fn)` calls `fn` on small hand-checkable cases and on seeded random ones and compares
every result with the reference in `REFERENCES[name]` (a function of the package, or a thin
wrapper around one, with the exercise's signature).

- Pass: prints one line, "[ok] name: all N cases match the reference."
- Fail: raises `CheckFailed` (an AssertionError) naming the case, what was expected, what came
  back, and a hint (a specific one when the answer matches a known mistake).
- `fn` is still the stub (raises NotImplementedError): raises `ExerciseNotDone`, which Jupyter
  shows as a short message instead of a traceback.
- `fn` raises any other error: it propagates with its own traceback (your code), plus a note
  naming the case that triggered it.

Grading: `compresslab check` (see `grading.py`) imports the student's functions from a submitted
notebook in a fresh process and calls these checks from the installed package, with random cases
drawn per student (`checking.student_cases`).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable

from compresslab.techniques import huffman, registry, structured


def _check_modules() -> dict[str, object]:
    """Every public name of every `*_checks` module of this package (each exercise's checks live in
    one such module; a new one is found without being listed here)."""
    names: dict[str, object] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.endswith("_checks"):
            module = importlib.import_module(f"{__name__}.{info.name}")
            for name in module.__all__:
                if name in names:
                    raise ImportError(f"checks: {name!r} is defined by two check modules")
                names[name] = getattr(module, name)
    return names


_FOUND = _check_modules()
globals().update(_FOUND)  # checks.check_<name>, checks.TARGETS, checks.target_setup, ... for the notebooks
TARGETS = _FOUND["TARGETS"]

# ----------------------------------------------------------------- registry

# Each technique registers its exercises' references with itself (`techniques.registry`); the
# structured-pruning exercise and the open targets add theirs here.
REFERENCES: dict[str, Callable] = {
    **registry.references(),
    "select_channels": _FOUND["select_channels_reference"],
    "shrink_pair": _FOUND["shrink_pair_reference"],
    **_FOUND["reference_choices"](),
}

CHECKS: dict[str, Callable] = {name: _FOUND[f"check_{name}"] for name in REFERENCES}


# The package functions each exercise asks the student to write: calling them is not allowed
# (the grader gives such a function 0, see `submission.reference_uses` and `submission.tripwire`).
FORBIDDEN: dict[str, tuple[Callable, ...]] = {
    **{name: (ref,) for name, ref in REFERENCES.items() if getattr(ref, "__module__", "").startswith("compresslab.techniques")},
    "huffman_code": (huffman.huffman_lengths, huffman.canonical_codes, huffman.codewords),
    "select_channels": (structured.structured_keep, structured.structured_prune, REFERENCES["select_channels"]),
    "shrink_pair": (structured.shrink, structured.structured_prune, REFERENCES["shrink_pair"]),
    **{name: () for name in TARGETS},  # open targets: any package function may help reach them
}
