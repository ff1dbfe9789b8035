"""Exercise checks for notebook 01 pruning."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch

from compresslab.exercises.checking import (
    call,
    compare,
    exercise_check,
    fail,
    require_unchanged,
    seeded_generator,
)
from compresslab.techniques import masks

__all__ = [
    "check_magnitude_mask",
    "check_global_magnitude_masks",
    "check_cubic_sparsity",
]

# ----------------------------------------------------------------- 01 pruning

def mask_with_k(w: torch.Tensor, k: int, largest: bool = False) -> torch.Tensor:
    mask = torch.ones_like(w)
    if k > 0:
        mask.view(-1)[torch.topk(w.abs().reshape(-1), k, largest=largest).indices] = 0.0
    return mask


@exercise_check("magnitude_mask")
def check_magnitude_mask(fn: Callable) -> int:
    """magnitude_mask(w, sparsity) -> 0/1 mask zeroing the round(sparsity * n) smallest |w|."""
    name = "magnitude_mask"
    g = seeded_generator(1)
    hand = torch.tensor([[0.50, -0.10, 2.00, 0.03], [-3.00, 0.05, 0.20, -0.70]])
    cases = [
        ("the 2x4 example of the notebook, sparsity=0.5", hand, 0.5),
        ("the 2x4 example, sparsity=0.0 (nothing pruned)", hand, 0.0),
        ("the 2x4 example, sparsity=0.25", hand, 0.25),
        ("w=[3, -1, 2, -4, 0.5], sparsity=0.4", torch.tensor([3.0, -1.0, 2.0, -4.0, 0.5]), 0.4),
        ("10 values, sparsity=0.37 (k = round(3.7) = 4)", torch.randn(10, generator=g), 0.37),
        ("10 values, sparsity=0.62 (k = round(6.2) = 6)", torch.randn(10, generator=g), 0.62),
        ("random w of shape (20, 30), sparsity=0.8", torch.randn(20, 30, generator=g), 0.8),
        ("random conv weight of shape (6, 4, 3, 3), sparsity=0.9", torch.randn(6, 4, 3, 3, generator=g), 0.9),
    ]
    for case, w, s in cases:
        before = w.clone()
        got = call(name, fn, case, w, s)
        require_unchanged(name, case, before, w)
        expected = masks.magnitude_mask(before, s)
        n = w.numel()
        k = int(round(s * n))
        mistakes = {
            "you pruned the LARGEST weights: keep the large |w|, zero the small ones (largest=False in topk)":
                mask_with_k(before, k, largest=True) if k else None,
            "rank by magnitude |w|, not by the signed value w (a large negative weight is important)":
                _signed_mask(before, k) if k else None,
            "sparsity is the fraction REMOVED: zero k = round(sparsity * n) weights, keep the rest":
                mask_with_k(before, n - k) if 0 < n - k < n else None,
            f"k must be round(sparsity * n) = {k}; you removed floor(sparsity * n) = {math.floor(s * n)}":
                mask_with_k(before, math.floor(s * n)) if math.floor(s * n) != k else None,
            f"k must be round(sparsity * n) = {k}; you removed ceil(sparsity * n) = {math.ceil(s * n)}":
                mask_with_k(before, math.ceil(s * n)) if math.ceil(s * n) != k else None,
        }
        compare(name, case, got, expected,
                 "zero the k entries of smallest magnitude (k is the sparsity times the number of entries, rounded) "
                 "and return a 0/1 mask shaped like w", mistakes)
    return len(cases)


def _signed_mask(w: torch.Tensor, k: int) -> torch.Tensor:
    mask = torch.ones_like(w)
    mask.view(-1)[torch.topk(w.reshape(-1), k, largest=False).indices] = 0.0
    return mask


@exercise_check("global_magnitude_masks")
def check_global_magnitude_masks(fn: Callable) -> int:
    """global_magnitude_masks(weights: dict, sparsity) -> dict of masks under one threshold."""
    name = "global_magnitude_masks"
    g = seeded_generator(2)
    cases = [
        ("a=[0.1, -2, 0.3], b=[[1.5, -0.05], [0.2, 4]], sparsity=0.4 (k = round(2.8) = 3 of 7)",
         {"a": torch.tensor([0.1, -2.0, 0.3]), "b": torch.tensor([[1.5, -0.05], [0.2, 4.0]])}, 0.4),
        ("three layers of very different scales (std 1, 0.1, 0.01), sparsity=0.7",
         {"fc1": torch.randn(30, 20, generator=g), "fc2": 0.1 * torch.randn(10, 30, generator=g),
          "fc3": 0.01 * torch.randn(10, generator=g)}, 0.7),
        ("two layers, sparsity=0.95", {"conv": torch.randn(4, 2, 3, 3, generator=g),
                                       "fc": 0.5 * torch.randn(8, 16, generator=g)}, 0.95),
    ]
    for case, weights, s in cases:
        before = {k: v.clone() for k, v in weights.items()}
        got = call(name, fn, case, weights, s)
        for key in before:
            require_unchanged(name, case, before[key], weights[key])
        expected = masks.global_magnitude_masks(before, s)
        if not isinstance(got, Mapping) or set(got) != set(expected):
            raise fail(name, case, "the result must be a dict with one mask per layer name, same keys as the input",
                        expected, got, "return {name: mask for each name in weights}")
        layerwise = {k: masks.magnitude_mask(v, s) for k, v in before.items()}
        for key in expected:
            compare(name, f"{case}; layer {key!r}", got[key], expected[key],
                     "concatenate |w| of all layers, find ONE threshold (the k-th smallest of all n values, "
                     "k = round(sparsity * n)), then cut each layer's mask back out in its own shape",
                     {"you pruned every layer to the same sparsity (layer-wise): global pruning ranks all "
                      "weights together, so small-scale layers lose more": layerwise[key]})
    return len(cases)


@exercise_check("cubic_sparsity")
def check_cubic_sparsity(fn: Callable) -> int:
    """cubic_sparsity(step, initial, final, start, n, interval) -> float (Zhu & Gupta 2017)."""
    name = "cubic_sparsity"
    cases = [
        (0, 0.0, 0.9, 0, 10, 100), (1000, 0.0, 0.9, 0, 10, 100), (500, 0.0, 0.9, 0, 10, 100),
        (250, 0.0, 0.9, 0, 10, 100), (50, 0.0, 0.8, 100, 4, 50), (5000, 0.0, 0.8, 100, 4, 50),
        (150, 0.2, 0.95, 100, 5, 20), (180, 0.2, 0.95, 100, 5, 20),
    ] + [(t, 0.1, 0.75, 10, 8, 7) for t in range(0, 80, 9)]
    for args in cases:
        case = "step={}, initial={}, final={}, start={}, n={}, interval={}".format(*args)
        got = call(name, fn, case, *args)
        expected = masks.cubic_sparsity(*args)
        step, s_i, s_f, t0, n, dt = args
        raw = (step - t0) / (n * dt)
        p = min(max(raw, 0.0), 1.0)
        mistakes = {
            "that is a linear ramp: the cubic schedule uses (1 - progress)^3": s_f + (s_i - s_f) * (1 - p),
            "the cube goes on (1 - progress), not on progress: s_f + (s_i - s_f) (1 - progress)^3":
                s_f + (s_i - s_f) * (1 - p ** 3),
            "clamp progress = (step - start) / (n * interval) to [0, 1]: before `start` the sparsity is "
            "`initial`, after start + n * interval it stays at `final`": s_f + (s_i - s_f) * (1 - raw) ** 3,
        }
        compare(name, case, got, expected,
                 "s_t = final + (initial - final) * (1 - progress)^3 with progress = (step - start) / (n * interval) "
                 "clamped to [0, 1]", mistakes, atol=1e-9)
    return len(cases)
