"""Activation-aware weight quantization: AWQ (Lin et al. 2024).

A weight on an input channel that carries large activations matters more to the output than one on a
quiet channel. AWQ scales input channel j of a Linear layer by s_j before group-wise round-to-nearest
and undoes it on the input:

    y = W x = (W diag(s)) (diag(s)^-1 x)  ~  Q(W diag(s)) diag(s)^-1 x,

so salient columns get a larger share of their group's grid and a smaller relative rounding error.
The scales come from the mean activation magnitude, one exponent per layer searched on a grid:

    s_j = mean_t |x_tj|^alpha  (normalised by sqrt(max s min s)),  alpha in {0, 1/(k-1), ..., 1},

keeping the alpha with the smallest relative output error ||X W^T - X W_hat^T||^2 / ||X W^T||^2 on
calibration inputs X, where W_hat = Q(W diag(s)) diag(s)^-1 (alpha = 0: s = 1, plain RTN). The scales
are then folded so the FP32 model computes the same function: diag(s)^-1 into the LayerNorm that feeds
the layer (qkv, mlp.fc), into the value rows of the qkv projection (attn.proj), or, where a nonlinearity
sits in between (mlp.proj after GELU), into a stored input-scale vector the layer divides by; W's
columns are multiplied by s.

Then the clipping search (the paper's weight clipping, AutoAWQ's `auto_clip`): a group's grid spans its
largest |w|, so one outlier weight stretches the step for all the others. For every row i and group k
of the scaled weight, a ratio r of linspace(1, clip_min, clip_grid) clamps the group to [-r m_ik, r m_ik]
(m_ik = max |w| over the group), and the r kept is the one with the smallest error of the group's share
of the output on the scaled inputs X_k (the group's columns of X diag(s)^-1):

    e_ik(r) = ||X_k (w_ik - Q(clamp(w_ik, -r m_ik, r m_ik)))||^2 = d^T (X_k^T X_k) d,

(r = 1: no clipping; the query and key rows of an attention's qkv stay unclipped unless clip_qk, as in
the reference implementation). The clamped weights are then quantized with `groupquant.quantize_groups`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

from compresslab.core import metrics
from compresslab.core.data import Dataset
from compresslab.core.gpt import CausalSelfAttention
from compresslab.core.params import Param
from compresslab.core.report import Report
from compresslab.core.training import EvalResult, LossFn, evaluate
from compresslab.core.validate import check_bool, check_float, check_int, check_tensor
from compresslab.techniques.groupquant import (
    GroupQuant,
    check_group_size,
    file_bytes,
    output_error,
    quantize_groups,
    rtn,
)
from compresslab.techniques.layerwise import layer_inputs, layerwise_setup
from compresslab.techniques.registry import Technique, register, tiny_mlp
from compresslab.techniques.smoothquant import ln_fed

__all__ = [
    "SCALE_BUFFER",
    "activation_scales",
    "awq_weight",
    "search_scales",
    "fold_scales",
    "clip_ratios",
    "clip_weight",
    "search_clip",
    "AWQConfig",
    "AWQReport",
    "apply_awq",
]

SCALE_BUFFER = "awq_input_scale"  # a layer whose scales cannot be folded divides its input by this buffer


def activation_scales(x: torch.Tensor, alpha: float) -> torch.Tensor:
    """s_j = mean_t |x_tj|^alpha of x (..., in), each mean floored at 1e-4, divided by sqrt(max s min s).

    >>> activation_scales(torch.tensor([[1.0, -4.0], [3.0, 12.0]]), 0.5)  # means 2, 8: sqrt -> 1.41, 2.83
    tensor([0.7071, 1.4142])
    """
    check_float("AWQ", "alpha", alpha, 0, 1)
    check_tensor("activations", x, kind="float")
    mean = x.detach().reshape(-1, x.shape[-1]).abs().float().mean(0).clamp_min(1e-4)
    s = mean.pow(alpha)
    return s / (s.max() * s.min()).sqrt()


def awq_weight(w: torch.Tensor, s: torch.Tensor, bits: int, group_size: int) -> torch.Tensor:
    """W_hat = Q(W diag(s)) diag(s)^-1 with Q group-wise RTN (`groupquant.rtn`): what the scaled,
    quantized layer computes on the unscaled input."""
    return rtn(w * s[None, :], bits, group_size) / s[None, :]


def search_scales(x: torch.Tensor, w: torch.Tensor, bits: int, group_size: int, grid: int = 20
                  ) -> tuple[float, torch.Tensor, list[float]]:
    """(alpha, s, errors): the alpha of linspace(0, 1, grid) whose scales give the smallest relative
    output error ||X (W - W_hat)^T||^2 / ||X W^T||^2 of W_hat = `awq_weight(w, s)` (ties: the smaller
    alpha), its scales and every error. The errors go through the Gram matrix G = X^T X once:
    ||X D^T||_F^2 = sum(D G * D), so each alpha costs out x in^2, not tokens x in x out."""
    check_int("AWQ", "grid", grid, 2, 1000)
    check_tensor("activations", x, kind="float")
    check_tensor("weight", w, dim=2, kind="float")
    if x.shape[-1] != w.shape[1]:
        raise ValueError(f"activations of {x.shape[-1]} features do not match in_features={w.shape[1]}")
    alphas = torch.linspace(0, 1, grid).tolist()
    rows = x.detach().reshape(-1, x.shape[-1]).double()
    gram, w64 = rows.T @ rows, w.detach().double()
    scale = float(((w64 @ gram) * w64).sum().clamp_min(1e-300))
    errors = []
    for a in alphas:
        d = w64 - awq_weight(w, activation_scales(x, a), bits, group_size).double()
        errors.append(float(((d @ gram) * d).sum()) / scale)
    best = min(range(grid), key=lambda i: (errors[i], i))
    return alphas[best], activation_scales(x, alphas[best]), errors


def clip_ratios(grid: int = 20, clip_min: float = 0.5) -> list[float]:
    """The clipping ratios searched: linspace(1, clip_min, grid), no clipping first.

    >>> clip_ratios(3, 0.5)
    [1.0, 0.75, 0.5]
    """
    check_int("AWQ", "clip_grid", grid, 2, 1000)
    check_float("AWQ", "clip_min", clip_min, 0, 1, lo_open=True, hi_open=True)
    return torch.linspace(1, clip_min, grid, dtype=torch.float64).tolist()


def clip_weight(w: torch.Tensor, ratio: torch.Tensor | float, group_size: int) -> torch.Tensor:
    """w (out x in) with every row's group of g columns clamped to [-r m, r m], m = max |w| over the group
    and r = ratio[row, group] (a tensor out x in/g) or one ratio for every group.

    >>> clip_weight(torch.tensor([[4.0, -1.0, 0.5, -2.0]]), torch.tensor([[0.5, 1.0]]), 2)
    tensor([[ 2.0000, -1.0000,  0.5000, -2.0000]])
    """
    check_tensor("weight", w, dim=2, kind="float")
    out_f, in_f = w.shape
    g = check_group_size(in_f, group_size)
    groups = w.detach().reshape(out_f, in_f // g, g)
    r = torch.as_tensor(ratio, dtype=groups.dtype)
    if r.dim() and tuple(r.shape) != (out_f, in_f // g):
        raise ValueError(f"clip ratios of shape {tuple(r.shape)} do not match (rows, groups) = {(out_f, in_f // g)}")
    bound = groups.abs().amax(-1, keepdim=True) * (r[..., None] if r.dim() else r)
    return torch.minimum(torch.maximum(groups, -bound), bound).reshape(out_f, in_f)


def search_clip(x: torch.Tensor, w: torch.Tensor, bits: int, group_size: int, grid: int = 20,
                clip_min: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """(ratio, errors): for every row i and group k of w (out x in), the ratio r of
    `clip_ratios(grid, clip_min)` with the smallest error of the group's share of the output on x,
    e_ik(r) = ||X_k d||^2 = d^T G_kk d with d = w_ik - Q(clamp(w_ik, -r m_ik, r m_ik)) and G_kk the
    group's block of the Gram matrix X^T X (ties: the larger ratio, less clipping); ratio: (out, in/g),
    errors: (grid, out, in/g), every ratio's errors.

    >>> w = torch.tensor([[6.0, 1.2, 0.6, 0.0]])  # 2 bits: step 2 (errors 0, .8, .6, 0) or, clamped to 3, step 1
    >>> ratio, errors = search_clip(torch.eye(4)[1:], w, bits=2, group_size=4, grid=2)  # the outlier's input is 0
    >>> ratio.tolist(), [round(e, 4) for e in errors[:, 0, 0].tolist()]
    ([[0.5]], [1.0, 0.2])
    """
    ratios = clip_ratios(grid, clip_min)
    check_int("AWQ", "bits", bits, 2, 8)
    check_tensor("activations", x, kind="float")
    check_tensor("weight", w, dim=2, kind="float")
    if x.shape[-1] != w.shape[1]:
        raise ValueError(f"activations of {x.shape[-1]} features do not match in_features={w.shape[1]}")
    out_f, in_f = w.shape
    g = check_group_size(in_f, group_size)
    rows = x.detach().reshape(-1, in_f).double()
    gram = (rows.T @ rows).reshape(in_f // g, g, in_f // g, g).diagonal(dim1=0, dim2=2).permute(2, 0, 1)  # (k, g, g)
    w64 = w.detach().double().reshape(out_f, in_f // g, g)
    errors = torch.empty(grid, out_f, in_f // g, dtype=torch.float64)
    for i, r in enumerate(ratios):
        d = w64 - rtn(clip_weight(w.detach().float(), r, g), bits, g).double().reshape(out_f, in_f // g, g)
        errors[i] = torch.einsum("okg,kgh,okh->ok", d, gram, d)
    best = errors.argmin(0)  # the first minimum: the largest ratio among ties
    return torch.tensor(ratios, dtype=torch.float64)[best].float(), errors


def _divide_input(module: nn.Module, inputs: tuple) -> tuple:
    """Forward pre-hook: the layer's input divided by its stored scales."""
    return (inputs[0] / getattr(module, SCALE_BUFFER),) + tuple(inputs[1:])


