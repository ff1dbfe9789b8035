"""Recording a run's headline metrics as JSON, and loading many runs back as one table.

`record(name, metrics)` writes `<name>.results.json` into $COMPRESSLAB_RESULTS_DIR (set by the
runner to the folder of the executed notebook) or the current folder, atomically.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path

from compresslab.core.io import write_json_atomic

__all__ = [
    "SCHEMA",
    "SUFFIX",
    "results_dir",
    "record",
    "read",
    "fraction",
    "summary_table",
    "RESERVED_COLUMNS",
    "load_runs",
]

SCHEMA = "compresslab.results/1"
SUFFIX = ".results.json"


def results_dir() -> Path:
    env = os.environ.get("COMPRESSLAB_RESULTS_DIR")
    return Path(env) if env else Path.cwd()


def _plain(value: object, path: str) -> object:
    """Convert numpy/torch scalars and containers to JSON types; reject what JSON cannot hold."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        return _plain(value.item(), path)
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f"{path}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if hasattr(value, "tolist"):
        return _plain(value.tolist(), path)
    raise ValueError(f"metrics{path} has type {type(value).__name__}, which cannot be recorded as JSON")


def record(name: str, metrics: Mapping, parameters: Mapping | None = None, directory: str | os.PathLike | None = None):
    """Write the run's metrics (and the parameters it ran with) and return them as a one-column table."""
    if not name or not isinstance(name, str) or "/" in name:
        raise ValueError(f"name={name!r} must be a non-empty file-name-safe string")
    if not isinstance(metrics, Mapping) or not metrics:
        raise ValueError("metrics must be a non-empty dict of name -> value")
    payload = {
        "schema": SCHEMA,
        "notebook": name,
        "recorded_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "parameters": _plain(dict(parameters or {}), ".parameters"),
        "metrics": _plain(dict(metrics), ""),
    }
    path = Path(directory) if directory is not None else results_dir()
    write_json_atomic(path / f"{name}{SUFFIX}", payload)
    read(path / f"{name}{SUFFIX}")  # read back and validate what was written
    return summary_table(payload["metrics"])


def read(path: str | os.PathLike) -> dict:
    """Load one results file, checking its schema and the types of its fields.

    Raises ValueError naming the file for anything unreadable: not UTF-8, not JSON, another
    schema, no notebook name, parameters or metrics that are not objects (null parameters read as {})."""
    path = Path(path)
    try:
        payload = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise ValueError(f"{path}: not a readable results file ({type(err).__name__}: {str(err)[:200]})") from None
    if not isinstance(payload, dict) or payload.get("schema") != SCHEMA or not isinstance(payload.get("metrics"), dict):
        raise ValueError(f"{path}: not a compresslab results file (schema {SCHEMA!r} expected)")
    if not isinstance(payload.get("notebook"), str) or not payload["notebook"]:
        raise ValueError(f"{path}: the results file names no notebook")
    if payload.get("parameters") is None:
        payload["parameters"] = {}
    if not isinstance(payload["parameters"], dict):
        raise ValueError(f"{path}: 'parameters' is a {type(payload['parameters']).__name__}, not an object")
    return payload


def fraction(value: float | None) -> float | None:
    """A report's percent as the fraction the records keep (None stays None), rounded to 10
    decimals: an accuracy k / n with n a divisor of 10^10 (1000, 2000, 10000 test images) comes
    back exactly as k / n."""
    return None if value is None else round(value / 100.0, 10)


def summary_table(metrics: Mapping):
    """Scalar metrics as a two-column DataFrame (metric, value)."""
    import pandas as pd

    rows = [{"metric": k, "value": v} for k, v in metrics.items() if not isinstance(v, (dict, list))]
    return pd.DataFrame(rows)


RESERVED_COLUMNS = ("notebook", "run")


def load_runs(directory: str | os.PathLike):
    """Every results file below `directory` as one DataFrame: a row per run, scalar metrics as columns.

    A file that cannot be read is skipped with one warning naming it; a metric whose name would
    overwrite a column of its own (notebook, run, param.*) is shown as metric.<name>."""
    import warnings

    import pandas as pd

    rows = []
    for path in sorted(Path(directory).rglob(f"*{SUFFIX}")):
        try:
            payload = read(path)
        except ValueError as err:
            warnings.warn(f"skipping {err}", stacklevel=2)
            continue
        row = {"notebook": payload["notebook"], "run": str(path.parent.relative_to(directory)) or "."}
        row.update({f"param.{k}": v for k, v in payload["parameters"].items() if not isinstance(v, (dict, list))})
        for k, v in payload["metrics"].items():
            if not isinstance(v, (dict, list)):
                row[f"metric.{k}" if k in row or k in RESERVED_COLUMNS else k] = v
        rows.append(row)
    return pd.DataFrame(rows)
