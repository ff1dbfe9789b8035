"""Notebook 10 runs headless in the quick profile and its recorded metrics hold up."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.notebook

LENET300_PARAMS = 784 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10
LENET300_WEIGHTS = 784 * 300 + 300 * 100 + 100 * 10


def test_learned_sparsity_quick(run_notebook, png_per_cell):
    run = run_notebook("10_learned_sparsity")
    m = run.results
    assert sum(png_per_cell(run.output)) >= 4  # history, histograms, comparison and the headless panel view
    assert m["profile"] == "quick" and m["model"] == "lenet300"
    # the file loads back bit-exactly, with exactly the accuracy of the quantized model in memory
    assert m["bit_exact"] is True and m["reload_exact"] is True
    assert m["loaded_accuracy"] == m["shared_accuracy"]
    # sizes: against dense FP32, from the file's own bytes
    assert m["dense_bytes"] == 4 * LENET300_PARAMS
    assert m["compression_x"] == pytest.approx(m["dense_bytes"] / m["file_bytes"])
    layers = {row["layer"]: row for row in m["layers"]}
    assert layers["total (file)"]["bytes"] == m["file_bytes"]
    assert sum(layers[n]["bytes"] for n in ("fc1", "fc2", "fc3")) < m["file_bytes"]
    # weights were dropped; the kept share is the per-layer shares weighted by layer size
    assert 0 < m["weights_kept_pct"] < 100
    per_layer = m["layer_kept_pct"]
    weighted = (per_layer["fc1"] * 784 * 300 + per_layer["fc2"] * 300 * 100 + per_layer["fc3"] * 100 * 10) / LENET300_WEIGHTS
    assert m["weights_kept_pct"] <= weighted + 0.01  # rounding to the grid can only drop more
    assert m["params_ratio_x"] == pytest.approx(100 / m["weights_kept_pct"], rel=1e-6)
    assert m["file_bytes"] < m["dense_bytes"] / 10  # a few percent of weights at ~2 bytes each
    # accuracy: a sane floor for 8k images and 2 epochs; the interval is ordered
    assert 80 < m["dense_accuracy"] <= 100 and m["loaded_accuracy"] > 50
    assert m["acc_change_ci_low"] <= m["acc_change_ci_high"]
    assert m["vd_vs_magnitude_theta_ci_low"] <= m["vd_vs_magnitude_theta_ci_high"]
    assert 0 <= m["min_overlap_theta_pct"] <= 100
