"""Paired accuracy differences: McNemar's exact test and the paired bootstrap, against brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from compresslab.core import stats
from compresslab.core.stats import (
    average_ranks,
    mcnemar_exact_p,
    mean_difference,
    paired_difference,
    rank_correlation,
    spearman,
)


@pytest.mark.parametrize("a_only, b_only", [(0, 0), (0, 5), (1, 9), (7, 7), (13, 30), (120, 80)])
def test_mcnemar_matches_the_binomial_sum(a_only, b_only):
    m, k = a_only + b_only, min(a_only, b_only)
    brute = 1.0 if m == 0 else min(1.0, 2 * sum(math.comb(m, i) for i in range(k + 1)) / 2**m)
    assert mcnemar_exact_p(a_only, b_only) == pytest.approx(brute, rel=1e-9)


def _pairs(n: int, a_only: int, b_only: int, both: int) -> tuple[torch.Tensor, torch.Tensor]:
    a = torch.zeros(n, dtype=torch.bool)
    b = torch.zeros(n, dtype=torch.bool)
    a[:a_only] = True
    b[a_only:a_only + b_only] = True
    a[a_only + b_only:a_only + b_only + both] = True
    b[a_only + b_only:a_only + b_only + both] = True
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    return a[perm], b[perm]


def test_interval_agrees_with_the_normal_approximation_for_large_n():
    n, a_only, b_only = 10_000, 60, 40
    a, b = _pairs(n, a_only, b_only, 9_800)
    d = paired_difference(a, b, n_boot=20_000)
    assert d.delta_points == pytest.approx(-0.2) and (d.a_only, d.b_only) == (60, 40)
    se = 100 * math.sqrt((a_only + b_only) - (b_only - a_only) ** 2 / n) / n  # paired Wald standard error
    assert d.low_points == pytest.approx(d.delta_points - 1.96 * se, abs=0.15 * se)
    assert d.high_points == pytest.approx(d.delta_points + 1.96 * se, abs=0.15 * se)


def test_multinomial_bootstrap_matches_resampling_the_images():
    n = 300
    a, b = _pairs(n, 20, 9, 250)
    d = paired_difference(a, b, n_boot=20_000, seed=1)
    rng = np.random.default_rng(2)
    idx = rng.integers(0, n, size=(20_000, n))
    an, bn = a.numpy()[idx], b.numpy()[idx]
    brute = 100 * (bn.mean(axis=1) - an.mean(axis=1))
    lo, hi = np.quantile(brute, [0.025, 0.975])
    assert d.low_points == pytest.approx(lo, abs=0.35) and d.high_points == pytest.approx(hi, abs=0.35)
    assert "points (95% CI" in d.describe()


def test_same_seed_same_interval_and_identical_models():
    a, b = _pairs(500, 10, 4, 400)
    assert paired_difference(a, b, seed=3) == paired_difference(a, b, seed=3)
    same = paired_difference(a, a)
    assert (same.delta_points, same.low_points, same.high_points, same.mcnemar_p) == (0.0, 0.0, 0.0, 1.0)


@pytest.mark.parametrize("kwargs, match", [
    ({"correct_a": torch.ones(3, dtype=torch.bool), "correct_b": torch.ones(4, dtype=torch.bool)}, "equal length"),
    ({"correct_a": torch.ones(0, dtype=torch.bool), "correct_b": torch.ones(0, dtype=torch.bool)}, "non-empty"),
    ({"correct_a": torch.tensor([0.5, 1.0]), "correct_b": torch.tensor([1.0, 1.0])}, "correct_a must hold booleans"),
    ({"correct_a": torch.ones(2, 2, dtype=torch.bool), "correct_b": torch.ones(2, 2, dtype=torch.bool)}, "1-D"),
    ({"level": 1.5}, "level"),
    ({"n_boot": 10}, "n_boot"),
])
def test_bad_inputs_name_the_argument(kwargs, match):
    args = {"correct_a": torch.ones(4, dtype=torch.bool), "correct_b": torch.ones(4, dtype=torch.bool), **kwargs}
    with pytest.raises(ValueError, match=match):
        paired_difference(**args)
    with pytest.raises(ValueError, match="a_only"):
        mcnemar_exact_p(-1, 3)


def test_correct_gives_per_image_correctness_that_matches_evaluate():
    from conftest import make_tiny_dataset

    from compresslab.core import models, training
    from compresslab.core.stats import paired_difference

    ds = make_tiny_dataset()
    torch.manual_seed(0)
    model = models.create("mlp", hidden=(16,))
    right = training.correct(model, ds.test, batch_size=7)
    assert right.dtype == torch.bool and right.shape == (len(ds.test),)
    assert 100 * float(right.float().mean()) == pytest.approx(training.evaluate(model, ds.test).accuracy)
    with torch.no_grad():
        logits = model(ds.test.tensors(len(ds.test))[0])
    assert torch.equal(right, logits.argmax(1) == ds.test.tensors(len(ds.test))[1])
    assert paired_difference(right, right).delta_points == 0.0


@pytest.mark.parametrize("k,n", [(90, 100), (8969, 10000), (3, 1000), (1000, 1000), (0, 50), (1, 1)])
def test_accuracy_interval_is_wilsons_as_scipy_computes_it(k, n):
    from scipy.stats import binomtest

    ci = binomtest(k, n).proportion_ci(0.95, method="wilson")
    low, high = stats.accuracy_interval(100 * k / n, n)
    assert low == pytest.approx(100 * ci.low, abs=1e-9) and high == pytest.approx(100 * ci.high, abs=1e-9)


@pytest.mark.parametrize("args,match", [((101.0, 10), "accuracy"), ((50.0, 0), "n="), ((50.0, 10, 0.2), "level")])
def test_accuracy_interval_refuses_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        stats.accuracy_interval(*args)


def test_mean_difference_is_the_paired_bootstrap_written_out():
    rng = np.random.default_rng(5)
    a = rng.normal(3.0, 0.5, 200)
    b = a + rng.normal(0.02, 0.1, 200)
    delta, low, high = mean_difference(torch.tensor(a), torch.tensor(b), level=0.9, n_boot=1000, seed=7)
    # the oracle: resample the 200 pairs with replacement 1000 times with the same generator
    draw = np.random.default_rng(7).integers(0, 200, size=(1000, 200))
    boot = np.array([(b[i] - a[i]).mean() for i in draw])
    assert delta == pytest.approx((b - a).mean()) and low < delta < high
    assert (low, high) == pytest.approx(tuple(np.quantile(boot, [0.05, 0.95])))
    # about the normal interval: mean +- 1.645 sd / sqrt(n)
    half = 1.645 * (b - a).std() / math.sqrt(200)
    assert high - low == pytest.approx(2 * half, rel=0.15)
    assert mean_difference(a, a) == (0.0, 0.0, 0.0)


@pytest.mark.parametrize("kwargs, match", [
    ({"a": [1.0], "b": [1.0, 2.0]}, "equal length"), ({"a": [], "b": []}, "non-empty"),
    ({"a": [1.0], "b": [float("nan")]}, "finite"), ({"a": [1.0], "b": [1.0], "level": 0.3}, "level"),
    ({"a": [1.0], "b": [1.0], "n_boot": 10}, "n_boot")])
def test_mean_difference_bad_inputs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mean_difference(**kwargs)


def test_spearman_against_scipy_with_ties():
    from scipy.stats import rankdata, spearmanr

    rng = np.random.default_rng(3)
    for _ in range(20):
        a = rng.integers(0, 6, 30).astype(float)  # many ties
        b = a + rng.normal(0, 2, 30)
        assert np.array_equal(average_ranks(a), rankdata(a))
        assert spearman(a, b) == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)
    assert math.isnan(spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))


def test_rank_correlation_interval_is_the_bootstrap_of_spearman():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(4)
    a = rng.normal(size=40)
    b = a + rng.normal(0, 1, 40)
    rho, low, high = rank_correlation(a, b, n_boot=500, seed=9)
    draw = np.random.default_rng(9).integers(0, 40, size=(500, 40))
    boot = np.array([spearmanr(a[i], b[i]).statistic for i in draw])
    assert rho == pytest.approx(spearmanr(a, b).statistic)
    assert (low, high) == pytest.approx(tuple(np.quantile(boot, [0.025, 0.975])))
    assert low < rho < high
    with pytest.raises(ValueError, match="at least 3 pairs"):
        rank_correlation([1.0, 2.0], [2.0, 1.0])
