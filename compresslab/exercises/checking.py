"""The machinery of exercise checks: outcomes, messages, comparisons, per-student cases.

`exercise_check(name)` turns `body(fn) -> number of cases` into a check that prints one line on
success, raises `CheckFailed` (an AssertionError: case, expected, got, hint) on a wrong answer and
`ExerciseNotDone` on a stub. Both exceptions define `_render_traceback_`, so Jupyter shows their
message instead of a traceback. The checks themselves are in the `checks` package, one module
per notebook; grading (`grading.py`) calls them from the installed package, never from a notebook.

Per-student cases: `student_cases(student_id)` makes every `seeded_generator(n)` (and
`case_seed(n)`) inside it depend on the student, so two students get different random cases and
one student always the same. Every call of the function under test goes through `call`, where
the grader's `guard` (if set) watches it (for example for calls of the package's reference).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
from collections.abc import Callable, Iterator, Mapping

import numpy as np
import torch

__all__ = [
    "ExerciseNotDone",
    "CheckFailed",
    "student_seed",
    "student_cases",
    "case_seed",
    "call_guard",
    "exercise_check",
    "short",
    "as_tensor",
    "difference",
    "fail",
    "call",
    "compare",
    "require_unchanged",
    "seeded_generator",
]

_STUDENT: contextvars.ContextVar[int | None] = contextvars.ContextVar("compresslab_student", default=None)
_GUARD: contextvars.ContextVar[Callable | None] = contextvars.ContextVar("compresslab_guard", default=None)


# ----------------------------------------------------------------- outcomes

class ExerciseNotDone(NotImplementedError):
    """The function under test is still the stub. Jupyter shows only the message (no traceback)."""

    def _render_traceback_(self) -> list[str]:
        return [f"ExerciseNotDone: {self}"]


class CheckFailed(AssertionError):
    """The function under test gave a wrong answer. Jupyter shows only the message (no traceback)."""

    def _render_traceback_(self) -> list[str]:
        return [f"CheckFailed: {self}"]


def student_seed(student_id: str | None) -> int | None:
    """A stable 31-bit number for a student id (None: the default cases everybody sees interactively)."""
    if student_id is None or str(student_id).strip() == "":
        return None
    return int.from_bytes(hashlib.sha256(str(student_id).strip().encode()).digest()[:4], "big") >> 1


@contextlib.contextmanager
def student_cases(student_id: str | None) -> Iterator[int | None]:
    """Inside: random check cases are drawn for `student_id` (deterministic per student)."""
    token = _STUDENT.set(student_seed(student_id))
    try:
        yield _STUDENT.get()
    finally:
        _STUDENT.reset(token)


def case_seed(seed: int) -> int:
    """`seed` itself outside `student_cases`, else a mix of `seed` and the student's number."""
    student = _STUDENT.get()
    if student is None:
        return seed
    return int.from_bytes(hashlib.sha256(f"{seed}:{student}".encode()).digest()[:4], "big") >> 1


@contextlib.contextmanager
def call_guard(guard: Callable[[str, Callable, tuple], contextlib.AbstractContextManager]) -> Iterator[None]:
    """Inside: `call(name, fn, case, *args)` runs fn within `guard(name, fn, args)` (a context manager)."""
    token = _GUARD.set(guard)
    try:
        yield
    finally:
        _GUARD.reset(token)


def exercise_check(name: str) -> Callable:
    """Decorator: turns `body(fn) -> cases run (or a message)` into check_<name>(fn), which prints
    one line or raises. `check_<name>.run(fn)` is the same without the printout; it returns the line."""

    def decorate(body: Callable[[Callable], int | str]) -> Callable[[Callable], None]:
        def run(fn: Callable) -> str:
            if not callable(fn):
                raise CheckFailed(f"{name}: expected your function, got {type(fn).__name__} {fn!r}. "
                                  f"Pass the function itself: check_{name}({name}).")
            result = body(fn)
            return result if isinstance(result, str) else f"all {int(result)} cases match the reference"

        @functools.wraps(body)
        def check(fn: Callable) -> None:
            print(f"[ok] {name}: {run(fn)}.")

        check.check_name = name
        check.run = run
        return check

    return decorate


# ----------------------------------------------------------------- helpers

