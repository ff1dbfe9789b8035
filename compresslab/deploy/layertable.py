"""A per-layer latency lookup table measured on a real runtime, and the end-to-end latency it predicts.

Measured in context, so that the session's fixed overhead is counted once: the all-FP32 model's
median end-to-end time is `base_ms`; each single-layer variant (one layer at one option, every
other layer FP32) is timed end to end in the same interleaved rounds (`core.latency.latency_rounds`),
and its difference from the base is that layer's delta:

    delta[l][o] = median(model with only l at o) - base_ms        (delta[l]["fp32"] = 0)
    predict(config) = base_ms + sum_l delta[l][config[l]]

The prediction is exact when the layers' costs add up; it errs by whatever interaction the
runtime has between layers (a fused requantization between two int8 layers, cache effects), which
`measure_configs` and `prediction_errors` measure: relative error (predicted - measured) / measured.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from compresslab.core.latency import Latency, latency_rounds
from compresslab.core.validate import check_choice, check_float, check_int, check_layer_names, show
from compresslab.deploy.base import Deployed
from compresslab.deploy.bench import cpu_features
from compresslab.deploy.layerexport import (
    RUNTIME_OPTIONS,
    config_slug,
    export_config,
    full_config,
    layer_options,
)

__all__ = ["BASE", "variant_label", "LatencyTable", "default_timer", "measure_table", "measure_configs",
           "prediction_errors"]

BASE = "fp32"  # the label of the all-FP32 model in a table's timings
SCHEMA = 1
OWNER = "measure_table"  # measure_table and measure_configs check the same arguments
Timer = Callable[[dict[str, Callable], int], dict[str, Latency]]
_TIMING_KEYS = ("p10_ms", "median_ms", "p90_ms")


def variant_label(layer: str, option: str) -> str:
    """The label of the model with only `layer` at `option` (the key of its timing and its deployed model).

    >>> variant_label("fc1", "int8")
    'fc1=int8'
    """
    return f"{layer}={option}"


@dataclass(frozen=True)
class LatencyTable:
    """Per-layer latency deltas of one runtime at one batch size and thread count (milliseconds).

    delta_ms: {layer: {option: median of the single-layer variant - base_ms}}, "fp32" = 0 for every layer;
    spread: {label: {"p10_ms", "median_ms", "p90_ms"}} of every timed variant (`BASE`, `variant_label`);
    cpu: `deploy.bench.cpu_features()` of the machine it was measured on;
    export_seconds: {label: seconds to export and quantize that variant}; timing_seconds: the timing phase.
    """

    runtime: str
    batch_size: int
    threads: int
    cpu: dict
    base_ms: float
    delta_ms: dict
    spread: dict
    export_seconds: dict = field(default_factory=dict)
    timing_seconds: float = 0.0

    def __post_init__(self) -> None:
        owner = "LatencyTable"
        check_choice(owner, "runtime", self.runtime, tuple(RUNTIME_OPTIONS))
        check_int(owner, "batch_size", self.batch_size, 1, 2**16)
        check_int(owner, "threads", self.threads, 1, 4096)
        if not isinstance(self.cpu, dict):
            raise TypeError(f"{owner}.cpu={show(self.cpu)} must be a dict (deploy.bench.cpu_features())")
        check_float(owner, "base_ms", self.base_ms, 0.0)
        check_float(owner, "timing_seconds", self.timing_seconds, 0.0)
        if not isinstance(self.delta_ms, dict) or not self.delta_ms:
            raise ValueError(f"{owner}.delta_ms={show(self.delta_ms)} must be a non-empty dict {{layer: {{option: ms}}}}")
        if not isinstance(self.spread, dict):
            raise TypeError(f"{owner}.spread={show(self.spread)} must be a dict {{label: timings}}")
        labels = {BASE}
        for layer, row in self.delta_ms.items():
            where = f"delta_ms[{layer!r}]"
            if not isinstance(layer, str) or not isinstance(row, dict) or row.get("fp32") != 0:
                raise ValueError(f"{owner}.{where}={show(row)} must be a dict {{option: ms}} with 'fp32': 0")
            for option, ms in row.items():
                check_choice(owner, f"{where} option", option, RUNTIME_OPTIONS[self.runtime])
                check_float(owner, f"{where}[{option!r}]", ms)
                if option != "fp32":
                    labels.add(variant_label(layer, option))
        if set(self.spread) != labels:
            raise ValueError(f"{owner}.spread has the labels {sorted(map(str, self.spread))}; the table's variants "
                             f"are {sorted(labels)}")
        for label, timing in self.spread.items():
            if not isinstance(timing, dict) or set(timing) != set(_TIMING_KEYS):
                raise ValueError(f"{owner}.spread[{label!r}]={show(timing)} must hold exactly {_TIMING_KEYS}")
            p10, med, p90 = (check_float(owner, f"spread[{label!r}][{k!r}]", timing[k], 0.0) for k in _TIMING_KEYS)
            if not p10 <= med <= p90:
                raise ValueError(f"{owner}.spread[{label!r}]={timing} must have p10_ms <= median_ms <= p90_ms")
        if not math.isclose(self.spread[BASE]["median_ms"], self.base_ms, rel_tol=1e-9, abs_tol=1e-12):
            raise ValueError(f"{owner}.base_ms={self.base_ms} differs from spread[{BASE!r}]['median_ms']")
        for layer, row in self.delta_ms.items():
            for option, ms in row.items():
                if option != "fp32" and not math.isclose(
                        self.spread[variant_label(layer, option)]["median_ms"] - self.base_ms, ms,
                        rel_tol=1e-9, abs_tol=1e-9):
                    raise ValueError(f"{owner}.delta_ms[{layer!r}][{option!r}]={ms} is not its variant's median "
                                     "minus base_ms")
        if not isinstance(self.export_seconds, dict) or not set(self.export_seconds) <= labels:
            raise ValueError(f"{owner}.export_seconds={show(self.export_seconds)} must be a dict {{label: seconds}} "
                             "over the table's labels")
        for label, s in self.export_seconds.items():
            check_float(owner, f"export_seconds[{label!r}]", s, 0.0)

    @property
    def layers(self) -> list[str]:
        return list(self.delta_ms)

    def predict(self, config: Mapping[str, str]) -> float:
        """base_ms + sum of each layer's delta at its option in `config` (a layer not named: fp32).

        >>> t = LatencyTable("onnxruntime", 1, 1, {}, 1.0, {"fc1": {"fp32": 0.0, "int8": -0.25}},
        ...                  {"fp32": dict(p10_ms=0.9, median_ms=1.0, p90_ms=1.2),
        ...                   "fc1=int8": dict(p10_ms=0.7, median_ms=0.75, p90_ms=0.8)})
        >>> t.predict({"fc1": "int8"}), t.predict({})
        (0.75, 1.0)
        """
        if not isinstance(config, Mapping):
            raise TypeError(f"LatencyTable.predict config={show(config)} must be a mapping {{layer: option}}")
        check_layer_names("LatencyTable.predict", "config", config.keys(), self.delta_ms)
        total = self.base_ms
        for layer, option in config.items():
            check_choice("LatencyTable.predict", f"config[{layer!r}]", option, tuple(self.delta_ms[layer]))
            total += self.delta_ms[layer][option]
        return total

    def rows(self) -> list[dict]:
        """One row per layer and option: the delta, the delta relative to the base, and the timed
        variant's median, p10 and p90 (fp32 rows: the base's)."""
        out = []
        for layer, row in self.delta_ms.items():
            for option, delta in row.items():
                timing = self.spread[BASE if option == "fp32" else variant_label(layer, option)]
                out.append({"layer": layer, "option": option, "delta_ms": delta,
                            "relative": delta / self.base_ms if self.base_ms > 0 else math.nan, **timing})
        return out

    def to_dict(self) -> dict:
        """JSON-safe: every field, and a schema number."""
        return {"schema": SCHEMA, "runtime": self.runtime, "batch_size": self.batch_size, "threads": self.threads,
                "cpu": dict(self.cpu), "base_ms": self.base_ms,
                "delta_ms": {k: dict(v) for k, v in self.delta_ms.items()},
                "spread": {k: dict(v) for k, v in self.spread.items()},
                "export_seconds": dict(self.export_seconds), "timing_seconds": self.timing_seconds}

    @classmethod
    def from_dict(cls, data: object) -> LatencyTable:
        """The table `to_dict` wrote, checked field by field (a damaged dict raises ValueError / TypeError)."""
        keys = {"schema", "runtime", "batch_size", "threads", "cpu", "base_ms", "delta_ms", "spread",
                "export_seconds", "timing_seconds"}
        if not isinstance(data, dict) or set(data) != keys:
            found = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
            raise ValueError(f"LatencyTable.from_dict needs exactly the keys {sorted(keys)}; got {found}")
        if data["schema"] != SCHEMA:
            raise ValueError(f"LatencyTable.schema={show(data['schema'])} must be {SCHEMA}")
        return cls(**{k: v for k, v in data.items() if k != "schema"})


def _check_measure(model, runtime, batch_size, example, calibration, threads, rounds, repeats, timer) -> None:
    check_choice(OWNER, "runtime", runtime, tuple(RUNTIME_OPTIONS))
    if not isinstance(model, nn.Module):
        raise TypeError(f"{OWNER}.model={show(model)} must be a torch.nn.Module")
    check_int(OWNER, "batch_size", batch_size, 1, 2**16)
    check_int(OWNER, "threads", threads, 1, 4096)
    check_int(OWNER, "rounds", rounds, 1, 10**4)
    check_int(OWNER, "repeats", repeats, 1, 10**6)
    if timer is not None and not callable(timer):
        raise TypeError(f"{OWNER}.timer={show(timer)} must be callable (variants, batch_size) -> {{label: Latency}}")
    if not isinstance(example, torch.Tensor) or example.dim() < 2:
        raise ValueError(f"{OWNER}.example={show(example)} must be a batch tensor (N, ...)")
    if not isinstance(calibration, torch.Tensor) or len(calibration) == 0:
        raise ValueError(f"{OWNER}.calibration={show(calibration)} must be a non-empty batch of images (int8 "
                         "variants are calibrated on it)")


def default_timer(input_shape: Sequence[int], threads: int = 1, rounds: int = 5, repeats: int = 20) -> Timer:
    """The timer `measure_table` and `measure_configs` use unless given one: `latency_rounds` over the
    variants at one batch size (inputs of `input_shape` past the batch), `threads` intra-op threads."""
    def timer(variants: dict[str, Callable], batch_size: int) -> dict[str, Latency]:
        rows = latency_rounds(variants, rounds=rounds, batch_sizes=(batch_size,), input_shape=tuple(input_shape),
                              repeats=repeats, threads=threads)
        return {r.label: r for r in rows}
    return timer


def _timed(timer: Timer, variants: dict[str, Deployed], batch_size: int) -> tuple[dict[str, Latency], float]:
    start = time.perf_counter()
    out = timer(variants, batch_size)
    if not isinstance(out, dict) or set(out) != set(variants):
        raise ValueError(f"the timer returned {show(out)}; it must return one Latency per variant {sorted(variants)}")
    return out, time.perf_counter() - start


def measure_table(model: nn.Module, runtime: str, batch_size: int, example: torch.Tensor, calibration: torch.Tensor,
                  workdir: str | os.PathLike, threads: int = 1, rounds: int = 5, repeats: int = 20,
                  timer: Timer | None = None) -> tuple[LatencyTable, dict[str, Deployed]]:
    """Export the all-FP32 model and every single-layer variant (`layer_options`), time them all in
    interleaved rounds at `batch_size` and return the table with the deployed models by label
    (`BASE`, `variant_label(layer, option)`). `timer(variants, batch_size) -> {label: Latency}`
    replaces the default (`latency_rounds` with `rounds`, `repeats`, `threads`)."""
    _check_measure(model, runtime, batch_size, example, calibration, threads, rounds, repeats, timer)
    options = layer_options(model, runtime)
    configs = {BASE: {}} | {variant_label(layer, o): {layer: o} for layer, opts in options.items()
                            for o in opts if o != "fp32"}
    deployed, seconds = {}, {}
    for label, config in configs.items():
        start = time.perf_counter()
        deployed[label] = export_config(model, runtime, config, example, calibration, workdir, threads)
        seconds[label] = time.perf_counter() - start
    timings, timing_s = _timed(timer or default_timer(example.shape[1:], threads, rounds, repeats), deployed, batch_size)
    base = timings[BASE].median_ms
    delta = {layer: {o: 0.0 if o == "fp32" else timings[variant_label(layer, o)].median_ms - base for o in opts}
             for layer, opts in options.items()}
    spread = {label: {k: float(getattr(t, k)) for k in _TIMING_KEYS} for label, t in timings.items()}
    table = LatencyTable(runtime, batch_size, threads, cpu_features(), float(base), delta, spread, seconds, timing_s)
    return table, deployed


def measure_configs(model: nn.Module, runtime: str, configs: Sequence[Mapping[str, str]], batch_size: int,
                    example: torch.Tensor, calibration: torch.Tensor, workdir: str | os.PathLike, threads: int = 1,
                    rounds: int = 5, repeats: int = 20, timer: Timer | None = None) -> list[Latency]:
    """The end-to-end latency of each config's deployed model (labelled by `config_slug`), all timed
    in the same interleaved rounds; a config given twice is exported and timed once."""
    _check_measure(model, runtime, batch_size, example, calibration, threads, rounds, repeats, timer)
    if isinstance(configs, Mapping) or not isinstance(configs, Sequence) or not configs:
        raise ValueError(f"{OWNER}.configs={show(configs)} must be a non-empty list of {{layer: option}} mappings")
    full = [full_config(model, runtime, c) for c in configs]  # every config checked before any export
    variants = {}
    for config in full:
        slug = config_slug(config)
        if slug not in variants:
            variants[slug] = export_config(model, runtime, config, example, calibration, workdir, threads)
    timings, _ = _timed(timer or default_timer(example.shape[1:], threads, rounds, repeats), variants, batch_size)
    return [timings[config_slug(c)] for c in full]


def prediction_errors(table: LatencyTable, configs: Sequence[Mapping[str, str]],
                      measured: Sequence[Latency]) -> list[float]:
    """(predicted - measured) / measured for each config, from each measurement's median (NaN where
    the measured median is not positive).

    >>> t = LatencyTable("onnxruntime", 1, 1, {}, 1.0, {"fc1": {"fp32": 0.0, "int8": -0.25}},
    ...                  {"fp32": dict(p10_ms=0.9, median_ms=1.0, p90_ms=1.2),
    ...                   "fc1=int8": dict(p10_ms=0.7, median_ms=0.75, p90_ms=0.8)})
    >>> prediction_errors(t, [{"fc1": "int8"}], [Latency("x", 1, 0.5, 0.4, 0.6, 10, 1)])
    [0.5]
    """
    if len(configs) != len(measured):
        raise ValueError(f"prediction_errors: {len(configs)} configs but {len(measured)} measurements")
    out = []
    for config, m in zip(configs, measured):
        predicted = table.predict(config)
        out.append((predicted - m.median_ms) / m.median_ms if m.median_ms > 0 else math.nan)
    return out
