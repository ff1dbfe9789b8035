"""Weight-only quantization with per-group scales: round-to-nearest (RTN) and GPTQ.

A Linear weight W (out x in) is cut along its input dimension into groups of g columns; every row's
group gets its own asymmetric b-bit grid (scale s and zero point z, `quantops.choose_qparams` over
the group's [min, max] widened to include 0; s stored as FP16):

    q = clamp(round(w / s) + z, 0, 2^b - 1),    w_hat = s (q - z).

RTN rounds every weight on its own. GPTQ (Frantar et al. 2022) quantizes one column at a time and
moves each column's rounding error onto the columns not yet quantized, so the layer's outputs on
calibration inputs X change least: with H = 2 X^T X / n (+ damping) and U the upper Cholesky factor
of H^-1,

    e = (w_i - w_hat_i) / U_ii,    W[:, j] -= e U_ij  for j > i.

With a diagonal H, U is diagonal and GPTQ is exactly RTN. Stored bytes: the packed b-bit codes, an
FP16 scale and a b-bit zero point per group, the rest of the model in FP32 (`file_bytes`).
"""

from __future__ import annotations

import io
import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from compresslab.core import metrics
from compresslab.core.data import Dataset
from compresslab.core.params import (
    OPEN_FRACTION,
    PROFILE,
    SEED,
    SHARE,
    TEMPERATURE,
    WEIGHT,
    Param,
    choice,
)
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
from compresslab.techniques.quantops import choose_qparams, dequantize_affine, quantize_affine
from compresslab.techniques.registry import Technique, register, tiny_mlp

__all__ = [
    "METHODS",
    "GroupQuant",
    "check_group_size",
    "quantize_groups",
    "dequantize_groups",
    "rtn",
    "hessian",
    "inverse_cholesky",
    "gptq",
    "output_error",
    "pack_codes",
    "unpack_codes",
    "file_bytes",
    "GroupQuantConfig",
    "GroupQuantReport",
    "apply_groupquant",
]

METHODS = ("rtn", "gptq")


@dataclass
class GroupQuant:
    """Codes q (out x in, int32 in [0, 2^b - 1]), scale and zero (out x in/g), bits, group size."""

    q: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor
    bits: int
    group_size: int

    def dequantize(self) -> torch.Tensor:
        return dequantize_groups(self)


def check_group_size(in_features: int, group_size: int) -> int:
    """The group size in use: `group_size`, or in_features for 0 (one group per row, per-channel)."""
    check_int("GroupQuant", "group_size", group_size, 0, None)
    g = group_size or in_features
    if in_features % g:
        raise ValueError(f"GroupQuant.group_size={group_size} must divide in_features={in_features} "
                         "(or be 0 for one group per row)")
    return g


