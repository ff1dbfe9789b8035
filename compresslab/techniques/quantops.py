"""Affine quantization of tensors: qparams, quantize / dequantize, fake-quant with the STE, observers.

A real number x is stored as an integer q on a grid of 2^b levels,

    q = clamp(round(x / s) + z, q_min, q_max),      x_hat = s * (q - z),

with scale s > 0 and zero point z (an integer, so that x = 0 is exactly representable).
Symmetric: z = 0 and the grid is [-(2^(b-1) - 1), 2^(b-1) - 1] (narrow range: 2 bits is {-1, 0, 1}).
Asymmetric: the grid is [0, 2^b - 1] and z shifts it to cover [lo, hi].
Rounding error is at most s/2 inside the range; values outside are clipped. Observers choose [lo, hi].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from compresslab.core.validate import check_bits, check_choice, check_float, check_int, check_tensor

__all__ = [
    "channel_rows",
    "SCHEMES",
    "GRANULARITIES",
    "ACT_GRANULARITIES",
    "OBSERVERS",
    "MAX_SAMPLES",
    "qrange",
    "choose_qparams",
    "quantize_affine",
    "dequantize_affine",
    "fake_quantize",
    "sqnr_db",
    "error_split",
    "Observer",
    "MinMaxObserver",
    "PercentileObserver",
    "MSEObserver",
    "make_observer",
    "QuantizedTensor",
    "quantize_tensor",
]

SCHEMES = ("symmetric", "asymmetric")
GRANULARITIES = ("per_tensor", "per_channel")
ACT_GRANULARITIES = ("per_tensor",)
OBSERVERS = ("minmax", "percentile", "mse")
MAX_SAMPLES = 2**18  # values per channel an observer keeps for percentile / MSE search


# ----------------------------------------------------------------- tensor primitives

def _check_bits(bits: int, field_name: str = "bits", owner: str = "") -> None:
    check_bits(owner, field_name, bits, 2, 16)


def _check_choice(value: str, choices: tuple[str, ...], field_name: str, owner: str = "") -> None:
    check_choice(owner, field_name, value, choices)


def qrange(bits: int, scheme: str) -> tuple[int, int]:
    """Integer grid [q_min, q_max]: symmetric [-(2^(b-1)-1), 2^(b-1)-1], asymmetric [0, 2^b - 1].

    >>> qrange(8, "symmetric"), qrange(4, "asymmetric")
    ((-127, 127), (0, 15))
    """
    _check_bits(bits)
    _check_choice(scheme, SCHEMES, "scheme")
    if scheme == "symmetric":
        return -(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def choose_qparams(lo: torch.Tensor | float, hi: torch.Tensor | float, bits: int, scheme: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point that map [lo, hi] (widened to include 0) onto the b-bit grid.

    symmetric:  s = max(|lo|, |hi|) / q_max,                z = 0
    asymmetric: s = (hi - lo) / (q_max - q_min),   z = clamp(q_min - round(lo / s), q_min, q_max)
    lo, hi may be scalars (per tensor) or 1-D tensors (one range per channel). s >= float32 eps.

    >>> s, z = choose_qparams(-1.0, 2.0, bits=2, scheme="asymmetric")  # s = 3 / 3, z = 0 - round(-1 / 1)
    >>> float(s), int(z)
    (1.0, 1)
    >>> s, z = choose_qparams(-0.5, 1.27, bits=8, scheme="symmetric")  # s = 1.27 / 127
    >>> round(float(s), 6), int(z)
    (0.01, 0)
    """
    qmin, qmax = qrange(bits, scheme)
    lo = torch.clamp(torch.as_tensor(lo, dtype=torch.float32), max=0.0)
    hi = torch.clamp(torch.as_tensor(hi, dtype=torch.float32), min=0.0)
    eps = torch.finfo(torch.float32).eps
    if scheme == "symmetric":
        scale = torch.clamp(torch.maximum(-lo, hi) / qmax, min=eps)
        zero_point = torch.zeros_like(scale, dtype=torch.int32)
    else:
        scale = torch.clamp((hi - lo) / (qmax - qmin), min=eps)
        zero_point = torch.clamp(qmin - torch.round(lo / scale), qmin, qmax).to(torch.int32)
    return scale, zero_point


