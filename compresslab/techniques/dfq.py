"""Data-free quantization (Nagel et al. 2019): fold BatchNorm, equalize ranges across layers
(`equalization`), quantize (`quantization.apply_ptq`), then correct the biases.

Bias correction. Rounding the weights W to W_q shifts each output channel's mean by

    E[W_q x] - E[W x] = (W_q - W) E[x],

which the next layers read as a real change of the signal (it does not average out). Subtracting it
from the bias removes it. `empirical` measures the whole shift on calibration images, layer by layer:
E[y_q] - E[y] of each layer's output in the quantized model (earlier layers already corrected, so
what they pass on is included) against FP32's; after it, each layer's mean output on those images
equals FP32's exactly. `analytic` needs no
data: a layer fed by BatchNorm + ReLU receives per channel y = ReLU(z), z ~ N(beta, gamma^2), so

    E[y] = beta Phi(beta / |gamma|) + |gamma| phi(beta / |gamma|)

(Phi, phi: the standard normal CDF and density), from the folded BatchNorm's parameters.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field, fields

import torch
from torch import nn

from compresslab.core.data import Dataset
from compresslab.core.models import prunable_layers
from compresslab.core.params import Param, choice
from compresslab.core.training import LossFn, evaluate
from compresslab.core.validate import (
    check_bool,
    check_choice,
    check_config,
    check_int,
    check_tensor,
)
from compresslab.techniques.equalization import (
    PASS_THROUGH,
    cross_layer_equalize,
    fold_batchnorm,
    output_ranges,
)
from compresslab.techniques.quantization import (
    QuantConfig,
    QuantReport,
    apply_ptq,
    calibration_inputs,
    layer_outputs,
)
from compresslab.techniques.quantlayers import plain_layers, quant_layers
from compresslab.techniques.quantops import fake_quantize
from compresslab.techniques.registry import StepContext, Technique, register, tiny_mlp

__all__ = ["BIAS_CORRECTIONS", "relu_mean", "channel_means", "empirical_correction", "mean_shift", "input_means",
           "DFQConfig", "DFQReport", "apply_dfq"]

BIAS_CORRECTIONS = ("none", "empirical", "analytic")


def relu_mean(mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """E[max(0, z)] for z ~ N(mu, sigma^2), elementwise: mu Phi(mu / sigma) + sigma phi(mu / sigma);
    max(mu, 0) where sigma is 0.

    >>> relu_mean(torch.tensor([0.0, 2.0, -1.0]), torch.tensor([1.0, 0.0, 0.0]))  # 1/sqrt(2 pi), 2, 0
    tensor([0.3989, 2.0000, 0.0000])
    """
    check_tensor("mu", mu, kind="float")
    check_tensor("sigma", sigma, shape=tuple(mu.shape), kind="float")
    if bool((sigma < 0).any()):
        raise ValueError("sigma must be non-negative (a standard deviation)")
    safe = torch.where(sigma > 0, sigma, 1.0)
    t = mu / safe
    normal = torch.distributions.Normal(0.0, 1.0)
    smooth = mu * normal.cdf(t) + safe * torch.exp(-0.5 * t * t) / math.sqrt(2 * math.pi)
    return torch.where(sigma > 0, smooth, mu.clamp_min(0))


def channel_means(y: torch.Tensor) -> torch.Tensor:
    """Each output channel's mean over a batch (and a conv's positions): dimension 1 of y.

    >>> channel_means(torch.arange(8.0).reshape(2, 2, 2))
    tensor([2.5000, 4.5000])
    """
    check_tensor("y", y, kind="float")
    if y.dim() < 2:
        raise ValueError(f"y must have a batch and a channel dimension, got shape {tuple(y.shape)}")
    return y.transpose(0, 1).reshape(y.shape[1], -1).mean(1)


@torch.no_grad()
def empirical_correction(model_q: nn.Module, reference: nn.Module, inputs: torch.Tensor) -> dict[str, torch.Tensor]:
    """Bias correction on calibration inputs, layer by layer in model order (in place): each
    quantized layer's bias is lowered by E[y_q] - E[y] per output channel, y_q its output in `model_q`
    (with the earlier layers already corrected) and y the same layer's output in the FP32 `reference`.
    Afterwards each layer's mean output on `inputs` equals FP32's. Returns the shifts removed."""
    shifts = {}
    for name, layer in quant_layers(model_q).items():
        want = channel_means(layer_outputs(reference, [name], inputs)[name])
        got = channel_means(layer_outputs(model_q, [name], inputs)[name])
        if layer.bias is None:
            layer.bias = nn.Parameter(torch.zeros_like(want))
        layer.bias.sub_(got - want)
        shifts[name] = got - want
    return shifts


def mean_shift(layer: nn.Module, weight_error: torch.Tensor, input_mean: torch.Tensor) -> torch.Tensor:
    """(W_q - W) E[x] per output channel from each input channel's mean E[x_c] (a Linear after
    flattening C channels: each channel's mean repeated over its positions; a conv ignores the zero
    padding at the borders).

    >>> lin = nn.Linear(2, 1)
    >>> mean_shift(lin, torch.tensor([[0.5, -1.0]]), torch.tensor([2.0, 1.0]))
    tensor([0.])
    """
    check_tensor("weight_error", weight_error, shape=tuple(layer.weight.shape), kind="float")
    check_tensor("input_mean", input_mean, dim=1, kind="float")
    if isinstance(layer, nn.Conv2d):
        per_channel = weight_error.sum((2, 3))  # (out, in / groups)
        if layer.groups == 1:
            return per_channel @ input_mean
        return per_channel[:, 0] * input_mean  # depthwise: output channel i reads input channel i
    cols = weight_error.reshape(weight_error.shape[0], len(input_mean), -1).sum(2)
    return cols @ input_mean


def input_means(model: nn.Module, bn_stats: dict[str, tuple[torch.Tensor, torch.Tensor]],
                out_scales: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Data-free E[x_c] of each weighted layer's input channels, for the layers fed through ReLU by a
    layer whose BatchNorm was folded: `relu_mean(beta / s, |gamma| / s)` with s the equalization scale
    of that channel (pooling keeps the mean; max pooling raises it a little, which this ignores)."""
    means, prev, relu = {}, None, False
    for name, module in model.named_children():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            if prev in bn_stats and relu:
                beta, gamma = bn_stats[prev]
                s = out_scales.get(prev, torch.ones_like(beta))
                means[name] = relu_mean(beta / s, gamma / s)
            prev, relu = name, False
        elif isinstance(module, nn.ReLU):
            relu = True
        elif not isinstance(module, PASS_THROUGH):
            prev = None
    return means


