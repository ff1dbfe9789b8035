"""Activation-aware pruning (Wanda, Sun et al. 2024) and the 2:4 semi-structured pattern.

Magnitude pruning removes the smallest |W_ij|. But a weight's effect on the output y_i = sum_j W_ij x_j
is |W_ij| |x_j|: a small weight on an input channel with large activations matters more than a
large weight on a quiet one. Wanda scores every weight by

    S_ij = |W_ij| * ||X_j||_2        (||X_j||: the norm of input channel j over calibration tokens)

and removes the lowest-scoring fraction *within each output row* (every output keeps the same number
of inputs). The 2:4 pattern keeps the 2 highest scores in every group of 4 consecutive inputs of a
row: exactly 50% zeros, in a layout that sparse tensor cores (and some CPU kernels) run at up to 2x.
No retraining: the weights that stay are unchanged.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

from compresslab.core import metrics
from compresslab.core.data import Dataset
from compresslab.core.report import Report
from compresslab.core.training import EvalResult, LossFn, evaluate
from compresslab.core.validate import (
    check_choice,
    check_float,
    check_int,
    check_overflow,
    check_tensor,
)
from compresslab.techniques.layerwise import layer_inputs, layerwise_setup
from compresslab.techniques.masks import magnitude_mask, make_permanent, set_masks
from compresslab.techniques.registry import Technique, register, tiny_mlp

__all__ = [
    "CRITERIA",
    "PATTERNS",
    "input_norms",
    "wanda_scores",
    "row_mask",
    "nm_mask",
    "nm_bytes",
    "WandaConfig",
    "WandaReport",
    "apply_wanda",
]

CRITERIA = ("magnitude", "wanda")
PATTERNS = ("unstructured", "2:4")


def input_norms(x: torch.Tensor) -> torch.Tensor:
    """||X_j||_2 over all tokens for every input channel j of x (..., in).

    >>> input_norms(torch.tensor([[3.0, 0.0], [4.0, 1.0]]))
    tensor([5., 1.])
    """
    check_tensor("x", x, kind="float")
    norms = x.detach().reshape(-1, x.shape[-1]).float().norm(dim=0)
    check_overflow("the input norms ||X_j||", norms)
    return norms


def wanda_scores(w: torch.Tensor, norms: torch.Tensor) -> torch.Tensor:
    """S_ij = |W_ij| * ||X_j|| for W (out x in) and the input norms (in,).

    >>> wanda_scores(torch.tensor([[1.0, -4.0]]), torch.tensor([5.0, 1.0]))  # the small weight wins
    tensor([[5., 4.]])
    """
    check_tensor("weight", w, dim=2, kind="float")
    check_tensor("norms", norms, kind="float")
    if norms.shape != (w.shape[1],):
        raise ValueError(f"norms of shape {tuple(norms.shape)} do not match in_features={w.shape[1]}")
    scores = w.detach().abs() * norms[None, :].to(w.dtype)
    check_overflow("the scores |W| * ||X||", scores)
    return scores


def row_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """0/1 mask zeroing the k = round(sparsity * in) lowest scores of every row (ties: the lower index).

    >>> row_mask(torch.tensor([[4.0, 1.0, 3.0, 2.0], [1.0, 2.0, 3.0, 4.0]]), 0.5)
    tensor([[1., 0., 1., 0.],
            [0., 0., 1., 1.]])
    """
    check_float("row_mask", "sparsity", sparsity, 0, 1, hi_open=True)
    check_tensor("scores", scores, dim=2, kind="number")
    k = int(round(sparsity * scores.shape[1]))
    mask = torch.ones_like(scores, dtype=torch.float32)
    if k:
        idx = torch.sort(scores, dim=1, stable=True).indices[:, :k]
        mask.scatter_(1, idx, 0.0)
    return mask


def nm_mask(scores: torch.Tensor, n: int = 2, m: int = 4) -> torch.Tensor:
    """0/1 mask keeping the n highest scores in every group of m consecutive entries of a row.

    >>> nm_mask(torch.tensor([[0.1, 0.9, 0.5, 0.2, 3.0, 1.0, 2.0, 0.0]]))
    tensor([[0., 1., 1., 0., 1., 0., 1., 0.]])
    """
    check_int("nm_mask", "m", m, 1, None)
    check_int("nm_mask", "n", n, 0, m)
    check_tensor("scores", scores, dim=2, kind="number")
    rows, cols = scores.shape
    if cols % m:
        raise ValueError(f"nm_mask: in_features={cols} must be a multiple of m={m}")
    groups = scores.reshape(rows, cols // m, m)
    keep = torch.topk(groups, n, dim=2).indices
    mask = torch.zeros_like(groups, dtype=torch.float32).scatter_(2, keep, 1.0)
    return mask.reshape(rows, cols)


def nm_bytes(fp32_bytes: int, zeros: int, kept: int) -> int:
    """Bytes of a model whose pruned layers are stored in a 2:4 format: the dense FP32 bytes minus
    4 per dropped value, plus a 2-bit position (which of the 4) per kept value.

    >>> nm_bytes(4 * 8, zeros=4, kept=4)  # 8 weights in FP32, half dropped: 16 bytes + 4 x 2 bits
    17
    """
    return int(fp32_bytes - 4 * zeros + kept * 2 // 8)


@dataclass(frozen=True)
class WandaConfig:
    """criterion 'magnitude' (|W|, smallest per layer) or 'wanda' (|W| ||X||, smallest per output row);
    pattern 'unstructured' at `sparsity` in [0, 1) or '2:4' (50% by construction; scores compared in
    each group of 4); calibration: windows of data.train for ||X_j||; layers: Linear layers to prune
    (None: every Linear but the last)."""

    sparsity: float = 0.5
    criterion: str = "wanda"
    pattern: str = "unstructured"
    calibration: int = 64
    layers: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        owner = "WandaConfig"
        check_float(owner, "sparsity", self.sparsity, 0, 1, hi_open=True)
        check_choice(owner, "criterion", self.criterion, CRITERIA)
        check_choice(owner, "pattern", self.pattern, PATTERNS)
        check_int(owner, "calibration", self.calibration, 1, 1 << 20)
        if self.layers is not None and (not isinstance(self.layers, tuple) or not self.layers):
            raise ValueError(f"{owner}.layers={self.layers!r} must be a non-empty tuple of layer names or None")


@dataclass(kw_only=True, repr=False)
class WandaReport(Report):
    """Report of apply_wanda: next-symbol accuracy (percent) and cross-entropy in bits per symbol before
    and after (no retraining); sparsity of the pruned layers; bytes of a 2:4 format (the kept FP32
    values plus a 2-bit position each) when the pattern is 2:4."""

    loss_bits_before: float | None = None
    loss_bits_after: float | None = None
    sparsity: float = 0.0
    nm_bytes: int | None = None

    technique = "activation-aware pruning"

    def headline_extra(self) -> list[str]:
        c = self.config
        parts = [f"{c.criterion}, {c.pattern}, {100 * self.sparsity:.1f}% zeros in the pruned layers"]
        if self.loss_bits_after is not None:
            parts.append(f"{self.loss_bits_before:.4f} &rarr; {self.loss_bits_after:.4f} bits per symbol")
        return parts


def apply_wanda(
    model: nn.Module, config: WandaConfig, data: Dataset | None = None, *, inplace: bool = False,
    progress: bool | None = None, loss_fn: LossFn | None = None, before: EvalResult | None = None,
) -> tuple[nn.Module, WandaReport]:
    """Prune (a copy of) `model` one layer after another without retraining.

    'wanda' measures each layer's input norms on the first config.calibration training windows with
    the earlier layers already pruned; masks go through torch.nn.utils.prune and are made permanent.
    before: `evaluate(model, data.test)` when already known (saves a pass over the test split)."""
    if loss_fn is not None:
        raise ValueError("loss_fn must be None: apply_wanda trains nothing")
    if config.criterion == "wanda" and data is None:
        raise ValueError("WandaConfig.criterion='wanda' needs data (calibration windows from data.train)")
    start = time.perf_counter()
    setup = layerwise_setup(model, data, config.layers, config.calibration, "WandaConfig", inplace, before)
    model, before, size_before, calib = setup.model, setup.before, setup.size_before, setup.calibration
    rows, zeros, total, kept = [], 0, 0, 0
    for name, layer in setup.layers.items():
        w = layer.weight.detach()
        if config.criterion == "wanda":
            scores = wanda_scores(w, input_norms(layer_inputs(model, layer, calib)))
        else:
            scores = w.abs()
        if config.pattern == "2:4":
            mask = nm_mask(scores, 2, 4)
        elif config.criterion == "wanda":
            mask = row_mask(scores, config.sparsity)
        else:
            mask = magnitude_mask(w, config.sparsity)
        set_masks(model, {name: mask})
        make_permanent(model)
        nz = int(mask.sum())
        zeros, total, kept = zeros + mask.numel() - nz, total + mask.numel(), kept + nz
        rows.append({"layer": name, "shape": f"{w.shape[0]}x{w.shape[1]}", "sparsity": 1 - nz / mask.numel()})
    after = evaluate(model, data.test) if data is not None else None
    size_after = metrics.model_size(model)
    stored_nm = None
    if config.pattern == "2:4":
        stored_nm = nm_bytes(size_after.fp32_bytes, zeros, kept)
    report = WandaReport(
        config=config, size_before=size_before, size_after=size_after,
        accuracy_before=None if before is None else before.accuracy,
        accuracy_after=None if after is None else after.accuracy,
        loss_bits_before=None if before is None else before.loss_bits,
        loss_bits_after=None if after is None else after.loss_bits,
        sparsity=zeros / max(total, 1), nm_bytes=stored_nm, seconds=time.perf_counter() - start, layers=rows)
    return model, report


# ----------------------------------------------------------------- registration

register(Technique(
    name="wanda", apply=apply_wanda, config=WandaConfig,
    example=lambda: (tiny_mlp(), WandaConfig(sparsity=0.5, calibration=64), {})))
