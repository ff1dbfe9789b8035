"""Monitoring a deployed model for drift: confidence signals, a rolling window, an alarm.

A classifier's inputs drift (rotated, noisy or unrelated images) while nobody labels them, so the
monitor watches what it can see, the model's own confidence on each input:

    max-softmax  c(x) = max_k softmax(z)_k          (falls under shift)
    entropy      H(x) = -sum_k p_k log p_k, p = softmax(z)   (rises under shift)

Two alarms over a rolling window of the last `window` inputs, each compared with the same signal
on the calibration (in-distribution) images:
    threshold: the window's mean crosses reference mean -/+ `threshold` (down for max-softmax, up for entropy);
    ks: the two-sample Kolmogorov-Smirnov statistic D = sup_t |F_window(t) - F_reference(t)| has
        p-value below `alpha` (asymptotic Kolmogorov distribution with n_eff = n m / (n + m)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from compresslab.core.validate import check_choice, check_float, check_instance, check_int
from compresslab.techniques.distillation import logit_entropy

__all__ = ["max_softmax", "signal", "ks_2samp", "DriftConfig", "DriftTrace", "drift_trace"]

SIGNALS = ("max_softmax", "entropy")
METHODS = ("threshold", "ks")


def max_softmax(logits: torch.Tensor) -> torch.Tensor:
    """max_k softmax(z)_k per row."""
    return torch.softmax(logits.double(), dim=1).max(dim=1).values.float()


def signal(logits: torch.Tensor, name: str) -> np.ndarray:
    """The named per-input signal as a numpy array."""
    check_choice("signal", "name", name, SIGNALS)
    return (max_softmax(logits) if name == "max_softmax" else logit_entropy(logits)).numpy()


def _kolmogorov_sf(t: float) -> float:
    """P(K > t) for the Kolmogorov distribution: 2 sum_{j>=1} (-1)^(j-1) exp(-2 j^2 t^2)."""
    if t <= 0:
        return 1.0
    total = sum((-1) ** (j - 1) * math.exp(-2 * j * j * t * t) for j in range(1, 101))
    return float(min(1.0, max(0.0, 2 * total)))


def ks_2samp(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Two-sample KS statistic D = sup |F_a - F_b| and its asymptotic p-value.

    >>> d, p = ks_2samp(np.arange(100.0), np.arange(100.0))
    >>> d, p > 0.99
    (0.0, True)
    """
    a, b = np.sort(_signal_array("a", a)), np.sort(_signal_array("b", b))
    grid = np.concatenate([a, b])
    d = float(np.max(np.abs(np.searchsorted(a, grid, "right") / len(a) - np.searchsorted(b, grid, "right") / len(b))))
    n_eff = len(a) * len(b) / (len(a) + len(b))
    return d, _kolmogorov_sf((math.sqrt(n_eff) + 0.12 + 0.11 / math.sqrt(n_eff)) * d)


@dataclass(frozen=True)
class DriftConfig:
    """window: inputs per rolling window; signal: "max_softmax" | "entropy"; method: "threshold" |
    "ks"; threshold: allowed shift of the window mean from the reference mean (signal units);
    alpha: KS p-value under which the alarm fires; stride: inputs between two KS tests."""

    window: int = 200
    signal: str = "max_softmax"
    method: str = "ks"
    threshold: float = 0.05
    alpha: float = 1e-3
    stride: int = 50

    def __post_init__(self) -> None:
        owner = "DriftConfig"
        check_int(owner, "window", self.window, 2, 10**7)
        check_choice(owner, "signal", self.signal, SIGNALS)
        check_choice(owner, "method", self.method, METHODS)
        check_float(owner, "threshold", self.threshold, 0.0, None, lo_open=True)
        check_float(owner, "alpha", self.alpha, 0.0, 1.0, lo_open=True, hi_open=True)
        check_int(owner, "stride", self.stride, 1, 10**7)


@dataclass
class DriftTrace:
    """positions: index of the last input of each checked window; rolling: the window's mean signal;
    statistic / p_value: KS per window (NaN for the threshold method); alarm: fired per window;
    first_alarm: the first position that fired (None if never); reference_mean: the calibration mean."""

    positions: np.ndarray
    rolling: np.ndarray
    statistic: np.ndarray
    p_value: np.ndarray
    alarm: np.ndarray
    first_alarm: int | None
    reference_mean: float
    config: DriftConfig

    def to_dict(self) -> dict:
        return {"first_alarm": self.first_alarm, "reference_mean": self.reference_mean,
                "alarms": int(self.alarm.sum()), "windows": len(self.positions)}


def _signal_array(name: str, values: object) -> np.ndarray:
    """A per-input signal as a 1-D float array: non-empty and finite (ValueError/TypeError naming it)."""
    try:
        array = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a sequence of numbers, got {type(values).__name__}") from None
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence of numbers, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} has {int((~np.isfinite(array)).sum())} non-finite value(s) (NaN or inf)")
    return array


def drift_trace(stream: np.ndarray, reference: np.ndarray, config: DriftConfig) -> DriftTrace:
    """Slide a window of `config.window` inputs over `stream` (a per-input signal, in arrival order)
    every `config.stride` inputs and compare it with `reference` (the same signal on calibration
    images); see the module docstring for the two alarms."""
    check_instance("", "config", config, DriftConfig)
    stream, reference = _signal_array("stream", stream), _signal_array("reference", reference)
    if len(stream) < config.window:
        raise ValueError(f"stream has {len(stream)} inputs, fewer than DriftConfig.window={config.window}")
    ref_mean = float(reference.mean())
    ends = np.arange(config.window, len(stream) + 1, config.stride)
    rolling, stat, pval, alarm = [], [], [], []
    for end in ends:
        win = stream[end - config.window:end]
        mean = float(win.mean())
        rolling.append(mean)
        if config.method == "ks":
            d, p = ks_2samp(win, reference)
            fired = p < config.alpha
        else:
            d, p = math.nan, math.nan
            shift = ref_mean - mean if config.signal == "max_softmax" else mean - ref_mean
            fired = shift > config.threshold
        stat.append(d)
        pval.append(p)
        alarm.append(fired)
    alarm_arr = np.asarray(alarm, bool)
    first = int(ends[alarm_arr.argmax()]) - 1 if alarm_arr.any() else None
    return DriftTrace(ends - 1, np.asarray(rolling), np.asarray(stat), np.asarray(pval), alarm_arr, first,
                      ref_mean, config)
