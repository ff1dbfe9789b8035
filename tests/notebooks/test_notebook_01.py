"""Notebook 01 runs headless in the quick profile and its recorded metrics hold up."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.notebook


def test_magnitude_pruning_quick(run_notebook, png_per_cell):
    run = run_notebook("01_magnitude_pruning")
    m = run.results
    assert sum(png_per_cell(run.output)) >= 6  # every figure (and the headless widget view) is rendered as an image
    assert m["profile"] == "quick"
    assert m["sparsity"] == pytest.approx(0.92, abs=0.005)
    assert m["param_reduction_x"] > 10
    assert 80 < m["dense_accuracy"] <= 100  # 8k images, 2 epochs: a sane floor, not the paper's number
    assert m["pruned_accuracy"] > m["dense_accuracy"] - 3
    assert m["structured_params"] < 0.5 * 266_610 and m["structured_accuracy"] > 75
    # CSR storage pays for its indices: about half the parameter reduction
    assert 0.4 * m["param_reduction_x"] < m["csr_compression_x"] < 0.6 * m["param_reduction_x"]
    for key in ("speedup_masked_b256", "speedup_shrunk_b256", "speedup_csr_b1", "speedup_csr_b256"):
        assert m[key] > 0
    # the speed claim is asserted only on a quiet measurement; the accuracy change carries its interval
    assert isinstance(m["timing_reliable"], bool)
    assert m["acc_change_ci_low"] <= m["acc_change_ci_high"]
