"""A recipe's result as a point: its real artifact, the runtime that executes it, timings, energy.

`build(recipe, model, data, ...)` runs the recipe, writes its artifact (the Deep Compression file,
or a `packedfile` at the recipe's precision, sparse when asked) and loads the weights back from it,
so every accuracy is the accuracy of what the file holds. It exports the loaded model to a runtime
(`deploy.adapter(runtime)`: static INT8 for int8 recipes, FP32 otherwise) for the fast path.
Accuracy of a point: the runtime's for int8 recipes (activations in int8 too), PyTorch's otherwise
(bf16 / fp16 computed in that dtype).

`time_points` times PyTorch eager and the runtime of every point in interleaved rounds
(`latency.latency_rounds`); `rows` turns everything into one flat table row per point, with the
energy estimate of `core.energy` (executed MACs: non-zero weights only, as a zero-skipping
accelerator would; weight reads: the artifact's bytes, from SRAM when it fits in `sram_bytes`).
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from compresslab.combine.recipes import Recipe, run_recipe
from compresslab.core import energy, latency, metrics
from compresslab.core.data import Dataset
from compresslab.core.latency import Latency, time_ratio
from compresslab.core.models import prepare_model, prunable_layers
from compresslab.core.report import Report
from compresslab.core.training import evaluate
from compresslab.deploy import base, bench
from compresslab.techniques import packedfile
from compresslab.techniques.lowbitops import half_copy
from compresslab.techniques.registry import verbs

__all__ = ["Built", "executed_macs", "build", "time_points", "rows", "wins_at_size", "RUN_POINT_KEYS",
           "points_from_runs"]


@dataclass
class Built:
    """One recipe's result: the loaded model, what PyTorch runs, the deployed runtime model, the
    artifact's bytes and the accuracies (percent)."""

    recipe: Recipe
    model: nn.Module
    torch_fn: nn.Module
    deployed: object | None
    path: Path | None
    bytes: int
    runtime_bytes: int | None
    accuracy: float
    torch_accuracy: float
    runtime_accuracy: float | None
    macs: int
    macs_executed: float
    seconds: float
    reports: list[Report] = field(default_factory=list)


def executed_macs(model: nn.Module, input_shape: Sequence[int]) -> tuple[int, float]:
    """(dense MACs per example, MACs of the non-zero weights: each layer's MACs times its density)."""
    per_layer = metrics.macs(model, input_shape)
    executed = 0.0
    for name, layer in prunable_layers(model).items():
        w = layer.weight.detach()
        executed += per_layer[name] * float((w != 0).float().mean())
    return per_layer["total"], executed


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).strip("_")


def _accuracy(fn: Callable, data: Dataset) -> float:
    logits = bench.logits_of(fn, data.test)
    return 100.0 * int((logits.argmax(1) == data.test.labels).sum()) / len(data.test)


def build(recipe: Recipe, model: nn.Module, data: Dataset, workdir: str | os.PathLike, *,
          runtime: str | None = "onnxruntime", calibration: torch.Tensor | None = None,
          progress: bool | None = None) -> Built:
    """Run `recipe` on `model`, write its artifact into `workdir`, load it back, deploy it to `runtime`
    (None: PyTorch only) and score it on data.test."""
    start = time.perf_counter()
    folder = Path(workdir) / _slug(recipe.name)
    folder.mkdir(parents=True, exist_ok=True)
    final, reports, dc_file = run_recipe(recipe, model, data, progress=progress, workdir=folder)
    if recipe.steps and verbs()[recipe.steps[-1].verb].writes_file:  # the step wrote its own file (Deep Compression's)
        path, nbytes, loaded = dc_file, int(reports[-1].file_bytes), final
    else:
        path = folder / "weights.clpk"
        nbytes = packedfile.save_model(final, path, recipe.precision, sparse=recipe.sparse)
        loaded = packedfile.unpack_into(copy.deepcopy(final), packedfile.read(path)).eval()
    loaded = prepare_model(loaded)  # the workbook's one layout: convnets compute on channels_last weights
    torch_fn = half_copy(loaded, recipe.precision) if recipe.precision in ("bf16", "fp16") else loaded
    torch_acc = evaluate(torch_fn, data.test).accuracy
    deployed, runtime_bytes, runtime_acc = None, None, None
    if runtime is not None:
        example = data.test.tensors(limit=2)[0]
        precision = "int8" if recipe.precision == "int8" else "fp32"
        deployed = base.adapter(runtime).export(
            base.plain_copy(loaded), example, base.DeployOptions(precision=precision, threads=1), calibration,
            folder / runtime)
        runtime_bytes, runtime_acc = deployed.file_bytes, _accuracy(deployed, data)
    macs, executed = executed_macs(loaded, tuple(data.input_shape))
    accuracy = runtime_acc if recipe.precision == "int8" and runtime_acc is not None else torch_acc
    return Built(recipe, loaded, torch_fn, deployed, path, nbytes, runtime_bytes, accuracy, torch_acc, runtime_acc,
                 macs, executed, time.perf_counter() - start, reports)


