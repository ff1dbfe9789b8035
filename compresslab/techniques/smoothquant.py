"""Activation outliers and SmoothQuant-style scale migration (Xiao et al. 2023).

A few input channels of a transformer's linear layers carry activations far larger than the rest.
With one INT8 scale per tensor, s = max|X| / 127, those channels set the step and the ordinary
channels round to a handful of levels. SmoothQuant divides every input channel j by

    s_j = max|X_j|^alpha / max_i |W_ij|^(1 - alpha)

and multiplies the weights' column j by it: (X diag(s)^-1)(diag(s) W^T) = X W^T exactly, but the
activation range flattens (alpha = 0.5 splits the difficulty evenly). Before a LayerNorm-fed layer
the 1/s folds into the LayerNorm's gain and bias, so the model computes the same function.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import torch
from torch import nn

from compresslab.core import metrics
from compresslab.core.data import Dataset
from compresslab.core.report import Report
from compresslab.core.training import LossFn, evaluate
from compresslab.core.validate import (
    check_bool,
    check_choice,
    check_float,
    check_int,
    check_layer_names,
    check_overflow,
    check_tensor,
)
from compresslab.techniques.layerwise import layer_inputs
from compresslab.techniques.quantops import choose_qparams, dequantize_affine, quantize_affine
from compresslab.techniques.registry import Technique, register, tiny_mlp

__all__ = [
    "GRANULARITIES",
    "channel_absmax",
    "outlier_ratio",
    "smooth_scales",
    "smooth_linear",
    "fake_quant_activations",
    "fake_quant_weights",
    "ln_fed",
    "SmoothQuantConfig",
    "SmoothQuantReport",
    "apply_smoothquant",
]

GRANULARITIES = ("per_tensor", "per_token")


def channel_absmax(x: torch.Tensor) -> torch.Tensor:
    """max over tokens of |x_j| for every channel j of x (..., channels).

    >>> channel_absmax(torch.tensor([[1.0, -5.0], [-2.0, 3.0]]))
    tensor([2., 5.])
    """
    check_tensor("x", x, kind="float")
    return x.detach().reshape(-1, x.shape[-1]).abs().amax(0)


def outlier_ratio(absmax: torch.Tensor) -> float:
    """max_j / median_j of the per-channel maxima: how far the largest channel stands out."""
    check_tensor("absmax", absmax, kind="float")
    return float(absmax.max() / absmax.median().clamp_min(1e-12))


def smooth_scales(act_absmax: torch.Tensor, w: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """s_j = max|X_j|^alpha / max_i|W_ij|^(1 - alpha) for W (out x in), both maxima floored at 1e-5.

    >>> smooth_scales(torch.tensor([16.0, 1.0]), torch.tensor([[1.0, 4.0]]), alpha=0.5)
    tensor([4.0000, 0.5000])
    """
    check_float("smooth_scales", "alpha", alpha, 0, 1)
    check_tensor("weight", w, dim=2, kind="float")
    check_tensor("act_absmax", act_absmax, shape=(w.shape[1],), kind="float")
    a = act_absmax.float().clamp_min(1e-5)
    wmax = w.detach().abs().amax(0).float().clamp_min(1e-5)
    s = a.pow(alpha) / wmax.pow(1 - alpha)
    check_overflow("the scales s", s)
    return s


def smooth_linear(x: torch.Tensor, w: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x diag(s)^-1, W diag(s)): the inputs' channel j divided by s_j, the weights' column j times s_j."""
    check_tensor("weight", w, dim=2, kind="float")
    check_tensor("s", s, shape=(w.shape[1],), kind="float")
    check_tensor("x", x, kind="float")
    if x.shape[-1] != w.shape[1]:
        raise ValueError(f"x has {x.shape[-1]} channels, the weight {w.shape[1]} inputs")
    if not bool((s > 0).all()):
        raise ValueError("s must be positive (a scale of 0 divides by zero)")
    x_s, w_s = x / s, w * s[None, :]
    check_overflow("x / s or W s", x_s)
    check_overflow("x / s or W s", w_s)
    return x_s, w_s