@dataclass(frozen=True)
class DFQConfig:
    """quant: the post-training quantization (weights and activations, as in `apply_ptq`; per-tensor
    weights is where equalization matters); equalize: cross-layer equalization after folding
    (iterations sweeps at most); bias_correction: none | empirical (on `bias_calibration` training
    images) | analytic (from the folded BatchNorm statistics, no data)."""

    quant: QuantConfig = field(default_factory=lambda: QuantConfig(weight_granularity="per_tensor"))
    equalize: bool = True
    iterations: int = 20
    bias_correction: str = "empirical"
    bias_calibration: int = 512

    def __post_init__(self) -> None:
        owner = "DFQConfig"
        check_config(owner, "quant", self.quant, QuantConfig)
        check_bool(owner, "equalize", self.equalize)
        check_int(owner, "iterations", self.iterations, 1, 10_000)
        check_choice(owner, "bias_correction", self.bias_correction, BIAS_CORRECTIONS)
        check_int(owner, "bias_calibration", self.bias_calibration, 1, 10**6)


@dataclass(kw_only=True, repr=False)
class DFQReport(QuantReport):
    """QuantReport of the quantized model, plus: folded (BatchNorm layers folded), fp32_change (max
    |logit change| of the folded and equalized FP32 model on the probe images: 0 up to rounding),
    ranges_before / ranges_after (per layer, each output channel's max |w| after folding, before and
    after equalization) and the bias shifts removed (per layer, the largest |shift|)."""

    folded: list = field(default_factory=list)
    fp32_change: float = 0.0
    ranges_before: dict = field(default_factory=dict)
    ranges_after: dict = field(default_factory=dict)
    bias_shift: dict = field(default_factory=dict)

    technique = "data-free quantization"

    def headline_extra(self) -> list[str]:
        c = self.config
        return [f"BatchNorm folded into {len(self.folded)} layer(s); equalization {'on' if c.equalize else 'off'}; "
                f"bias correction {c.bias_correction}; FP32 function changed by at most {self.fp32_change:.2g}"]


def _ranges(model: nn.Module) -> dict[str, list[float]]:
    return {n: output_ranges(m).tolist() for n, m in prunable_layers(model).items()}


