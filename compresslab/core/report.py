"""The one Report every technique's `apply_*` verb returns, and its JSON form.

A report holds: the config, test accuracy before and after in percent (100 * correct / n),
the ledger's Size before and after (params, non-zeros, FP32 bytes, stored bytes), an optional
measured latency, the seconds the verb took, and a per-layer table. Technique-specific fields are
extra dataclass fields on the subclass. `point()` is the report's place on an accuracy / size /
latency plot, the same keys for every technique.

`to_dict()` is JSON-safe and `Report.from_dict(d)` rebuilds the report (configs included, tagged
with their class): tuples are written as lists and come back as tuples where the dataclass field
is declared a tuple.
Fields marked `json=False` (tensors: masks, saved states) are left out and come back as defaults.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import os
from dataclasses import dataclass, field
from typing import Any

from compresslab.core.metrics import Size

__all__ = ["Report", "percent", "fmt_percent", "encode", "decode", "transient"]

_CLASS = "__class__"


def percent(fraction: float | None) -> float | None:
    """A fraction in [0, 1] as percent (None stays None): 0.9842 -> 98.42."""
    return None if fraction is None else 100.0 * float(fraction)


def fmt_percent(value: float | None) -> str:
    """A percent value for a headline: 98.4213 -> '98.42%' (None -> 'n/a')."""
    return "n/a" if value is None else f"{value:.2f}%"


def transient(default: Any = None, factory: Any = None) -> Any:
    """A dataclass field left out of to_dict (tensors and models); from_dict gives its default."""
    if factory is not None:
        return field(default_factory=factory, metadata={"json": False})
    return field(default=default, metadata={"json": False})


def _qualname(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _resolve(name: str) -> type:
    module, _, qual = name.partition(":")
    if not module.startswith("compresslab."):
        raise ValueError(f"{_CLASS}={name!r} is not a compresslab class")
    obj: Any = importlib.import_module(module)
    for part in qual.split("."):
        obj = getattr(obj, part)
    return obj


def encode(value: Any) -> Any:
    """A JSON-safe form of `value`: dataclasses as {'__class__': ..., fields}, tuples as lists,
    tensors / arrays as lists, numpy and torch scalars as Python numbers, non-finite floats as None."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {_CLASS: _qualname(type(value))}
        for f in dataclasses.fields(value):
            if f.metadata.get("json", True):
                out[f.name] = encode(getattr(value, f.name))
        return out
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        return {str(k): encode(v) for k, v in value.items()}
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", None) == 0:
        return encode(value.item())
    if hasattr(value, "tolist"):
        return encode(value.tolist())
    raise ValueError(f"a report field has type {type(value).__name__}, which has no JSON form")