def time_points(built: Sequence[Built], batch_sizes: Sequence[int] = (1, 256), rounds: int = 3,
                repeats: int = 10, threads: int = 1, min_seconds: float = 0.0,
                input_shape: Sequence[int] = (1, 28, 28)) -> dict[tuple[str, str, int], Latency]:
    """Median / p10 / p90 ms of every point in PyTorch ("torch") and in its runtime ("runtime"),
    interleaved round by round; keys (recipe name, engine, batch)."""
    variants: dict[str, Callable] = {}
    for b in built:
        variants[f"{b.recipe.name}\ttorch"] = b.torch_fn
        if b.deployed is not None:
            variants[f"{b.recipe.name}\truntime"] = b.deployed
    lat = latency.latency_rounds(variants, rounds=rounds, batch_sizes=tuple(batch_sizes),
                                 input_shape=tuple(input_shape), repeats=repeats, warmup=2, threads=threads,
                                 min_seconds=min_seconds)
    out = {}
    for row in lat:
        name, engine = row.label.split("\t")
        out[(name, engine, row.batch_size)] = row
    return out


def rows(built: Sequence[Built], timings: Mapping[tuple[str, str, int], Latency], reference_bytes: float,
         sram_bytes: float = 64 * 1024, batch_sizes: Sequence[int] = (1, 256), runtime: str = "runtime") -> list[dict]:
    """One flat row per point: accuracy (%), bytes, compression vs `reference_bytes`, MACs, energy
    (nJ, estimated), and per batch b: ms_torch_b, ms_runtime_b, their p10 / p90, and ms_b / engine_b /
    spread_b of the faster engine."""
    out = []
    for b in built:
        r = b.recipe
        est = energy.estimate_energy(b.macs_executed, b.bytes, compute=r.precision, sram_bytes=sram_bytes)
        row = {"name": r.name, "family": r.family, "verbs": r.verbs, "precision": r.precision,
               "accuracy": b.accuracy, "torch_accuracy": b.torch_accuracy, "runtime_accuracy": b.runtime_accuracy,
               "bytes": b.bytes, "runtime_bytes": b.runtime_bytes, "compression": reference_bytes / b.bytes,
               "params": metrics.parameter_count(b.model), "nonzeros": metrics.size_report(b.model).nonzeros,
               "macs": b.macs, "macs_executed": b.macs_executed, "energy_nj": est.total_nj,
               "energy_compute_nj": est.compute_nj, "energy_memory_nj": est.memory_nj, "weights_from": est.memory,
               "seconds": b.seconds}
        for batch in batch_sizes:
            best = None
            for engine in ("torch", "runtime"):
                t = timings.get((r.name, engine, batch))
                row[f"ms_{engine}_b{batch}"] = None if t is None else t.median_ms
                row[f"p10_{engine}_b{batch}"] = None if t is None else t.p10_ms
                row[f"p90_{engine}_b{batch}"] = None if t is None else t.p90_ms
                if t is not None and (best is None or t.median_ms < best[1].median_ms):
                    best = (engine, t)
            row[f"ms_b{batch}"] = None if best is None else best[1].median_ms
            row[f"engine_b{batch}"] = None if best is None else ("PyTorch" if best[0] == "torch" else runtime)
            row[f"spread_b{batch}"] = None if best is None else time_ratio(best[1].p90_ms, best[1].p10_ms)
        out.append(row)
    return out


