"""Affine quantization from scratch: qparams, observers, fake-quant with the STE, PTQ and QAT.

A real number x is stored as an integer q on a grid of 2^b levels,

    q = clamp(round(x / s) + z, q_min, q_max),      x_hat = s * (q - z),

with scale s > 0 and zero point z (an integer, so that x = 0 is exactly representable).
Symmetric: z = 0 and the grid is [-(2^(b-1) - 1), 2^(b-1) - 1] (narrow range: 2 bits is {-1, 0, 1}).
Asymmetric: the grid is [0, 2^b - 1] and z shifts it to cover [lo, hi].
Rounding error is at most s/2 inside the range; values outside are clipped. Observers choose [lo, hi].
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from . import metrics
from .data import Dataset
from .models import is_convnet, prunable_layers
from .training import TrainConfig, evaluate, train

SCHEMES = ("symmetric", "asymmetric")
GRANULARITIES = ("per_tensor", "per_channel")
ACT_GRANULARITIES = ("per_tensor",)
OBSERVERS = ("minmax", "percentile", "mse")
MAX_SAMPLES = 2**18  # values per channel an observer keeps for percentile / MSE search


# ----------------------------------------------------------------- tensor primitives

def _check_bits(bits: int, field_name: str = "bits") -> None:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 16:
        raise ValueError(f"{field_name}={bits!r} must be an integer in [2, 16]")


def _check_choice(value: str, choices: tuple[str, ...], field_name: str) -> None:
    if value not in choices:
        raise ValueError(f"{field_name}={value!r} must be one of {choices}")


def qrange(bits: int, scheme: str) -> tuple[int, int]:
    """Integer grid [q_min, q_max]: symmetric [-(2^(b-1)-1), 2^(b-1)-1], asymmetric [0, 2^b - 1]."""
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
    """q = clamp(round(x * (1/s)) + z, q_min, q_max) as int32 (x * (1/s): the same float ops as torch's kernels)."""
    s, z = _along(scale, x, axis).float(), _along(zero_point, x, axis)
    return torch.clamp(torch.round(x * (1.0 / s)) + z, qmin, qmax).to(torch.int32)


def dequantize_affine(q: torch.Tensor, scale, zero_point, axis: int | None = None) -> torch.Tensor:
    """x_hat = s * (q - z) in float32."""
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
    """dequantize(quantize(x)) in one step, differentiable through the straight-through estimator."""
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

def _rows(x: torch.Tensor, axis: int | None) -> torch.Tensor:
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
        rows = _rows(x, self.axis)
        lo, hi = rows.amin(1), rows.amax(1)
        self.min_val = lo if self.min_val is None else torch.minimum(self.min_val, lo)
        self.max_val = hi if self.max_val is None else torch.maximum(self.max_val, hi)
        if self.keeps_samples:
            self._keep(rows)

    def _keep(self, rows: torch.Tensor) -> None:
        """Keep at most MAX_SAMPLES values per row, drawn uniformly over everything seen (seeded)."""
        self._draws += 1
        gen = torch.Generator().manual_seed(self.seed * 100003 + self._draws)
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
        _check_percentile(percentile)
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
        _check_grid(grid)
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


def _check_percentile(percentile: float) -> None:
    if not (isinstance(percentile, (int, float)) and 0 < percentile <= 100):
        raise ValueError(f"percentile={percentile!r} must be in (0, 100]")


def _check_grid(grid: int) -> None:
    if isinstance(grid, bool) or not isinstance(grid, int) or not 2 <= grid <= 10000:
        raise ValueError(f"mse_grid={grid!r} must be an integer in [2, 10000]")


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
    """Observe `x` itself, choose qparams and quantize it (per channel along `axis` if asked)."""
    _check_choice(granularity, GRANULARITIES, "granularity")
    ch_axis = axis if granularity == "per_channel" else None
    obs = make_observer(observer, bits, scheme, ch_axis, percentile, mse_grid)
    obs.update(x)
    scale, zp = obs.qparams()
    qmin, qmax = qrange(bits, scheme)
    q = quantize_affine(x, scale, zp, qmin, qmax, ch_axis)
    values = dequantize_affine(q, scale, zp, ch_axis)
    return QuantizedTensor(q, values, scale, zp, qmin, qmax, ch_axis, sqnr_db(x, values))


# ----------------------------------------------------------------- fake-quant modules

class FakeQuantize(nn.Module):
    """x -> s (clamp(round(x/s) + z, q_min, q_max) - z) with the straight-through gradient.

    States: `observing` (calibration: record x, pass it through unchanged); otherwise quantize with the
    range [lo, hi] held in buffers. `dynamic` (weights in QAT): the range follows every input, its
    min/max times the clipping ratio the observer chose at calibration (1 for min-max), so a percentile
    or MSE choice carries over at no search cost per step. `momentum` > 0: while training, move
    [lo, hi] towards each batch's min/max (activations in QAT).
    """

    def __init__(self, bits: int = 8, scheme: str = "asymmetric", observer: str = "minmax",
                 axis: int | None = None, percentile: float = 99.99, mse_grid: int = 20, seed: int = 0):
        super().__init__()
        self.bits, self.scheme, self.axis = bits, scheme, axis
        self.qmin, self.qmax = qrange(bits, scheme)
        self.observer = make_observer(observer, bits, scheme, axis, percentile, mse_grid, seed)
        self.register_buffer("lo", torch.zeros(()))
        self.register_buffer("hi", torch.zeros(()))
        self.register_buffer("clip_lo", torch.ones(()))  # lo / min at calibration
        self.register_buffer("clip_hi", torch.ones(()))  # hi / max at calibration
        self.observing = False
        self.calibrated = False
        self.dynamic = False
        self.momentum = 0.0

    def extra_repr(self) -> str:
        return f"bits={self.bits}, scheme={self.scheme}, axis={self.axis}, observer={type(self.observer).__name__}"

    def set_range_from_observer(self) -> None:
        """Freeze [lo, hi] at the observer's proposal (and its clipping ratios); free its samples."""
        lo, hi = self.observer.range()
        mn, mx = self.observer._squeeze(self.observer.min_val, self.observer.max_val)
        self.lo, self.hi = lo.clone(), hi.clone()
        self.clip_lo = torch.where(mn < 0, lo / torch.where(mn < 0, mn, -1.0), 1.0)
        self.clip_hi = torch.where(mx > 0, hi / torch.where(mx > 0, mx, 1.0), 1.0)
        self.observer.reset()
        self.observing, self.calibrated = False, True

    def qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.calibrated:
            raise RuntimeError("FakeQuantize is not calibrated: run calibration (apply_ptq) first")
        return choose_qparams(self.lo, self.hi, self.bits, self.scheme)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observing:
            self.observer.update(x)
            return x
        if self.dynamic:
            rows = _rows(x, self.axis)
            mn, mx = rows.amin(1), rows.amax(1)
            if self.axis is None:
                mn, mx = mn[0], mx[0]
            self.lo, self.hi = self.clip_lo * mn, self.clip_hi * mx
        elif self.training and self.momentum > 0 and self.calibrated:
            with torch.no_grad():
                m = self.momentum
                self.lo = (1 - m) * self.lo + m * x.detach().amin()
                self.hi = (1 - m) * self.hi + m * x.detach().amax()
        scale, zp = self.qparams()
        return fake_quantize(x, scale.to(x.device), zp.to(x.device), self.qmin, self.qmax, self.axis)


class QuantLinear(nn.Linear):
    """nn.Linear computing with fake-quantized input and weight; the bias stays float
    (a real INT8 kernel keeps it in int32 at scale s_x s_w, which is exact enough)."""

    weight_fake_quant: FakeQuantize
    input_fake_quant: nn.Module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.input_fake_quant(x), self.weight_fake_quant(self.weight), self.bias)


