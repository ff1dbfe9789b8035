"""Truncated SVD of one matrix: the tensor primitives of low-rank factorization.

W (m x n) = U diag(s) V^T. The best rank-r approximation in the Frobenius norm (Eckart-Young) is
A B with A = U_r diag(sqrt(s_r)) (m x r), B = diag(sqrt(s_r)) V_r^T (r x n), with error
||W - A B||_F = sqrt(sum_{i > r} s_i^2). It stores r (m + n) numbers instead of m n, so it saves
parameters only while r < m n / (m + n) (the break-even rank).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

import torch

from compresslab.core.validate import check_float, check_int, check_overflow, check_tensor

__all__ = [
    "SVD",
    "svd",
    "svd_factorize",
    "singular_values",
    "energy_curve",
    "rank_for_energy",
    "eckart_young_error",
    "break_even_rank",
    "rank_for_ratio",
]


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run LAPACK's SVD on one thread: it is a chain of small steps whose thread synchronisation
    costs more than it saves on a small (or busy) CPU (seconds instead of milliseconds)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _check_matrix(w: torch.Tensor) -> None:
    """A finite, non-empty 2-D floating-point matrix."""
    check_tensor("w (a 2-D matrix)", w, dim=2, kind="float")


def check_rank(rank: object, max_rank: int, what: str = "rank") -> int:
    if isinstance(rank, bool) or not isinstance(rank, int):
        raise ValueError(f"{what}={rank!r} must be an integer in [1, {max_rank}]")
    if not 1 <= rank <= max_rank:
        raise ValueError(f"{what}={rank} must be in [1, {max_rank}] (the rank of a matrix is at most "
                         f"min(rows, cols) = {max_rank})")
    return rank


class SVD(NamedTuple):
    """Thin SVD w = u diag(s) vh of an m x n matrix (u: m x k, s: k, vh: k x n, k = min(m, n))."""

    u: torch.Tensor
    s: torch.Tensor
    vh: torch.Tensor


def svd(w: torch.Tensor) -> SVD:
    """The thin SVD of the matrix `w` (torch.linalg.svd, full_matrices=False)."""
    _check_matrix(w)
    try:
        with _one_thread():
            dec = SVD(*torch.linalg.svd(w.detach().float() if w.element_size() < 4 else w.detach(),
                                        full_matrices=False))  # LAPACK has no half precision
    except torch.linalg.LinAlgError as err:  # values so large that LAPACK's intermediate sums overflow
        raise ValueError(f"the SVD of w ({tuple(w.shape)}, {w.dtype}) failed: {str(err).splitlines()[0]}") from None
    check_overflow("the singular values", dec.s)
    return dec


def check_svd(w: torch.Tensor, dec: SVD) -> None:
    """A precomputed SVD must be the SVD of `w`: same shape, and U diag(s) V^T x = W x for a few
    seeded random x (O(mn) work instead of rebuilding W)."""
    if (dec.u.shape[0], dec.vh.shape[1]) != tuple(w.shape):
        raise ValueError(f"the given SVD is of a {dec.u.shape[0]}x{dec.vh.shape[1]} matrix, not {tuple(w.shape)}")
    x = torch.randn(w.shape[1], 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    expected = w.detach().double() @ x
    got = dec.u.double() @ (dec.s.double()[:, None] * (dec.vh.double() @ x))
    if float((got - expected).norm()) > 1e-4 * float(expected.norm()) + 1e-12:
        raise ValueError("the given SVD does not reconstruct this weight (computed for other weights?)")


def svd_factorize(w: torch.Tensor, rank: int, decomposition: SVD | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(a, b) with a @ b the best rank-`rank` approximation of `w` (m x n); a: m x r, b: r x n.

    a = U_r diag(sqrt(s_r)), b = diag(sqrt(s_r)) V_r^T (the singular values split evenly, so both
    factors have the same scale, which helps fine-tuning). `decomposition`: svd(w), if already known.

    >>> w = torch.diag(torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64))
    >>> a, b = svd_factorize(w, 2)
    >>> a.shape, b.shape
    (torch.Size([3, 2]), torch.Size([2, 3]))
    >>> torch.linalg.norm(w - a @ b).item()  # = eckart_young_error: the dropped singular value
    1.0
    """
    _check_matrix(w)
    check_rank(rank, min(w.shape))
    if decomposition is None:
        decomposition = svd(w)
    else:
        check_svd(w, decomposition)
    u, s, vh = decomposition
    root = s[:rank].sqrt()
    a, b = (u[:, :rank] * root).to(w.dtype), (root[:, None] * vh[:rank]).to(w.dtype)
    check_overflow("the SVD factors", a)
    check_overflow("the SVD factors", b)
    return a, b


def singular_values(w: torch.Tensor) -> torch.Tensor:
    """Singular values of the matrix `w`, largest first."""
    _check_matrix(w)
    with _one_thread():
        return torch.linalg.svdvals(w.detach())


def energy_curve(s: torch.Tensor) -> torch.Tensor:
    """E(r) = sum_{i <= r} s_i^2 / sum_i s_i^2 for r = 1..len(s) (the kept 'energy').

    >>> energy_curve(torch.tensor([3.0, 2.0, 1.0]))  # 9/14, 13/14, 14/14
    tensor([0.6429, 0.9286, 1.0000], dtype=torch.float64)

    s: a non-empty, finite, non-negative 1-D spectrum; an all-zero one (a zero matrix) keeps all of
    its (zero) energy at every rank: E(r) = 1.
    """
    _check_spectrum(s)
    sq = s.double() ** 2
    total = sq.sum()
    return torch.ones_like(sq) if total == 0 else torch.cumsum(sq, 0) / total


def rank_for_energy(s: torch.Tensor, energy: float) -> int:
    """The smallest r with E(r) >= energy, energy in (0, 1].

    >>> rank_for_energy(torch.tensor([3.0, 2.0, 1.0]), 0.9)  # E(1) = 0.64 < 0.9 <= E(2) = 0.93
    2
    """
    check_fraction(energy, "energy")
    curve = energy_curve(s)
    return min(int((curve < energy - 1e-12).sum()) + 1, len(s))


def eckart_young_error(s: torch.Tensor, rank: int) -> float:
    """||W - W_r||_F = sqrt(sum_{i > r} s_i^2), the error of the best rank-r approximation.

    >>> eckart_young_error(torch.tensor([3.0, 2.0, 1.0]), 1)  # sqrt(2^2 + 1^2)
    2.23606797749979
    """
    _check_spectrum(s)
    check_int("", "rank", rank, 0, None)
    return float((s.double()[rank:] ** 2).sum().sqrt())


def break_even_rank(m: int, n: int) -> float:
    """m n / (m + n): a rank-r factorization of an m x n matrix saves parameters iff r < this.

    >>> break_even_rank(300, 100)  # a 300 x 100 layer saves parameters only at rank < 75
    75.0
    """
    return m * n / (m + n)


def rank_for_ratio(m: int, n: int, ratio: float) -> int:
    """The largest r >= 1 with r (m + n) <= ratio * m n (factor weights over dense weights)."""
    check_fraction(ratio, "param_ratio")
    return max(1, min(min(m, n), math.floor(ratio * m * n / (m + n) + 1e-9)))


def _check_spectrum(s: object) -> None:
    """Singular values: a non-empty, finite, non-negative 1-D tensor."""
    check_tensor("singular values", s, dim=1)
    if bool((s < 0).any()):
        raise ValueError("singular values must be >= 0")


def check_fraction(x: object, what: str) -> None:
    check_float("", what, x, 0, 1, lo_open=True)