@torch.no_grad()
def fold_scales(model: nn.Module, layer: nn.Linear, s: torch.Tensor) -> str:
    """Multiply `layer`'s weight columns by s and fold diag(s)^-1 into what feeds it, so `model`
    computes the same function; returns where the 1/s went: 'layernorm' (gain and bias), 'value' (the
    value rows and bias of the attention's qkv, for its output projection) or 'input' (a buffer the
    layer divides its input by, kept in the state dict)."""
    ln = ln_fed(model).get(id(layer))
    attn = next((m for m in model.modules() if isinstance(m, CausalSelfAttention) and m.proj is layer), None)
    if ln is not None:
        ln.weight.div_(s)
        ln.bias.div_(s)
        where = "layernorm"
    elif attn is not None:
        d = layer.in_features
        attn.qkv.weight[2 * d:].div_(s[:, None])
        attn.qkv.bias[2 * d:].div_(s)
        where = "value"
    else:
        if hasattr(layer, SCALE_BUFFER):
            getattr(layer, SCALE_BUFFER).mul_(s)
        else:
            layer.register_buffer(SCALE_BUFFER, s.clone())
            layer.register_forward_pre_hook(_divide_input)
        where = "input"
    layer.weight.mul_(s[None, :])
    return where


@dataclass(frozen=True)
class AWQConfig:
    """bits in [2, 8]; group_size: columns per group (0: one per row); grid: alpha values searched in
    [0, 1] (at least 2); clip: search a clipping ratio per row and group after the scales; clip_grid:
    ratios searched, evenly from 1 down to clip_min in (0, 1); clip_qk: also clip the query and key rows
    of an attention's qkv projection (False, as the reference implementation: a per-layer output error
    does not see how q and k errors are multiplied in the attention scores); calibration: windows of
    data.train; layers: Linear layers to quantize (None: every Linear but the last)."""

    bits: int = 4
    group_size: int = 128
    grid: int = 20
    clip: bool = True
    clip_grid: int = 20
    clip_min: float = 0.5
    clip_qk: bool = False
    calibration: int = 64
    layers: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        owner = "AWQConfig"
        check_int(owner, "bits", self.bits, 2, 8)
        check_int(owner, "group_size", self.group_size, 0, 1 << 20)
        check_int(owner, "grid", self.grid, 2, 1000)
        check_bool(owner, "clip", self.clip)
        check_int(owner, "clip_grid", self.clip_grid, 2, 1000)
        check_float(owner, "clip_min", self.clip_min, 0, 1, lo_open=True, hi_open=True)
        check_bool(owner, "clip_qk", self.clip_qk)
        check_int(owner, "calibration", self.calibration, 1, 1 << 20)
        if self.layers is not None and (not isinstance(self.layers, tuple) or not self.layers):
            raise ValueError(f"{owner}.layers={self.layers!r} must be a non-empty tuple of layer names or None")


