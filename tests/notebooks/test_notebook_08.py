"""Notebook 08 runs headless in the quick profile and its recorded metrics hold up."""

from __future__ import annotations

import math

import pytest

from compresslab.core.pareto import pareto_front

pytestmark = pytest.mark.notebook


def test_pareto_frontier_quick(run_notebook, png_per_cell):
    run = run_notebook("08_pareto_frontier")
    m = run.results
    assert m["profile"] == "quick" and m["model"] == "lenet300" and m["threads"] == 1
    points = m["points"]
    names = {p["name"] for p in points}
    assert m["n_points"] == len(points) == 25
    assert {"FP32", "BF16", "FP16", "INT8", "INT4 (QAT)", "INT4 (AdaRound)", "INT4 (CLE+BC)", "Sparse VD", "mixed (INT3 size)",
            "mixed (INT4 size)", "ternary", "binary", "Deep Compression",
            "pruned -> INT8", "SVD -> INT8", "binary + distill"} <= names
    by = {p["name"]: p for p in points}
    # every point: accuracy of its artifact, its file's bytes, timings at both batch sizes, MACs and energy
    for p in points:
        assert 0 < p["accuracy"] <= 100 and p["bytes"] > 1000 and p["macs"] > 0 and p["energy_nj"] > 0
        for b in (1, 256):
            assert p[f"ms_b{b}"] > 0 and p[f"ms_b{b}"] == min(v for v in (p[f"ms_torch_b{b}"], p[f"ms_runtime_b{b}"])
                                                             if v is not None)
    # the ladder's bytes follow the bits per weight (FP32 file = 4 bytes per parameter + a small header)
    params = by["FP32"]["params"]
    assert 4 * params < by["FP32"]["bytes"] == m["fp32_file_bytes"] < 4 * params + 1000
    assert by["BF16"]["bytes"] == by["FP16"]["bytes"] < 0.51 * by["FP32"]["bytes"]
    assert by["INT8"]["bytes"] < 0.26 * by["FP32"]["bytes"] and by["INT4 (QAT)"]["bytes"] < 0.13 * by["FP32"]["bytes"]
    assert by["INT4 (AdaRound)"]["bytes"] < 0.13 * by["FP32"]["bytes"]  # the same int4 file layout
    assert by["INT4 (CLE+BC)"]["bytes"] == by["INT4 (AdaRound)"]["bytes"]
    assert by["Sparse VD"]["bytes"] < 0.1 * by["FP32"]["bytes"]  # its own file (notebook 06's format), not a packed one
    # the integer program's choice in one packed file, within the bytes of the uniform width it was given
    assert by["mixed (INT4 size)"]["bytes"] <= by["INT4 (AdaRound)"]["bytes"] + 16  # headers differ by a few digits
    assert by["mixed (INT3 size)"]["bytes"] < by["mixed (INT4 size)"]["bytes"]
    assert by["ternary"]["bytes"] < 0.053 * by["FP32"]["bytes"] and by["binary"]["bytes"] < 0.036 * by["FP32"]["bytes"]
    # half precision: same accuracy to a few test images; measured speed recorded with its reliability flag
    assert abs(m["half_accuracy"]["bf16"] - m["half_accuracy"]["fp32"]) < 0.5
    assert all(v > 0 for v in m["half_speedup_b256"].values()) and isinstance(m["half_timing_reliable"], bool)
    # the recorded frontiers are the frontiers of the recorded points
    for cost, key in (("bytes", "frontier_bytes"), ("ms_b1", "frontier_ms_b1"), ("ms_b256", "frontier_ms_b256"),
                      ("energy_nj", "frontier_energy")):
        expected = [points[i]["name"] for i in pareto_front(points, maximize=["accuracy"], minimize=[cost])]
        assert m[key] == expected
    # energy: a model; no counters on this machine unless RAPL exists; DRAM-bound FP32 costs the most
    assert by["FP32"]["energy_nj"] == max(p["energy_nj"] for p in points)
    assert isinstance(m["rapl_available"], bool)
    # the targets are recorded (checked in the full profile); the dominance finding is a sentence
    assert set(m["targets"]) == {"40x smaller within 0.5 points", "3x faster at batch 256 within 0.5 points"}
    # the smallest file within 0.5 points of dense, found again by brute force over the recorded points
    near = [p for p in points if p["accuracy"] >= m["dense_accuracy"] - 0.5]
    assert m["smallest_near_dense"]["name"] == min(near, key=lambda p: (p["bytes"], p["name"]))["name"]
    assert isinstance(m["dominance"], str) and m["dominance"]
    assert set(m["combinations_beating_singles"]) <= {p["name"] for p in points if p["family"] == "combination"}
    assert m["budget"]["pick"] in names | {"none"}
    assert not math.isnan(m["run_seconds"])
    # figures: the four frontiers and the budget view
    assert sum(png_per_cell(run.output)) >= 2
