"""Drift monitor: confidence signals against hand formulas, the KS test against scipy, alarms that
fire on shifted inputs and stay silent on in-distribution ones."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from compresslab.deploy import monitor
from compresslab.techniques.distillation import logit_entropy


def test_signals_match_hand_formulas():
    z = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    p = torch.exp(z) / torch.exp(z).sum(1, keepdim=True)
    assert torch.allclose(monitor.max_softmax(z), p.max(1).values)
    assert torch.allclose(logit_entropy(z), -(p * p.log()).sum(1))
    assert logit_entropy(z)[1] == pytest.approx(math.log(3))


def test_ks_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=300), rng.normal(0.3, 1, size=500)
    d, p = monitor.ks_2samp(a, b)
    ref = stats.ks_2samp(a, b, method="asymp")
    assert d == pytest.approx(ref.statistic)
    assert p == pytest.approx(ref.pvalue, rel=0.1, abs=1e-6)


@pytest.mark.parametrize("method", ["ks", "threshold"])
def test_alarm_fires_after_the_shift_only(method):
    rng = np.random.default_rng(1)
    reference = rng.beta(20, 1, size=2000)  # confident: max-softmax near 1
    stream = np.concatenate([rng.beta(20, 1, size=1000), rng.beta(4, 2, size=1000)])  # shift at 1000
    trace = monitor.drift_trace(stream, reference, monitor.DriftConfig(window=200, method=method, stride=50))
    assert trace.first_alarm is not None and 1000 <= trace.first_alarm < 1200
    assert not trace.alarm[trace.positions < 1000].any()
    # in distribution: each KS window fires with probability alpha, so a small alpha over 37 windows
    quiet = monitor.drift_trace(rng.beta(20, 1, size=2000), reference,
                                monitor.DriftConfig(window=200, method=method, alpha=1e-5))
    assert quiet.first_alarm is None


def test_config_is_validated():
    with pytest.raises(ValueError, match="DriftConfig.window"):
        monitor.DriftConfig(window=1)
    with pytest.raises(ValueError, match="DriftConfig.method"):
        monitor.DriftConfig(method="z")
    with pytest.raises(ValueError, match="fewer than"):
        monitor.drift_trace(np.ones(10), np.ones(10), monitor.DriftConfig(window=50))
