"""A per-layer latency lookup table measured on a real runtime, and the end-to-end latency it predicts.

Measured in context, so that the session's fixed overhead is counted once: the all-FP32 model's
median end-to-end time is `base_ms`; each single-layer variant (one layer at one option, every
other layer FP32) and each adjacent-pair variant (two consecutive layers of `prunable_layers`
order changed, both away from FP32) is timed end to end in the same interleaved rounds
(`core.latency.latency_rounds`):

    delta[l][o] = t(only l at o) - base_ms                                   (delta[l]["fp32"] = 0)
    pair[l1|l2][o1|o2] = t(l1 at o1 and l2 at o2) - t(l1 at o1) - t(l2 at o2) + base_ms
    predict(config) = base_ms + sum_l delta[l][config[l]] + sum_{adjacent l1, l2} pair[l1|l2][config[l1]|config[l2]]

(t: a variant's median; a pair term is 0 when either layer is FP32.) The pair term is what a
runtime saves or adds when two neighbours change together: an int8 layer alone pays for quantizing
its input and dequantizing its output, two adjacent int8 layers pass int8 between them. The
prediction is exact whenever the cost is a sum of per-layer and per-boundary terms (a boundary cost
that depends on the two layers either side of it: a chain of int8 layers costs one quantize at its
start and one dequantize at its end); it errs by any interaction reaching past a neighbour, which
`measure_configs` and `prediction_errors` measure: relative error (predicted - measured) / measured.
`measure_table(..., pairs=False)` gives the additive table (no pair terms).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

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

__all__ = ["BASE", "variant_label", "pair_key", "pair_label", "LatencyTable", "default_timer", "measure_table",
           "measure_space", "measure_configs", "prediction_errors"]

BASE = "fp32"  # the label of the all-FP32 model in a table's timings
SCHEMA = 2  # 2: pair_ms; schema 1 dicts (no pair terms) are still read
SEP = "|"  # joins two layers (or two options) in pair_ms's keys
OWNER = "measure_table"  # measure_table and measure_configs check the same arguments
Timer = Callable[[dict[str, Callable], int], dict[str, Latency]]
_TIMING_KEYS = ("p10_ms", "median_ms", "p90_ms")


def variant_label(layer: str, option: str) -> str:
    """The label of the model with only `layer` at `option` (the key of its timing and its deployed model).

    >>> variant_label("fc1", "int8")
    'fc1=int8'
    """
    return f"{layer}={option}"


def pair_key(first: str, second: str) -> str:
    """The key of two layers (or two options) in `LatencyTable.pair_ms`.

    >>> pair_key("fc1", "fc2"), pair_key("int8", "int4")
    ('fc1|fc2', 'int8|int4')
    """
    return f"{first}{SEP}{second}"


def pair_label(first: str, option1: str, second: str, option2: str) -> str:
    """The label of the model with only `first` at `option1` and `second` at `option2`.

    >>> pair_label("fc1", "int8", "fc2", "int4")
    'fc1=int8,fc2=int4'
    """
    return f"{variant_label(first, option1)},{variant_label(second, option2)}"


def _pair_options(delta_ms: Mapping[str, Mapping[str, float]]) -> dict[tuple[str, str], list[tuple[str, str]]]:
    """{(l1, l2): [(o1, o2), ...]} for each adjacent pair of layers (in order) and their non-FP32 options."""
    layers = list(delta_ms)
    return {(a, b): [(o1, o2) for o1 in delta_ms[a] if o1 != "fp32" for o2 in delta_ms[b] if o2 != "fp32"]
            for a, b in zip(layers, layers[1:])}


def _pair_variants(owner: str, table: LatencyTable) -> dict[str, tuple[str, str, str, str, float]]:
    """{pair label: (l1, l2, o1, o2, interaction)} of `table.pair_ms`, which must be empty or hold every
    adjacent pair's every non-FP32 option pair (finite numbers)."""
    if not isinstance(table.pair_ms, dict):
        raise TypeError(f"{owner}.pair_ms={show(table.pair_ms)} must be a dict {{'l1|l2': {{'o1|o2': ms}}}}")
    if not table.pair_ms:
        return {}
    expected = {pair_key(a, b): {pair_key(*o): (a, b, *o) for o in opts}
                for (a, b), opts in _pair_options(table.delta_ms).items() if opts}
    out = {}
    for key, row in table.pair_ms.items():
        if key not in expected:
            raise ValueError(f"{owner}.pair_ms[{key!r}] is not a pair of adjacent layers; the table's adjacent "
                             f"pairs are {sorted(expected)}")
        if not isinstance(row, dict) or set(row) != set(expected[key]):
            raise ValueError(f"{owner}.pair_ms[{key!r}]={show(row)} must give exactly the option pairs "
                             f"{sorted(expected[key])} (both layers away from fp32)")
        for options, ms in row.items():
            a, b, o1, o2 = expected[key][options]
            out[pair_label(a, o1, b, o2)] = (a, b, o1, o2, check_float(owner, f"pair_ms[{key!r}][{options!r}]", ms))
    if set(table.pair_ms) != set(expected):
        raise ValueError(f"{owner}.pair_ms misses the adjacent pairs {sorted(set(expected) - set(table.pair_ms))}")
    return out


