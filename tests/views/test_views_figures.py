"""Panel polish: readable numbers, no NaN where a value does not apply, axes that show what they plot."""

from __future__ import annotations

import math

import numpy as np
import torch

from compresslab.core import models
from compresslab.views import lottery, narrative, panel, pruning, quantization


def test_format_value_prints_whole_numbers_without_decimals():
    assert panel.format_value(21706.0) == "21706" and panel.format_value(3) == "3"
    assert panel.format_value(0.123456) == "0.1235" and panel.format_value(97.5312) == "97.53"
    assert panel.format_value(float("nan")) == "n/a" and panel.format_value(True) == "True"


def test_pruning_view_has_no_missing_value_with_structured_pruning(tiny_data):
    torch.manual_seed(0)
    model = models.create("mlp", hidden=(32,))
    for structured in (False, True):
        view = pruning.render_pruning(model, tiny_data.test, 0.5, "global", structured)
        numbers = [v for v in view.metrics.values() if isinstance(v, float)]
        assert not any(math.isnan(v) for v in numbers) and view.metrics["stored KiB"] > 0


def test_ticket_view_keeps_every_point_inside_the_axis_and_names_dense_once():
    dense = {"steps": [0, 10, 20], "test_accuracy": [10.0, 90.0, 95.0], "val_loss": [2.0, 0.5, 0.4]}
    fig = lottery.ticket_view(dense, dense, {"fc1": 1.0}, None, "dense")
    ax = fig.axes[0]
    low, high = ax.get_ylim()
    assert low <= 10 and high >= 95
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["dense"]


def test_level_counts_use_a_linear_axis():
    w = torch.linspace(-1, 1, 101)
    q = torch.round(w * 3).to(torch.int32)
    fig = quantization.quant_histogram(w, q, np.linspace(-1, 1, 7), -3, 3)
    assert fig.axes[1].get_yscale() == "linear"


def test_narrative_says_what_the_numbers_allow():
    from compresslab.core.latency import Latency, SpeedTable
    from compresslab.core.stats import paired_difference

    t = SpeedTable(baseline="dense")
    t.add([Latency("dense", 256, 1.0, 0.95, 1.05, 10, 1), Latency("fast", 256, 0.5, 0.2, 0.9, 10, 1)])
    assert narrative.timing_note(t, ["dense"], [256])[0] is True
    reliable, text = narrative.timing_note(t)
    assert reliable is False and "unreliable" in text and text.startswith("**")
    same = torch.ones(100, dtype=torch.bool)
    assert "within noise" in narrative.change_phrase(paired_difference(same, same))
    worse = same.clone()
    worse[:30] = False
    assert "real drop" in narrative.change_phrase(paired_difference(same, worse))
    md = narrative.summary_markdown(["a"], [("q?", "yes")], ["paper"]).data
    assert "<details>" in md and "1. a" in md and "- paper" in md
    assert narrative.smoke_banner(False) is None and "smoke-test" in narrative.smoke_banner(True).data
