"""One-shot pruning with error compensation: SparseGPT (Frantar & Alistarh 2023).

Magnitude pruning and Wanda zero weights and leave the rest as they are. SparseGPT, like GPTQ, also
*updates* the weights that stay so that the layer's outputs on calibration inputs X change least.
With H = 2 X^T X / n (+ damping; `groupquant.hessian`) and U the upper Cholesky factor of H^-1
(`groupquant.inverse_cholesky`), columns go in order; at column i every row's weight is kept
or set to 0, and the error moves onto the columns not yet treated (the Optimal Brain Surgeon update
restricted to them):

    e = (w_i - mask_i w_i) / U_ii,    w_j <- w_j - e U_ij  for j > i.

U_ii^2 is the (i, i) entry of the inverse Hessian of the columns i, i+1, ... still free, so this
update is the exact least-squares repair of the row's output using those columns (written out in
the tests). The mask is chosen a block of columns at a time, on the weights as they are when the
block starts, by the OBS saliency

    score_ij = w_ij^2 / U_jj^2       (the loss increase of dropping w_ij alone)

lowest dropped first: over the whole block for unstructured sparsity; for 2:4, the 2 highest of every
4 consecutive inputs of a row stay (`wanda.nm_mask` on the saliencies).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

from compresslab.core import metrics
from compresslab.core.data import Dataset
from compresslab.core.params import OPEN_FRACTION, Param
from compresslab.core.report import Report
from compresslab.core.training import EvalResult, LossFn, evaluate
from compresslab.core.validate import check_choice, check_float, check_int, check_tensor
from compresslab.techniques.groupquant import hessian, inverse_cholesky, output_error
from compresslab.techniques.layerwise import layer_inputs, layerwise_setup
from compresslab.techniques.masks import magnitude_mask, make_permanent, set_masks
from compresslab.techniques.registry import Technique, register, tiny_mlp
from compresslab.techniques.wanda import PATTERNS, nm_bytes, nm_mask

__all__ = [
    "pattern_nm",
    "saliency",
    "sparsegpt",
    "SparseGPTConfig",
    "SparseGPTReport",
    "apply_sparsegpt",
]



def pattern_nm(pattern: str) -> tuple[int, int]:
    """(n, m) of the pattern: (2, 4) for '2:4' (2 kept in every 4), (0, 0) for 'unstructured'.

    >>> pattern_nm("2:4"), pattern_nm("unstructured")
    ((2, 4), (0, 0))
    """
    check_choice("SparseGPT", "pattern", pattern, PATTERNS)
    if pattern == "unstructured":
        return 0, 0
    n, m = pattern.split(":")
    return int(n), int(m)


def saliency(w: torch.Tensor, u_diag: torch.Tensor) -> torch.Tensor:
    """OBS saliency w_ij^2 / U_jj^2 of every weight of w (out x k) given U's diagonal (k,).

    >>> saliency(torch.tensor([[1.0, -2.0]]), torch.tensor([0.5, 2.0]))  # 1 / 0.25, 4 / 4
    tensor([[4., 1.]])
    """
    check_tensor("weight", w, dim=2)
    check_tensor("U's diagonal", u_diag, dim=1)
    if u_diag.shape != (w.shape[1],):
        raise ValueError(f"saliency: U's diagonal of shape {tuple(u_diag.shape)} does not match {w.shape[1]} columns")
    return w.pow(2) / u_diag.to(w.dtype)[None, :].pow(2)


def sparsegpt(w: torch.Tensor, h: torch.Tensor, sparsity: float = 0.5, pattern: str = "unstructured",
              block_size: int = 128, damp: float = 0.01, mask: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """(pruned and updated W, keep mask 0/1) of w (out x in) given the Hessian h (in x in) of its inputs.

    Unstructured: in each block of `block_size` columns the round(sparsity * out * block) lowest
    saliencies are dropped (exactly `sparsity` when the products are whole). n:m (`pattern` '2:4'):
    the n highest saliencies of every m consecutive inputs of a row stay (`sparsity` is ignored).
    `mask` (out x in, 1 = keep) fixes the mask instead; only the update is computed. damp *
    mean(diag h) is added to h's diagonal; inputs that are always 0 get weight 0.

    >>> w = torch.tensor([[0.3, -0.8, 0.1, 0.55]])
    >>> h = torch.diag(torch.tensor([1.0, 2.0, 3.0, 4.0]))  # diagonal H: no update, keep by w^2 h_jj
    >>> new, keep = sparsegpt(w, h, pattern="2:4", damp=0.0)
    >>> keep.tolist(), new.tolist()  # 0.09, 1.28, 0.03, 1.21
    ([[0.0, 1.0, 0.0, 1.0]], [[0.0, -0.800000011920929, 0.0, 0.550000011920929]])
    """
    check_float("SparseGPT", "sparsity", sparsity, 0, 1, hi_open=True)
    check_int("SparseGPT", "block_size", block_size, 1, None)
    n, m = pattern_nm(pattern)
    check_tensor("weight", w, dim=2, kind="float")
    check_tensor("hessian", h, dim=2, kind="float")
    if mask is not None:
        check_tensor("mask", mask, kind="number")
    out_f, in_f = w.shape
    if h.shape != (in_f, in_f):
        raise ValueError(f"hessian shape {tuple(h.shape)} does not match in_features={in_f}")
    if mask is not None and mask.shape != w.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match the weight's {tuple(w.shape)}")
    if m and mask is None and (in_f % m or block_size % m):
        raise ValueError(f"SparseGPT.pattern={pattern!r}: in_features={in_f} and block_size={block_size} "
                         f"must be multiples of {m}")
    dtype = w.dtype
    h = h.double().clone()
    dead = torch.diag(h) == 0  # inputs that are always 0: a unit diagonal, their weights set to 0 (as GPTQ)
    h[dead, dead] = 1.0
    u, _ = inverse_cholesky(h, damp)
    w = w.detach().double().clone()
    w[:, dead] = 0.0
    keep = torch.ones(out_f, in_f, dtype=torch.bool) if mask is None else mask.detach().bool().clone()
    for b0 in range(0, in_f, block_size):
        b1 = min(b0 + block_size, in_f)
        ub = u[b0:b1, b0:b1]
        if mask is None and not m:
            keep[:, b0:b1] = magnitude_mask(saliency(w[:, b0:b1], ub.diagonal()), sparsity).bool()
        err = torch.zeros(out_f, b1 - b0, dtype=w.dtype)
        for i in range(b1 - b0):
            j = b0 + i
            if mask is None and m and i % m == 0:
                keep[:, j:j + m] = nm_mask(saliency(w[:, j:j + m], ub.diagonal()[i:i + m]), n, m).bool()
            kept = torch.where(keep[:, j], w[:, j], torch.zeros_like(w[:, j]))
            err[:, i] = (w[:, j] - kept) / ub[i, i]
            w[:, j] = kept
            w[:, j + 1:b1] -= err[:, i:i + 1] * ub[i:i + 1, i + 1:]
        w[:, b1:] -= err @ u[b0:b1, b1:]
    return w.to(dtype), keep.float()


@dataclass(frozen=True)
class SparseGPTConfig:
    """sparsity in [0, 1) (unstructured); pattern 'unstructured' or '2:4' (50% zeros by construction); block_size: columns whose mask is chosen together; damp: diagonal damping
    (fraction of mean diag H); calibration: windows of data.train; layers: Linear layers to prune
    (None: every Linear but the last)."""

    sparsity: float = 0.5
    pattern: str = "unstructured"
    block_size: int = 128
    damp: float = 0.01
    calibration: int = 64
    layers: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        owner = "SparseGPTConfig"
        check_float(owner, "sparsity", self.sparsity, 0, 1, hi_open=True)
        check_choice(owner, "pattern", self.pattern, PATTERNS)
        check_int(owner, "block_size", self.block_size, 1, 1 << 20)
        check_float(owner, "damp", self.damp, 0, 1)
        check_int(owner, "calibration", self.calibration, 1, 1 << 20)
        _, m = pattern_nm(self.pattern)
        if m and self.block_size % m:
            raise ValueError(f"{owner}.block_size={self.block_size} must be a multiple of {m} for pattern={self.pattern!r}")
        if self.layers is not None and (not isinstance(self.layers, tuple) or not self.layers):
            raise ValueError(f"{owner}.layers={self.layers!r} must be a non-empty tuple of layer names or None")


@dataclass(kw_only=True, repr=False)
class SparseGPTReport(Report):
    """Report of apply_sparsegpt: next-symbol accuracy (percent) and cross-entropy in bits per symbol
    before and after; the sparsity of the pruned layers; bytes of an n:m format (`wanda.nm_bytes`)
    for a 2:4 pattern; per layer the relative output error on the calibration inputs, SparseGPT's and
    magnitude pruning's (same pattern, no update)."""

    loss_bits_before: float | None = None
    loss_bits_after: float | None = None
    sparsity: float = 0.0
    nm_bytes: int | None = None

    technique = "sparsegpt"

    def headline_extra(self) -> list[str]:
        c = self.config
        parts = [f"SparseGPT {c.pattern}, {100 * self.sparsity:.1f}% zeros in the pruned layers"]
        if self.loss_bits_after is not None:
            parts.append(f"{self.loss_bits_before:.4f} &rarr; {self.loss_bits_after:.4f} bits per symbol")
        return parts


