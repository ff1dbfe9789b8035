"""Notebook 05 runs headless in the quick profile and its recorded metrics hold up."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.notebook

FC = {"fc1": (1200, 784), "fc2": (1200, 1200)}  # mlp1200's factorized layers (out, in)
FC3 = 1200 * 10 + 10  # the classifier stays dense


def test_svd_factorization_quick(run_notebook, png_per_cell):

    run = run_notebook("05_svd_factorization")
    m = run.results
    per_cell = png_per_cell(run.output)
    # seven figures (spectra, error vs params, latency vs rank, speed bars, conv, tensor-decomposition speed
    # bars, the panel's view), each once
    assert max(per_cell) == 1 and sum(per_cell) == 7
    assert m["profile"] == "quick" and m["model"] == "mlp1200"
    ranks = m["ranks"]
    assert set(ranks) == set(FC)
    for name, (out, inp) in FC.items():
        assert 1 <= ranks[name] < out * inp / (out + inp) == pytest.approx(m["break_even_ranks"][name])
    # parameters and MACs follow from the ranks: r (m + n) + bias per factorized layer
    factorized = sum(r * sum(FC[n]) + FC[n][0] for n, r in ranks.items()) + FC3
    assert m["fc_params_factorized"] == m["params_factorized"] == factorized
    assert m["fc_params_dense"] == 2_395_210
    assert factorized - FC3 - 2 * 1200 <= 0.1 * (1200 * 784 + 1200 * 1200)  # param_ratio=0.1 budget kept
    assert m["fc_param_reduction"] == pytest.approx(1 - factorized / 2_395_210)
    dense_macs = 1200 * 784 + 1200 * 1200 + 1200 * 10
    assert m["macs_reduction_x"] == pytest.approx(dense_macs / (factorized - 2 * 1200 - 10))
    assert m["eckart_young_max_gap"] < 1e-4
    # accuracy: sane floors for 8k images and 1 epoch, not the full-profile target
    assert 80 < m["dense_accuracy"] <= 100
    assert m["truncated_accuracy"] > m["dense_accuracy"] - 10
    assert m["finetuned_accuracy"] > m["truncated_accuracy"] - 1
    assert m["energy_accuracy"] > m["dense_accuracy"] - 5
    for key in ("speedup_b1", "speedup_b256"):
        assert m[key] > 0
    assert isinstance(m["timing_reliable"], bool)
    if m["timing_reliable"] and m["profile"] == "full":  # a speed claim only on a quiet measurement
        assert m["speedup_b256"] > 1.0
    # the accuracy change of the headline model comes with its paired-bootstrap interval
    assert m["acc_change_ci_low"] <= m["finetuned_accuracy"] - m["dense_accuracy"] <= m["acc_change_ci_high"]
    # a measured timing: only its form is checked (timings are reported, not asserted)
    assert m["layer_crossover_b256"] is None or 1 <= m["layer_crossover_b256"] <= 1200
    # LeNet-5 conv2 at rank 8, channel split: 8 (20*5*5 + 50) weights + 50 biases
    assert m["conv_params_reduction"] == pytest.approx(1 - (8 * 550 + 50) / 25_050)
    assert m["conv_truncated_accuracy"] > 50 and m["conv_finetuned_accuracy"] > 50
    # Tucker-2 and CP against the spatial split at one weight budget (a quarter of each conv's weights)
    td = m["tensor_decomposition"]
    assert set(td) == {f"{net}/{mode}" for net in ("lenet5", "small_cnn") for mode in ("spatial", "tucker2", "cp")}
    for key, row in td.items():
        assert row["conv_params_after"] <= 0.25 * row["conv_params_before"] + 200, key  # + biases
        assert 0 <= row["rel_error"] < 1, key
        assert row["finetuned_accuracy"] > 50, key
        assert row["acc_change_ci_low"] <= row["acc_change_points"] <= row["acc_change_ci_high"], key
        assert row["speedup_b1"] > 0 and row["speedup_batch"] > 0, key
    assert isinstance(m["tensor_timing_reliable"], bool)
