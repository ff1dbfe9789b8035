"""AdaRound: learning whether each weight rounds up or down (Nagel et al. 2020, "Up or Down? Adaptive
Rounding for Post-Training Quantization").

Round-to-nearest (RTN) rounds every weight on its own. What matters is the layer's output: with
inputs X (one row per example or output position) the error of a quantized weight W~ is
||X W^T - X W~^T||^2, and the best choice of floor or ceiling for each weight depends on the others.
AdaRound keeps the grid (scale s and zero point z per output channel, as RTN chose them) and learns,
per weight, a soft rounding variable V:

    h(V) = clip(sigmoid(V) (zeta - gamma) + gamma, 0, 1),   zeta = 1.1, gamma = -0.1   (rectified sigmoid)
    W~   = s (clip(floor(W / s) + h(V) + z, q_min, q_max) - z)
    loss = ||X_f W^T - X_q W~^T||^2 / n  +  lambda * sum(1 - |2 h(V) - 1|^beta)

V starts where h(V) equals the fractional part W/s - floor(W/s) (so W~ starts at W). The
regulariser is 0 at h in {0, 1} and 1 at h = 0.5; it is off during a warm-up, then beta anneals
from 20 to 2, which pushes every h to 0 or 1. At the end the rounding is hard: up where h >= 0.5.

Layers are treated one after another in model order. Each is reconstructed from the inputs it sees
in the model being quantized, with the earlier layers already AdaRounded and the layer's own 8-bit
input quantizer applied (X_q), against the float model's output on the float inputs (X_f): the
paper's asymmetric reconstruction, `AdaRoundConfig.inputs="quantized"`. `inputs="float"` uses the
float inputs on both sides (X_q = X_f). The loss is computed exactly over all the calibration rows
from their Gram matrices (`gram_terms`), so each step costs out x in x in, whatever the number of rows.

The model is the one `quantization.apply_ptq` builds (QuantLinear / QuantConv2d with calibrated
activation ranges), so "4-bit weights / 8-bit activations" is one model; RTN at the same bits in the
same format is `apply_ptq(model, rtn_config(config), data)`.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, fields

import torch
from torch import nn

from compresslab.core.data import Dataset
from compresslab.core.models import prepare_input
from compresslab.core.params import SEED, Param, choice
from compresslab.core.training import LossFn, evaluate, quiet_default
from compresslab.core.validate import check_bits, check_choice, check_float, check_int, check_seed
from compresslab.techniques.layerwise import layer_inputs
from compresslab.techniques.quantization import (
    QuantConfig,
    QuantReport,
    apply_ptq,
    calibration_inputs,
    quant_report,
)
from compresslab.techniques.quantlayers import plain_layers, quant_layers
from compresslab.techniques.quantops import OBSERVERS, SCHEMES, dequantize_affine, fake_quantize
from compresslab.techniques.registry import StepContext, Technique, register, tiny_mlp

__all__ = [
    "ZETA",
    "GAMMA",
    "INPUTS",
    "rectified_sigmoid",
    "init_rounding",
    "soft_weight",
    "hard_weight",
    "rounding_regularizer",
    "beta_at",
    "reconstruction_loss",
    "gram_terms",
    "gram_loss",
    "adaround_layer",
    "AdaRoundConfig",
    "AdaRoundReport",
    "rtn_config",
    "apply_adaround",
]

ZETA, GAMMA = 1.1, -0.1  # the rectified sigmoid's stretch: h reaches exactly 0 and 1 at finite V
INPUTS = ("quantized", "float")


# ----------------------------------------------------------------- primitives

def rectified_sigmoid(v: torch.Tensor) -> torch.Tensor:
    """h(V) = clip(sigmoid(V) (zeta - gamma) + gamma, 0, 1): a sigmoid stretched to (-0.1, 1.1) and clipped.

    >>> rectified_sigmoid(torch.tensor([-100.0, 0.0, 100.0]))
    tensor([0.0000, 0.5000, 1.0000])
    """
    return torch.clamp(torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


def _channel(t: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Per-output-channel parameters (C,) shaped to broadcast against w (C, ...); a scalar stays one."""
    t = torch.as_tensor(t, device=w.device)
    return t if t.dim() == 0 else t.reshape(-1, *([1] * (w.dim() - 1)))


