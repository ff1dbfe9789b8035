"""Recording a run's headline metrics as JSON, and loading many runs back as one table.

`record(name, metrics)` writes `<name>.results.json` into $COMPRESSLAB_RESULTS_DIR (set by the
runner to the folder of the executed notebook) or the current folder, atomically.

Every accuracy is recorded in percent (schema 2). Records of schema 1 kept some accuracies as
fractions (0.9851); `read` converts those (`V1_FRACTIONS`: the keys, per notebook) to percent and
says so once per process.
"""

from __future__ import annotations

import datetime as _dt
import fnmatch
import json
import math
import os
import warnings
from collections.abc import Mapping
from pathlib import Path

from compresslab.core.io import write_json_atomic

__all__ = [
    "SCHEMA",
    "SUFFIX",
    "results_dir",
    "record",
    "read",
    "V1_FRACTIONS",
    "upgrade",
    "summary_table",
    "RESERVED_COLUMNS",
    "load_runs",
]

SCHEMA = "compresslab.results/2"  # 2: every accuracy in percent
SCHEMA_V1 = "compresslab.results/1"
SUFFIX = ".results.json"

# The metrics that schema-1 records kept as fractions, per notebook; a name may hold '*' (fnmatch), and
# 'a.*.b' reaches key b of every entry of the dict a. Lists and dicts of numbers are converted whole.
V1_FRACTIONS: dict[str, tuple[str, ...]] = {
    "01_magnitude_pruning": ("dense_accuracy", "pruned_accuracy", "one_shot_accuracy", "iterative_accuracy",
                             "gradual_accuracy", "structured_accuracy"),
    "02_lottery_ticket_rewinding": ("dense_accuracy", "ticket_accuracy", "random_reinit_accuracy",
                                    "random_mask_accuracy", "sparsest_*_accuracy", "ticket_accuracy_by_level"),
    "03_ptq_vs_qat": ("fp32_accuracy", "ptq_int8_accuracy", "ptq_accuracy", "ptq_weight_only_accuracy", "qat_accuracy",
                      "ptq_lowest_best_accuracy", "qat_lowest_accuracy", "calibration_accuracy", "int8_accuracy",
                      "int8_reference_accuracy", "simulated_int8_accuracy", "qat_int8_accuracy"),
    "05_svd_factorization": ("dense_accuracy", "truncated_accuracy", "finetuned_accuracy", "energy_accuracy",
                             "conv_dense_accuracy", "conv_truncated_accuracy", "conv_finetuned_accuracy",
                             "tensor_decomposition.*.dense_accuracy", "tensor_decomposition.*.truncated_accuracy",
                             "tensor_decomposition.*.finetuned_accuracy"),
    "06_deep_compression": ("dense_accuracy", "pruned_accuracy", "shared_accuracy", "loaded_accuracy"),
    # the exercises
    "01_pruning": ("dense_accuracy", "layerwise_accuracy_95", "global_accuracy_95", "one_shot_finetuned_accuracy",
                   "gradual_accuracy"),
    "02_lottery": ("dense_accuracy", "ticket_accuracy", "random_reinit_accuracy", "random_mask_accuracy"),
    "03_quantization": ("float_accuracy", "ptq_per_tensor_*bit", "ptq_per_channel_*bit", "qat_accuracy_before",
                        "qat_accuracy"),
    "04_distillation": ("teacher_accuracy", "student_alone_accuracy", "distilled_T*_accuracy"),
    "05_lowrank": ("dense_accuracy", "accuracy_energy_*", "factorized_accuracy_before_finetune", "factorized_accuracy"),
    "06_huffman_deep_compression": ("dense_accuracy", "pruned_accuracy", "shared_accuracy", "shared_*bit_accuracy"),
    "07_structured": ("dense_accuracy", "accuracy_fc1_removed_*"),
}
_WARNED: list[bool] = []


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
    if (not isinstance(payload, dict) or payload.get("schema") not in (SCHEMA, SCHEMA_V1)
            or not isinstance(payload.get("metrics"), dict)):
        raise ValueError(f"{path}: not a compresslab results file (schema {SCHEMA!r} or {SCHEMA_V1!r} expected)")
    if not isinstance(payload.get("notebook"), str) or not payload["notebook"]:
        raise ValueError(f"{path}: the results file names no notebook")
    if payload.get("parameters") is None:
        payload["parameters"] = {}
    if not isinstance(payload["parameters"], dict):
        raise ValueError(f"{path}: 'parameters' is a {type(payload['parameters']).__name__}, not an object")
    payload, converted = upgrade(payload)
    if converted and not _WARNED:
        _WARNED.append(True)
        warnings.warn(f"{path} and possibly others were recorded with {SCHEMA_V1} (some accuracies as fractions): "
                      f"read as percent ({', '.join(converted[:4])}{', ...' if len(converted) > 4 else ''})",
                      stacklevel=2)
    return payload


def _percent(value: object) -> object:
    """A fraction (or a list / dict of them) times 100, rounded to 10 decimals; others unchanged."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return round(100.0 * value, 10)
    if isinstance(value, list):
        return [_percent(v) for v in value]
    if isinstance(value, dict):
        return {k: _percent(v) for k, v in value.items()}
    return value


def _convert(metrics: dict, path: list[str], prefix: str, done: list[str]) -> None:
    head, rest = path[0], path[1:]
    for key in [k for k in metrics if fnmatch.fnmatchcase(k, head)]:
        if rest:
            if isinstance(metrics[key], dict):
                _convert(metrics[key], rest, f"{prefix}{key}.", done)
        else:
            metrics[key] = _percent(metrics[key])
            done.append(prefix + key)


def upgrade(payload: dict) -> tuple[dict, list[str]]:
    """A results payload in the current schema: a schema-1 record's fraction accuracies
    (`V1_FRACTIONS` of its notebook) times 100. Returns (payload, the converted metric names)."""
    if payload.get("schema") != SCHEMA_V1:
        return payload, []
    metrics, done = json.loads(json.dumps(payload["metrics"])), []
    for name in V1_FRACTIONS.get(payload["notebook"], ()):
        _convert(metrics, name.split("."), "", done)
    return {**payload, "schema": SCHEMA, "metrics": metrics}, done


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