def _check_pair_values(owner: str, table: LatencyTable, pairs: dict) -> None:
    """Each interaction equals its timed variants' medians combined (the module docstring)."""
    median = {label: t["median_ms"] for label, t in table.spread.items()}
    for label, (a, b, o1, o2, ms) in pairs.items():
        one, two = variant_label(a, o1), variant_label(b, o2)
        combined = median[label] - median[one] - median[two] + table.base_ms
        if not math.isclose(combined, ms, rel_tol=1e-9, abs_tol=1e-9):
            raise ValueError(f"{owner}.pair_ms[{pair_key(a, b)!r}][{pair_key(o1, o2)!r}]={ms} is not "
                             f"t({label}) - t({one}) - t({two}) + base_ms = {combined}")


@dataclass(frozen=True)
class LatencyTable:
    """Per-layer latency deltas of one runtime at one batch size and thread count (milliseconds).

    delta_ms: {layer: {option: median of the single-layer variant - base_ms}}, "fp32" = 0 for every
    layer, layers in model order; pair_ms: {pair_key(l1, l2): {pair_key(o1, o2): interaction}} for every
    adjacent pair and non-FP32 option pair (the module docstring), or empty (the additive table);
    spread: {label: {"p10_ms", "median_ms", "p90_ms"}} of every timed variant (`BASE`, `variant_label`,
    `pair_label`);
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
    pair_ms: dict = field(default_factory=dict)

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
        pairs = _pair_variants(owner, self)
        labels |= set(pairs)
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
        _check_pair_values(owner, self, pairs)
        if not isinstance(self.export_seconds, dict) or not set(self.export_seconds) <= labels:
            raise ValueError(f"{owner}.export_seconds={show(self.export_seconds)} must be a dict {{label: seconds}} "
                             "over the table's labels")
        for label, s in self.export_seconds.items():
            check_float(owner, f"export_seconds[{label!r}]", s, 0.0)

    @property
    def layers(self) -> list[str]:
        return list(self.delta_ms)

    @property
    def adjacent(self) -> list[tuple[str, str]]:
        """The pairs of consecutive layers (the pairs `pair_ms` may hold)."""
        return list(zip(self.layers, self.layers[1:]))

    def predict(self, config: Mapping[str, str]) -> float:
        """base_ms + each layer's delta at its option in `config` (a layer not named: fp32) + each
        adjacent pair's interaction at their options (0 when either is fp32 or the table has no pairs).

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
        for a, b in self.adjacent:
            row = self.pair_ms.get(pair_key(a, b), {})
            total += row.get(pair_key(config.get(a, "fp32"), config.get(b, "fp32")), 0.0)
        return total

    def without_pairs(self) -> LatencyTable:
        """The additive table: the same base and deltas (from the same rounds), no pair terms."""
        labels = {BASE} | {variant_label(k, o) for k, row in self.delta_ms.items() for o in row if o != "fp32"}
        return replace(self, pair_ms={}, spread={k: v for k, v in self.spread.items() if k in labels},
                       export_seconds={k: v for k, v in self.export_seconds.items() if k in labels})

    def program_costs(self) -> tuple[dict[str, dict[str, float]], dict[tuple[str, str], dict[tuple[str, str], float]]]:
        """(costs, pair_costs) for `techniques.mixedprecision.solve`: costs[l][o] = delta_ms (fp32: 0),
        pair_costs[(l1, l2)][(o1, o2)] = the interaction; the latency is base_ms + the program's cost,
        so a budget of B ms is solve(..., B - base_ms, pair_costs=pair_costs)."""
        costs = {layer: dict(row) for layer, row in self.delta_ms.items()}
        pair_costs = {}
        for key, row in self.pair_ms.items():
            a, b = key.split(SEP)
            pair_costs[(a, b)] = {tuple(options.split(SEP)): ms for options, ms in row.items()}
        return costs, pair_costs

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

    def pair_rows(self) -> list[dict]:
        """One row per adjacent pair and option pair: the interaction, relative to the base, and the
        timed pair variant's median, p10 and p90."""
        out = []
        for key, row in self.pair_ms.items():
            first, second = key.split(SEP)
            for options, ms in row.items():
                o1, o2 = options.split(SEP)
                out.append({"first": first, "second": second, "option1": o1, "option2": o2, "interaction_ms": ms,
                            "relative": ms / self.base_ms if self.base_ms > 0 else math.nan,
                            **self.spread[pair_label(first, o1, second, o2)]})
        return out

    def to_dict(self) -> dict:
        """JSON-safe: every field, and a schema number."""
        return {"schema": SCHEMA, "runtime": self.runtime, "batch_size": self.batch_size, "threads": self.threads,
                "cpu": dict(self.cpu), "base_ms": self.base_ms,
                "delta_ms": {k: dict(v) for k, v in self.delta_ms.items()},
                "spread": {k: dict(v) for k, v in self.spread.items()},
                "export_seconds": dict(self.export_seconds), "timing_seconds": self.timing_seconds,
                "pair_ms": {k: dict(v) for k, v in self.pair_ms.items()}}

    @classmethod
    def from_dict(cls, data: object) -> LatencyTable:
        """The table `to_dict` wrote, checked field by field (a damaged dict raises ValueError / TypeError);
        a schema 1 dict (written before pair terms) reads as a table without them."""
        keys = {"schema", "runtime", "batch_size", "threads", "cpu", "base_ms", "delta_ms", "spread",
                "export_seconds", "timing_seconds"}
        if not isinstance(data, dict):
            raise ValueError(f"LatencyTable.from_dict needs a dict (LatencyTable.to_dict()); got {show(data)}")
        schema = data.get("schema")
        if schema not in (1, SCHEMA) or isinstance(schema, bool):
            raise ValueError(f"LatencyTable.schema={show(schema)} must be 1 or {SCHEMA}")
        if schema == SCHEMA:
            keys |= {"pair_ms"}
        if set(data) != keys:
            raise ValueError(f"LatencyTable.from_dict needs exactly the keys {sorted(keys)} (schema {schema}); "
                             f"got {sorted(map(str, data))}")
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
                  timer: Timer | None = None, *, pairs: bool = True) -> tuple[LatencyTable, dict[str, Deployed]]:
    """Export the all-FP32 model, every single-layer variant (`layer_options`) and, with `pairs`,
    every adjacent-pair variant (both layers away from FP32), time them all in interleaved rounds at
    `batch_size` and return the table with the deployed models by label (`BASE`,
    `variant_label(layer, option)`, `pair_label(l1, o1, l2, o2)`). `timer(variants, batch_size) ->
    {label: Latency}` replaces the default (`latency_rounds` with `rounds`, `repeats`, `threads`)."""
    table, deployed, _ = measure_space(model, runtime, batch_size, (), example, calibration, workdir, threads, rounds,
                                       repeats, timer, pairs=pairs)
    return table, deployed


