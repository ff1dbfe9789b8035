"""Tensor decompositions of a conv kernel: Tucker-2 (Kim et al. 2016) and CP (Lebedev et al. 2015).

A kernel K (N x C x k_h x k_w: out channels, in channels, rows, columns) is a 4-way tensor.

Tucker-2 (HOSVD on the two channel modes). U_out (N x r_out) holds the leading left singular
vectors of the mode-0 unfolding K_(0) (N x C k_h k_w), U_in (C x r_in) those of the mode-1
unfolding K_(1) (C x N k_h k_w); the core is G = K x_0 U_out^T x_1 U_in^T (r_out x r_in x k_h x k_w)
and K ~ G x_0 U_out x_1 U_in, i.e. K[n,c,y,x] ~ sum_{a,b} U_out[n,a] G[a,b,y,x] U_in[c,b].
As layers: a 1x1 conv C -> r_in (U_in^T), a k_h x k_w conv r_in -> r_out (G, with the original
stride and padding), a 1x1 conv r_out -> N (U_out, with the bias). Weights: C r_in + r_in r_out k_h k_w
+ r_out N. With r_out = N and r_in = C (and N <= C k_h k_w, C <= N k_h k_w) it is exact.

CP (canonical polyadic): K[n,c,y,x] ~ sum_r A[n,r] B[c,r] Y[y,r] X[x,r], fitted by alternating least
squares: each factor in turn solves its linear least-squares problem with the others fixed,
F_mode = MTTKRP_mode (Hadamard product of the other factors' Gram matrices)^+, so the error never
increases. As layers: a 1x1 conv C -> R (B^T), a k_h x 1 depthwise conv (Y), a 1 x k_w depthwise
conv (X), a 1x1 conv R -> N (A, with the bias). Weights: R (N + C + k_h + k_w).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

import torch
from torch import nn

from compresslab.core import metrics
from compresslab.core.validate import check_seed, check_tensor

__all__ = [
    "TENSOR_MODES",
    "Tucker2",
    "tucker2",
    "tucker2_reconstruct",
    "tucker2_params",
    "cp_als",
    "cp_reconstruct",
    "cp_params",
    "tucker2_layer",
    "cp_layer",
    "decompose_conv",
    "decomposed_weight",
    "conv_params",
    "rank_for_budget",
]

TENSOR_MODES = ("tucker2", "cp")
MAX_CP_ITERS = 10_000  # ALS sweeps: far beyond convergence, short of a hang
CP_ITERS = 60


def _check_kernel(w: torch.Tensor) -> None:
    """A conv kernel: a finite, non-empty 4-D tensor (N, C, k_h, k_w)."""
    check_tensor("conv kernel (N, C, k_h, k_w)", w, dim=4)


def _check_rank(value: object, lo: int, hi: int | None, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo or (hi is not None and value > hi):
        raise ValueError(f"{what}={value!r} must be an integer in [{lo}, {hi if hi is not None else 'inf'}]")
    return value


class Tucker2(NamedTuple):
    """K ~ core x_0 u_out x_1 u_in; core: r_out x r_in x k_h x k_w, u_out: N x r_out, u_in: C x r_in."""

    core: torch.Tensor
    u_out: torch.Tensor
    u_in: torch.Tensor


def _leading_vectors(unfolding: torch.Tensor, r: int) -> torch.Tensor:
    u, _, _ = torch.linalg.svd(unfolding, full_matrices=False)
    return u[:, :r]


def tucker2(w: torch.Tensor, ranks: tuple[int, int]) -> Tucker2:
    """Tucker-2 of kernel `w` by HOSVD with ranks (r_out, r_in) on the output and input channel modes."""
    _check_kernel(w)
    n, c, kh, kw = w.shape
    if not isinstance(ranks, (tuple, list)) or len(ranks) != 2:
        raise ValueError(f"ranks={ranks!r} must be a pair (r_out, r_in) of integers")
    r_out = _check_rank(ranks[0], 1, min(n, c * kh * kw), "r_out")
    r_in = _check_rank(ranks[1], 1, min(c, n * kh * kw), "r_in")
    w64 = w.detach().double()
    u_out = _leading_vectors(w64.reshape(n, -1), r_out)
    u_in = _leading_vectors(w64.transpose(0, 1).reshape(c, -1), r_in)
    core = torch.einsum("ncyx,na,cb->abyx", w64, u_out, u_in)
    return Tucker2(*(t.to(w.dtype) for t in (core, u_out, u_in)))


def tucker2_reconstruct(dec: Tucker2) -> torch.Tensor:
    """K[n,c,y,x] = sum_{a,b} u_out[n,a] core[a,b,y,x] u_in[c,b]."""
    return torch.einsum("abyx,na,cb->ncyx", dec.core, dec.u_out, dec.u_in)


def tucker2_params(shape: tuple[int, ...], ranks: tuple[int, int]) -> int:
    """Weights of the three Tucker-2 convs: C r_in + r_in r_out k_h k_w + r_out N."""
    n, c, kh, kw = shape
    r_out, r_in = ranks
    return c * r_in + r_in * r_out * kh * kw + r_out * n


def _mttkrp(w: torch.Tensor, factors: list[torch.Tensor], mode: int) -> torch.Tensor:
    letters = "abcd"
    others = [i for i in range(4) if i != mode]
    spec = f"{letters}," + ",".join(f"{letters[i]}r" for i in others) + f"->{letters[mode]}r"
    return torch.einsum(spec, w, *(factors[i] for i in others))


def cp_reconstruct(factors: list[torch.Tensor]) -> torch.Tensor:
    """K[n,c,y,x] = sum_r A[n,r] B[c,r] Y[y,r] X[x,r]."""
    return torch.einsum("nr,cr,yr,xr->ncyx", *factors)


def cp_als(w: torch.Tensor, rank: int, iters: int = CP_ITERS, seed: int = 0) -> tuple[list[torch.Tensor], list[float]]:
    """Rank-`rank` CP of kernel `w` by ALS from a seeded random start, in float64.

    Returns ([A (N x R), B (C x R), Y (k_h x R), X (k_w x R)], relative errors ||K - K_hat|| / ||K||
    after each sweep: non-increasing, since every update solves its least-squares problem exactly
    and rescaling columns between factors does not change K_hat)."""
    _check_kernel(w)
    _check_rank(rank, 1, w.numel(), "rank")  # N C k_h k_w rank-one terms reproduce any kernel
    _check_rank(iters, 1, MAX_CP_ITERS, "iters")
    check_seed("cp_als", "seed", seed)
    w64 = w.detach().double()
    gen = torch.Generator().manual_seed(seed)
    factors = [torch.randn(d, rank, generator=gen, dtype=torch.float64) for d in w64.shape]
    norm = float(w64.norm())
    errors = []
    for _ in range(iters):
        for mode in range(4):
            gram = torch.ones(rank, rank, dtype=torch.float64)
            for i in range(4):
                if i != mode:
                    gram = gram * (factors[i].T @ factors[i])
            factors[mode] = _mttkrp(w64, factors, mode) @ torch.linalg.pinv(gram)
        # balance the column norms over the four factors (same product, better conditioned)
        norms = torch.stack([f.norm(dim=0) for f in factors]).clamp_min(1e-300)
        scale = norms.prod(0) ** 0.25
        factors = [f / nf * scale for f, nf in zip(factors, norms)]
        errors.append(float((w64 - cp_reconstruct(factors)).norm()) / max(norm, 1e-300))
    return [f.to(w.dtype) for f in factors], errors


def cp_params(shape: tuple[int, ...], rank: int) -> int:
    """Weights of the four CP convs: R (N + C + k_h + k_w)."""
    return rank * sum(shape)


def _conv(c_in: int, c_out: int, kernel, like: nn.Conv2d, *, stride=1, padding=0, dilation=1,
          groups: int = 1, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel, stride, padding, dilation, groups=groups, bias=bias,
                     padding_mode=like.padding_mode, device=like.weight.device, dtype=like.weight.dtype)


def _check_conv(layer: nn.Module) -> torch.Tensor:
    if not isinstance(layer, nn.Conv2d) or layer.groups != 1:
        raise ValueError(f"Tucker-2 and CP decompose an ungrouped nn.Conv2d, got {layer!r}")
    if isinstance(layer.padding, str):
        raise ValueError(f"tensor decompositions need numeric padding, got padding={layer.padding!r}")
    return metrics.effective_weight(layer).detach()


def _fill(seq: nn.Sequential, weights: list[torch.Tensor], layer: nn.Conv2d) -> nn.Sequential:
    with torch.no_grad():
        for module, w in zip(seq.children(), weights):
            module.weight.copy_(w)
        if layer.bias is not None:
            list(seq.children())[-1].bias.copy_(layer.bias.detach())
    return seq


def tucker2_layer(layer: nn.Conv2d, ranks: tuple[int, int]) -> nn.Sequential:
    """Sequential(first: 1x1 C -> r_in, core: k x k r_in -> r_out, last: 1x1 r_out -> N, bias)."""
    w = _check_conv(layer)
    dec = tucker2(w, ranks)
    n, c = w.shape[:2]
    r_out, r_in = ranks
    seq = nn.Sequential(OrderedDict([
        ("first", _conv(c, r_in, 1, layer)),
        ("core", _conv(r_in, r_out, layer.kernel_size, layer, stride=layer.stride, padding=layer.padding,
                       dilation=layer.dilation)),
        ("last", _conv(r_out, n, 1, layer, bias=layer.bias is not None))]))
    return _fill(seq, [dec.u_in.T[:, :, None, None], dec.core, dec.u_out[:, :, None, None]], layer)


def cp_layer(layer: nn.Conv2d, rank: int, iters: int = CP_ITERS, seed: int = 0) -> nn.Sequential:
    """Sequential(first: 1x1 C -> R, vertical: k_h x 1 depthwise, horizontal: 1 x k_w depthwise,
    last: 1x1 R -> N with the bias)."""
    w = _check_conv(layer)
    (a, b, y, x), _ = cp_als(w, rank, iters, seed)
    n, c, kh, kw = w.shape
    (sh, sw), (ph, pw), (dh, dw) = layer.stride, layer.padding, layer.dilation
    seq = nn.Sequential(OrderedDict([
        ("first", _conv(c, rank, 1, layer)),
        ("vertical", _conv(rank, rank, (kh, 1), layer, stride=(sh, 1), padding=(ph, 0), dilation=(dh, 1),
                           groups=rank)),
        ("horizontal", _conv(rank, rank, (1, kw), layer, stride=(1, sw), padding=(0, pw), dilation=(1, dw),
                             groups=rank)),
        ("last", _conv(rank, n, 1, layer, bias=layer.bias is not None))]))
    return _fill(seq, [b.T[:, :, None, None], y.T[:, None, :, None], x.T[:, None, None, :],
                       a[:, :, None, None]], layer)


def decompose_conv(layer: nn.Conv2d, rank: int, mode: str) -> nn.Sequential:
    """The layer decomposed by `mode`: 'tucker2' with ranks (min(rank, N), min(rank, C)), or 'cp'."""
    if mode not in TENSOR_MODES:
        raise ValueError(f"mode={mode!r} must be one of {TENSOR_MODES}")
    if mode == "cp":
        return cp_layer(layer, rank)
    n, c = layer.weight.shape[:2]
    return tucker2_layer(layer, (min(rank, n), min(rank, c)))


def decomposed_weight(seq: nn.Sequential) -> torch.Tensor:
    """The single kernel a Tucker-2 or CP Sequential computes (N x C x k_h x k_w)."""
    if hasattr(seq, "core"):
        return tucker2_reconstruct(Tucker2(seq.core.weight.detach(), seq.last.weight.detach()[:, :, 0, 0],
                                           seq.first.weight.detach()[:, :, 0, 0].T))
    factors = [seq.last.weight.detach()[:, :, 0, 0], seq.first.weight.detach()[:, :, 0, 0].T,
               seq.vertical.weight.detach()[:, 0, :, 0].T, seq.horizontal.weight.detach()[:, 0, 0, :].T]
    return cp_reconstruct(factors)


def conv_params(shape: tuple[int, ...], mode: str, rank: int) -> int:
    """Weights of a kernel of `shape` (N, C, k_h, k_w) decomposed at `rank` by `mode`:
    'channel' r (C k_h k_w + N), 'spatial' r (C k_h + N k_w), 'tucker2' (ranks clamped to N and C as
    in `decompose_conv`) C r_in + r_in r_out k_h k_w + r_out N, 'cp' r (N + C + k_h + k_w)."""
    n, c, kh, kw = shape
    if mode == "channel":
        return rank * (c * kh * kw + n)
    if mode == "spatial":
        return rank * (c * kh + n * kw)
    if mode == "tucker2":
        return tucker2_params(shape, (min(rank, n), min(rank, c)))
    if mode == "cp":
        return cp_params(shape, rank)
    raise ValueError(f"mode={mode!r} must be one of ('channel', 'spatial', 'tucker2', 'cp')")


def rank_for_budget(shape: tuple[int, ...], mode: str, budget: float) -> int:
    """The largest rank whose `conv_params` stay within `budget` weights (at least 1), capped at the
    rank `lowrank` accepts: min of the matrix's sides for channel/spatial/tucker2 (tucker2: N, C k_h k_w)."""
    n, c, kh, kw = shape
    caps = {"channel": min(n, c * kh * kw), "spatial": min(c * kh, n * kw), "tucker2": min(n, c * kh * kw),
            "cp": n * c * kh * kw}
    if mode not in caps:
        raise ValueError(f"mode={mode!r} must be one of {tuple(caps)}")
    if mode == "cp":  # linear in r: solve directly
        return max(1, min(caps["cp"], int(budget // sum(shape))))
    fits = [r for r in range(1, caps[mode] + 1) if conv_params(shape, mode, r) <= budget]
    return max(fits) if fits else 1