def _qparams(w: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Asymmetric (scale, zero) per row of w over its [min, max]; the scale rounded to FP16."""
    scale, zero = choose_qparams(w.amin(1), w.amax(1), bits, "asymmetric")
    scale = scale.half().float()
    check_overflow("a group's FP16 scale (max - min) / (2^b - 1)", scale)
    lo = w.amin(1).clamp(max=0)
    return scale, torch.clamp(-torch.round(lo / scale), 0, 2**bits - 1).to(torch.int32)


def quantize_groups(w: torch.Tensor, bits: int, group_size: int) -> GroupQuant:
    """Round-to-nearest b-bit codes of w (out x in) with one (scale, zero) per row and group of columns.

    >>> w = torch.tensor([[-1.0, 0.5, 2.0, 4.0]])  # groups of 2: [-1, 0.5] and [2, 4] (widened to [0, 4])
    >>> gq = quantize_groups(w, bits=2, group_size=2)
    >>> gq.scale.tolist(), gq.zero.tolist(), gq.q.tolist()  # s = 1.5/3, z = 2;  s = 4/3, z = 0
    ([[0.5, 1.3330078125]], [[2, 0]], [[0, 3, 2, 3]])
    >>> gq.dequantize().tolist()
    [[-1.0, 0.5, 2.666015625, 3.9990234375]]
    """
    check_int("GroupQuant", "bits", bits, 2, 8)
    check_tensor("weight", w)
    if w.dim() != 2:
        raise ValueError(f"weight must be 2-D (out x in), got shape {tuple(w.shape)}")
    out_f, in_f = w.shape
    g = check_group_size(in_f, group_size)
    groups = w.detach().float().reshape(out_f * (in_f // g), g)
    scale, zero = _qparams(groups, bits)
    q = quantize_affine(groups, scale, zero, 0, 2**bits - 1, axis=0)
    return GroupQuant(q.reshape(out_f, in_f), scale.reshape(out_f, -1), zero.reshape(out_f, -1), bits, g)


def dequantize_groups(gq: GroupQuant) -> torch.Tensor:
    """w_hat = s (q - z), each group with its own s and z."""
    out_f, in_f = gq.q.shape
    groups = gq.q.reshape(-1, gq.group_size)
    w = dequantize_affine(groups, gq.scale.reshape(-1), gq.zero.reshape(-1), axis=0)
    return w.reshape(out_f, in_f)


def rtn(w: torch.Tensor, bits: int, group_size: int) -> torch.Tensor:
    """The round-to-nearest reconstruction of w (dequantize(quantize_groups(w)))."""
    return dequantize_groups(quantize_groups(w, bits, group_size))


def hessian(x: torch.Tensor) -> torch.Tensor:
    """H = 2 X^T X / n of the layer inputs x (n x in, or (..., in) flattened): the Hessian of the
    squared output error ||X W^T - X W_hat^T||^2 / n with respect to one row of W_hat."""
    check_tensor("layer inputs", x)
    x = x.reshape(-1, x.shape[-1]).double()
    h = 2.0 * x.T @ x / x.shape[0]
    check_overflow("the Hessian 2 X^T X / n", h)
    return h


def inverse_cholesky(h: torch.Tensor, damp: float = 0.01) -> tuple[torch.Tensor, float]:
    """(U, d): U the upper Cholesky factor of (H + d mean(diag H) I)^-1, and the damping d used.

    d starts at `damp`; while H + d mean(diag H) I is not numerically positive definite (a singular
    Hessian: fewer calibration rows than inputs, or inputs that move together), d is raised to
    1e-8, 1e-7, ... up to 1 (the reference implementation's remedy: more damping). A Hessian that
    fails even then (not symmetric positive semi-definite) raises ValueError.

    >>> u, d = inverse_cholesky(torch.ones(2, 2), damp=0.0)  # rank 1: undamped Cholesky fails
    >>> d, bool(torch.allclose(u.T @ u, torch.linalg.inv(torch.ones(2, 2) + d * torch.eye(2).double())))
    (1e-08, True)
    """
    check_float("GroupQuant", "damp", damp, 0, 1)
    check_tensor("hessian", h, dim=2)
    if h.shape[0] != h.shape[1]:
        raise ValueError(f"the Hessian must be square, got shape {tuple(h.shape)}")
    h = h.double()
    mean_diag = float(torch.diag(h).mean())
    eye = torch.eye(h.shape[0], dtype=h.dtype)
    for d in [damp] + [10.0**k for k in range(-8, 1) if 10.0**k > damp]:
        lower, info = torch.linalg.cholesky_ex(h + d * mean_diag * eye)
        if info == 0:
            u, info = torch.linalg.cholesky_ex(torch.cholesky_inverse(lower), upper=True)
            if info == 0 and bool(torch.isfinite(u).all()):
                return u, d
    raise ValueError(f"the Hessian ({tuple(h.shape)}) is not positive definite even with damping 1 "
                     "(is it 2 X^T X / n of real inputs?)")


def gptq(w: torch.Tensor, h: torch.Tensor, bits: int, group_size: int, damp: float = 0.01) -> GroupQuant:
    """GPTQ codes of w (out x in) given the Hessian h (in x in) of the layer inputs.

    Columns go in order; a group's (scale, zero) is chosen from its columns as they are when the
    group starts (already carrying the error of earlier columns). damp * mean(diag h) is added to
    the diagonal (more when h + damping is still singular: `inverse_cholesky`); inputs that are
    always 0 (diag h = 0) get a unit diagonal and their weights set to 0.

    >>> w = torch.tensor([[0.3, -0.8, 0.1, 0.55]])
    >>> h = torch.diag(torch.tensor([1.0, 2.0, 3.0, 4.0]))  # diagonal Hessian: GPTQ == RTN
    >>> torch.equal(gptq(w, h, 3, 2).q, quantize_groups(w, 3, 2).q)
    True
    """
    check_int("GroupQuant", "bits", bits, 2, 8)
    check_float("GroupQuant", "damp", damp, 0, 1)
    check_tensor("weight", w)
    check_tensor("hessian", h)
    if w.dim() != 2:
        raise ValueError(f"weight must be 2-D (out x in), got shape {tuple(w.shape)}")
    out_f, in_f = w.shape
    if h.shape != (in_f, in_f):
        raise ValueError(f"hessian shape {tuple(h.shape)} does not match in_features={in_f}")
    g = check_group_size(in_f, group_size)
    w = w.detach().double().clone()
    h = h.double().clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    u, _ = inverse_cholesky(h, damp)
    q = torch.empty(out_f, in_f, dtype=torch.int32)
    scales, zeros = torch.empty(out_f, in_f // g), torch.empty(out_f, in_f // g, dtype=torch.int32)
    qmax = 2**bits - 1
    for i in range(in_f):
        if i % g == 0:
            scale, zero = _qparams(w[:, i:i + g].float(), bits)
            scales[:, i // g], zeros[:, i // g] = scale, zero
        col = w[:, i].float()
        q[:, i] = quantize_affine(col, scale, zero, 0, qmax)
        err = (w[:, i] - dequantize_affine(q[:, i], scale, zero).double()) / u[i, i]
        w[:, i + 1:] -= err[:, None] * u[i, i + 1:][None, :]
    return GroupQuant(q, scales, zeros, bits, g)


def output_error(x: torch.Tensor, w: torch.Tensor, w_hat: torch.Tensor) -> float:
    """||X W^T - X W_hat^T||_F^2 / ||X W^T||_F^2: the relative error of the layer's outputs on x."""
    check_tensor("layer inputs", x)
    check_tensor("weight", w, dim=2)
    check_tensor("w_hat", w_hat, shape=tuple(w.shape))
    if x.shape[-1] != w.shape[1]:
        raise ValueError(f"layer inputs of {x.shape[-1]} features do not match in_features={w.shape[1]}")
    x = x.reshape(-1, x.shape[-1]).double()
    ref = x @ w.double().T
    error = float((ref - x @ w_hat.double().T).pow(2).sum() / ref.pow(2).sum().clamp_min(1e-300))
    check_overflow("the output error", error)
    return error


def pack_codes(q: torch.Tensor, bits: int) -> bytes:
    """The codes' low `bits` bits, packed densely (ceil(n b / 8) bytes), least significant bit first.

    >>> pack_codes(torch.tensor([1, 2, 3, 0]), 2)  # 01 10 11 00 -> 0b00111001
    b'9'
    """
    check_int("pack_codes", "bits", bits, 1, 8)
    check_tensor("codes", q, allow_empty=True, kind="int")
    codes = q.reshape(-1).to(torch.int64).numpy()
    if codes.size and (codes.min() < 0 or codes.max() >= 2**bits):
        raise ValueError(f"codes must be in [0, {2**bits - 1}] to pack in {bits} bits")
    bit_planes = (codes[:, None] >> np.arange(bits)) & 1
    return np.packbits(bit_planes.astype(np.uint8).reshape(-1), bitorder="little").tobytes()


def unpack_codes(raw: bytes, bits: int, n: int) -> torch.Tensor:
    """The inverse of pack_codes: n codes (int32) from their packed bytes."""
    plane = np.unpackbits(np.frombuffer(raw, dtype=np.uint8), bitorder="little")[: n * bits].reshape(n, bits)
    return torch.from_numpy((plane.astype(np.int64) << np.arange(bits)).sum(1).astype(np.int32))


def file_bytes(model: nn.Module, quants: Mapping[str, GroupQuant]) -> int:
    """Bytes of torch.save of the model as stored: each quantized layer's packed codes, FP16 scales and
    packed zero points, every other tensor of the state dict in FP32."""
    state: dict[str, object] = {}
    for name, tensor in model.state_dict().items():
        layer, _, leaf = name.rpartition(".")
        if layer in quants and leaf == "weight":
            gq = quants[layer]
            state[name] = {"codes": pack_codes(gq.q, gq.bits), "scale": gq.scale.half(),
                           "zero": pack_codes(gq.zero, gq.bits), "shape": tuple(gq.q.shape), "group": gq.group_size}
        else:
            state[name] = tensor.detach().float()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return len(buffer.getvalue())


@dataclass(frozen=True)
class GroupQuantConfig:
    """bits in [2, 8]; group_size: columns per group (0: one group per row); method 'rtn' or 'gptq';
    damp: GPTQ's diagonal damping (fraction of mean diag H); calibration: windows of data.train
    GPTQ sees; layers: names of the Linear layers to quantize (None: every Linear but the last)."""

    bits: int = 4
    group_size: int = 32
    method: str = "rtn"
    damp: float = 0.01
    calibration: int = 64
    layers: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        owner = "GroupQuantConfig"
        check_int(owner, "bits", self.bits, 2, 8)
        check_int(owner, "group_size", self.group_size, 0, 1 << 20)
        check_choice(owner, "method", self.method, METHODS)
        check_float(owner, "damp", self.damp, 0, 1)
        check_int(owner, "calibration", self.calibration, 1, 1 << 20)
        if self.layers is not None and (not isinstance(self.layers, tuple) or not self.layers):
            raise ValueError(f"{owner}.layers={self.layers!r} must be a non-empty tuple of layer names or None")


@dataclass(kw_only=True, repr=False)
class GroupQuantReport(Report):
    """Report of apply_groupquant: accuracy is next-symbol accuracy (percent) on data.test; the
    cross-entropy in bits per symbol before and after; per layer the relative output error on the
    calibration inputs."""

    loss_bits_before: float | None = None
    loss_bits_after: float | None = None
    file_bytes: int = 0

    technique = "group quantization"

    def headline_extra(self) -> list[str]:
        c = self.config
        parts = [f"{c.method.upper()} INT{c.bits}, groups of {c.group_size or 'a row'}", f"file {self.file_bytes:,} bytes"]
        if self.loss_bits_after is not None:
            parts.append(f"{self.loss_bits_before:.4f} &rarr; {self.loss_bits_after:.4f} bits per symbol")
        return parts


def apply_groupquant(
    model: nn.Module, config: GroupQuantConfig, data: Dataset | None = None, *, inplace: bool = False,
    progress: bool | None = None, loss_fn: LossFn | None = None, before: EvalResult | None = None,
) -> tuple[nn.Module, GroupQuantReport]:
    """Weight-only quantize (a copy of) `model`'s Linear layers; their weights become w_hat in FP32
    (simulated quantization: the same outputs an INT kernel would give), the stored size is the packed file.

    GPTQ needs `data`: its first config.calibration training windows, passed through the model with
    the earlier layers already quantized (each layer sees the inputs it will see at run time).
    loss_fn must be None (nothing is trained). before: `evaluate(model, data.test)` when already known
    (a grid of variants of one model saves a pass over the test split per variant)."""
    if loss_fn is not None:
        raise ValueError("loss_fn must be None: apply_groupquant trains nothing")
    if config.method == "gptq" and data is None:
        raise ValueError("GroupQuantConfig.method='gptq' needs data (calibration windows from data.train)")
    start = time.perf_counter()
    setup = layerwise_setup(model, data, config.layers, config.calibration, "GroupQuantConfig", inplace, before)
    model, before, size_before, calib = setup.model, setup.before, setup.size_before, setup.calibration
    quants: dict[str, GroupQuant] = {}
    rows = []
    for name, layer in setup.layers.items():
        w = layer.weight.detach().clone()
        x = layer_inputs(model, layer, calib) if calib is not None else None
        if config.method == "gptq":
            gq = gptq(w, hessian(x), config.bits, config.group_size, config.damp)
        else:
            gq = quantize_groups(w, config.bits, config.group_size)
        quants[name] = gq
        with torch.no_grad():
            layer.weight.copy_(gq.dequantize())
        rows.append({"layer": name, "shape": f"{w.shape[0]}x{w.shape[1]}", "bits": config.bits, "group": gq.group_size,
                     "output_error": None if x is None else output_error(x, w, layer.weight.detach())})
    stored = file_bytes(model, quants)
    after = evaluate(model, data.test) if data is not None else None
    report = GroupQuantReport(
        config=config, size_before=size_before, size_after=metrics.model_size(model, stored_bytes=stored),
        accuracy_before=None if before is None else before.accuracy,
        accuracy_after=None if after is None else after.accuracy,
        loss_bits_before=None if before is None else before.loss_bits,
        loss_bits_after=None if after is None else after.loss_bits,
        file_bytes=stored, seconds=time.perf_counter() - start, layers=rows)
    return model, report


# ----------------------------------------------------------------- registration

register(Technique(
    name="groupquant", apply=apply_groupquant, config=GroupQuantConfig,
    example=lambda: (tiny_mlp(), GroupQuantConfig(bits=4, group_size=16, method="gptq", calibration=64), {}),
    notebook="09_language_model", params={
        "profile": PROFILE, "method": choice("rtn", "gptq"), "bits": choice(8, 4, 3),
        "group_size": choice(0, 16, 32, 64, 128), "bit_widths": Param("ints", 2, 8),
        "group_sizes": Param("ints", 0, 128), "calibration": Param("int", 1, 4096), "alpha": WEIGHT,
        "sparsity": OPEN_FRACTION, "distill_temperature": TEMPERATURE, "distill_alpha": WEIGHT,
        "lowrank_ratio": SHARE, "sample_bytes": Param("int", 1, 2000), "rounds": Param("int", 1, 1000), "seed": SEED,
    }))