class QuantConv2d(nn.Conv2d):
    """nn.Conv2d computing with fake-quantized input and weight (bias float, as in QuantLinear)."""

    weight_fake_quant: FakeQuantize
    input_fake_quant: nn.Module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(self.input_fake_quant(x), self.weight_fake_quant(self.weight), self.bias)


# ----------------------------------------------------------------- configs

@dataclass(frozen=True)
class QuantConfig:
    """What to quantize and how.

    weight_bits / act_bits in [2, 16] (act_bits=None keeps activations float: weight-only).
    Schemes: symmetric | asymmetric; weights per_tensor | per_channel (output channels), activations
    per_tensor. Observers: minmax | percentile | mse. Calibration: `calibration_size` random training
    examples (seeded), fed in batches of `calibration_batch`.
    """

    weight_bits: int = 8
    act_bits: int | None = 8
    weight_scheme: str = "symmetric"
    act_scheme: str = "asymmetric"
    weight_granularity: str = "per_channel"
    act_granularity: str = "per_tensor"
    weight_observer: str = "minmax"
    act_observer: str = "minmax"
    percentile: float = 99.99
    mse_grid: int = 20
    calibration_size: int = 1000
    calibration_batch: int = 250
    seed: int = 0

    def __post_init__(self) -> None:
        _check_bits(self.weight_bits, "weight_bits")
        if self.act_bits is not None:
            _check_bits(self.act_bits, "act_bits")
        _check_choice(self.weight_scheme, SCHEMES, "weight_scheme")
        _check_choice(self.act_scheme, SCHEMES, "act_scheme")
        _check_choice(self.weight_granularity, GRANULARITIES, "weight_granularity")
        _check_choice(self.act_granularity, ACT_GRANULARITIES, "act_granularity")
        _check_choice(self.weight_observer, OBSERVERS, "weight_observer")
        _check_choice(self.act_observer, OBSERVERS, "act_observer")
        _check_percentile(self.percentile)
        _check_grid(self.mse_grid)
        for name in ("calibration_size", "calibration_batch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be an integer >= 1")


