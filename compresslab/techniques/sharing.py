"""Weight sharing: per-layer k-means over the surviving weights, and centroid fine-tuning.

Each layer's non-zero weights are clustered into k = 2^b groups by 1-D k-means (Lloyd):
assign each weight to its nearest centroid, move each centroid to the mean of its members,
repeat. The layer then stores b bits per weight (the cluster index) plus a k-entry codebook.
Centroid fine-tuning keeps the assignment fixed and trains the codebook: with W_ij = C[I_ij],
dL/dC_k = sum_{ij : I_ij = k} dL/dW_ij, the sum of the gradients of the centroid's members.
Pruned weights stay exactly zero.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

from compresslab.core import metrics
from compresslab.core.data import Dataset
from compresslab.core.models import prunable_layers
from compresslab.core.report import Report, fmt_percent, transient
from compresslab.core.training import LossFn, TrainConfig, accuracy_fn, train
from compresslab.core.validate import (
    check_bits,
    check_choice,
    check_config,
    check_float,
    check_int,
    check_layer_names,
    check_names,
    check_per_layer,
    check_seed,
    check_tensor,
)
from compresslab.techniques.masks import make_permanent
from compresslab.techniques.registry import TINY_TRAIN, Technique, register, tiny_mlp

__all__ = [
    "INITS",
    "init_centroids",
    "assign",
    "kmeans_1d",
    "segment_sums",
    "SharedWeight",
    "tie_weights",
    "untie_weights",
    "ShareConfig",
    "SharingReport",
    "share_layer",
    "apply_sharing",
    "distinct_values",
]

INITS = ("linear", "density", "random")
VALUE_DTYPES = ("float32", "float16")
FLOAT16_MAX = 65504.0


def init_centroids(w: torch.Tensor, k: int, method: str = "linear", seed: int = 0) -> torch.Tensor:
    """k initial centroids for the 1-D values `w` (sorted ascending).

    linear: evenly spaced in [min w, max w]; density: the quantiles of the weights' CDF at
    (i + 1/2) / k, so dense regions get more centroids; random: k weights drawn (seeded) from w.

    >>> w = torch.tensor([-1.0, -0.9, 0.0, 0.1, 0.2, 2.0])
    >>> init_centroids(w, 3, "linear")  # min, midpoint, max
    tensor([-1.0000,  0.5000,  2.0000])
    >>> init_centroids(w, 3, "density")  # the CDF's 1/6, 3/6, 5/6 quantiles: where the weights are
    tensor([-0.9167,  0.0500,  0.5000])
    """
    check_choice("", "init", method, INITS)
    check_int("", "k", k, 1, 1 << 24)
    check_seed("", "seed", seed)
    check_tensor("w", w)
    w = w.detach().reshape(-1).float()
    if method == "linear":
        c = torch.linspace(float(w.min()), float(w.max()), k) if k > 1 else w.mean().reshape(1)
    elif method == "density":
        q = (torch.arange(k, dtype=torch.float64) + 0.5) / k
        c = torch.quantile(w.double(), q).float()
    else:
        gen = torch.Generator().manual_seed(seed)
        idx = torch.randperm(w.numel(), generator=gen)[:k]
        c = w[idx]
        if len(c) < k:  # fewer weights than clusters: repeat some
            c = w[torch.randint(w.numel(), (k,), generator=gen)]
    return c.sort().values


def assign(w: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Index of the nearest centroid for every value of `w` (ties go to the lower index).

    `centroids` must be sorted; nearest in 1-D = the cell between consecutive midpoints.

    >>> assign(torch.tensor([-1.0, 0.2, 1.25, 1.3]), torch.tensor([-1.0, 0.5, 2.0]))  # midpoints -0.25, 1.25
    tensor([0, 1, 1, 2])
    """
    mids = (centroids[1:] + centroids[:-1]) / 2
    return torch.bucketize(w.detach().reshape(-1), mids, right=False).reshape(w.shape)