@dataclass(kw_only=True, repr=False)
class AWQReport(Report):
    """Report of apply_awq: next-symbol accuracy (percent) and cross-entropy in bits per symbol before
    and after; the packed file's bytes; per layer the alpha chosen, where the scales were folded and
    the relative output error of RTN (alpha = 0) and of AWQ on the calibration inputs."""

    loss_bits_before: float | None = None
    loss_bits_after: float | None = None
    file_bytes: int = 0

    technique = "awq"

    def headline_extra(self) -> list[str]:
        c = self.config
        parts = [f"AWQ INT{c.bits}, groups of {c.group_size or 'a row'}", f"file {self.file_bytes:,} bytes"]
        if self.loss_bits_after is not None:
            parts.append(f"{self.loss_bits_before:.4f} &rarr; {self.loss_bits_after:.4f} bits per symbol")
        return parts


def apply_awq(
    model: nn.Module, config: AWQConfig, data: Dataset | None = None, *, inplace: bool = False,
    progress: bool | None = None, loss_fn: LossFn | None = None, before: EvalResult | None = None,
) -> tuple[nn.Module, AWQReport]:
    """AWQ on (a copy of) `model`: for every layer in model order, its inputs on the first
    config.calibration training windows (earlier layers already scaled and clipped), the alpha search,
    the fold and (config.clip) the clipping search, the clamped weights written; then group-wise RTN of every scaled layer (weights stored as w_hat in FP32: simulated
    quantization; the stored size is the packed file, input-scale buffers included).
    before: `evaluate(model, data.test)` when already known."""
    if loss_fn is not None:
        raise ValueError("loss_fn must be None: apply_awq trains nothing")
    if data is None:
        raise ValueError("apply_awq needs data (calibration windows from data.train)")
    start = time.perf_counter()
    setup = layerwise_setup(model, data, config.layers, config.calibration, "AWQConfig", inplace, before)
    model, before, size_before, calib = setup.model, setup.before, setup.size_before, setup.calibration
    for layer in setup.layers.values():
        check_group_size(layer.in_features, config.group_size)
    rows = []
    for name, layer in setup.layers.items():
        x = layer_inputs(model, layer, calib)
        w = layer.weight.detach().clone()
        alpha, s, errors = search_scales(x, w, config.bits, config.group_size, config.grid)
        where = fold_scales(model, layer, s)
        row = {"layer": name, "shape": f"{w.shape[0]}x{w.shape[1]}", "alpha": alpha, "folded_into": where,
               "rtn_error": errors[0], "awq_error": min(errors)}
        if config.clip:  # on the layer's inputs after the fold, x diag(s)^-1, and its scaled weight
            ratio, _ = search_clip(x / s, layer.weight.detach(), config.bits, config.group_size, config.clip_grid,
                                   config.clip_min)
            if not config.clip_qk and any(isinstance(m, CausalSelfAttention) and m.qkv is layer for m in model.modules()):
                ratio[:2 * layer.in_features] = 1.0  # the query and key rows stay unclipped
            with torch.no_grad():
                layer.weight.copy_(clip_weight(layer.weight.detach(), ratio, config.group_size))
            w_hat = rtn(layer.weight.detach(), config.bits, config.group_size) / s[None, :]
            row.update({"clipped_groups": float((ratio < 1).float().mean()), "mean_ratio": float(ratio.mean()),
                        "clip_error": output_error(x, w, w_hat)})
        rows.append(row)
    quants: dict[str, GroupQuant] = {}
    for name, layer in setup.layers.items():
        quants[name] = quantize_groups(layer.weight.detach(), config.bits, config.group_size)
        with torch.no_grad():
            layer.weight.copy_(quants[name].dequantize())
    stored = file_bytes(model, quants)
    after = evaluate(model, data.test)
    report = AWQReport(
        config=config, size_before=size_before, size_after=metrics.model_size(model, stored_bytes=stored),
        accuracy_before=None if before is None else before.accuracy, accuracy_after=after.accuracy,
        loss_bits_before=None if before is None else before.loss_bits, loss_bits_after=after.loss_bits,
        file_bytes=stored, seconds=time.perf_counter() - start, layers=rows)
    return model, report


# ----------------------------------------------------------------- registration

# A recipe verb (run_recipe chains it on any model's Linear layers with calibration from data.train), not a
# frontier entry: like GPTQ and Wanda it is a one-shot method for transformers, taught in notebook 09;
# notebook 08's files store one precision per model, not AWQ's groups with FP16 scales and input scales.
register(Technique(
    name="awq", apply=apply_awq, config=AWQConfig,
    example=lambda: (tiny_mlp(), AWQConfig(bits=4, group_size=16, grid=5, calibration=64), {}),
    verb="awq", notebook="09_language_model", params={"awq_grid": Param("int", 2, 1000)}))
