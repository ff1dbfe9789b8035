"""Notebook 02 runs headless in the quick profile and its recorded metrics hold up."""

from __future__ import annotations

import pytest

from compresslab.core import models
from compresslab.techniques import imp, lottery

pytestmark = pytest.mark.notebook


def test_lottery_ticket_quick(run_notebook, png_per_cell):
    run = run_notebook("02_lottery_ticket_rewinding")
    m = run.results
    assert sum(png_per_cell(run.output)) >= 7  # six figures and the headless widget view, each rendered as an image
    assert m["profile"] == "quick" and m["model"] == "lenet300"
    levels = m["levels"]
    assert levels == 3 and m["rewind_step"] == 20
    # the recorded sparsity per level is the layer-wise recursion n_L = n_{L-1} - round(p n_{L-1})
    sizes = {n: layer.weight.numel() for n, layer in models.prunable_layers(models.create("lenet300")).items()}
    rates = lottery.LotteryConfig().rates(list(sizes))
    expected = [100 * sum(imp.layer_keep_counts(sizes, rates, lv).values()) / sum(sizes.values())
                for lv in range(levels + 1)]
    assert m["remaining_by_level"] == pytest.approx(expected, abs=1e-9)
    assert m["sparsest_remaining"] == pytest.approx(expected[-1] / 100, abs=1e-12)
    # k = 0: dense + 3 tickets + 2 controls at the last level; k = 20: 3 tickets + 3 lr-rewinding runs
    assert m["training_runs"] == 1 + levels + 2 + 2 * levels
    assert m["check_level"] == levels  # no level reaches 7% in the quick profile: the sparsest is checked
    assert 75 < m["dense_accuracy"] <= 100  # 4k images, 2 epochs: a sane floor, not the paper's number
    for key in ("ticket_accuracy", "random_reinit_accuracy", "random_mask_accuracy",
                "sparsest_rewound_ticket_accuracy", "sparsest_lr_rewind_accuracy"):
        assert 60 < m[key] <= 100, key
    assert m["ticket_vs_dense_points"] == pytest.approx(m["ticket_accuracy"] - m["dense_accuracy"])
    assert all(0 < s <= m["train_steps"] for s in m["ticket_early_stop_steps"])
    assert len(m["ticket_accuracy_by_level"]) == levels + 1
    # the accuracy change against the dense model carries its paired-bootstrap interval
    assert m["acc_change_ci_low"] <= m["acc_change_ci_high"]
