"""The language-model views: the panel's render function is a plain function over a precomputed grid."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure

from compresslab.core import pareto
from compresslab.views import language


def grid_and_points():
    grid, points, rows = {}, [{"label": "FP32", "family": "FP32", "bpb": 2.0, "bytes": 4000}], []
    for method in ("rtn", "gptq"):
        for bits in (8, 4):
            for gs in (0, 32):
                row = {"method": method, "bits": bits, "group_size": gs, "row_length": 128,
                       "bpb": 2.0 + (0.01 if method == "rtn" else 0.002) * (8 - bits + (gs == 0)),
                       "file_bytes": 1000 * bits + (50 if gs else 0), "sample": f"{method}{bits}{gs}", "point": len(points)}
                grid[(method, bits, gs)] = row
                rows.append(row)
                points.append({"label": f"{method}{bits}g{gs}", "family": method, "bpb": row["bpb"], "bytes": row["file_bytes"]})
    return grid, points, rows


def test_render_language_shows_the_chosen_variant():
    grid, points, rows = grid_and_points()
    front = pareto.pareto_front(points, minimize=["bpb", "bytes"])
    view = language.render_language(grid, points, front, "gptq", 4, 32, 2.0)
    assert isinstance(view.figure, Figure)
    row = grid[("gptq", 4, 32)]
    assert view.metrics["bits per byte"] == pytest.approx(row["bpb"], abs=1e-4)
    assert view.metrics["file bytes"] == row["file_bytes"] and view.metrics["generated text"] == "gptq432"
    assert view.metrics["on the frontier"] == (row["point"] in front)
    with pytest.raises(ValueError, match="was not computed"):
        language.render_language(grid, points, front, "gptq", 3, 32, 2.0)


def test_figures_build(monkeypatch):
    grid, points, rows = grid_and_points()
    assert isinstance(language.group_size_sweep(rows, 2.0), Figure)
    assert isinstance(language.channel_maxima({"a": np.array([1.0, 2.0, 30.0])}), Figure)
    assert isinstance(language.training_curve([1, 2], [3.0, 2.5], 2.4), Figure)
    table = language.sample_table({"m": "a\nb"})
    assert table["generated text"].tolist() == ["a ⏎ b"]
    monkeypatch.setenv("COMPRESSLAB_HEADLESS", "1")
    assert language.language_panel(grid, points, [0], "rtn", 8, 0, 2.0) is None  # headless: the static view only
