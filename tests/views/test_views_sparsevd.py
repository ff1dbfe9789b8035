"""The learned-sparsity views: the threshold panel's render function, called directly."""

from __future__ import annotations

import pytest
from torch import nn

from compresslab.core.training import evaluate
from compresslab.techniques import sparsevd, variational
from compresslab.views import sparsevd as sparsevd_views


@pytest.fixture(scope="module")
def trained():
    from conftest import make_tiny_dataset, make_tiny_variational

    return make_tiny_variational(spread=4.0), make_tiny_dataset()


@pytest.mark.parametrize("threshold", [-2.0, 0.0, 3.0, 6.0])
def test_render_threshold_reports_the_remasked_model(trained, threshold):
    vd, tiny = trained
    dense_bytes = 4 * sum(p.numel() for n, p in vd.named_parameters() if "log_sigma2" not in n)
    view = sparsevd_views.render_threshold(vd, tiny.test, threshold, 1.0, dense_bytes)
    plain, rows = sparsevd.quantize_posterior(vd, threshold, 1.0)
    kept = sum(int((m.weight != 0).sum()) for m in plain.modules() if isinstance(m, nn.Linear))
    total = sum(m.weight.numel() for m in plain.modules() if isinstance(m, nn.Linear))
    assert view.metrics["weights kept (file) %"] == pytest.approx(100 * kept / total)
    assert view.metrics["accuracy %"] == evaluate(plain, tiny.test).accuracy
    assert view.metrics["file bytes"] == len(sparsevd.encode_sparse(plain)[0])
    assert view.metrics["compression x"] == pytest.approx(dense_bytes / view.metrics["file bytes"])
    masks = [variational.vd_mask(la, threshold) for la in variational.layer_log_alphas(vd).values()]
    assert kept <= sum(int(m.sum()) for m in masks)  # rounding to the grid only drops more
    assert view.figure is not None and len(view.figure.axes) == 2


def test_a_higher_threshold_keeps_more_and_writes_more(trained):
    vd, tiny = trained
    low, high = (sparsevd_views.render_threshold(vd, tiny.test, t, 1.0, 10**6).metrics for t in (-2.0, 6.0))
    assert low["weights kept (file) %"] < high["weights kept (file) %"] and low["file bytes"] < high["file bytes"]


def test_error_vs_compression_marks_reported_points_hollow():
    points = [{"label": "run", "compression_x": 100.0, "error_pct": 1.5, "kind": "measured"},
              {"label": "paper", "compression_x": 68.0, "error_pct": 1.92, "kind": "reported"}]
    fig = sparsevd_views.error_vs_compression(points, dense_error=1.4)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    faces = [c.get_facecolors() for c in ax.collections]
    assert len(faces[0]) == 1 and len(faces[1]) == 0  # the reported point has no fill