def apply_sparsegpt(
    model: nn.Module, config: SparseGPTConfig, data: Dataset | None = None, *, inplace: bool = False,
    progress: bool | None = None, loss_fn: LossFn | None = None, before: EvalResult | None = None,
) -> tuple[nn.Module, SparseGPTReport]:
    """Prune (a copy of) `model` one layer after another with SparseGPT, no retraining.

    Each layer's Hessian comes from its inputs on the first config.calibration training windows with
    the earlier layers already pruned; the updated weights are written, the mask goes through
    torch.nn.utils.prune and is made permanent. before: `evaluate(model, data.test)` when known."""
    if loss_fn is not None:
        raise ValueError("loss_fn must be None: apply_sparsegpt trains nothing")
    if data is None:
        raise ValueError("apply_sparsegpt needs data (calibration windows from data.train)")
    start = time.perf_counter()
    setup = layerwise_setup(model, data, config.layers, config.calibration, "SparseGPTConfig", inplace, before)
    model, before, size_before, calib = setup.model, setup.before, setup.size_before, setup.calibration
    n, m = pattern_nm(config.pattern)
    rows, zeros, total = [], 0, 0
    for name, layer in setup.layers.items():
        w = layer.weight.detach().clone()
        x = layer_inputs(model, layer, calib)
        new, keep = sparsegpt(w, hessian(x), config.sparsity, config.pattern, config.block_size, config.damp)
        plain = nm_mask(w.abs(), n, m) if m else magnitude_mask(w, config.sparsity)
        with torch.no_grad():
            layer.weight.copy_(new)
        set_masks(model, {name: keep})
        make_permanent(model)
        nz = int(keep.sum())
        zeros, total = zeros + keep.numel() - nz, total + keep.numel()
        rows.append({"layer": name, "shape": f"{w.shape[0]}x{w.shape[1]}", "sparsity": 1 - nz / keep.numel(),
                     "output_error": output_error(x, w, layer.weight.detach()),
                     "magnitude_error": output_error(x, w, w * plain)})
    after = evaluate(model, data.test)
    size_after = metrics.model_size(model)
    stored_nm = nm_bytes(size_after.fp32_bytes, zeros, total - zeros) if m else None
    report = SparseGPTReport(
        config=config, size_before=size_before, size_after=size_after,
        accuracy_before=None if before is None else before.accuracy, accuracy_after=after.accuracy,
        loss_bits_before=None if before is None else before.loss_bits, loss_bits_after=after.loss_bits,
        sparsity=zeros / max(total, 1), nm_bytes=stored_nm, seconds=time.perf_counter() - start, layers=rows)
    return model, report


# ----------------------------------------------------------------- registration

# A recipe verb (run_recipe chains it on any model's Linear layers with calibration from data.train), not a
# frontier entry: like GPTQ and Wanda it is a one-shot method for transformers, taught in notebook 09;
# notebook 08's pruning recipes fine-tune after the mask, while the one-shot, no-retraining setting is 09's.
register(Technique(
    name="sparsegpt", apply=apply_sparsegpt, config=SparseGPTConfig,
    example=lambda: (tiny_mlp(), SparseGPTConfig(sparsity=0.5, calibration=64), {}),
    verb="sparsegpt", notebook="09_language_model", params={"sparsity": OPEN_FRACTION, "calibration": Param("int", 1, 4096)}))
