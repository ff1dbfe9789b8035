"""Notebook 11 runs headless in the quick profile and its recorded metrics hold up."""

from __future__ import annotations

import itertools

import pytest

pytestmark = pytest.mark.notebook

LENET5_WEIGHTS = {"conv1": 20 * 25, "conv2": 50 * 20 * 25, "fc1": 800 * 500, "fc2": 500 * 10}
CHANNELS = {"conv1": 20, "conv2": 50, "fc1": 500, "fc2": 10}
BITS = {"int8": 8, "int4": 4, "int3": 3, "int2": 2}


def _layer_bytes(layer: str, kind: str) -> int:
    """Codes at b bits (whole bytes), one FP32 scale and one FP32 bias per output channel."""
    return (LENET5_WEIGHTS[layer] * BITS[kind] + 7) // 8 + 8 * CHANNELS[layer]


def test_mixed_precision_quick(run_notebook, png_per_cell):
    run = run_notebook("11_mixed_precision")
    m = run.results
    assert sum(png_per_cell(run.output)) >= 6  # heat maps, proxy ranks, frontiers, latency scatter, the panel
    assert m["profile"] == "quick" and m["model"] == "lenet5" and m["layers"] == list(LENET5_WEIGHTS)
    assert m["weights"] == LENET5_WEIGHTS
    # one row per layer and option; int8 barely moves a layer, the harshest options move it most
    rows = m["sensitivity"]
    assert len(rows) == 4 * 9 and all(r["kl"] >= 0 for r in rows)
    for layer in LENET5_WEIGHTS:
        kl = {r["option"]: r["kl"] for r in rows if r["layer"] == layer}
        assert kl["int8"] < kl["int4"] < kl["int2"] and kl["int8"] < 1e-3
    # Hutchinson's estimate written out equals the package's; traces of a trained net are positive here
    assert m["hutchinson_by_hand"] == pytest.approx(m["traces"]["conv1"]["trace"], rel=1e-4)
    assert all(t["n"] == LENET5_WEIGHTS[name] for name, t in m["traces"].items())
    for rho, low, high in m["proxy_correlations"].values():
        assert -1 <= low <= rho <= high <= 1
    # sizes: each uniform file holds its layers' bytes by hand plus one header
    for kind, u in m["uniform"].items():
        assert u["layer_bytes"] == sum(_layer_bytes(layer, kind) for layer in LENET5_WEIGHTS)
        assert 0 < u["bytes"] - u["layer_bytes"] < 2000
    # the program never exceeds its budget, and the frontier's bytes grow with its predicted KL falling
    for kind, a in m["at_size"].items():
        assert sum(_layer_bytes(layer, k) for layer, k in a["config"].items()) <= m["uniform"][kind]["layer_bytes"]
        assert a["gain_ci_low"] <= a["gain"] <= a["gain_ci_high"]
    frontier = sorted(m["mixed_frontier"], key=lambda p: p["bytes"])
    assert all(a["kl_sum"] >= b["kl_sum"] - 1e-12 for a, b in itertools.pairwise(frontier))
    # accuracy-aware tuning: at most layers + 1 evaluations, and it stops once the floor holds
    tuning = m["tuning"]
    assert 1 <= tuning["evaluations"] <= len(LENET5_WEIGHTS) + 1
    assert tuning["met"] == (m["fp32_val_accuracy"] - tuning["val_accuracy"] <= tuning["max_drop"])
    # latency tables: threads and CPU recorded, the FP32 entries are zero, errors are finite
    ort = m["runtimes"]["onnxruntime"]
    for table in ort["tables"].values():
        assert table["threads"] == 1 and "avx2" in table["cpu"]
        assert all(row["fp32"] == 0 for row in table["delta_ms"].values())
        assert "int4" not in table["delta_ms"]["conv1"] and "int4" in table["delta_ms"]["fc1"]
    assert all(abs(e) < 10 for errors in ort["errors"].values() for e in errors)
    for choice in m["latency_choice"].values():
        assert choice["timed"] >= 2 and choice["feasible"] <= choice["timed"]
        assert choice["meets"] == (choice["measured_ms"] <= choice["budget_ms"])
    assert m["seconds"] < 600
