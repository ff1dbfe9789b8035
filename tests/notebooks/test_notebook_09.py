"""Notebook 09 runs headless in the quick profile and its recorded metrics hold up."""

from __future__ import annotations

import math

import pytest

pytestmark = pytest.mark.notebook


def test_language_model_quick(run_notebook, png_per_cell):
    run = run_notebook("09_language_model")
    m = run.results
    assert m["profile"] == "quick" and m["threads"] == 1
    assert len(m["corpus_sha256"]) == 64 and m["python"].count(".") == 2
    # a learned model: well below 8 bits per byte (uniform over 256 bytes), above 0
    assert 0 < m["baseline_bpb"] < 7.0
    # the grid: every (method, bits, group size) of the parameters, each with a finite bpb and a real file
    quant = m["quant"]
    assert set(quant) == {f"{meth}_int{b}_g{g}" for meth in ("rtn", "gptq") for b in (8, 4, 3) for g in (0, 128, 32, 16)}
    for key, row in quant.items():
        assert math.isfinite(row["bpb"]) and 0 < row["file_bytes"] < m["fp32_bytes"], key
    # fewer bits, smaller file; INT8 close to FP32 even in the quick profile
    assert quant["rtn_int4_g32"]["file_bytes"] < quant["rtn_int8_g32"]["file_bytes"]
    assert quant["rtn_int3_g32"]["file_bytes"] < quant["rtn_int4_g32"]["file_bytes"]
    assert m["int8_max_increase"] < 0.05
    # the oracle of the hand-worked layer: GPTQ's output error never exceeds RTN's
    assert m["gptq_layer_error"] <= m["rtn_layer_error"]
    # INT4 with groups of 32 and 16: both increases recorded
    assert set(m["int4_small_group"]) == {"32", "16"}
    # pruning at 50% and 2:4 recorded; the ONNX FP32 export computes the same model
    assert m["prune_sparsity"] == pytest.approx(0.5)
    assert abs(m["ort_fp32_bpb"] - m["baseline_bpb"]) < 1e-3
    assert m["ort_int8_bytes"] < 0.5 * m["ort_fp32_bytes"]
    assert all(v > 0 for v in m["tokens_per_s"].values()) and isinstance(m["timing_reliable"], bool)
    assert m["student_params"] < m["n_params"]
    assert m["samples_deterministic"] and m["greedy_deterministic"] and m["n_samples"] >= 10
    assert m["frontier"] and m["n_points"] >= 30
    # figures: training curve, group-size sweep, channel maxima, the panel's static view
    assert sum(png_per_cell(run.output)) == 4
