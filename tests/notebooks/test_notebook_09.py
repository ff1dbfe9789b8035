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
    # KL(p_fp32 || p_variant): an identical copy is exactly 0 away, every variant >= 0 (up to rounding),
    # INT3 moves the distribution far more than INT8, and GPTQ less than RTN where RTN's error is large
    assert m["fp32_copy_kl"] == 0.0 and m["kl_by_hand"] > 0
    kls = {**{k: row["kl"] for k, row in quant.items()}, **m["kl"]}
    assert all(math.isfinite(v) and v >= -1e-12 for v in kls.values()), kls
    assert quant["rtn_int3_g0"]["kl"] > 10 * quant["rtn_int8_g0"]["kl"]
    assert quant["gptq_int3_g0"]["kl"] < quant["rtn_int3_g0"]["kl"]
    assert m["kl"]["ORT FP32"] < 1e-6 and m["kl"]["ORT INT8 dynamic"] > m["kl"]["ORT FP32"]
    assert 0 <= m["kl_disagreeing_pairs"] <= len(quant) * (len(quant) - 1) // 2
    # the oracle of the hand-worked layer: GPTQ's output error never exceeds RTN's
    assert m["gptq_layer_error"] <= m["rtn_layer_error"]
    # INT4 with groups of 32 and 16: both increases recorded
    assert set(m["int4_small_group"]) == {"32", "16"}
    # AWQ at INT4 / INT3 with groups of 32 and 128: a real file a little larger than RTN's (the mlp.proj
    # input scales), the hand-worked layer's search never worse than RTN (alpha = 0 is on the grid)
    assert set(m["awq"]) == {f"awq_int{b}_g{g}" for b in (4, 3) for g in (32, 128)}
    for key, row in m["awq"].items():
        rtn_row = quant[key.replace("awq", "rtn")]
        assert math.isfinite(row["bpb"]) and row["kl"] >= 0, key
        assert rtn_row["file_bytes"] < row["file_bytes"] < m["fp32_bytes"], key
        assert row["rtn_increase"] == pytest.approx(rtn_row["bpb"] - m["baseline_bpb"])
        assert 0 <= row["layer_gain"] < 1, key  # alpha = 0 is on the grid: never worse per layer than RTN
        assert math.isfinite(row["scales_increase"]) and row["scales_kl"] >= 0 and 0 <= row["clipped_groups"] <= 1, key
        assert row["clip_layer_gain"] < 1, key
    assert m["awq_layer_error"] <= m["awq_layer_rtn_error"] and 0 <= m["awq_layer_alpha"] <= 1
    # clipping on the hand-worked layer (groups of 128 = its 128 inputs, one group per row): r = 1 is on the
    # grid and the group errors add up to the layer's, so scales + clipping never lose to the scales alone
    assert m["awq_layer_clip_error"] <= m["awq_layer_error"] * (1 + 1e-9) and 0 <= m["awq_layer_clip_share"] <= 1
    g128 = m["awq"]["awq_int4_g128"]
    assert g128["increase"] <= g128["rtn_increase"] + 0.005
    # AWQ minus RTN at INT4 g128, window by window: the mean difference is the difference of the increases
    diff = m["awq_int4_g128_minus_rtn"]
    assert diff["low"] <= diff["delta"] <= diff["high"]
    assert diff["delta"] == pytest.approx(g128["increase"] - g128["rtn_increase"], abs=1e-6)
    # KV cache: bytes per token by hand (layers x keys and values x (d_model codes x b / 8 + 3 bytes per head)),
    # INT8 within 0.01 bits per byte of FP32, and its logits on the FP32 text within 2% of the largest logit
    kv, gen = m["kv"], m["kv_generation"]
    d_model, n_head, n_layer = 128, 4, 1  # the quick profile's GPT
    assert m["kv_fp32_bytes_per_token"] == n_layer * 2 * d_model * 4 == gen["FP32"]["bytes_per_token"]
    for b in (8, 4):
        assert kv[f"INT{b}"]["bytes_per_token"] == n_layer * 2 * (d_model * b // 8 + 3 * n_head)
        assert gen[f"INT{b}"]["bytes_per_token"] == kv[f"INT{b}"]["bytes_per_token"]
    assert abs(kv["INT8"]["increase"]) < 0.01 and 0 <= kv["INT8"]["kl"] < kv["INT4"]["kl"]
    assert gen["FP32"]["max_logit_change"] == 0 and gen["INT8"]["max_logit_change"] < 0.02 * m["kv_max_logit"]
    # the new methods' targets are recorded as verdicts (asserted above where the quick profile holds them)
    assert len(m["targets"]) == 3 and all(isinstance(v, bool) for v in m["targets"].values())
    # pruning at 50% and 2:4 recorded; the ONNX FP32 export computes the same model
    assert m["prune_sparsity"] == pytest.approx(0.5)
    # SparseGPT: the same sparsity; on the hand-worked layer its output error is below magnitude's and
    # Wanda's (2:4); the whole model at 2:4 no worse than magnitude or Wanda (quick: a 0.01 margin)
    assert m["sparsegpt_sparsity"] == pytest.approx(0.5)
    assert m["sparsegpt_layer_error"] <= min(m["magnitude_24_layer_error"], m["wanda_24_layer_error"])
    assert m["sparsegpt_24_bpb"] <= min(m["magnitude_24_bpb"], m["wanda_24_bpb"]) + 0.01
    assert {"sparsegpt 50%", "sparsegpt 2:4"} <= set(m["kl"])
    assert abs(m["ort_fp32_bpb"] - m["baseline_bpb"]) < 1e-3
    assert m["ort_int8_bytes"] < 0.5 * m["ort_fp32_bytes"]
    assert all(v > 0 for v in m["tokens_per_s"].values()) and isinstance(m["timing_reliable"], bool)
    assert m["student_params"] < m["n_params"]
    assert m["samples_deterministic"] and m["greedy_deterministic"] and m["n_samples"] >= 10
    assert m["frontier"] and m["n_points"] >= 30
    # figures: training curve, group-size sweep, AWQ's alpha search, channel maxima, the panel's static view
    assert sum(png_per_cell(run.output)) == 5
