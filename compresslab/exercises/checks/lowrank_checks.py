"""Exercise checks for notebook 05 low-rank."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from compresslab.core.metrics import parameter_count
from compresslab.exercises.checking import (
    as_tensor,
    call,
    case_seed,
    compare,
    exercise_check,
    fail,
    require_unchanged,
    seeded_generator,
)
from compresslab.techniques import lowrank, svd

__all__ = [
    "check_svd_factorize",
    "check_rank_for_energy",
    "check_factorize_linear",
]

# ----------------------------------------------------------------- 05 low-rank

@exercise_check("svd_factorize")
def check_svd_factorize(fn: Callable) -> int:
    """svd_factorize(w, rank) -> (a, b), a: m x r, b: r x n, a @ b the best rank-r approximation."""
    name = "svd_factorize"
    g = seeded_generator(12)
    cases = [("w = diag(3, 2, 1), rank=2", torch.diag(torch.tensor([3.0, 2.0, 1.0])), 2),
             ("w = outer([1, 2], [3, 4, 5]) (rank 1), rank=1", torch.outer(torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0, 5.0])), 1),
             ("random (20, 12), rank=5", torch.randn(20, 12, generator=g), 5),
             ("random (8, 30), rank=8 (full rank: exact)", torch.randn(8, 30, generator=g), 8),
             ("random square (10, 10), rank=3", torch.randn(10, 10, generator=g), 3)]
    for case, w, r in cases:
        before = w.clone()
        got = call(name, fn, case, w, r)
        require_unchanged(name, case, before, w)
        a_ref, b_ref = svd.svd_factorize(before, r)
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            raise fail(name, case, "the result must be a pair (a, b)", (a_ref, b_ref), got, "return a, b")
        a, b = (as_tensor(t) for t in got)
        m, n = w.shape
        if a is None or b is None or tuple(a.shape) != (m, r) or tuple(b.shape) != (r, n):
            raise fail(name, case, f"a must be {m} x {r} and b {r} x {n}", "shapes " + str(((m, r), (r, n))),
                        "shapes " + str(tuple(tuple(t.shape) if t is not None else None for t in (a, b))),
                        "keep the r largest singular values and their vectors, and give each factor the square root of the singular values")
        u, sv, vh = torch.linalg.svd(before.double(), full_matrices=False)
        scale = float(before.abs().max())
        mistakes = {
            "keep the LARGEST singular values (torch.linalg.svd returns them in descending order: take the first r)":
                (u[:, -r:] * sv[-r:]) @ vh[-r:],
            "the singular values are missing: a @ b must equal U_r diag(S_r) Vh_r": u[:, :r] @ vh[:r],
            "torch.linalg.svd returns Vh (already transposed): use its first r ROWS, don't transpose again":
                (u[:, :r] * sv[:r]) @ vh.T[:r] if m == n else None,
        }
        compare(name, f"{case}; the product a @ b", (a.double() @ b.double()), (a_ref @ b_ref).double(),
                 "the best rank-r approximation (Eckart-Young) keeps the r largest singular values: "
                 "a @ b = U[:, :r] diag(S[:r]) Vh[:r]", mistakes, atol=1e-4 * scale, rtol=1e-4)
    return len(cases)


@exercise_check("rank_for_energy")
def check_rank_for_energy(fn: Callable) -> int:
    """rank_for_energy(s, energy) -> the smallest r with sum_{i<=r} s_i^2 / sum s_i^2 >= energy."""
    name = "rank_for_energy"
    g = seeded_generator(13)
    s_hand = torch.tensor([3.0, 2.0, 1.0])
    decaying = torch.sort(torch.rand(50, generator=g) ** 3, descending=True).values
    cases = [("s=[3, 2, 1] (energies 9/14, 13/14, 1), energy=0.5", s_hand, 0.5),
             ("s=[3, 2, 1], energy=0.9", s_hand, 0.9), ("s=[3, 2, 1], energy=0.95", s_hand, 0.95),
             ("s=[3, 2, 1], energy=1.0", s_hand, 1.0),
             ("s=[1, 1, 1, 1] (energies 0.25, 0.5, 0.75, 1), energy=0.5 (reached exactly at r=2)", torch.ones(4), 0.5)]
    cases += [(f"50 decaying singular values, energy={e}", decaying, e) for e in (0.3, 0.8, 0.99)]
    for case, s, e in cases:
        before = s.clone()
        got = call(name, fn, case, s, e)
        require_unchanged(name, case, before, s)
        expected = svd.rank_for_energy(before, e)
        curve = torch.cumsum(before.double() ** 2, 0) / (before.double() ** 2).sum()
        curve_s = torch.cumsum(before.double(), 0) / before.double().sum()
        mistakes = {"the energy uses SQUARED singular values: E(r) = sum_{i<=r} s_i^2 / sum_i s_i^2":
                    int((curve_s < e - 1e-12).sum()) + 1,
                    "ranks count from 1: the answer is the number of values kept (index + 1)": expected - 1,
                    "the smallest r with E(r) >= energy (>=, so an energy reached exactly is enough)":
                    int((curve <= e + 1e-12).sum()) + 1}
        compare(name, case, got, expected, "E(r) = cumsum(s**2) / sum(s**2); return the smallest r (1-based) with E(r) >= energy",
                 mistakes, atol=0, rtol=0)
        if not isinstance(got, (int, np.integer)) and not (isinstance(got, torch.Tensor) and got.numel() == 1):
            raise fail(name, case, "the rank must be an integer", expected, got, "return int(...)")
    return len(cases)


@exercise_check("factorize_linear")
def check_factorize_linear(fn: Callable) -> int:
    """factorize_linear(layer, rank) -> nn.Sequential(Linear(in, r, bias=False), Linear(r, out))."""
    name = "factorize_linear"
    g = seeded_generator(14)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(case_seed(14))
        cases = [("nn.Linear(12, 7), rank=3", nn.Linear(12, 7), 3), ("nn.Linear(30, 20), rank=10", nn.Linear(30, 20), 10),
                 ("nn.Linear(9, 5, bias=False), rank=2", nn.Linear(9, 5, bias=False), 2),
                 ("nn.Linear(6, 4), rank=4 (full rank: exact)", nn.Linear(6, 4), 4)]
    for case, layer, r in cases:
        before = {k: v.clone() for k, v in layer.state_dict().items()}
        got = call(name, fn, case, layer, r)
        if any(not torch.equal(layer.state_dict()[k], v) for k, v in before.items()):
            raise fail(name, case, "the original layer was modified", "layer unchanged", "layer changed",
                        "build new nn.Linear layers and copy the factors into them")
        expected = lowrank.factorize_layer(layer, r)
        if not isinstance(got, nn.Module):
            raise fail(name, case, "the result is not a module", expected, got, "return nn.Sequential(first, second)")
        n_params, n_expected = parameter_count(got), parameter_count(expected)
        if n_params != n_expected:
            raise fail(name, case, f"the factorized layer has {n_params} parameters, expected r (in + out) + out = {n_expected}",
                        n_expected, n_params, "first = nn.Linear(in, r, bias=False) (no bias: it would be counted twice), "
                        "second = nn.Linear(r, out) holding the original bias")
        x = torch.randn(16, layer.in_features, generator=g)
        with torch.no_grad():
            out, out_ref = call(name, got, f"{case}; calling the returned module", x), expected(x)
        compare(name, f"{case}; outputs on a random batch", out, out_ref,
                 "with a, b = svd_factorize(W, r): the first layer computes b x (weight b, r x in), the second a (b x) + bias "
                 "(weight a, out x r); copy them with torch.no_grad()", atol=1e-5, rtol=1e-4)
    return len(cases)