def _along(t: torch.Tensor, x: torch.Tensor, axis: int | None) -> torch.Tensor:
    """Reshape per-channel parameters t (C,) to broadcast against x along `axis`."""
    t = torch.as_tensor(t, device=x.device)
    if axis is None or t.dim() == 0:
        return t
    shape = [1] * x.dim()
    shape[axis] = -1
    return t.reshape(shape)


def quantize_affine(x: torch.Tensor, scale, zero_point, qmin: int, qmax: int, axis: int | None = None) -> torch.Tensor:
    """q = clamp(round(x * (1/s)) + z, q_min, q_max) as int32 (x * (1/s): the same float ops as torch's kernels).

    >>> x = torch.tensor([-1.0, 0.0, 0.5, 2.0, 3.0])
    >>> quantize_affine(x, 1.0, 1, qmin=0, qmax=3)  # round(0.5) = 0 (half to even); 3 + 1 = 4 clips to 3
    tensor([0, 1, 1, 3, 3], dtype=torch.int32)
    """
    s, z = _along(scale, x, axis).float(), _along(zero_point, x, axis)
    return torch.clamp(torch.round(x * (1.0 / s)) + z, qmin, qmax).to(torch.int32)


def dequantize_affine(q: torch.Tensor, scale, zero_point, axis: int | None = None) -> torch.Tensor:
    """x_hat = s * (q - z) in float32.

    >>> dequantize_affine(torch.tensor([0, 1, 3], dtype=torch.int32), 0.5, 1)
    tensor([-0.5000,  0.0000,  1.0000])
    """
    s, z = _along(scale, q, axis).float(), _along(zero_point, q, axis)
    return (q - z).float() * s


class _RoundWithSTE(torch.autograd.Function):
    """Forward: fake quantization. Backward: the straight-through estimator, d x_hat / d x = 1 inside the grid, 0 where clipped."""

    @staticmethod
    def forward(ctx, x, scale, zero_point, qmin, qmax):
        q = torch.round(x * (1.0 / scale)) + zero_point
        inside = (q >= qmin) & (q <= qmax)
        ctx.save_for_backward(inside)
        return (torch.clamp(q, qmin, qmax) - zero_point) * scale

    @staticmethod
    def backward(ctx, grad):
        (inside,) = ctx.saved_tensors
        return grad * inside, None, None, None, None


def fake_quantize(x: torch.Tensor, scale, zero_point, qmin: int, qmax: int, axis: int | None = None) -> torch.Tensor:
    """dequantize(quantize(x)) in one step, differentiable through the straight-through estimator.

    >>> x = torch.tensor([-1.0, 0.0, 0.5, 2.0, 3.0], requires_grad=True)
    >>> y = fake_quantize(x, 1.0, 1, qmin=0, qmax=3)
    >>> y.detach()  # equals torch.fake_quantize_per_tensor_affine(x, 1.0, 1, 0, 3)
    tensor([-1.,  0.,  0.,  2.,  2.])
    >>> y.sum().backward(); x.grad  # straight-through: gradient 1 inside the grid, 0 where clipped
    tensor([1., 1., 1., 1., 0.])
    """
    s = _along(scale, x, axis).to(x.dtype)
    z = _along(zero_point, x, axis).to(x.dtype)
    return _RoundWithSTE.apply(x, s, z, qmin, qmax)