def wins_at_size(points: Sequence[Mapping], winners: Sequence[str] = ("combination",),
                 others: Sequence[str] = ("single", "precision")) -> list[dict]:
    """For each point of a `winners` family: the most accurate point of the `others` families that is
    no larger (bytes), and whether the winner beats it, i.e. beats every such point at its size
    (beats_all is False when no point of `others` is that small: nothing to beat; `unmatched` says so).

    >>> pts = [{"name": "c", "family": "combination", "accuracy": 98.0, "bytes": 100},
    ...        {"name": "s1", "family": "single", "accuracy": 97.0, "bytes": 90},
    ...        {"name": "s2", "family": "single", "accuracy": 98.5, "bytes": 1000}]
    >>> [(w["name"], w["best_other"], w["beats_all"]) for w in wins_at_size(pts)]
    [('c', 's1', True)]
    """
    out = []
    for p in points:
        if p["family"] not in winners:
            continue
        rivals = [q for q in points if q["family"] in others and q["bytes"] <= p["bytes"]]
        best = max(rivals, key=lambda q: q["accuracy"], default=None)
        out.append({"name": p["name"], "bytes": p["bytes"], "accuracy": p["accuracy"],
                    "best_other": None if best is None else best["name"],
                    "best_other_accuracy": None if best is None else best["accuracy"],
                    "best_other_bytes": None if best is None else best["bytes"],
                    "margin_points": None if best is None else p["accuracy"] - best["accuracy"],
                    "beats_all": best is not None and p["accuracy"] > best["accuracy"], "unmatched": best is None})
    return out


# (accuracy metric in percent, size metric) that recorded runs use for one point each
RUN_POINT_KEYS = (("point_accuracy", "point_bytes"),  # Report.record (every apply_* report)
                  ("loaded_accuracy", "file_bytes"))  # notebook 06 (Deep Compression's file)


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return None
    return float(value)


def points_from_runs(directory: str | os.PathLike, family: str = "recorded") -> list[dict]:
    """Points from every results file below `directory` (as `results.load_runs` finds them): a run
    that recorded a list of points (notebook 08) gives each of them, named '<run>: <name>'; any other
    run gives one point from its recorded accuracy and size (RUN_POINT_KEYS). Unreadable files are
    skipped with a warning; runs without an accuracy and a positive size are left out."""
    import warnings

    from compresslab.core import results

    root = Path(directory)
    out = []
    for path in sorted(root.rglob(f"*{results.SUFFIX}")):
        try:
            payload = results.read(path)
        except ValueError as err:
            warnings.warn(f"skipping {err}", stacklevel=2)
            continue
        run = str(path.parent.relative_to(root)) if path.parent != root else path.name[:-len(results.SUFFIX)]
        m = payload["metrics"]
        if isinstance(m.get("points"), list):
            for p in m["points"]:
                acc, size = _number(p.get("accuracy")), _number(p.get("bytes"))
                if acc is not None and size is not None and size > 0:
                    out.append({**p, "name": f"{run}: {p.get('name', '?')}", "family": family})
            continue
        for acc_key, size_key in RUN_POINT_KEYS:
            acc, size = _number(m.get(acc_key)), _number(m.get(size_key))
            if acc is not None and size is not None and size > 0:
                out.append({"name": f"{payload['notebook']} {run}", "family": family, "verbs": "recorded run",
                            "precision": "recorded", "accuracy": acc, "bytes": size,
                            "ms_b1": _number(m.get("point_latency_ms"))})
                break
    return out