@dataclass(frozen=True)
class QATConfig:
    """QAT = PTQ initialisation (quant) + fine-tuning through fake-quant (finetune).

    During fine-tuning the weight ranges follow the weights (recomputed every step with the weight
    observer); activation ranges start from calibration and, if act_momentum > 0, track each
    batch's min/max with that EMA momentum (0 keeps the calibrated ranges fixed).
    """

    quant: QuantConfig = field(default_factory=QuantConfig)
    finetune: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=2, lr=0.01, lr_schedule="cosine"))
    act_momentum: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.quant, QuantConfig):
            raise ValueError(f"quant={self.quant!r} must be a QuantConfig")
        if not isinstance(self.finetune, TrainConfig):
            raise ValueError(f"finetune={self.finetune!r} must be a TrainConfig")
        if not 0 <= self.act_momentum < 1:
            raise ValueError(f"act_momentum={self.act_momentum!r} must be in [0, 1)")


# ----------------------------------------------------------------- building and calibrating

def insert_fake_quant(model: nn.Module, config: QuantConfig) -> nn.Module:
    """Swap every Linear/Conv2d of `model` (in place) for QuantLinear/QuantConv2d sharing its parameters."""
    for name, layer in list(prunable_layers(model).items()):
        if hasattr(layer, "weight_mask"):
            raise ValueError(f"layer {name!r} still carries a pruning mask: call pruning.make_permanent first")
        if isinstance(layer, (QuantLinear, QuantConv2d)):
            raise ValueError(f"layer {name!r} is already quantized")
        if isinstance(layer, nn.Conv2d):
            new = QuantConv2d(layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride,
                              padding=layer.padding, dilation=layer.dilation, groups=layer.groups,
                              bias=layer.bias is not None, padding_mode=layer.padding_mode, device="meta")
        else:
            new = QuantLinear(layer.in_features, layer.out_features, bias=layer.bias is not None, device="meta")
        new.weight, new.bias = layer.weight, layer.bias
        axis = 0 if config.weight_granularity == "per_channel" else None
        new.weight_fake_quant = FakeQuantize(config.weight_bits, config.weight_scheme, config.weight_observer,
                                             axis, config.percentile, config.mse_grid, config.seed)
        new.input_fake_quant = nn.Identity() if config.act_bits is None else FakeQuantize(
            config.act_bits, config.act_scheme, config.act_observer, None, config.percentile, config.mse_grid,
            config.seed)
        new.train(layer.training)
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
    return model


def quant_layers(model: nn.Module) -> dict[str, QuantLinear | QuantConv2d]:
    return {n: m for n, m in model.named_modules() if isinstance(m, (QuantLinear, QuantConv2d))}


def calibration_inputs(data: Dataset, n: int, seed: int = 0) -> torch.Tensor:
    """n training inputs drawn at random (seeded), normalised: the calibration set."""
    n = min(n, len(data.train))
    idx = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(seed))[:n]
    return data.train.normalise(data.train.images[idx])