def _session_median(timings: Mapping[str, Latency], label: str, sessions: int) -> Latency:
    """The timing of `label` over its `sessions` copies: the copy with the median median (labelled `label`)."""
    rows = sorted((timings[f"{label}#{i}"] for i in range(sessions)), key=lambda r: r.median_ms)
    row = rows[(sessions - 1) // 2]
    return Latency(label, row.batch_size, row.median_ms, row.p10_ms, row.p90_ms, sum(r.repeats for r in rows),
                   row.threads)


def measure_space(model: nn.Module, runtime: str, batch_size: int, configs: Sequence[Mapping[str, str]],
                  example: torch.Tensor, calibration: torch.Tensor, workdir: str | os.PathLike, threads: int = 1,
                  rounds: int = 5, repeats: int = 20, timer: Timer | None = None, *,
                  pairs: bool = True, sessions: int = 1) -> tuple[LatencyTable, dict[str, Deployed], list[Latency]]:
    """`measure_table` and `measure_configs` in one timing phase: the table's variants and every
    config's model (labelled by `config_slug`; a config that is one of the table's variants is that
    variant) timed in the same interleaved rounds, so a slow or a fast spell of the machine shifts the
    table and the configurations alike. `sessions` > 1 times each model in that many sessions of its
    own (`Deployed.with_threads`) and keeps the median one: a runtime session can run a few percent to
    tens of percent faster or slower than another of the same file, for its whole life. Returns the
    table, every deployed model by label (the table's variants and the configs' slugs), and each
    config's timing in order."""
    _check_measure(model, runtime, batch_size, example, calibration, threads, rounds, repeats, timer)
    check_int(OWNER, "sessions", sessions, 1, 100)
    if not isinstance(pairs, bool):
        raise TypeError(f"{OWNER}.pairs={show(pairs)} must be True or False")
    if isinstance(configs, Mapping) or not isinstance(configs, Sequence):
        raise ValueError(f"{OWNER}.configs={show(configs)} must be a list of {{layer: option}} mappings")
    full = [full_config(model, runtime, c) for c in configs]  # every config checked before any export
    options = layer_options(model, runtime)
    variants = {BASE: {}} | {variant_label(layer, o): {layer: o} for layer, opts in options.items()
                             for o in opts if o != "fp32"}
    adjacent = _pair_options(options) if pairs else {}
    variants |= {pair_label(a, o1, b, o2): {a: o1, b: o2} for (a, b), opts in adjacent.items() for o1, o2 in opts}
    table_labels = list(variants)
    by_slug = {config_slug(full_config(model, runtime, c)): label for label, c in variants.items()}
    variants |= {config_slug(c): c for c in full if config_slug(c) not in by_slug}
    deployed, seconds = {}, {}
    for label, config in variants.items():
        start = time.perf_counter()
        deployed[label] = export_config(model, runtime, config, example, calibration, workdir, threads)
        seconds[label] = time.perf_counter() - start
    copies = {f"{label}#{i}": d if i == 0 else d.with_threads(threads) for label, d in deployed.items()
              for i in range(sessions)}
    timed, timing_s = _timed(timer or default_timer(example.shape[1:], threads, rounds, repeats), copies, batch_size)
    timings = {label: _session_median(timed, label, sessions) for label in deployed}
    base = timings[BASE].median_ms
    delta = {layer: {o: 0.0 if o == "fp32" else timings[variant_label(layer, o)].median_ms - base for o in opts}
             for layer, opts in options.items()}
    median = {label: t.median_ms for label, t in timings.items()}
    pair_ms = {pair_key(a, b): {pair_key(o1, o2): median[pair_label(a, o1, b, o2)] - median[variant_label(a, o1)]
                                - median[variant_label(b, o2)] + base for o1, o2 in opts}
               for (a, b), opts in adjacent.items() if opts}
    spread = {label: {k: float(getattr(timings[label], k)) for k in _TIMING_KEYS} for label in table_labels}
    table = LatencyTable(runtime, batch_size, threads, cpu_features(), float(base), delta, spread,
                         {label: seconds[label] for label in table_labels}, timing_s, pair_ms)
    for c in full:  # the configs' slugs name their models too
        deployed.setdefault(config_slug(c), deployed[by_slug.get(config_slug(c), config_slug(c))])
    return table, deployed, [timings[by_slug.get(config_slug(c), config_slug(c))] for c in full]


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
