"""How sure is an accuracy change? Paired comparisons of two models on the same test images.
(`mean_difference` does the same for any per-unit score, e.g. bits per byte of each test window;
`rank_correlation` says how well one score ranks another: Spearman's rho with a bootstrap interval.)

Two models scored on the same n images give, per image, a pair (a correct?, b correct?). Only the
discordant images matter: n10 (a right, b wrong) and n01 (a wrong, b right). The accuracy change
b - a is (n01 - n10) / n. Its 95% interval comes from the paired bootstrap (resample the n images
with replacement; the four pair counts are then multinomial, so we draw those directly), and
McNemar's exact test asks whether n01 and n10 could be two halves of Binomial(n01 + n10, 1/2).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

__all__ = ["PairedDifference", "paired_difference", "mcnemar_exact_p", "accuracy_interval", "mean_difference",
           "average_ranks", "spearman", "rank_correlation"]


@dataclass(frozen=True)
class PairedDifference:
    """Accuracy change (model b minus model a) in percentage points with its interval."""

    delta_points: float
    low_points: float
    high_points: float
    level: float
    n: int
    a_only: int  # images model a gets right and model b gets wrong
    b_only: int
    mcnemar_p: float

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        """'-0.12 points (95% CI -0.25 to +0.01; McNemar p = 0.07, 41 vs 29 discordant images)'."""
        return (f"{self.delta_points:+.2f} points ({100 * self.level:.0f}% CI {self.low_points:+.2f} to "
                f"{self.high_points:+.2f}; McNemar p = {self.mcnemar_p:.2g}, {self.a_only} vs {self.b_only} "
                f"discordant images)")


def _as_bool(x: torch.Tensor | np.ndarray, name: str) -> np.ndarray:
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of per-image correctness, got shape {arr.shape}")
    if arr.dtype != bool and not np.isin(arr, (0, 1)).all():
        raise ValueError(f"{name} must hold booleans (or 0/1), one per test image")
    return arr.astype(bool)


def mcnemar_exact_p(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p: 2 * P(X <= min) for X ~ Binomial(a_only + b_only, 1/2), capped at 1.

    >>> mcnemar_exact_p(0, 5)   # 2 * (1/2)**5
    0.0625
    >>> mcnemar_exact_p(3, 3)
    1.0
    """
    for name, v in (("a_only", a_only), ("b_only", b_only)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(f"{name}={v!r} must be a non-negative integer count")
    m, k = int(a_only) + int(b_only), min(int(a_only), int(b_only))
    if m == 0:
        return 1.0
    log_terms = [math.lgamma(m + 1) - math.lgamma(i + 1) - math.lgamma(m - i + 1) - m * math.log(2) for i in range(k + 1)]
    top = max(log_terms)
    tail = math.exp(top) * sum(math.exp(t - top) for t in log_terms)
    return min(1.0, 2.0 * tail)


def paired_difference(correct_a, correct_b, level: float = 0.95, n_boot: int = 4000, seed: int = 0) -> PairedDifference:
    """Accuracy of b minus accuracy of a on the same images, in points, with a paired-bootstrap interval.

    The bootstrap draws the four pair counts from Multinomial(n, observed pair frequencies), which is
    exactly what resampling the n images with replacement gives.

    >>> a = torch.tensor([True] * 90 + [False] * 10)
    >>> b = torch.tensor([True] * 85 + [False] * 5 + [True] * 10)   # 5 newly wrong, 10 newly right
    >>> d = paired_difference(a, b)
    >>> d.delta_points, d.a_only, d.b_only
    (5.0, 5, 10)
    """
    if not (isinstance(level, float) and 0.5 <= level < 1):
        raise ValueError(f"level={level!r} must be a float in [0.5, 1)")
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or not 100 <= n_boot <= 1_000_000:
        raise ValueError(f"n_boot={n_boot!r} must be an integer in [100, 1000000]")
    a, b = _as_bool(correct_a, "correct_a"), _as_bool(correct_b, "correct_b")
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"correct_a and correct_b must be non-empty and of equal length, got {a.size} and {b.size}")
    n = a.size
    a_only, b_only = int((a & ~b).sum()), int((~a & b).sum())
    delta = 100.0 * (b_only - a_only) / n
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, [a_only / n, b_only / n, max(0.0, 1.0 - (a_only + b_only) / n)], size=n_boot)
    boot = 100.0 * (counts[:, 1] - counts[:, 0]) / n
    tail = (1.0 - level) / 2
    low, high = np.quantile(boot, [tail, 1.0 - tail])
    return PairedDifference(round(delta, 6), float(low), float(high), level, n, a_only, b_only,
                            mcnemar_exact_p(a_only, b_only))


