"""The machinery of exercise checks: outcomes, messages, comparisons and the grading ledger.

`exercise_check(name)` turns `body(fn) -> number of cases` into a check that prints one line on
success, raises `CheckFailed` (an AssertionError: case, expected, got, hint) on a wrong answer and
`ExerciseNotDone` on a stub, and records every outcome in `<$COMPRESSLAB_RESULTS_DIR>/CHECKS_FILE`
when that variable is set (the runner sets it for headless runs; interactive runs write nothing).
Both exceptions define `_render_traceback_`, so Jupyter shows their message instead of a traceback.
The checks themselves are in the `checks` package, one module per notebook.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "CHECKS_FILE",
    "CHECKS_SCHEMA",
    "ExerciseNotDone",
    "CheckFailed",
    "ledger_path",
    "read_ledger",
    "record",
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

CHECKS_FILE = "exercise_checks.json"
CHECKS_SCHEMA = "compresslab.checks/1"


# ----------------------------------------------------------------- outcomes

class ExerciseNotDone(NotImplementedError):
    """The function under test is still the stub. Jupyter shows only the message (no traceback)."""

    def _render_traceback_(self) -> list[str]:
        return [f"ExerciseNotDone: {self}"]


class CheckFailed(AssertionError):
    """The function under test gave a wrong answer. Jupyter shows only the message (no traceback)."""

    def _render_traceback_(self) -> list[str]:
        return [f"CheckFailed: {self}"]


def ledger_path() -> Path | None:
    directory = os.environ.get("COMPRESSLAB_RESULTS_DIR")
    return Path(directory) / CHECKS_FILE if directory else None


def read_ledger(path: str | os.PathLike) -> dict[str, dict]:
    """The recorded outcomes {check name: {"passed", "status", "message"}}; {} if there is no file."""
    path = Path(path)
    if not path.exists():
        return {}
    try:
        payload = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a readable checks file ({err})") from None
    if not isinstance(payload, dict) or payload.get("schema") != CHECKS_SCHEMA or not isinstance(payload.get("checks"), dict):
        raise ValueError(f"{path}: not a compresslab checks file (schema {CHECKS_SCHEMA!r} expected)")
    return payload["checks"]


def record(name: str, status: str, message: str) -> None:
    """Add one outcome to the ledger; status: passed | failed | not_implemented | error."""
    path = ledger_path()
    if path is None:
        return
    from compresslab.core.io import write_json_atomic

    try:
        checks = read_ledger(path)
    except ValueError:
        checks = {}
    checks[name] = {"passed": status == "passed", "status": status, "message": message[:2000]}
    write_json_atomic(path, {"schema": CHECKS_SCHEMA, "checks": checks})


def exercise_check(name: str) -> Callable:
    """Decorator: turns `body(fn) -> cases run` into check_<name>(fn) with messages and the ledger."""

    def decorate(body: Callable[[Callable], int]) -> Callable[[Callable], None]:
        @functools.wraps(body)
        def check(fn: Callable) -> None:
            try:
                if not callable(fn):
                    raise CheckFailed(f"{name}: expected your function, got {type(fn).__name__} {fn!r}. "
                                      f"Pass the function itself: check_{name}({name}).")
                n = body(fn)
            except ExerciseNotDone as err:
                record(name, "not_implemented", str(err))
                raise
            except CheckFailed as err:
                record(name, "failed", str(err))
                raise
            except BaseException as err:
                record(name, "error", f"{type(err).__name__}: {err}")
                raise
            record(name, "passed", f"all {n} cases match the reference")
            print(f"[ok] {name}: all {n} cases match the reference.")

        check.check_name = name
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
    try:
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
    return torch.Generator().manual_seed(seed)
