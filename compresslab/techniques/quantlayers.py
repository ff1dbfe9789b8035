"""Fake-quantized layers: `FakeQuantize` (observe, then quantize-dequantize with the straight-through
gradient), `QuantLinear` / `QuantConv2d` (layers whose input and weight pass through one), finding
them in a model (`quant_layers`) and turning them back into plain layers (`plain_layers`)."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from compresslab.core.models import replace_module
from compresslab.techniques.quantops import (
    channel_rows,
    choose_qparams,
    fake_quantize,
    make_observer,
    qrange,
)

__all__ = ["FakeQuantize", "QuantLinear", "QuantConv2d", "quant_layers", "plain_layers"]


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
            rows = channel_rows(x, self.axis)
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



def quant_layers(model: nn.Module) -> dict[str, QuantLinear | QuantConv2d]:
    return {n: m for n, m in model.named_modules() if isinstance(m, (QuantLinear, QuantConv2d))}


def plain_layers(model: nn.Module) -> nn.Module:
    """A copy of `model` with every fake-quant layer (QuantLinear / QuantConv2d) replaced by a plain
    nn.Linear / nn.Conv2d holding the same float weight and bias."""
    model = copy.deepcopy(model)
    for name, layer in list(quant_layers(model).items()):
        if isinstance(layer, nn.Conv2d):
            new = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride,
                            padding=layer.padding, dilation=layer.dilation, groups=layer.groups,
                            bias=layer.bias is not None)
        else:
            new = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None)
        new.weight, new.bias = layer.weight, layer.bias
        replace_module(model, name, new)
    return model.eval()