def init_rounding(w: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """V with h(V) = the fractional part r = w/s - floor(w/s): V = logit((r - gamma) / (zeta - gamma))
    (finite: r in [0, 1) maps into [1/12, 11/12]). Scale per output channel (axis 0) or a scalar.

    >>> w = torch.tensor([[0.25, 1.5, -0.75]])
    >>> rectified_sigmoid(init_rounding(w, torch.tensor([1.0])))
    tensor([[0.2500, 0.5000, 0.2500]])
    """
    u = w * (1.0 / _channel(scale, w).float())
    p = (u - torch.floor(u) - GAMMA) / (ZETA - GAMMA)
    return torch.log(p) - torch.log1p(-p)


def soft_weight(w: torch.Tensor, v: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor,
                qmin: int, qmax: int) -> torch.Tensor:
    """W~ = s (clip(floor(W/s) + h(V) + z, q_min, q_max) - z), per output channel: differentiable in V.

    >>> w = torch.tensor([[0.25, 1.5, -0.75]])
    >>> s, z = torch.tensor([1.0]), torch.tensor([0])
    >>> soft_weight(w, init_rounding(w, s), s, z, -7, 7)  # h = the fractional part: W~ = W
    tensor([[ 0.2500,  1.5000, -0.7500]])
    """
    s, z = _channel(scale, w).float(), _channel(zero_point, w).float()
    return s * (torch.clamp(torch.floor(w * (1.0 / s)) + rectified_sigmoid(v) + z, qmin, qmax) - z)


def hard_weight(w: torch.Tensor, v: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor,
                qmin: int, qmax: int) -> torch.Tensor:
    """The final rounding: q = clip(floor(W/s) + [h(V) >= 0.5] + z, q_min, q_max), W^ = s (q - z).

    >>> w = torch.tensor([[0.25, 1.5, -0.75]])
    >>> s, z = torch.tensor([1.0]), torch.tensor([0])
    >>> hard_weight(w, torch.tensor([[5.0, -5.0, 0.0]]), s, z, -7, 7)  # up, down, up (h = 0.5)
    tensor([[1., 1., 0.]])
    """
    s, z = _channel(scale, w).float(), _channel(zero_point, w)
    up = (rectified_sigmoid(v) >= 0.5).to(w.dtype)
    q = torch.clamp(torch.floor(w * (1.0 / s)) + up + z, qmin, qmax).to(torch.int32)
    return dequantize_affine(q, scale, zero_point, axis=0 if torch.as_tensor(scale).dim() else None)


def rounding_regularizer(v: torch.Tensor, beta: float) -> torch.Tensor:
    """sum(1 - |2 h(V) - 1|^beta): 0 where every h is 0 or 1, 1 per weight at h = 0.5.

    >>> rounding_regularizer(torch.tensor([-100.0, 0.0, 100.0]), beta=2.0)
    tensor(1.)
    """
    return (1 - (2 * rectified_sigmoid(v) - 1).abs().pow(beta)).sum()


def beta_at(step: int, iterations: int, warmup: float, beta_start: float = 20.0, beta_end: float = 2.0) -> float | None:
    """The paper's schedule: None (no regulariser) for the first warmup * iterations steps, then beta
    falls linearly from beta_start to beta_end: beta = end + (start - end) (1 - t), t = the fraction
    of the annealing steps done.

    >>> beta_at(10, 100, 0.2), beta_at(20, 100, 0.2), beta_at(60, 100, 0.2), beta_at(100, 100, 0.2)
    (None, 20.0, 11.0, 2.0)
    """
    start = warmup * iterations
    if step < start:
        return None
    t = (step - start) / max(iterations - start, 1e-12)
    return beta_end + (beta_start - beta_end) * max(0.0, 1.0 - t)


def reconstruction_loss(w: torch.Tensor, w_q: torch.Tensor, x_float: torch.Tensor,
                        x_quant: torch.Tensor | None = None) -> torch.Tensor:
    """||X_f W^T - X_q W~^T||^2 / n: squared output error summed over outputs, averaged over the n rows
    (W, W~ as (out, in) matrices; X_q = X_f when x_quant is None).

    >>> x = torch.tensor([[1.0, 1.0]])
    >>> reconstruction_loss(torch.tensor([[0.4, 0.4]]), torch.tensor([[0.0, 1.0]]), x)  # (0.8 - 1)^2
    tensor(0.0400)
    """
    x_quant = x_float if x_quant is None else x_quant
    w, w_q = w.reshape(w.shape[0], -1), w_q.reshape(w_q.shape[0], -1)
    if x_float.dim() == 3:  # a depthwise conv's rows (n, C, k): channel c reads only X[:, c]
        out_f, out_q = torch.einsum("nck,ck->nc", x_float, w), torch.einsum("nck,ck->nc", x_quant, w_q)
        return ((out_f - out_q) ** 2).sum(1).mean()
    return ((x_float @ w.T - x_quant @ w_q.T) ** 2).sum(1).mean()


def gram_terms(w: torch.Tensor, x_float: torch.Tensor,
               x_quant: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(H, M, c) with which reconstruction_loss(w, w~, X_f, X_q) = sum((D H) * D) + 2 sum(D * M) + c
    for D = W~ - W: H = X_q^T X_q / n, M = W E^T X_q / n, c = ||E W^T||^2 / n, E = X_q - X_f.
    A depthwise conv's rows (n, C, k) give one H per channel, (C, k, k), and M (C, k).
    Accumulated in float64, returned in float32."""
    x_quant = x_float if x_quant is None else x_quant
    w = w.reshape(w.shape[0], -1).double()
    xq, n = x_quant.double(), x_quant.shape[0]
    if xq.dim() == 3:
        ew = torch.einsum("nck,ck->nc", xq - x_float.double(), w)
        return (torch.einsum("nck,ncl->ckl", xq, xq) / n).float(), (torch.einsum("nc,nck->ck", ew, xq) / n).float(), \
            (ew**2).sum() / n
    ew = (xq - x_float.double()) @ w.T
    return (xq.T @ xq / n).float(), (ew.T @ xq / n).float(), (ew**2).sum() / n


def gram_loss(d: torch.Tensor, terms: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """The reconstruction loss from `gram_terms` for D = W~ - W (out, in): sum((D H) * D) + 2 sum(D * M) + c."""
    h, m, c = terms
    quadratic = torch.einsum("ck,ckl,cl->", d, h, d) if h.dim() == 3 else ((d @ h) * d).sum()
    return quadratic + 2 * (d * m).sum() + c.to(d.dtype)


def adaround_layer(w: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int, qmax: int,
                   terms: tuple[torch.Tensor, torch.Tensor, torch.Tensor], iterations: int = 1000,
                   reg_weight: float = 0.01, beta_start: float = 20.0, beta_end: float = 2.0, warmup: float = 0.2,
                   lr: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """Learn V for one weight (out, ...) by Adam on gram_loss(W~(V) - W) + reg_weight * regulariser
    (beta by `beta_at`); return (the hard-rounded weight, V). Deterministic: no randomness involved."""
    w = w.detach().float()
    flat = w.reshape(w.shape[0], -1)
    v = init_rounding(flat, scale).requires_grad_(True)
    opt = torch.optim.Adam([v], lr=lr)
    for step in range(iterations):
        opt.zero_grad(set_to_none=True)
        loss = gram_loss(soft_weight(flat, v, scale, zero_point, qmin, qmax) - flat, terms)
        beta = beta_at(step, iterations, warmup, beta_start, beta_end)
        if beta is not None:
            loss = loss + reg_weight * rounding_regularizer(v, beta)
        loss.backward()
        opt.step()
    v = v.detach()
    return hard_weight(flat, v, scale, zero_point, qmin, qmax).reshape(w.shape), v.reshape(w.shape)


# ----------------------------------------------------------------- config and report

@dataclass(frozen=True)
class AdaRoundConfig:
    """AdaRound on a per-channel `bits`-bit weight grid (2..8) with `act_bits`-bit activations (None:
    float activations, weight-only). The grid: `weight_scheme`, `weight_observer` per output channel
    (what RTN would use); activations asymmetric, ranges by `act_observer`, calibrated as apply_ptq
    does. Learning: `iterations` Adam steps at `lr` per layer, regulariser weight `reg_weight`
    (lambda), beta from `beta_start` down to `beta_end` after a warm-up of `warmup` (a fraction of
    the steps). Calibration: `calibration_size` random training images (seeded by `seed`).
    `inputs`: "quantized" (earlier layers already quantized: the paper's asymmetric variant) or "float"."""

    bits: int = 4
    act_bits: int | None = 8
    weight_scheme: str = "symmetric"
    weight_observer: str = "minmax"
    act_observer: str = "minmax"
    iterations: int = 1000
    reg_weight: float = 0.01
    beta_start: float = 20.0
    beta_end: float = 2.0
    warmup: float = 0.2
    lr: float = 0.01
    calibration_size: int = 1024
    inputs: str = "quantized"
    seed: int = 0

    def __post_init__(self) -> None:
        owner = "AdaRoundConfig"
        check_bits(owner, "bits", self.bits, 2, 8)
        if self.act_bits is not None:
            check_bits(owner, "act_bits", self.act_bits, 2, 16)
        check_choice(owner, "weight_scheme", self.weight_scheme, SCHEMES)
        check_choice(owner, "weight_observer", self.weight_observer, OBSERVERS)
        check_choice(owner, "act_observer", self.act_observer, OBSERVERS)
        check_int(owner, "iterations", self.iterations, 1, 10**6)
        check_float(owner, "reg_weight", self.reg_weight, 0, 1e6)
        check_float(owner, "beta_end", self.beta_end, 0, 1000, lo_open=True)
        check_float(owner, "beta_start", self.beta_start, self.beta_end, 1000)
        check_float(owner, "warmup", self.warmup, 0, 1, hi_open=True)
        check_float(owner, "lr", self.lr, 0, 100, lo_open=True)
        check_int(owner, "calibration_size", self.calibration_size, 1, 10**6)
        check_choice(owner, "inputs", self.inputs, INPUTS)
        check_seed(owner, "seed", self.seed)


def rtn_config(config: AdaRoundConfig) -> QuantConfig:
    """The round-to-nearest baseline in the same format: apply_ptq's config for the same grid,
    activations, observers, calibration images and seed (AdaRound starts from exactly this model)."""
    return QuantConfig(weight_bits=config.bits, act_bits=config.act_bits, weight_scheme=config.weight_scheme,
                       weight_granularity="per_channel", weight_observer=config.weight_observer,
                       act_observer=config.act_observer, calibration_size=config.calibration_size,
                       calibration_batch=256, seed=config.seed)


@dataclass(kw_only=True, repr=False)
class AdaRoundReport(QuantReport):
    """Report of apply_adaround: QuantReport's fields (accuracy of the float model before, of the
    AdaRound model after, in percent; per-layer SQNR; the size ledger) plus accuracy_rtn (percent:
    round-to-nearest at the same bits, the model AdaRound starts from). Per layer: the reconstruction
    loss with RTN and with AdaRound on the calibration rows, and the percent of weights rounded
    differently from RTN."""

    accuracy_rtn: float | None = None

    technique = "adaround"

    def headline_extra(self) -> list[str]:
        c = self.config
        acts = "float" if c.act_bits is None else f"{c.act_bits}-bit"
        rtn = "n/a" if self.accuracy_rtn is None else f"{self.accuracy_rtn:.2f}%"
        return [f"AdaRound: weights {c.bits}-bit {c.weight_scheme} per channel, activations {acts}, "
                f"{c.iterations} steps per layer ({c.inputs} inputs); round-to-nearest: {rtn}"]


# ----------------------------------------------------------------- the model-level verb

def apply_adaround(model: nn.Module, config: AdaRoundConfig, data: Dataset | None = None, *, inplace: bool = False,
                   progress: bool | None = None, loss_fn: LossFn | None = None,
                   calibration: torch.Tensor | None = None,
                   float_accuracy: float | None = None) -> tuple[nn.Module, AdaRoundReport]:
    """RTN by apply_ptq (grid and activation ranges calibrated), then each layer's rounding learned
    as in the module docstring. data: calibrate on `config.calibration_size` random training images
    and report test accuracy (float, RTN, AdaRound); or calibration: a tensor of inputs (no
    accuracy). float_accuracy: the float model's known test accuracy in percent (not evaluated
    again). progress: a bar over the layers; loss_fn must be None (the loss is the layer's output
    reconstruction)."""
    if loss_fn is not None:
        raise ValueError("loss_fn must be None: AdaRound minimises each layer's output reconstruction error")
    if data is not None and not isinstance(data, Dataset):
        raise ValueError(f"data must be a Dataset or None (pass input tensors as calibration=), got {type(data).__name__}")
    if calibration is None and data is None:
        raise ValueError("apply_adaround needs data (a Dataset) or calibration (a tensor of inputs)")
    start = time.perf_counter()
    reference = copy.deepcopy(model).eval()
    inputs = (calibration[:config.calibration_size] if calibration is not None
              else calibration_inputs(data, config.calibration_size, config.seed))
    model_q, rtn = apply_ptq(model, rtn_config(config), data, inplace=inplace, calibration=inputs,
                              float_accuracy=float_accuracy)
    model_q.eval()
    x = prepare_input(inputs, model_q)
    layers = quant_layers(model_q)
    float_layers = dict(reference.named_modules())
    from tqdm.auto import tqdm

    show = (not quiet_default()) if progress is None else progress
    extra = {}
    for name, layer in tqdm(layers.items(), desc="AdaRound layers", leave=False, disable=not show):
        x_f = layer_inputs(reference, float_layers[name], x)
        x_q = x_f if config.inputs == "float" else layer.input_fake_quant(layer_inputs(model_q, layer, x))
        w = layer.weight.detach().clone()
        fq = layer.weight_fake_quant
        scale, zp = fq.qparams()
        w_rtn = fake_quantize(w, scale, zp, fq.qmin, fq.qmax, 0)
        terms = gram_terms(w, x_f, x_q)
        w_hat, _ = adaround_layer(w, scale, zp, fq.qmin, fq.qmax, terms, config.iterations, config.reg_weight,
                                  config.beta_start, config.beta_end, config.warmup, config.lr)
        with torch.no_grad():
            layer.weight.copy_(w_hat)
            flat = w.reshape(w.shape[0], -1)
            extra[name] = {
                "recon loss RTN": float(gram_loss(w_rtn.reshape(flat.shape) - flat, terms)),
                "recon loss AdaRound": float(gram_loss(w_hat.reshape(flat.shape) - flat, terms)),
                "rounded unlike RTN %": round(100 * float((w_hat != w_rtn).float().mean()), 2)}
    acc_q = evaluate(model_q, data.test).accuracy if data is not None else None
    probe = data.test.tensors(limit=500)[0] if data is not None else inputs[:500]
    base = quant_report(model_q, reference, rtn.config, probe, "adaround", rtn.accuracy_before, acc_q, len(inputs),
                        time.perf_counter() - start)
    report = AdaRoundReport(**{f.name: getattr(base, f.name) for f in fields(base) if f.init},
                            accuracy_rtn=rtn.accuracy_after)
    report.config = config
    report.layers = [{**row, **extra[row["layer"]]} for row in base.layers]
    return model_q, report


# ----------------------------------------------------------------- registration

def _recipe_step(model: nn.Module, config: AdaRoundConfig, data: Dataset,
                 context: StepContext) -> tuple[nn.Module, AdaRoundReport]:
    """A recipe's adaround step: AdaRound, then plain layers holding the rounded weights (on the grid
    the recipe's integer storage re-derives when the channel's largest weight stays on the grid's end)."""
    rounded, report = apply_adaround(model, config, data, progress=context.progress)
    return plain_layers(rounded), report


def _frontier(arch: str, epochs: float, seed: int) -> list[dict]:
    """Notebook 08: 4-bit weights rounded by AdaRound, stored as int4 (weight-only, as INT4 (QAT));
    150 steps per layer per fine-tuning epoch of the notebook (at least 50), 256 calibration images."""
    config = AdaRoundConfig(bits=4, act_bits=None, iterations=max(50, round(150 * epochs)), calibration_size=256,
                            seed=seed)
    return [{"name": "INT4 (AdaRound)", "precision": "int4", "family": "single", "steps": [("adaround", config)]}]


register(Technique(
    name="adaround", apply=apply_adaround, config=AdaRoundConfig,
    example=lambda: (tiny_mlp(), AdaRoundConfig(bits=4, iterations=20, calibration_size=64), {}),
    verb="adaround", step=_recipe_step, frontier=_frontier,
    notebook="03_ptq_vs_qat", params={
        "adaround_bit_widths": Param("ints", 2, 8), "adaround_iterations": Param("int", 1, 10**6),
        "adaround_reg_weight": Param("float", 0, 1e6), "adaround_calibration": Param("int", 1, 10**6),
        "adaround_inputs": choice(*INPUTS), "seed": SEED,
    },
    references={"rounding_regularizer": rounding_regularizer}))
