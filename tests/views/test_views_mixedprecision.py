"""The mixed-precision figures and the budget panel's render function."""

from __future__ import annotations

import pytest
from matplotlib.figure import Figure

from compresslab.techniques import mixedprecision as MP
from compresslab.views import mixedprecision as V

SCORES = {"a": {"int8": 0.0, "int4": 0.1, "int2": 2.0}, "b": {"int8": 0.0, "int4": 0.5, "int2": 0.6}}
COSTS = {"a": {"int8": 80, "int4": 40, "int2": 20}, "b": {"int8": 800, "int4": 400, "int2": 200}}


def _problem(calls: list) -> V.BudgetProblem:
    def measure(config):
        calls.append(dict(config))
        return 100 + MP.total(COSTS, config), 90.0 - MP.total(SCORES, config)

    points = [{"label": "uniform INT8", "kind": "uniform", "cost": 880, "accuracy": 90.0},
              {"label": "mixed", "kind": "mixed", "cost": 300, "accuracy": 89.0}]
    return V.BudgetProblem("bytes", SCORES, COSTS, 100, measure, points)


def test_render_budget_solves_the_program_at_the_share_of_the_range():
    calls = []
    problem = _problem(calls)
    assert V.budget_range(problem) == (100 + 220, 100 + 880)
    for share in (0.0, 0.25, 0.5, 1.0):
        view = V.render_budget({"size": problem}, "size", share)
        budget = 320 + share * (980 - 320)
        expected = MP.brute_force(SCORES, COSTS, budget - 100 + 1e-6)
        assert calls[-1] == expected
        assert view.metrics["budget (bytes)"] == pytest.approx(budget)
        assert view.metrics["predicted (bytes)"] == 100 + MP.total(COSTS, expected) <= budget + 1e-6
        assert view.metrics["test accuracy %"] == 90.0 - MP.total(SCORES, expected)
        assert isinstance(view.figure, Figure)
    with pytest.raises(ValueError, match="target='latency'"):
        V.render_budget({"size": problem}, "latency", 0.5)
    with pytest.raises(ValueError, match="budget_share"):
        V.render_budget({"size": problem}, "size", 1.5)


def test_render_budget_without_a_measurement_shows_the_prediction_only():
    problem = V.BudgetProblem("ms", SCORES, COSTS, 1.0, lambda config: None, [])
    view = V.render_budget({"latency": problem}, "latency", 0.5)
    assert "test accuracy %" not in view.metrics and "predicted (ms)" in view.metrics


def test_figures_draw_every_cell_and_point():
    rows = [{"layer": layer, "option": o, "v": SCORES[layer][o]} for layer in SCORES for o in SCORES[layer]]
    fig = V.heatmap(rows, "v", "t", "u")
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert len(texts) == 6 and "+2.00" in texts
    corr = {"v": (0.5, 0.1, 0.9)}
    assert "rho 0.50 [0.10, 0.90]" in V.proxy_ranks(rows, "v", {"v": "value"}, corr).axes[0].get_title()
    scatter = V.prediction_scatter({"x": ([1.0, 2.0, 3.0], [1.0, 2.5, 3.1])})
    assert "67% within 15%" in scatter.axes[0].get_title()  # 2.0 vs 2.5 is 20% off
