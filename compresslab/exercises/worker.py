"""The grading process: `python -m compresslab.exercises.worker`, one fresh process per submission.

It reads one JSON request on stdin ({notebook, checks, student_id, timeout, nonce}), runs the
submission's definitions (`submission.student_code`), and calls each check of the installed
package on the student's function, with cases drawn for the student, a time limit per check, and
the package's reference implementation booby-trapped while the student's function runs. The
answer is one line on stdout: the request's nonce, then JSON {"rows": [...], "problems": [...]}.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import time
import traceback

__all__ = ["HINT_PREFIX", "run_checks", "main"]

HINT_PREFIX = "hint:"


class CheckTimeout(BaseException):  # noqa: N818 - BaseException: student code cannot swallow it
    """A check ran past its time limit."""


@contextlib.contextmanager
def _time_limit(seconds: float):
    if not seconds or not hasattr(signal, "setitimer"):
        yield
        return

    def on_alarm(signum, frame):
        raise CheckTimeout(f"the check ran longer than {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _hint(message: str) -> str:
    for line in message.splitlines():
        if line.strip().startswith(HINT_PREFIX):
            return line.strip()[len(HINT_PREFIX):].strip()
    return ""


def _row(name: str, status: str, message: str, seconds: float = 0.0) -> dict:
    return {"check": name, "status": status, "message": message[:3000], "hint": _hint(message),
            "seconds": round(seconds, 3)}


def run_one(name: str, fn, code, namespace: dict, student_id: str | None, timeout: float) -> dict:
    """Grade one function: the syntax inspection, then the check under the tripwire and time limit."""
    from compresslab.exercises import checking, checks, submission

    forbidden = checks.FORBIDDEN.get(name, ())
    node = code.functions.get(name)
    if node is not None:
        uses = submission.reference_uses(node, {f.__name__ for f in forbidden}, forbidden, namespace)
        if uses:
            return _row(name, "reference_used", f"{name} uses the package's reference implementation instead of "
                        f"computing the result itself ({'; '.join(uses)}). Score 0 for this function.")
    hits: list[str] = []

    def guard(_name, _fn, _args):
        return submission.tripwire(forbidden, [namespace, checks.REFERENCES], hits)

    start = time.perf_counter()
    try:
        with _time_limit(timeout), checking.student_cases(student_id), checking.call_guard(guard):
            message = checks.CHECKS[name].run(fn)
        row = _row(name, "passed", message)
    except submission.ReferenceUsed as err:
        row = _row(name, "reference_used", f"{name} {err}. Score 0 for this function.")
    except CheckTimeout as err:
        row = _row(name, "timeout", str(err))
    except checking.ExerciseNotDone as err:
        row = _row(name, "not_implemented", str(err))
    except checking.CheckFailed as err:
        row = _row(name, "failed", str(err))
    except Exception as err:  # noqa: BLE001 - the student's error is the grade's message
        tb = traceback.format_exception(type(err), err, err.__traceback__)
        row = _row(name, "error", f"{type(err).__name__}: {err}\n" + "".join(tb[-3:]))
    if hits and row["status"] != "reference_used":
        row = _row(name, "reference_used", f"{name} called the package's reference {hits[0]} while it was checked. "
                   "Score 0 for this function.")
    row["seconds"] = round(time.perf_counter() - start, 3)
    return row


def run_checks(nb, names: list[str], student_id: str | None, timeout: float) -> dict:
    """{"rows": one per check name, "problems": cells that did not run}; nb is a NotebookNode."""
    from compresslab.exercises import checks, submission

    code = submission.student_code(nb)
    namespace: dict = {"__name__": "__submission__"}
    before = submission.package_fingerprint()
    problems = code.problems + submission.execute(code, namespace)
    rows = []
    for name in names:
        fn = namespace.get(name)
        if name not in checks.CHECKS:
            rows.append(_row(name, "error", f"no check named {name!r} in this version of the package"))
        elif not callable(fn):
            rows.append(_row(name, "missing", f"the notebook defines no function {name}() (in a code cell, "
                             f"at the top level of the cell)"))
        else:
            rows.append(run_one(name, fn, code, namespace, student_id, timeout))
    changed = sorted(k for k, v in submission.package_fingerprint().items() if before.get(k, v) != v)
    if changed:
        message = f"the submission changed the grader's own code ({', '.join(changed[:3])}): not graded"
        rows = [_row(r["check"], "error", message) for r in rows]
    return {"rows": rows, "problems": problems}


def main() -> int:
    import nbformat

    request = json.loads(sys.stdin.readline())
    nonce = request.pop("nonce")
    try:
        nb = nbformat.read(request["notebook"], as_version=4)
        result = run_checks(nb, request["checks"], request.get("student_id"), float(request.get("timeout") or 0))
    except Exception as err:  # noqa: BLE001 - reported to the parent as the notebook's run error
        result = {"rows": [], "problems": [f"{type(err).__name__}: {err}"]}
    sys.stdout.flush()
    sys.stdout.write("\n" + nonce + json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
