"""Notebook 07 runs headless in the quick profile and its recorded metrics hold up."""

from __future__ import annotations

import math

import pytest

from compresslab.deploy import base

pytestmark = pytest.mark.notebook


def test_deployment_quick(run_notebook, png_per_cell):

    run = run_notebook("07_deployment")
    m = run.results
    assert m["profile"] == "quick" and m["headline"] == "lenet5"
    # runtimes: what is installed here was used, the rest is reported in one sentence
    status = base.available(["onnxruntime", "openvino", "executorch", "litert", "coreml", "tensorrt"])
    assert set(m["runtimes_used"]) == {k for k, v in status.items() if v is None}
    assert all(isinstance(v, str) and "\n" not in v for v in m["runtimes_missing"].values())
    # the QDQ arithmetic by hand equals ONNX Runtime's first layer
    assert m["qdq_first_layer_gap"] is not None and m["qdq_first_layer_gap"] < 1e-3
    # what a CPU without VNNI's saturating kernel computes, by hand; measured there too
    assert m["qdq_saturated_gap"] is not None and m["qdq_saturated_gap"] >= 0
    no_vnni = m["cpu"]["avx2"] and not m["cpu"]["vnni"]
    assert (m["qdq_fast_kernel_gap"] is not None) == bool(no_vnni)
    # every FP32 export reproduces PyTorch's logits; every row was scored and timed
    assert m["max_fp32_logit_diff"] < 1e-4
    rows = m["table"]
    assert {r["arch"] for r in rows} == {"lenet300", "lenet5"}
    for r in rows:
        assert r["bytes"] > 10_000 and 0 < r["accuracy"] <= 100
        for b in (1, 256):
            assert r[f"ms b{b} t1"] > 0 and r[f"p10 b{b} t1"] <= r[f"p90 b{b} t1"]
        if r["precision"] == "fp32":
            assert r["agreement"] == 100.0
        if r["precision"] == "int8":
            assert r["agreement"] > 97 and r["bytes"] < 0.3 * 1_069_000 * (1.62 if r["arch"] == "lenet5" else 1)
    # INT8 speed: recorded with its reliability flag (asserted only in the full profile, when quiet)
    for arch in ("lenet300", "lenet5"):
        assert m["int8_vs_eager_b256_t1"][arch] > 0 and isinstance(m["speed_claims_reliable"][arch], bool)
        assert m["int8_agreement"][arch] > 97
    # zeros are not bytes: the pruned model's runtime files are as big as the dense ones; gzip sees the zeros
    assert m["pruned_bytes_ratio"] == pytest.approx(1.0, abs=1e-3)
    assert m["pruned_gzip_ratio"] < 0.5
    models = {r["model"] for r in m["compressed_table"]}
    assert models == {"dense", "pruned", "structured", "low-rank", "distilled", "Deep Compression"}
    # drift: the monitor fires after the shift, not on the clean inputs
    for d in m["drift"]:
        assert d["first alarm at input"] is not None and d["inputs after the shift"] >= 0
        assert d["false alarm on clean inputs"] is False
    assert all(v > 0 for v in m["confidence_drop"].values())
    if "coreml" in m["runtimes_used"]:
        sizes = {r["Core ML model"]: r["bytes"] for r in m["coreml"]}
        assert sizes["4-bit palette"] < sizes["8-bit linear"] < sizes["fp32"]
    assert not math.isnan(m["run_seconds"])
    # figures: latency per architecture (2), multi-thread, size/accuracy, zeros, drift, confidence, panel view
    assert sum(png_per_cell(run.output)) >= 7