@torch.no_grad()
def apply_dfq(model: nn.Module, config: DFQConfig, data: Dataset | None = None, *, inplace: bool = False,
              progress: bool | None = None, loss_fn: LossFn | None = None,
              calibration: torch.Tensor | None = None,
              float_accuracy: float | None = None) -> tuple[nn.Module, DFQReport]:
    """Fold BatchNorm, equalize (if asked), quantize with `apply_ptq`, correct the biases.

    data: calibrate on training images and report test accuracy (percent), or calibration: input
    tensors. float_accuracy: the model's known test accuracy (percent), to skip evaluating it again
    in sweeps. The model must be an nn.Sequential (the workbook's models). progress is unused and
    loss_fn must be None: nothing is trained. inplace is accepted for the contract; folding always
    builds a new model.
    """
    if loss_fn is not None:
        raise ValueError("loss_fn must be None: data-free quantization trains nothing")
    if data is None and calibration is None:
        raise ValueError("apply_dfq needs data (a Dataset) or calibration (a tensor of inputs)")
    if data is not None and not isinstance(data, Dataset):
        raise ValueError(f"data must be a Dataset or None, got {type(data).__name__}")
    if calibration is not None:
        check_tensor("calibration", calibration, kind="float")
    start = time.perf_counter()
    reference = copy.deepcopy(model).eval()
    folded, bn_stats = fold_batchnorm(model)
    before = _ranges(folded)
    scales: dict[str, torch.Tensor] = {}
    if config.equalize:
        folded, scales = cross_layer_equalize(folded, config.iterations)
    inputs = calibration if calibration is not None else calibration_inputs(data, config.quant.calibration_size,
                                                                          config.quant.seed)
    probe = data.test.tensors(limit=500)[0] if data is not None else inputs[:500]
    fp32_change = float((folded(probe) - reference(probe)).abs().max())
    acc_before = None if data is None else (
        float_accuracy if float_accuracy is not None else evaluate(reference, data.test).accuracy)
    model_q, base = apply_ptq(folded, config.quant, calibration=inputs)  # accuracy once, after the correction
    shifts: dict[str, torch.Tensor] = {}
    if config.bias_correction == "empirical":
        bc_inputs = inputs if calibration is not None else calibration_inputs(data, config.bias_calibration,
                                                                             config.quant.seed + 1)
        shifts = empirical_correction(model_q, folded, bc_inputs[:config.bias_calibration])
    elif config.bias_correction == "analytic":
        means = input_means(folded, bn_stats, scales)
        for name, layer in quant_layers(model_q).items():
            if name not in means:
                continue  # no BatchNorm statistics describe this layer's input
            fq = layer.weight_fake_quant
            error = fake_quantize(layer.weight, *fq.qparams(), fq.qmin, fq.qmax, fq.axis) - layer.weight
            shifts[name] = mean_shift(layer, error, means[name])
            if layer.bias is None:
                layer.bias = nn.Parameter(torch.zeros_like(shifts[name]))
            layer.bias.sub_(shifts[name])
    acc_after = evaluate(model_q, data.test).accuracy if data is not None else None
    report = DFQReport(**{f.name: getattr(base, f.name) for f in fields(base) if f.init},
                       folded=sorted(bn_stats), fp32_change=fp32_change, ranges_before=before,
                       ranges_after=_ranges(folded),
                       bias_shift={n: float(v.abs().max()) for n, v in shifts.items()})
    report.config, report.method = config, "dfq"
    report.accuracy_before, report.accuracy_after = acc_before, acc_after
    report.seconds = time.perf_counter() - start
    return model_q, report


# ----------------------------------------------------------------- registration

def _recipe_step(model: nn.Module, config: DFQConfig, data: Dataset,
                 context: StepContext) -> tuple[nn.Module, DFQReport]:
    """A recipe's dfq step: folded, equalized, bias-corrected plain layers (float weights on the
    grid the recipe's storage re-derives per channel)."""
    quantized, report = apply_dfq(model, config, data, progress=context.progress)
    return plain_layers(quantized), report


def _frontier(arch: str, epochs: float, seed: int) -> list[dict]:
    """Notebook 08: 4-bit weights per channel with equalization and empirical bias correction, stored
    as int4 (weight-only, like INT4 (AdaRound))."""
    config = DFQConfig(quant=QuantConfig(weight_bits=4, act_bits=None, calibration_size=256, seed=seed),
                       bias_calibration=256)
    return [{"name": "INT4 (CLE+BC)", "precision": "int4", "family": "single", "steps": [("dfq", config)]}]


register(Technique(
    name="dfq", apply=apply_dfq, config=DFQConfig,
    example=lambda: (tiny_mlp(), DFQConfig(quant=QuantConfig(calibration_size=64), bias_calibration=64), {}),
    verb="dfq", step=_recipe_step, frontier=_frontier,
    notebook="03_ptq_vs_qat", params={
        "dfq_model": choice("dsnet", "lenet5", "small_cnn"), "dfq_epochs": Param("float", 0.01, 1000),
        "dfq_bit_widths": Param("ints", 2, 16),
        "dfq_bias_correction": choice(*BIAS_CORRECTIONS),
    }))
