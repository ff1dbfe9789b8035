"""Exercise checks for notebook 03's AdaRound section: the rounding regulariser."""

from __future__ import annotations

from collections.abc import Callable

import torch

from compresslab.exercises.checking import (
    call,
    compare,
    exercise_check,
    fail,
    require_unchanged,
    seeded_generator,
)
from compresslab.techniques import adaround

__all__ = ["check_rounding_regularizer"]


@exercise_check("rounding_regularizer")
def check_rounding_regularizer(fn: Callable) -> int:
    """rounding_regularizer(v, beta) -> sum_i (1 - |2 h(v_i) - 1|^beta), h the rectified sigmoid
    clip(sigmoid(v) (zeta - gamma) + gamma, 0, 1) with zeta = 1.1, gamma = -0.1."""
    name = "rounding_regularizer"
    g = seeded_generator(21)
    cases = [("v=[-100, 0, 100] (h = 0, 0.5, 1), beta=2", torch.tensor([-100.0, 0.0, 100.0]), 2.0),
             ("v=[0, 0] (h = 0.5 twice), beta=20", torch.zeros(2), 20.0),
             ("v=[-1, 0.5, 2], beta=2", torch.tensor([-1.0, 0.5, 2.0]), 2.0),
             ("v=[3, -3] (h clipped to 1 and 0), beta=7.5", torch.tensor([3.0, -3.0]), 7.5),
             ("a 4x6 layer of random v, beta=3", 2 * torch.randn(4, 6, generator=g), 3.0),
             ("a 16x8 layer of random v, beta=20", torch.randn(16, 8, generator=g), 20.0)]
    for case, v, beta in cases:
        before = v.clone()
        got = call(name, fn, case, v, beta)
        require_unchanged(name, case, before, v)
        expected = adaround.rounding_regularizer(before, beta)
        plain = torch.sigmoid(before)
        h = adaround.rectified_sigmoid(before)
        mistakes = {
            "h is the RECTIFIED sigmoid: stretch sigmoid(v) to (zeta - gamma) = 1.2 and shift by gamma = -0.1, "
            "then clip to [0, 1], so h reaches 0 and 1 exactly": (1 - (2 * plain - 1).abs().pow(beta)).sum(),
            "the penalty is 1 - |2h - 1|^beta (0 at h = 0 or 1, 1 at h = 0.5), not |2h - 1|^beta":
                (2 * h - 1).abs().pow(beta).sum(),
            "sum the penalty over every weight: the result is one number": 1 - (2 * h - 1).abs().pow(beta),
            "the distance from 1/2 is doubled: |2h - 1|, which is 1 at h = 0 or 1":
                (1 - (h - 0.5).abs().pow(beta)).sum(),
        }
        if isinstance(got, torch.Tensor) and got.numel() != 1:
            raise fail(name, case, "the result must be one number (the sum over all weights)", expected, got,
                       "return (1 - (2 * h - 1).abs() ** beta).sum()")
        compare(name, case, got, expected,
                "h = clamp(sigmoid(v) * 1.2 - 0.1, 0, 1); return (1 - (2 * h - 1).abs() ** beta).sum()", mistakes)
    return len(cases)
