"""Notebook 03 runs headless in the quick profile and its recorded metrics hold up."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.notebook


def test_ptq_vs_qat_quick(run_notebook, png_per_cell):
    run = run_notebook("03_ptq_vs_qat")
    m = run.results
    assert sum(png_per_cell(run.output)) >= 15  # fourteen figures and the headless quantization panel, each rendered as an image
    assert m["profile"] == "quick" and m["model"] == "lenet5" and m["dataset"] == "fashion_mnist"
    assert 70 < m["fp32_accuracy"] <= 100  # 8k images, 2 epochs: a sane floor, not the full number
    # 8-bit PTQ is nearly lossless even on a short-trained model
    assert m["ptq_int8_drop_points"] < 1.5
    # accuracy falls as bits drop, for every observer (a little noise allowed between neighbours)
    ptq = m["ptq_accuracy"]
    for kind in ("minmax", "percentile", "mse"):
        assert ptq[f"{kind}_8bit"] >= ptq[f"{kind}_2bit"] - 1
    # QAT fine-tuning does not lose to its own PTQ starting point at the lowest width
    assert m["qat_lowest_accuracy"] >= m["ptq_accuracy"][f"mse_{m['lowest_bits']}bit"] - 1
    # 4-bit weights (+ per-channel scales, float biases) are 6-8x smaller than FP32
    assert 6 < m["compression_4bit_x"] < 8
    # the real INT8 model: compiled, close to the simulation, about 4x smaller weights
    assert m["int8_compiled"] is True
    assert abs(m["real_vs_simulated_points"]) < 1.5 and m["real_vs_simulated_agreement"] > 0.97
    assert abs(m["int8_accuracy"] - m["fp32_accuracy"]) < 1.5  # points
    assert 3.0 < m["int8_size_reduction_x"] < 4.0
    for key in ("speedup_int8_vs_fair_b1", "speedup_int8_vs_fair_b256", "speedup_int8_vs_eager_b256"):
        assert m[key] > 0
    assert m["threads"] >= 1
    # the speed claim is asserted only on a quiet measurement; the accuracy change carries its interval
    assert isinstance(m["timing_reliable"], bool)
    assert m["acc_change_ci_low"] <= m["acc_change_ci_high"]
    # AdaRound vs round to nearest on the same grid (weights 4/3/2-bit, activations 8-bit), in percent
    ada, rtn = m["adaround_accuracy"], m["adaround_rtn_accuracy"]
    assert set(ada) == set(rtn) == {"4bit", "3bit", "2bit"}
    assert all(0 <= v <= 100 for v in (*ada.values(), *rtn.values()))
    for key in ada:
        assert m["adaround_gain_points"][key] == ada[key] - rtn[key]
        assert m["adaround_gain_ci_low"][key] <= m["adaround_gain_ci_high"][key]
        # what AdaRound minimises: the layers' output error on the calibration images falls below RTN's
        assert 0 < m["adaround_output_error_ratio"][key] < 1
    # the accuracy follows at the low widths; margin 2 points, about 3 standard errors of a paired
    # difference on the 1000 quick-profile test images
    assert ada["3bit"] >= rtn["3bit"] - 2 and ada["2bit"] >= rtn["2bit"] - 2
    assert m["adaround_iterations"] <= 100 and m["adaround_seconds"] > 0  # the quick profile stays quick
    # data-free quantization of the depthwise-separable net (per-tensor weights, 8-bit activations)
    assert m["dfq_model"] == "dsnet" and 40 < m["dfq_fp32_accuracy"] <= 100
    assert m["dfq_fp32_change"] < 1e-3 and m["dfq_fold_change"] < 1e-3  # the FP32 function is unchanged
    dfq = m["dfq_accuracy"]
    assert {k.split("_")[0] for k in dfq} == {"RTN", "CLE", "BC", "CLE+BC"}
    assert all(0 <= v <= 100 for v in dfq.values())
    for key, gain in m["dfq_cle_bc_gain_points"].items():  # recorded gains are the differences of recorded accuracies
        assert gain == pytest.approx(dfq[f"CLE+BC_{key}"] - dfq[f"RTN_{key}"], abs=1e-6)
        assert m["dfq_cle_bc_gain_ci"][key][0] <= gain <= m["dfq_cle_bc_gain_ci"][key][1]
    # equalization evens the channel ranges: the most uneven layer (max / median channel range) gets evener
    assert max(m["dfq_range_ratio_equalized"].values()) <= max(m["dfq_range_ratio_folded"].values())
    assert set(m["lenet_cle_bc_accuracy"]) == {"4bit", "3bit", "2bit"}
    # the same net per channel: RTN, CLE+BC and AdaRound at 4 and 3 bits, gains with their intervals
    per_channel = m["dsnet_perchannel_accuracy"]
    assert {k.rsplit("_", 1)[0] for k in per_channel} == {"RTN", "CLE+BC", "AdaRound"}
    for key, gain in m["dsnet_adaround_gain_points"].items():
        assert gain == pytest.approx(per_channel[f"AdaRound_{key}"] - per_channel[f"RTN_{key}"], abs=1e-6)
        low, high = m["dsnet_adaround_gain_ci"][key]
        assert low <= gain <= high