def decode(value: Any) -> Any:
    """The inverse of `encode` (tensors come back as lists; lists as tuples in tuple-typed fields)."""
    if isinstance(value, list):
        return [decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    if _CLASS in value:
        cls = _resolve(value[_CLASS])
        kwargs = {k: decode(v) for k, v in value.items() if k != _CLASS}
        types = {f.name: str(f.type) for f in dataclasses.fields(cls)}
        kwargs = {k: tuple(v) if isinstance(v, list) and "tuple" in types.get(k, "") else v
                  for k, v in kwargs.items()}
        init = {f.name for f in dataclasses.fields(cls) if f.init}
        obj = cls(**{k: v for k, v in kwargs.items() if k in init})
        for k, v in kwargs.items():  # fields set after construction (init=False)
            if k not in init:
                object.__setattr__(obj, k, v)
        return obj
    return {k: decode(v) for k, v in value.items()}


@dataclass(kw_only=True)
class Report:
    """What one technique did to one model (see the module docstring for the units)."""

    config: Any = None
    accuracy_before: float | None = None  # percent
    accuracy_after: float | None = None  # percent
    size_before: Size | None = None
    size_after: Size | None = None
    latency: dict | None = None  # {"batch_size": b, "median_ms": t, ...} when measured
    seconds: float = 0.0
    layers: list[dict] = field(default_factory=list)

    technique = "technique"  # a class attribute, the name in headlines

    # ------------------------------------------------------------ derived numbers

    @property
    def accuracy_change(self) -> float | None:
        """accuracy_after - accuracy_before, in percentage points."""
        if self.accuracy_before is None or self.accuracy_after is None:
            return None
        return self.accuracy_after - self.accuracy_before

    @property
    def compression(self) -> float | None:
        """size_before.fp32_bytes / size_after.stored_bytes: the dense FP32 model over what is stored."""
        if self.size_before is None or self.size_after is None or not self.size_after.stored_bytes:
            return None
        return self.size_before.fp32_bytes / self.size_after.stored_bytes

    def point(self) -> dict:
        """The report's point on an accuracy / size / latency plot (same keys for every technique)."""
        size = self.size_after
        return {"technique": self.technique, "accuracy": self.accuracy_after,
                "bytes": None if size is None else size.stored_bytes,
                "params": None if size is None else size.params,
                "nonzeros": None if size is None else size.nonzeros,
                "latency_ms": None if not self.latency else self.latency.get("median_ms")}

    # ------------------------------------------------------------ JSON

    def to_dict(self) -> dict:
        """JSON-safe fields, tagged with the report's class (see `from_dict`)."""
        return encode(self)

    @classmethod
    def from_dict(cls, payload: dict) -> Report:
        """Rebuild a report from `to_dict()` output (transient fields get their defaults)."""
        report = decode(payload)
        if not isinstance(report, cls):
            raise ValueError(f"payload holds a {type(report).__name__}, not a {cls.__name__}")
        return report

    def summary(self) -> dict:
        """Scalar headline numbers: the point, accuracy before, compression and seconds."""
        out = {"accuracy_before": self.accuracy_before, "accuracy_after": self.accuracy_after,
               "compression": self.compression, "seconds": self.seconds}
        out.update({f"point_{k}": v for k, v in self.point().items() if k != "technique"})
        return out

    def record(self, name: str, directory: str | os.PathLike | None = None, **extra: Any):
        """Record the summary (plus `extra` metrics) and the config with results.record."""
        from compresslab.core import results

        config = encode(self.config)
        parameters = config if isinstance(config, dict) else {"config": config}
        return results.record(name, {**self.summary(), **extra}, parameters, directory)

    # ------------------------------------------------------------ display

    def headline(self) -> str:
        """One line of HTML: accuracy before -> after, params and stored bytes, seconds."""
        parts = [f"{self.technique}: accuracy {fmt_percent(self.accuracy_before)} &rarr; "
                 f"{fmt_percent(self.accuracy_after)}"]
        if self.size_before is not None and self.size_after is not None:
            parts.append(f"params {self.size_before.params:,} &rarr; {self.size_after.params:,}")
            parts.append(f"stored {self.size_before.stored_bytes:,.0f} &rarr; "
                         f"{self.size_after.stored_bytes:,.0f} bytes ({self.compression:.2f}x vs FP32)")
        if self.latency:
            parts.append(f"{self.latency.get('median_ms', float('nan')):.3f} ms "
                         f"@ batch {self.latency.get('batch_size')}")
        parts.extend(self.headline_extra())
        parts.append(f"{self.seconds:.1f} s")
        return " &middot; ".join(parts)

    def headline_extra(self) -> list[str]:
        """Technique-specific pieces of the headline (subclasses add theirs)."""
        return []

    def table(self):
        """The per-layer rows as a DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.layers)

    def extra_tables(self) -> list:
        """More DataFrames to show under the headline, before the per-layer table."""
        return []

    def _repr_html_(self) -> str:
        html = f"<p>{self.headline()}</p>"
        for frame in self.extra_tables():
            html += frame.to_html(index=False)
        if self.layers:
            html += self.table().to_html(index=False)
        return html

    def __repr__(self) -> str:
        text = type(self).__name__ + ": " + self.headline().replace("&rarr;", "->").replace("&middot;", "|")
        return text.replace("<b>", "").replace("</b>", "")