@torch.no_grad()
def calibrate(model: nn.Module, inputs: torch.Tensor, batch_size: int = 250) -> nn.Module:
    """Fix every weight range from the weight itself and every activation range from `inputs`."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    layers = quant_layers(model)
    for layer in layers.values():
        layer.weight_fake_quant.observer.update(layer.weight)
        layer.weight_fake_quant.set_range_from_observer()
        if isinstance(layer.input_fake_quant, FakeQuantize):
            layer.input_fake_quant.observer.reset()
            layer.input_fake_quant.observing = True
    convnet = is_convnet(model)
    for start in range(0, len(inputs), batch_size):
        x = inputs[start:start + batch_size].to(device)
        model(x.contiguous(memory_format=torch.channels_last) if convnet and x.dim() == 4 else x)
    for layer in layers.values():
        if isinstance(layer.input_fake_quant, FakeQuantize):
            layer.input_fake_quant.set_range_from_observer()
    model.train(was_training)
    return model


# ----------------------------------------------------------------- reports

@dataclass
class QuantReport:
    """What quantization did: accuracy before/after, per-layer SQNR, bits and the size ledger."""

    method: str
    config: QuantConfig
    accuracy_float: float | None
    accuracy_quant: float | None
    layers: list[dict]
    size: dict
    calibration_size: int
    seconds: float
    accuracy_ptq: float | None = None  # QAT: accuracy of the PTQ starting point
    history: dict | None = None

    @property
    def compression(self) -> float:
        return self.size["compression"]

    def to_dict(self) -> dict:
        return {"method": self.method, "config": asdict(self.config), "accuracy_float": self.accuracy_float,
                "accuracy_quant": self.accuracy_quant, "accuracy_ptq": self.accuracy_ptq,
                "layers": self.layers, "size": self.size, "compression": self.compression,
                "calibration_size": self.calibration_size, "seconds": self.seconds, "history": self.history}

    def table(self):
        import pandas as pd

        return pd.DataFrame(self.layers)

    def _repr_html_(self) -> str:
        c = self.config
        acts = "float" if c.act_bits is None else f"{c.act_bits}-bit {c.act_scheme} {c.act_observer}"
        head = (f"<p>{self.method.upper()}: weights {c.weight_bits}-bit {c.weight_scheme} {c.weight_granularity} "
                f"{c.weight_observer}, activations {acts} &middot; accuracy {_pct(self.accuracy_float)} &rarr; "
                f"{_pct(self.accuracy_quant)} &middot; {self.compression:.2f}x smaller than FP32 "
                f"&middot; {self.seconds:.1f} s</p>")
        return head + self.table().to_html(index=False)

    def __repr__(self) -> str:
        return (f"QuantReport({self.method}, accuracy {_pct(self.accuracy_float)} -> {_pct(self.accuracy_quant)}, "
                f"{self.compression:.2f}x smaller)\n{self.table().to_string(index=False)}")


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def layer_inputs(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The input each Linear/Conv2d layer receives when `model` runs on x: what activation observers see."""
    return _layer_outputs(model, list(prunable_layers(model)), x, inputs=True)


def _layer_outputs(model: nn.Module, names: list[str], x: torch.Tensor, inputs: bool = False) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    hooks = [model.get_submodule(n).register_forward_hook(
        lambda mod, inp, res, n=n: out.__setitem__(n, (inp[0] if inputs else res).detach())) for n in names]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(x.contiguous(memory_format=torch.channels_last) if is_convnet(model) and x.dim() == 4 else x)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return out


def scale_overhead_bits(layer: nn.Module, config: QuantConfig) -> float:
    """Extra bits per weight for the stored qparams: 32-bit scale (+ 32-bit zero point if asymmetric) per channel or tensor."""
    n_params = layer.out_channels if isinstance(layer, nn.Conv2d) else layer.out_features
    groups = n_params if config.weight_granularity == "per_channel" else 1
    per_group = 32 + (32 if config.weight_scheme == "asymmetric" else 0)
    return groups * per_group / layer.weight.numel()