def short(x: object, limit: int = 24) -> str:
    """A readable rendering of a value: small tensors in full, large ones by shape and a few values."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if isinstance(x, torch.Tensor):
        x = x.detach()
        if x.numel() <= limit:
            values = x.tolist() if x.dtype != torch.bool else x.int().tolist()
            if x.is_floating_point():
                values = np.round(np.asarray(values, dtype=np.float64), 6).tolist()
            return f"tensor({values}, dtype={str(x.dtype).replace('torch.', '')})"
        flat = x.reshape(-1)[:6].tolist()
        return f"tensor of shape {tuple(x.shape)} starting {np.round(np.asarray(flat, dtype=np.float64), 5).tolist()} ..."
    if isinstance(x, Mapping):
        return "{" + ", ".join(f"{k!r}: {short(v, limit)}" for k, v in x.items()) + "}"
    if isinstance(x, float):
        return f"{x:.8g}"
    if isinstance(x, str):
        return x
    text = repr(x)
    return text if len(text) < 300 else text[:300] + " ..."


def as_tensor(x: object) -> torch.Tensor | None:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu()
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.asarray(x))
    if isinstance(x, (bool, int, float, np.number)):
        return torch.tensor(float(x) if not isinstance(x, (bool, int, np.integer)) else int(x))
    if isinstance(x, (list, tuple)):
        try:
            return torch.tensor(x)
        except (TypeError, ValueError, RuntimeError):
            return None
    return None


def difference(got: object, expected: object, atol: float = 1e-6, rtol: float = 1e-5) -> str | None:
    """None when `got` equals `expected` (tensors / numbers, close within atol + rtol |expected|);
    else a sentence saying how they differ."""
    e = as_tensor(expected)
    g = as_tensor(got)
    if g is None:
        return f"returned a {type(got).__name__}, but a tensor (or number) was expected"
    if tuple(g.shape) != tuple(e.shape):
        return f"the result has shape {tuple(g.shape)}, expected {tuple(e.shape)}"
    if g.is_complex() or g.dtype == torch.bool:
        g = g.to(torch.float64) if g.dtype == torch.bool else g
    g64, e64 = g.to(torch.float64), e.to(torch.float64)
    if not torch.isfinite(g64).all() and torch.isfinite(e64).all():
        return "the result contains NaN or infinite values"
    bad = ~torch.isclose(g64, e64, rtol=rtol, atol=atol, equal_nan=True)
    if bad.any():
        idx = tuple(int(i) for i in bad.nonzero()[0]) if g64.dim() else ()
        where = f" at index {list(idx)}" if idx else ""
        return (f"{int(bad.sum())} of {bad.numel()} values differ; first{where}: "
                f"got {float(g64[idx]):.8g}, expected {float(e64[idx]):.8g}")
    return None


def fail(name: str, case: str, reason: str, expected: object, got: object, hint: str) -> CheckFailed:
    return CheckFailed(
        f"{name} is not right yet.\n"
        f"  case:     {case}\n"
        f"  problem:  {reason}\n"
        f"  expected: {short(expected)}\n"
        f"  got:      {short(got)}\n"
        f"  hint:     {hint}")


def call(name: str, fn: Callable, case: str, *args):
    """fn(*args) on copies of the tensors; a stub becomes ExerciseNotDone, other errors get a note."""
    guard = _GUARD.get()
    try:
        if guard is None:
            return fn(*args)
        with guard(name, fn, args):
            return fn(*args)
    except NotImplementedError as err:
        message = str(err).strip()
        raise ExerciseNotDone(
            f"{name} is not implemented yet: write its body in the cell that defines it (replace the line "
            f"`raise NotImplementedError(...)`), run that cell, then run this check again."
            + (f"\n  {message}" if message else "")) from None
    except Exception as err:
        if hasattr(err, "add_note"):  # Python >= 3.11
            err.add_note(f"(raised while check_{name} called {name} on the case: {case})")
        raise


def compare(name: str, case: str, got: object, expected: object, hint: str,
             mistakes: Mapping[str, object] | None = None, atol: float = 1e-6, rtol: float = 1e-5) -> None:
    """Raise CheckFailed unless got == expected. `mistakes`: specific hint -> the wrong answer it explains."""
    reason = difference(got, expected, atol, rtol)
    if reason is None:
        return
    for specific, wrong in (mistakes or {}).items():
        try:
            if wrong is not None and difference(got, wrong, atol, rtol) is None:
                hint = specific
                break
        except Exception:  # noqa: BLE001 - a mistake that cannot be evaluated simply does not match
            continue
    raise fail(name, case, reason, expected, got, hint)


def require_unchanged(name: str, case: str, before: torch.Tensor, after: torch.Tensor) -> None:
    if not torch.equal(before, after):
        raise fail(name, case, "your function changed its input tensor in place", before, after,
                    "work on a copy (w.abs() instead of w.abs_(), w.clone() before editing entries)")


def seeded_generator(seed: int) -> torch.Generator:
    """A generator for a check's random cases: `case_seed(seed)` (per student while grading)."""
    return torch.Generator().manual_seed(case_seed(seed))
