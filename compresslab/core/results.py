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

__all__ = [
    "SCHEMA",
    "SUFFIX",
    "results_dir",
    "write_json_atomic",
    "record",
    "read",
    "pct",
    "LayerTableReport",
    "summary_table",
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


def write_json_atomic(path: Path, payload: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=False))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


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
    """Load one results file, checking its schema."""
    path = Path(path)
    try:
        payload = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a readable results file ({err})") from None
    if not isinstance(payload, dict) or payload.get("schema") != SCHEMA or not isinstance(payload.get("metrics"), dict):
        raise ValueError(f"{path}: not a compresslab results file (schema {SCHEMA!r} expected)")
    return payload


def pct(x: float | None) -> str:
    """0.9842 -> '98.42%' (None -> 'n/a'), for report headlines."""
    return "n/a" if x is None else f"{100 * x:.2f}%"


class LayerTableReport:
    """Mixin for report dataclasses: per-layer rows in `self.layers`, a one-line HTML `headline()`.

    Gives `table()` (a DataFrame of the rows) and the notebook display (headline, then the table)."""

    layers: list[dict]

    def headline(self) -> str:
        raise NotImplementedError

    def table(self):
        import pandas as pd

        return pd.DataFrame(self.layers)

    def _repr_html_(self) -> str:
        return f"<p>{self.headline()}</p>" + self.table().to_html(index=False)


def summary_table(metrics: Mapping):
    """Scalar metrics as a two-column DataFrame (metric, value)."""
    import pandas as pd

    rows = [{"metric": k, "value": v} for k, v in metrics.items() if not isinstance(v, (dict, list))]
    return pd.DataFrame(rows)


def load_runs(directory: str | os.PathLike):
    """Every results file below `directory` as one DataFrame: a row per run, scalar metrics as columns."""
    import pandas as pd

    rows = []
    for path in sorted(Path(directory).rglob(f"*{SUFFIX}")):
        payload = read(path)
        row = {"notebook": payload["notebook"], "run": str(path.parent.relative_to(directory)) or "."}
        row.update({f"param.{k}": v for k, v in payload.get("parameters", {}).items()
                    if not isinstance(v, (dict, list))})
        row.update({k: v for k, v in payload["metrics"].items() if not isinstance(v, (dict, list))})
        rows.append(row)
    return pd.DataFrame(rows)