def fake_quant_activations(x: torch.Tensor, bits: int = 8, granularity: str = "per_tensor") -> torch.Tensor:
    """Symmetric INT-b quantize-dequantize of activations: one scale max|x| / q_max for the whole
    tensor, or one per token (row of the last dimension)."""
    check_choice("fake_quant_activations", "granularity", granularity, GRANULARITIES)
    check_int("fake_quant_activations", "bits", bits, 2, 16)
    check_tensor("x", x, kind="float")
    if granularity == "per_tensor":
        s, z = choose_qparams(x.detach().amin(), x.detach().amax(), bits, "symmetric")
        qmin, qmax = -(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1
        return dequantize_affine(quantize_affine(x, s, z, qmin, qmax), s, z)
    rows = x.reshape(-1, x.shape[-1])
    s, z = choose_qparams(rows.detach().amin(1), rows.detach().amax(1), bits, "symmetric")
    qmin, qmax = -(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1
    return dequantize_affine(quantize_affine(rows, s, z, qmin, qmax, axis=0), s, z, axis=0).reshape(x.shape)


def fake_quant_weights(w: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """Symmetric per-output-channel INT-b quantize-dequantize of W (out x in)."""
    check_int("fake_quant_weights", "bits", bits, 2, 16)
    check_tensor("weight", w, dim=2, kind="float")
    s, z = choose_qparams(w.detach().amin(1), w.detach().amax(1), bits, "symmetric")
    qmin, qmax = -(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1
    return dequantize_affine(quantize_affine(w, s, z, qmin, qmax, axis=0), s, z, axis=0)


@dataclass(frozen=True)
class SmoothQuantConfig:
    """alpha in [0, 1] (migration strength); smooth: migrate scales before quantizing (False: plain
    W8A8); act_bits / weight_bits in [2, 16]; granularity of the activation scale; calibration:
    windows of data.train that measure max|X_j|."""

    alpha: float = 0.5
    smooth: bool = True
    act_bits: int = 8
    weight_bits: int = 8
    granularity: str = "per_tensor"
    calibration: int = 64

    def __post_init__(self) -> None:
        owner = "SmoothQuantConfig"
        check_float(owner, "alpha", self.alpha, 0, 1)
        check_bool(owner, "smooth", self.smooth)
        check_int(owner, "act_bits", self.act_bits, 2, 16)
        check_int(owner, "weight_bits", self.weight_bits, 2, 16)
        check_choice(owner, "granularity", self.granularity, GRANULARITIES)
        check_int(owner, "calibration", self.calibration, 1, 1 << 20)


@dataclass(kw_only=True, repr=False)
class SmoothQuantReport(Report):
    """Report of apply_smoothquant: next-symbol accuracy (percent) and cross-entropy in bits per symbol
    before and after; per layer the activation outlier ratio before and after smoothing."""

    loss_bits_before: float | None = None
    loss_bits_after: float | None = None

    technique = "smoothquant"

    def headline_extra(self) -> list[str]:
        c = self.config
        parts = [f"W{c.weight_bits}A{c.act_bits} {c.granularity}" + (f", alpha={c.alpha:g}" if c.smooth else ", no smoothing")]
        if self.loss_bits_after is not None:
            parts.append(f"{self.loss_bits_before:.4f} &rarr; {self.loss_bits_after:.4f} bits per symbol")
        return parts


def ln_fed(model: nn.Module) -> dict[int, nn.LayerNorm]:
    """id(Linear) -> the LayerNorm that feeds it, in each pre-norm block (ln1 -> attn.qkv, ln2 -> mlp.fc)."""
    fed = {}
    for block in model.modules():
        if all(hasattr(block, a) for a in ("ln1", "attn", "ln2", "mlp")):
            fed[id(block.attn.qkv)], fed[id(block.mlp.fc)] = block.ln1, block.ln2
    return fed


def apply_smoothquant(
    model: nn.Module, config: SmoothQuantConfig, data: Dataset | None = None, *, inplace: bool = False,
    progress: bool | None = None, loss_fn: LossFn | None = None, layers: tuple[str, ...] | None = None,
) -> tuple[nn.Module, SmoothQuantReport]:
    """Simulated W{b}A{b} of (a copy of) `model`: each target Linear (`layers`; None: every Linear but
    the last) gets fake-quantized weights (per channel) and inputs (a forward pre-hook). With
    config.smooth, a target fed by a LayerNorm (a pre-norm block's qkv and mlp.fc) first gets the
    scales s folded in: LN gain and bias / s, W columns * s; the other targets are quantized as they are."""
    if loss_fn is not None:
        raise ValueError("loss_fn must be None: apply_smoothquant trains nothing")
    if data is None:
        raise ValueError("apply_smoothquant needs data (calibration windows from data.train)")
    check_layer_names("apply_smoothquant", "layers", layers, [n for n, m in model.named_modules() if isinstance(m, nn.Linear)])
    start = time.perf_counter()
    model = model if inplace else copy.deepcopy(model)
    model.eval()
    before = evaluate(model, data.test)
    size_before = metrics.model_size(model)
    calib = data.train.tensors(config.calibration)[0]
    linears = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    names = list(layers) if layers is not None else list(linears)[:-1]
    fed = ln_fed(model)
    rows = []
    for name in names:
        linear = linears[name]
        amax = channel_absmax(layer_inputs(model, linear, calib))
        ln = fed.get(id(linear)) if config.smooth else None
        row = {"layer": name, "smoothed": ln is not None, "outlier_ratio_before": outlier_ratio(amax),
               "outlier_ratio_after": outlier_ratio(amax)}
        if ln is not None:
            s = smooth_scales(amax, linear.weight, config.alpha)
            with torch.no_grad():
                ln.weight.div_(s)
                ln.bias.div_(s)
                linear.weight.mul_(s[None, :])
            row["outlier_ratio_after"] = outlier_ratio(amax / s)
        rows.append(row)
    for name in names:
        layer = linears[name]
        with torch.no_grad():
            layer.weight.copy_(fake_quant_weights(layer.weight, config.weight_bits))
        bits, gran = config.act_bits, config.granularity
        layer.register_forward_pre_hook(lambda m, inp, b=bits, g=gran: (fake_quant_activations(inp[0], b, g),))
    after = evaluate(model, data.test)
    report = SmoothQuantReport(
        config=config, size_before=size_before, accuracy_before=before.accuracy,
        size_after=metrics.model_size(model, bits_per_weight={n: config.weight_bits for n in names}),
        accuracy_after=after.accuracy, loss_bits_before=before.loss_bits, loss_bits_after=after.loss_bits,
        seconds=time.perf_counter() - start, layers=rows)
    return model, report


# ----------------------------------------------------------------- registration

register(Technique(
    name="smoothquant", apply=apply_smoothquant, config=SmoothQuantConfig,
    example=lambda: (tiny_mlp(), SmoothQuantConfig(calibration=64), {})))