def quant_report(model_q: nn.Module, model_float: nn.Module, config: QuantConfig, probe: torch.Tensor,
                 method: str, accuracy_float: float | None, accuracy_quant: float | None,
                 calibration_size: int, seconds: float) -> QuantReport:
    """Per layer: weight SQNR, output SQNR on `probe` (error accumulated up to that layer), bits, zeros, bytes."""
    layers = quant_layers(model_q)
    names = list(layers)
    ref = _layer_outputs(model_float, names, probe)
    got = _layer_outputs(model_q, names, probe)
    bits = {n: config.weight_bits + scale_overhead_bits(layer, config) for n, layer in layers.items()}
    ledger = metrics.size_report(model_q, bits_per_weight=bits)
    sizes = {lay.name: lay for lay in ledger.layers}
    rows = []
    for n, layer in layers.items():
        fq = layer.weight_fake_quant
        with torch.no_grad():
            w = layer.weight.detach()
            w_hat = fake_quantize(w, *fq.qparams(), fq.qmin, fq.qmax, fq.axis)
        scale = fq.qparams()[0]
        rows.append({"layer": n, "weights": w.numel(), "weight bits": config.weight_bits,
                     "act bits": config.act_bits, "weight SQNR dB": round(sqnr_db(w, w_hat), 2),
                     "output SQNR dB": round(sqnr_db(ref[n], got[n]), 2),
                     "zero weights %": round(100 * float((w_hat == 0).float().mean()), 2),
                     "scale min": float(scale.min()), "scale max": float(scale.max()),
                     "bits/weight incl. scales": round(bits[n], 4),
                     "bytes": sizes[n].encoded_bits / 8, "FP32 bytes": sizes[n].dense_bytes})
    size = ledger.to_dict()
    return QuantReport(method, config, accuracy_float, accuracy_quant, rows, size, calibration_size, seconds)


# ----------------------------------------------------------------- the model-level verbs

def _probe(calibration: torch.Tensor, data: Dataset | None) -> torch.Tensor:
    if data is not None:
        return data.test.tensors(limit=500)[0]
    return calibration[:500]


def apply_ptq(model: nn.Module, config: QuantConfig, calibration_data: Dataset | torch.Tensor,
              inplace: bool = False, float_accuracy: float | None = None) -> tuple[nn.Module, QuantReport]:
    """Post-training quantization: insert fake-quant, calibrate ranges, no training.

    calibration_data: a Dataset (calibrate on `config.calibration_size` random training examples,
    report test accuracy) or a tensor of inputs (no accuracy in the report).
    float_accuracy: the model's known test accuracy, to skip evaluating the float model again in sweeps.
    """
    start = time.perf_counter()
    data = calibration_data if isinstance(calibration_data, Dataset) else None
    if data is not None:
        inputs = calibration_inputs(data, config.calibration_size, config.seed)
    elif isinstance(calibration_data, torch.Tensor):
        inputs = calibration_data[:config.calibration_size]
    else:
        raise ValueError(f"calibration_data must be a Dataset or a tensor of inputs, got {type(calibration_data).__name__}")
    reference = copy.deepcopy(model)
    model_q = insert_fake_quant(model if inplace else copy.deepcopy(model), config)
    calibrate(model_q, inputs, config.calibration_batch)
    acc_float = None if data is None else (
        float_accuracy if float_accuracy is not None else evaluate(reference, data.test).accuracy)
    acc_quant = evaluate(model_q, data.test).accuracy if data is not None else None
    report = quant_report(model_q, reference, config, _probe(inputs, data), "ptq", acc_float, acc_quant,
                          len(inputs), time.perf_counter() - start)
    return model_q, report


def apply_qat(model: nn.Module, config: QATConfig, data: Dataset, progress: bool | None = None,
              float_accuracy: float | None = None) -> tuple[nn.Module, QuantReport]:
    """Quantization-aware training: PTQ to initialise the ranges, then fine-tune through fake-quant.

    The forward pass sees quantized weights and activations; the backward pass uses the
    straight-through estimator, so the float weights keep receiving gradients.
    """
    if not isinstance(data, Dataset):
        raise ValueError(f"apply_qat needs a Dataset to train on, got {type(data).__name__}")
    start = time.perf_counter()
    model_q, ptq = apply_ptq(model, config.quant, data, float_accuracy=float_accuracy)
    for layer in quant_layers(model_q).values():
        layer.weight_fake_quant.dynamic = True
        if isinstance(layer.input_fake_quant, FakeQuantize):
            layer.input_fake_quant.momentum = config.act_momentum
    history = train(model_q, data, config.finetune, progress=progress)
    with torch.no_grad():
        for layer in quant_layers(model_q).values():  # freeze the weight ranges at the final weights
            layer.weight_fake_quant(layer.weight)
            layer.weight_fake_quant.dynamic = False
    reference = copy.deepcopy(model)
    acc = evaluate(model_q, data.test).accuracy
    report = quant_report(model_q, reference, config.quant, _probe(None, data), "qat", ptq.accuracy_float, acc,
                          ptq.calibration_size, time.perf_counter() - start)
    report.accuracy_ptq = ptq.accuracy_quant
    report.history = history.to_dict()
    return model_q, report