def kmeans_1d(
    w: torch.Tensor, k: int, init: str = "linear", iters: int = 30, seed: int = 0, tol: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means on the values `w`: (sorted centroids [k], assignment like w).

    Each iteration: I = nearest centroid; C_j = mean of {w : I = j} (an empty cluster keeps its
    centroid). Stops after `iters` or when no centroid moves more than `tol`.

    >>> centroids, idx = kmeans_1d(torch.tensor([-1.0, -0.9, 0.0, 0.1, 0.2, 2.0]), 3)
    >>> centroids, idx  # each centroid is the mean of its cluster: (-1 - 0.9) / 2, (0 + 0.1 + 0.2) / 3, 2
    (tensor([-0.9500,  0.1000,  2.0000]), tensor([0, 0, 1, 1, 1, 2]))
    """
    check_int("", "iters", iters, 0, None)
    check_float("", "tol", tol, 0, None)
    check_seed("", "seed", seed)
    check_tensor("w", w)
    x = w.detach().reshape(-1).float()
    c = init_centroids(x, k, init, seed)
    for _ in range(iters):
        idx = assign(x, c)
        sums = torch.zeros(k, dtype=torch.float64).index_add_(0, idx, x.double())
        counts = torch.bincount(idx, minlength=k)
        new = torch.where(counts > 0, (sums / counts.clamp(min=1)).float(), c)
        new = new.sort().values
        moved = float((new - c).abs().max())
        c = new
        if moved <= tol:
            break
    return c, assign(x, c).reshape(w.shape)


# ----------------------------------------------------------------- tied weights for fine-tuning

def segment_sums(values: torch.Tensor, order: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
    """Per-cluster sums of `values`, accumulated in float64 in one fixed order (bit-reproducible).

    `order` sorts the flat cluster indices (stable), `ends[j]` counts the members of clusters <= j:
    sum_j = S[ends[j]] - S[ends[j - 1]] with S the running sum of the sorted values (S[0] = 0)."""
    running = torch.cat([values.new_zeros(1, dtype=torch.float64),
                         torch.cumsum(values.reshape(-1)[order].double(), 0)])
    taken = running[ends]
    return taken - torch.cat([taken.new_zeros(1), taken[:-1]])


class _Gather(torch.autograd.Function):
    """codebook[indices] whose backward sums each centroid's gradient with `segment_sums`.

    (The built-in backward, a scatter-add, sums in an order that varies between runs on several
    threads, so identical fine-tuning runs would differ in the last bits.)"""

    @staticmethod
    def forward(ctx, codebook, indices, order, ends):
        ctx.save_for_backward(order, ends)
        return codebook[indices]

    @staticmethod
    def backward(ctx, grad):
        order, ends = ctx.saved_tensors
        return segment_sums(grad, order, ends).to(grad.dtype), None, None, None


class SharedWeight(nn.Module):
    """Parametrization W = C[I] * M: a trainable codebook C (k,), fixed indices I and mask M.

    dL/dC_k = sum over members of dL/dW (`segment_sums`, in a fixed order), so each centroid moves
    by the summed gradient of its weights, and the same run on the same thread count and kind of CPU
    gives the same bits. Across thread counts or CPUs it does not: dL/dW itself comes from the
    matrix-multiply kernels, whose summation order (hence rounding) depends on both (see
    docs/architecture.md, "Reproducibility").
    """

    def __init__(self, codebook: torch.Tensor, indices: torch.Tensor, mask: torch.Tensor):
        super().__init__()
        self.codebook = nn.Parameter(codebook.detach().clone().float())
        self.register_buffer("indices", indices.detach().clone().long())
        self.register_buffer("mask", mask.detach().clone().bool())
        flat = self.indices.reshape(-1)
        self.register_buffer("order", torch.argsort(flat, stable=True), persistent=False)
        self.register_buffer("ends", torch.bincount(flat, minlength=self.codebook.numel()).cumsum(0), persistent=False)

    def forward(self, original: torch.Tensor) -> torch.Tensor:
        w = _Gather.apply(self.codebook, self.indices, self.order, self.ends)
        return torch.where(self.mask, w, torch.zeros((), dtype=w.dtype, device=w.device))


def tie_weights(layer: nn.Module, codebook: torch.Tensor, indices: torch.Tensor, mask: torch.Tensor) -> None:
    """Make `layer.weight` = codebook[indices] on `mask`, 0 elsewhere; only the codebook trains."""
    param = SharedWeight(codebook, indices, mask).to(layer.weight.device)
    parametrize.register_parametrization(layer, "weight", param, unsafe=True)
    layer.parametrizations.weight.original.requires_grad_(False)


def untie_weights(model: nn.Module) -> nn.Module:
    """Fold every SharedWeight into a plain weight tensor (exact codebook values); returns model."""
    for layer in prunable_layers(model).values():
        if parametrize.is_parametrized(layer, "weight"):
            parametrize.remove_parametrizations(layer, "weight", leave_parametrized=True)
            layer.weight.requires_grad_(True)
            with torch.no_grad():
                layer.weight.add_(0.0)  # turns any -0.0 into +0.0
    return model


# ----------------------------------------------------------------- the model-level verb

@dataclass(frozen=True)
class ShareConfig:
    """How to share weights.

    conv_bits / fc_bits: index bits b (k = 2^b clusters) for Conv2d / Linear layers (Han et al.:
    8 and 5); layer_bits overrides per layer name. init: linear | density | random. finetune:
    TrainConfig for centroid fine-tuning (None = none). lr of SGD applies to the summed gradient.
    layers: names of the layers to share (None = every Linear/Conv2d); the others stay FP32.
    value_dtype: precision of the shared layers' centroids and biases once fine-tuned: "float32", or
    "float16" (each rounded to the nearest float16, so the Deep Compression file stores them in half
    the bytes; the reported accuracy is that of the rounded model).
    """

    conv_bits: int = 8
    fc_bits: int = 5
    layer_bits: dict | None = None
    init: str = "linear"
    iters: int = 30
    seed: int = 0
    finetune: TrainConfig | None = None
    layers: tuple | None = None
    value_dtype: str = "float32"

    def __post_init__(self) -> None:
        owner = "ShareConfig"
        check_bits(owner, "conv_bits", self.conv_bits, 1, 16)
        check_bits(owner, "fc_bits", self.fc_bits, 1, 16)
        check_per_layer(owner, "layer_bits", self.layer_bits, lambda o, f, v: check_bits(o, f, v, 1, 16))
        check_choice(owner, "init", self.init, INITS)
        check_int(owner, "iters", self.iters, 0, 1000)
        check_seed(owner, "seed", self.seed)
        check_config(owner, "finetune", self.finetune, TrainConfig, optional=True)
        check_names(owner, "layers", self.layers, allow_empty=True)
        check_choice(owner, "value_dtype", self.value_dtype, VALUE_DTYPES)

    def check_layers(self, model: nn.Module) -> None:
        """layer_bits and layers name only Linear/Conv2d layers of `model` (ValueError naming the valid ones)."""
        layers = prunable_layers(model)
        check_layer_names("ShareConfig", "layer_bits", self.layer_bits, layers)
        check_layer_names("ShareConfig", "layers", self.layers, layers)

    def bits_for(self, name: str, layer: nn.Module) -> int:
        if self.layer_bits and name in self.layer_bits:
            return self.layer_bits[name]
        return self.conv_bits if isinstance(layer, nn.Conv2d) else self.fc_bits


@dataclass(kw_only=True, repr=False)
class SharingReport(Report):
    """Report of apply_sharing. accuracy_shared: percent right after k-means, before fine-tuning;
    codebooks: each layer's centroids (not in to_dict). Stored bytes: b-bit cluster index per
    non-zero weight + a codebook entry per cluster and the shared layers' biases at value_dtype
    (32 or 16 bits) + FP32 unshared layers (where
    the zeros sit is not counted here: Deep Compression's relative indices store that)."""

    accuracy_shared: float | None = None
    codebooks: dict = transient(factory=dict)

    technique = "weight sharing"

    def headline_extra(self) -> list[str]:
        return [f"init {self.config.init}", f"accuracy right after k-means {fmt_percent(self.accuracy_shared)}"]


def share_layer(w: torch.Tensor, bits: int, init: str = "linear", iters: int = 30, seed: int = 0):
    """k-means over the non-zeros of `w`: (codebook [k], indices like w (0 where pruned), mask)."""
    check_bits("", "bits", bits, 1, 16)
    mask = w != 0
    nz = w[mask]
    if nz.numel() == 0:
        return torch.zeros(1), torch.zeros_like(w, dtype=torch.long), mask
    codebook, idx_nz = kmeans_1d(nz, 2 ** bits, init, iters, seed)
    indices = torch.zeros_like(w, dtype=torch.long)
    indices[mask] = idx_nz
    return codebook, indices, mask


def apply_sharing(
    model: nn.Module, config: ShareConfig, data: Dataset | None = None, *, inplace: bool = False,
    progress: bool | None = None, loss_fn: LossFn | None = None,
) -> tuple[nn.Module, SharingReport]:
    """k-means-share every Linear/Conv2d weight of a copy of `model`, then fine-tune the centroids
    (if config.finetune and data, with `loss_fn`, cross-entropy when None). Returns a plain model
    whose weights take <= 2^b values per layer."""
    accuracy = accuracy_fn(data, config.finetune)

    def acc(m: nn.Module) -> float | None:
        return accuracy(m)

    start = time.perf_counter()
    config.check_layers(model)
    model = model if inplace else copy.deepcopy(model)
    acc_before = acc(model)
    size_before = metrics.model_size(model)
    make_permanent(model)
    layers = prunable_layers(model)
    if config.layers is not None:
        layers = {n: m for n, m in layers.items() if n in config.layers}
    check_value_range(layers, config.value_dtype)  # before any clustering or training
    originals = {}
    for name, layer in layers.items():
        w = layer.weight.detach()
        originals[name] = w.clone()
        bits = config.bits_for(name, layer)
        codebook, indices, mask = share_layer(w.cpu(), bits, config.init, config.iters, config.seed)
        tie_weights(layer, codebook, indices, mask)
    kmeans_rmse = {name: _rmse(layer.weight.detach(), originals[name]) for name, layer in layers.items()}
    acc_shared = acc(model)
    if config.finetune is not None:
        train(model, data, config.finetune, loss_fn=loss_fn, progress=progress)
    rows, codebooks = [], {}
    for name, layer in layers.items():
        p = layer.parametrizations.weight[0]
        codebooks[name] = p.codebook.detach().cpu().clone()
        w_shared = layer.weight.detach()
        orig = originals[name]
        nz = int(p.mask.sum())
        used = int(torch.unique(p.indices[p.mask]).numel()) if nz else 0
        err = (w_shared - orig)[p.mask]
        rows.append({"layer": name, "weights": orig.numel(), "nonzeros": nz, "bits": config.bits_for(name, layer),
                     "clusters used": used, "weight rmse (k-means)": kmeans_rmse[name],
                     "weight rmse (fine-tuned)": _rmse(w_shared, orig),
                     "relative error": float(err.norm() / orig[p.mask].norm()) if nz else 0.0})
    untie_weights(model)
    value_bytes = round_values(layers, codebooks, config.value_dtype)
    bits = {name: config.bits_for(name, layer) for name, layer in layers.items()}
    stored = (metrics.model_size(model, bits_per_weight=bits).stored_bytes
              + sum(value_bytes * len(c) for c in codebooks.values())
              - sum((4 - value_bytes) * layer.bias.numel() for layer in layers.values() if layer.bias is not None))
    report = SharingReport(
        config=config, accuracy_before=acc_before, accuracy_shared=acc_shared, accuracy_after=acc(model),
        size_before=size_before, size_after=metrics.model_size(model, stored_bytes=stored),
        seconds=time.perf_counter() - start, layers=rows, codebooks=codebooks)
    return model, report


def check_value_range(layers: dict[str, nn.Module], value_dtype: str) -> None:
    """ValueError naming the layers whose weights or biases lie beyond the range of `value_dtype`."""
    if value_dtype == "float32":
        return
    too_large = {name: float(t.detach().abs().max()) for name, layer in layers.items()
                 for t in (layer.weight, layer.bias) if t is not None and t.numel() and t.abs().max() > FLOAT16_MAX}
    if too_large:
        raise ValueError(f"ShareConfig.value_dtype='float16': layers {too_large} hold values beyond the float16 "
                         f"range (|v| <= {FLOAT16_MAX}); use value_dtype='float32'")


def round_values(layers: dict[str, nn.Module], codebooks: dict[str, torch.Tensor], value_dtype: str) -> int:
    """Round the weights, biases and `codebooks` of `layers` to `value_dtype` in place:
    w <- fp32(fp16(w)) for float16, nothing for float32. Returns the bytes per stored value."""
    if value_dtype == "float32":
        return 4
    check_value_range(layers, value_dtype)  # fine-tuning may have moved a value out of range
    with torch.no_grad():
        for name, layer in layers.items():
            layer.weight.copy_(layer.weight.half().float())
            if layer.bias is not None:
                layer.bias.copy_(layer.bias.half().float())
            codebooks[name] = codebooks[name].half().float()
    return 2


def _rmse(shared: torch.Tensor, original: torch.Tensor) -> float:
    """Root-mean-square difference over the surviving (non-zero) weights."""
    keep = original != 0
    return float((shared - original)[keep].pow(2).mean().sqrt()) if keep.any() else 0.0


def distinct_values(model: nn.Module) -> dict[str, int]:
    """Number of distinct non-zero weight values per Linear/Conv2d layer."""
    return {n: int(torch.unique(w[w != 0]).numel())
            for n, w in ((n, metrics.effective_weight(m)) for n, m in prunable_layers(model).items())}


# ----------------------------------------------------------------- registration

register(Technique(
    name="sharing", apply=apply_sharing, config=ShareConfig,
    example=lambda: (tiny_mlp(), ShareConfig(fc_bits=3, finetune=TINY_TRAIN), {}),
    references={"init_centroids": init_centroids}))