def accuracy_interval(accuracy: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval (low, high), in percent, of an accuracy measured on n test images: with
    p the accuracy as a fraction and z the normal quantile of the level,

        (p + z^2 / 2n +- z sqrt(p (1 - p) / n + z^2 / 4n^2)) / (1 + z^2 / n).

    >>> [round(v, 2) for v in accuracy_interval(90.0, 100)]
    [82.56, 94.48]
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n={n!r} must be a positive integer (test images)")
    if isinstance(accuracy, bool) or not isinstance(accuracy, (int, float)) or not 0 <= accuracy <= 100:
        raise ValueError(f"accuracy={accuracy!r} must be a percentage in [0, 100]")
    if not (isinstance(level, float) and 0.5 <= level < 1):
        raise ValueError(f"level={level!r} must be a float in [0.5, 1)")
    z = float(np.sqrt(2.0) * _erfinv(level))
    p = accuracy / 100.0
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return 100.0 * max(0.0, centre - half), 100.0 * min(1.0, centre + half)


def _erfinv(y: float) -> float:
    """The inverse error function by Newton's method on math.erf (|y| < 1)."""
    x = 0.0
    for _ in range(100):
        step = (math.erf(x) - y) / (2 / math.sqrt(math.pi) * math.exp(-x * x))
        x -= step
        if abs(step) < 1e-15:
            break
    return x


def _checked_pair(a, b) -> tuple[np.ndarray, np.ndarray]:
    arrays = [np.asarray(v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else v, dtype=np.float64) for v in (a, b)]
    if any(x.ndim != 1 for x in arrays) or arrays[0].shape != arrays[1].shape or arrays[0].size == 0:
        raise ValueError(f"a and b must be non-empty 1-D and of equal length, got shapes "
                         f"{arrays[0].shape} and {arrays[1].shape}")
    if not all(np.isfinite(x).all() for x in arrays):
        raise ValueError("a and b must be finite")
    return arrays[0], arrays[1]


def _check_bootstrap(level: float, n_boot: int) -> None:
    if not (isinstance(level, float) and 0.5 <= level < 1):
        raise ValueError(f"level={level!r} must be a float in [0.5, 1)")
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or not 100 <= n_boot <= 1_000_000:
        raise ValueError(f"n_boot={n_boot!r} must be an integer in [100, 1000000]")


def average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n of the last axis, ties given the mean of the ranks they share.

    >>> average_ranks(np.array([10.0, 30.0, 20.0, 30.0])).tolist()
    [1.0, 3.5, 2.0, 3.5]
    """
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, axis=-1, kind="stable")
    ranks = np.empty_like(x)
    np.put_along_axis(ranks, order, np.arange(1, x.shape[-1] + 1, dtype=np.float64) + 0 * x, axis=-1)
    sorted_x = np.take_along_axis(x, order, axis=-1)
    for index in np.ndindex(*x.shape[:-1]):  # ties: a run of equal sorted values shares its mean rank
        row, pos = sorted_x[index], order[index]
        start = 0
        for i in range(1, row.size + 1):
            if i == row.size or row[i] != row[start]:
                if i - start > 1:
                    ranks[index][pos[start:i]] = (start + 1 + i) / 2
                start = i
    return ranks


def _pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(-1, keepdims=True)
    b = b - b.mean(-1, keepdims=True)
    den = np.sqrt((a * a).sum(-1) * (b * b).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (a * b).sum(-1) / np.where(den > 0, den, 1.0), np.nan)


def spearman(a, b) -> float:
    """Spearman's rho: the Pearson correlation of the average ranks (NaN when one side is constant).

    >>> spearman([1, 2, 3, 4], [10, 20, 30, 40]), spearman([1, 2, 3], [3, 2, 1])
    (1.0, -1.0)
    """
    x, y = _checked_pair(a, b)
    return float(_pearson_rows(average_ranks(x), average_ranks(y)))


def rank_correlation(a, b, level: float = 0.95, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """(rho, low, high): Spearman's rho of paired scores and its bootstrap interval (the pairs resampled
    with replacement n_boot times; resamples with a constant side are dropped; the (1 - level) / 2 and
    (1 + level) / 2 quantiles of the rest).

    >>> rank_correlation([1.0, 2.0, 3.0, 4.0, 5.0], [2.0, 4.0, 6.0, 8.0, 10.0])
    (1.0, 1.0, 1.0)
    """
    _check_bootstrap(level, n_boot)
    x, y = _checked_pair(a, b)
    if x.size < 3:
        raise ValueError(f"rank_correlation needs at least 3 pairs, got {x.size}")
    rho = spearman(x, y)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(n_boot, x.size))
    boot = _pearson_rows(average_ranks(x[idx]), average_ranks(y[idx]))
    boot = boot[np.isfinite(boot)]
    if boot.size == 0:
        return rho, float("nan"), float("nan")
    tail = (1.0 - level) / 2
    low, high = np.quantile(boot, [tail, 1.0 - tail])
    return rho, float(low), float(high)


def mean_difference(a, b, level: float = 0.95, n_boot: int = 4000, seed: int = 0) -> tuple[float, float, float]:
    """(delta, low, high): mean(b) - mean(a) over paired units (one score per unit, e.g. bits per byte of
    each test window, for two models) and its paired-bootstrap interval: the units resampled with
    replacement n_boot times (numpy's default_rng(seed)), the (1 - level) / 2 and (1 + level) / 2
    quantiles of the resampled mean differences.

    >>> mean_difference([1.0, 2.0, 3.0], [1.5, 2.5, 3.5])  # every unit +0.5: no spread
    (0.5, 0.5, 0.5)
    """
    _check_bootstrap(level, n_boot)
    a, b = _checked_pair(a, b)
    d = b - a
    rng = np.random.default_rng(seed)
    boot = d[rng.integers(0, d.size, size=(n_boot, d.size))].mean(1)
    tail = (1.0 - level) / 2
    low, high = np.quantile(boot, [tail, 1.0 - tail])
    return float(d.mean()), float(low), float(high)
