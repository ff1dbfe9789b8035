"""The summary of a batch of runs: summary.md, summary.html and a tidy summary.csv (and
summary.parquet where pyarrow is installed).

The files list the runs in the order of the sweep's grid, whichever way they were executed
(one after another, on local workers or on a cluster), so the same sweep gives the same tables.
summary.csv holds no timings: one row per recorded scalar metric of a run (a failed run gets one
row with its error), with the run's parameters as columns. It is identical for the same sweep
run sequentially or on Dask workers with the same seeds and thread count.
"""

from __future__ import annotations

import importlib.util
import math
import numbers
from collections.abc import Sequence
from pathlib import Path

from compresslab.core.io import write_text_atomic
from compresslab.core.results import load_runs

__all__ = ["HEADLINE_LIMIT", "TIDY_COLUMNS", "status", "tidy_rows", "write_summary"]

HEADLINE_LIMIT = 12
TIDY_COLUMNS = ("notebook", "run", "status", "metric", "value", "text", "error")


def status(run) -> str:
    """'ok', 'failed', or 'resumed' (results of an earlier execution, found and reused)."""
    if not run.ok:
        return "failed"
    return "resumed" if getattr(run, "resumed", False) else "ok"


def _run_folder(out_dir: Path, run) -> str:
    """The run's folder relative to the sweep's output folder ('.' for a run written into it)."""
    try:
        return Path(run.output).parent.resolve().relative_to(out_dir.resolve()).as_posix() or "."
    except ValueError:
        return Path(run.output).parent.as_posix()


def _number(value: object) -> int | float | None:
    """A metric as a number: ints stay ints, booleans become 0 / 1; None for anything else."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value) if math.isfinite(float(value)) else None
    return None


def tidy_rows(out_dir: Path, runs: Sequence) -> list[dict]:
    """One row per (run, scalar metric): notebook, run folder, status ('ok' also for a resumed run),
    param.<name> per parameter, metric, value (numbers, booleans as 0/1) or text (other values).
    A run without metrics (a failed one) gets one row with its error."""
    rows = []
    for r in runs:
        base = {"notebook": r.notebook, "run": _run_folder(out_dir, r), "status": "ok" if r.ok else "failed"}
        base.update({f"param.{k}": _cell(v) for k, v in r.parameters.items()})
        scalars = [(k, v) for k, v in r.results.items() if not isinstance(v, (dict, list))]
        for name, value in scalars:
            number = _number(value)
            rows.append({**base, "metric": name, "value": number,
                         "text": None if number is not None or value is None else str(value)})
        if not scalars:
            rows.append({**base, "metric": None, "value": None, "text": None, "error": r.error or None})
        elif not r.ok:
            rows[-1]["error"] = r.error or None
    return rows


def _cell(value: object) -> object:
    """A parameter as one table cell: scalars as they are, anything else as its repr."""
    return value if value is None or isinstance(value, (bool, int, float, str)) else repr(value)


def _tidy_frame(rows: list[dict]):
    import pandas as pd

    params = []
    for row in rows:
        params.extend(k for k in row if k.startswith("param.") and k not in params)
    columns = ["notebook", "run", "status", *params, "metric", "value", "text", "error"]
    frame = pd.DataFrame(rows, columns=columns)
    frame["value"] = pd.Series([row.get("value") for row in rows], index=frame.index, dtype=object)
    return frame


def write_summary(out_dir: Path, runs: Sequence) -> None:
    """summary.md and summary.html (a row per run with status, time and scalar headline metrics),
    summary.csv (tidy, see `tidy_rows`), and summary.parquet when pyarrow is importable."""
    table = load_runs(out_dir) if any(r.ok for r in runs) else None
    attempts = any(getattr(r, "attempts", 1) > 1 for r in runs)
    rows = []
    for r in runs:
        row = {"notebook": r.notebook, "status": status(r), "seconds": round(r.seconds, 1)}
        if attempts:
            row["attempts"] = getattr(r, "attempts", 1)
        row.update({f"param.{k}": v for k, v in r.parameters.items()})
        scalars = [(k, v) for k, v in r.results.items() if isinstance(v, (int, float, str, bool)) or v is None]
        row.update(dict(scalars[:HEADLINE_LIMIT]))
        if not r.ok:
            row["error"] = r.error[:200]
        rows.append(row)
    columns: list[str] = []
    for row in rows:
        columns.extend(c for c in row if c not in columns)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row.get(c, "")) for c in columns) + " |")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / "summary.md", "# compresslab run summary\n\n" + "\n".join(lines) + "\n")
    import pandas as pd

    html = pd.DataFrame(rows, columns=columns).to_html(index=False, na_rep="")
    if table is not None and len(table):
        html += "<h2>All recorded metrics</h2>" + table.to_html(index=False, na_rep="")
    write_text_atomic(out_dir / "summary.html",
                      f"<html><body><h1>compresslab run summary</h1>{html}</body></html>")
    tidy = _tidy_frame(tidy_rows(out_dir, runs))
    write_text_atomic(out_dir / "summary.csv", tidy.to_csv(index=False))
    if importlib.util.find_spec("pyarrow") is not None:  # the same table, values as float64
        tidy.astype({"value": "float64"}).to_parquet(out_dir / "summary.parquet", index=False)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "/")
