"""The deployment notebook's figures and panel callback, called directly on synthetic measurements."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure

from compresslab.deploy.monitor import DriftConfig, drift_trace
from compresslab.views import deployment


def _rows():
    rows = []
    for i, (variant, precision) in enumerate([("PyTorch eager fp32", "fp32"), ("ONNX Runtime int8", "int8")]):
        row = {"arch": "lenet5", "model": "dense", "variant": variant, "runtime": "x", "precision": precision,
               "bytes": 1000 * (4 - 3 * i), "accuracy": 99.0, "agreement": 100.0, "max_abs_diff": 0.0}
        for b in (1, 256):
            ms = (1 + b / 64) / (1 + 3 * i)
            row.update({deployment.latency_col(b, 1): ms, deployment.latency_col(b, 1, "p10"): 0.9 * ms,
                        deployment.latency_col(b, 1, "p90"): 1.1 * ms})
        rows.append(row)
    return rows


def test_render_names_the_fastest_and_rejects_missing():
    view = deployment.render_deployment(_rows(), "lenet5", "dense", 256, 1)
    assert isinstance(view.figure, Figure) and view.metrics["fastest"] == "ONNX Runtime int8"
    with pytest.raises(ValueError, match="no measurement"):
        deployment.render_deployment(_rows(), "lenet5", "pruned", 256, 1)


def test_figures_draw():
    assert isinstance(deployment.runtime_latency(_rows(), "lenet5", threads=1), Figure)
    assert isinstance(deployment.size_accuracy(_rows()), Figure)
    assert isinstance(deployment.zeros_and_bytes([{"label": "a", "bytes": 10, "gzip_bytes": 5}]), Figure)
    rng = np.random.default_rng(0)
    trace = drift_trace(rng.random(400), rng.random(300), DriftConfig(window=100))
    assert isinstance(deployment.drift_view({"m": trace}, [(0, "clean")], "t"), Figure)
    assert isinstance(deployment.confidence_under_shift({"m": {"clean": rng.random(50)}}, "t"), Figure)