def sqnr_db(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio 10 log10(sum x^2 / sum (x - x_hat)^2) in dB (inf if exact)."""
    noise = float(((x.float() - x_hat.float()) ** 2).sum())
    signal = float((x.float() ** 2).sum())
    return math.inf if noise == 0 else 10 * math.log10(max(signal, 1e-30) / noise)


def error_split(x: torch.Tensor, lo: float, hi: float, bits: int, scheme: str) -> tuple[float, float]:
    """Mean squared error of quantizing x on the grid for [lo, hi], split into its rounding part
    (values inside the grid, error <= s/2 each) and its clipping part (values beyond the ends)."""
    scale, zp = choose_qparams(lo, hi, bits, scheme)
    qmin, qmax = qrange(bits, scheme)
    q = torch.round(x * (1.0 / scale)) + zp
    inside = (q >= qmin) & (q <= qmax)
    err = (x - fake_quantize(x, scale, zp, qmin, qmax)) ** 2
    n = x.numel()
    return float(err[inside].sum()) / n, float(err[~inside].sum()) / n


# ----------------------------------------------------------------- observers

def channel_rows(x: torch.Tensor, axis: int | None) -> torch.Tensor:
    """x as a (channels, values) matrix: one row per channel along `axis`, or one row in all."""
    x = x.detach().float()
    return x.reshape(1, -1) if axis is None else x.movedim(axis, 0).reshape(x.shape[axis], -1)


def _rank(p: float, n: int) -> int:
    """Nearest rank of the p-quantile among n values: k = ceil(p n), in [1, n]."""
    return min(max(math.ceil(p * n - 1e-9), 1), n)


class Observer:
    """Watches tensors during calibration and proposes a range [lo, hi] (per tensor or per channel).

    This base class is min-max: lo = min x, hi = max x over everything seen.
    """

    keeps_samples = False

    def __init__(self, bits: int, scheme: str, axis: int | None = None, seed: int = 0):
        qrange(bits, scheme)  # validates
        self.bits, self.scheme, self.axis, self.seed = bits, scheme, axis, seed
        self.reset()

    def reset(self) -> None:
        self.min_val: torch.Tensor | None = None
        self.max_val: torch.Tensor | None = None
        self.samples: torch.Tensor | None = None
        self.seen = 0
        self._draws = 0

    def update(self, x: torch.Tensor) -> None:
        rows = channel_rows(x, self.axis)
        lo, hi = rows.amin(1), rows.amax(1)
        self.min_val = lo if self.min_val is None else torch.minimum(self.min_val, lo)
        self.max_val = hi if self.max_val is None else torch.maximum(self.max_val, hi)
        if self.keeps_samples:
            self._keep(rows)

    def _keep(self, rows: torch.Tensor) -> None:
        """Keep at most MAX_SAMPLES values per row, drawn uniformly over everything seen (seeded)."""
        self._draws += 1
        gen = torch.Generator().manual_seed((self.seed * 100003 + self._draws) % 2**64)
        old = self.samples
        total = self.seen + rows.shape[1]
        if old is None:
            merged = rows
        else:
            merged = torch.cat([old, rows], 1)
        if merged.shape[1] > MAX_SAMPLES:
            n_old = 0 if old is None else round(MAX_SAMPLES * self.seen / total)
            n_old = min(n_old, 0 if old is None else old.shape[1])
            take_old = torch.randint(old.shape[1], (n_old,), generator=gen) if n_old else torch.empty(0, dtype=torch.long)
            take_new = torch.randint(rows.shape[1], (MAX_SAMPLES - n_old,), generator=gen)
            parts = [rows[:, take_new]] if old is None else [old[:, take_old], rows[:, take_new]]
            merged = torch.cat(parts, 1)
        self.samples, self.seen = merged, total

    def _check_seen(self) -> None:
        if self.min_val is None:
            raise RuntimeError("observer has seen no data: call update(x) (calibrate) first")

    def _squeeze(self, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (lo[0], hi[0]) if self.axis is None else (lo, hi)

    def range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """[lo, hi]: scalars per tensor, (C,) per channel."""
        self._check_seen()
        return self._squeeze(self.min_val, self.max_val)

    def qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        return choose_qparams(*self.range(), self.bits, self.scheme)


MinMaxObserver = Observer


class PercentileObserver(Observer):
    """Clip the tails: hi = the p-th percentile (nearest rank k = ceil(p n / 100)) and lo clips as many
    values from below; symmetric: +-the p-th percentile of |x|. Computed on the kept samples."""

    keeps_samples = True

    def __init__(self, bits: int, scheme: str, axis: int | None = None, percentile: float = 99.99, seed: int = 0):
        check_percentile(percentile)
        self.percentile = percentile
        super().__init__(bits, scheme, axis, seed)

    def range(self) -> tuple[torch.Tensor, torch.Tensor]:
        self._check_seen()
        x = self.samples
        k = _rank(self.percentile / 100, x.shape[1])
        if self.scheme == "symmetric":
            a = torch.kthvalue(x.abs(), k, dim=1).values
            return self._squeeze(-a, a)
        # as many values clipped below as above: the k-th largest and the k-th smallest
        lo = torch.kthvalue(x, x.shape[1] + 1 - k, dim=1).values
        return self._squeeze(lo, torch.kthvalue(x, k, dim=1).values)


class MSEObserver(Observer):
    """Search the clipping range that minimises the mean squared quantization error.

    Candidates are [t lo, t hi] with t in (0, 1]: first `grid` evenly spaced values of t (t = 1 is
    min-max, so the error found is never worse than min-max's), then `grid` finer values around the
    best one. Per channel, on the kept samples.
    """

    keeps_samples = True

    def __init__(self, bits: int, scheme: str, axis: int | None = None, grid: int = 20, seed: int = 0):
        check_grid(grid)
        self.grid = grid
        super().__init__(bits, scheme, axis, seed)

    def _errors(self, t: torch.Tensor) -> torch.Tensor:
        """Mean squared error of each row of the samples on the grid for [t lo, t hi] (t per row)."""
        qmin, qmax = qrange(self.bits, self.scheme)
        scale, zp = choose_qparams(t * self.min_val, t * self.max_val, self.bits, self.scheme)
        x = self.samples
        return ((x - fake_quantize(x, scale, zp, qmin, qmax, axis=0)) ** 2).mean(1)

    def range(self) -> tuple[torch.Tensor, torch.Tensor]:
        self._check_seen()
        rows = self.samples.shape[0]
        best_t, best_err = torch.ones(rows), torch.full((rows,), math.inf)
        step = 1.0 / self.grid
        for value in torch.linspace(1.0, step, self.grid):  # coarse, from min-max down; ties keep the wider range
            t = torch.full((rows,), float(value))
            err = self._errors(t)
            better = err < best_err
            best_err, best_t = torch.where(better, err, best_err), torch.where(better, t, best_t)
        center = best_t.clone()
        for d in torch.linspace(-step, step, self.grid):  # fine: around each row's best t
            t = torch.clamp(center + d, min=step / self.grid, max=1.0)
            err = self._errors(t)
            better = err < best_err
            best_err, best_t = torch.where(better, err, best_err), torch.where(better, t, best_t)
        return self._squeeze(best_t * self.min_val, best_t * self.max_val)


def check_percentile(percentile: float, owner: str = "") -> None:
    check_float(owner, "percentile", percentile, 0, 100, lo_open=True)


def check_grid(grid: int, owner: str = "") -> None:
    check_int(owner, "mse_grid", grid, 2, 10000)


def make_observer(kind: str, bits: int, scheme: str, axis: int | None = None, percentile: float = 99.99,
                  mse_grid: int = 20, seed: int = 0) -> Observer:
    """An observer by name: 'minmax', 'percentile' or 'mse'."""
    _check_choice(kind, OBSERVERS, "observer")
    if kind == "percentile":
        return PercentileObserver(bits, scheme, axis, percentile, seed)
    if kind == "mse":
        return MSEObserver(bits, scheme, axis, mse_grid, seed)
    return Observer(bits, scheme, axis, seed)


@dataclass
class QuantizedTensor:
    """A tensor quantized once: the integers, the grid and the dequantized values."""

    q: torch.Tensor
    values: torch.Tensor
    scale: torch.Tensor
    zero_point: torch.Tensor
    qmin: int
    qmax: int
    axis: int | None
    sqnr_db: float

    def grid(self, channel: int = 0) -> torch.Tensor:
        """The 2^b representable real values s (q - z) of one channel (or of the tensor)."""
        s = self.scale if self.scale.dim() == 0 else self.scale[channel]
        z = self.zero_point if self.zero_point.dim() == 0 else self.zero_point[channel]
        return (torch.arange(self.qmin, self.qmax + 1) - z).float() * s


def quantize_tensor(x: torch.Tensor, bits: int = 8, scheme: str = "symmetric", granularity: str = "per_tensor",
                    observer: str = "minmax", axis: int = 0, percentile: float = 99.99,
                    mse_grid: int = 20) -> QuantizedTensor:
    """Observe `x` itself, choose qparams and quantize it (per channel along `axis` if asked).

    Raises ValueError when `x` is empty or holds NaN/inf (its range would be meaningless)."""
    check_tensor("x", x)
    _check_choice(granularity, GRANULARITIES, "granularity")
    ch_axis = axis if granularity == "per_channel" else None
    obs = make_observer(observer, bits, scheme, ch_axis, percentile, mse_grid)
    obs.update(x)
    scale, zp = obs.qparams()
    qmin, qmax = qrange(bits, scheme)
    q = quantize_affine(x, scale, zp, qmin, qmax, ch_axis)
    values = dequantize_affine(q, scale, zp, ch_axis)
    return QuantizedTensor(q, values, scale, zp, qmin, qmax, ch_axis, sqnr_db(x, values))
