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
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.utils import parametrize

from compresslab.core import metrics
from compresslab.core.data import Dataset
from compresslab.core.models import prunable_layers
from compresslab.core.training import LossFn, TrainConfig, accuracy_fn, train

__all__ = [
    "INITS",
    "init_centroids",
    "assign",
    "kmeans_1d",
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


def _check_bits(bits: int, name: str = "bits") -> None:
    if not isinstance(bits, int) or isinstance(bits, bool) or not 1 <= bits <= 16:
        raise ValueError(f"{name}={bits!r} must be an integer in [1, 16]")


def init_centroids(w: torch.Tensor, k: int, method: str = "linear", seed: int = 0) -> torch.Tensor:
    """k initial centroids for the 1-D values `w` (sorted ascending).

    linear: evenly spaced in [min w, max w]; density: the quantiles of the weights' CDF at
    (i + 1/2) / k, so dense regions get more centroids; random: k weights drawn (seeded) from w.
    """
    if method not in INITS:
        raise ValueError(f"init={method!r} must be one of {INITS}")
    if k < 1:
        raise ValueError(f"k={k} must be >= 1")
    w = w.detach().reshape(-1).float()
    if w.numel() == 0:
        raise ValueError("cannot initialise centroids from an empty weight set")
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

    `centroids` must be sorted; nearest in 1-D = the cell between consecutive midpoints."""
    mids = (centroids[1:] + centroids[:-1]) / 2
    return torch.bucketize(w.detach().reshape(-1), mids, right=False).reshape(w.shape)


def kmeans_1d(
    w: torch.Tensor, k: int, init: str = "linear", iters: int = 30, seed: int = 0, tol: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means on the values `w`: (sorted centroids [k], assignment like w).

    Each iteration: I = nearest centroid; C_j = mean of {w : I = j} (an empty cluster keeps its
    centroid). Stops after `iters` or when no centroid moves more than `tol`.
    """
    if iters < 0:
        raise ValueError(f"iters={iters} must be >= 0")
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

class SharedWeight(nn.Module):
    """Parametrization W = C[I] * M: a trainable codebook C (k,), fixed indices I and mask M.

    Autograd through the gather gives dL/dC_k = sum over members of dL/dW (index_select's
    backward is a scatter-add), so each centroid moves by the summed gradient of its weights.
    """

    def __init__(self, codebook: torch.Tensor, indices: torch.Tensor, mask: torch.Tensor):
        super().__init__()
        self.codebook = nn.Parameter(codebook.detach().clone().float())
        self.register_buffer("indices", indices.detach().clone().long())
        self.register_buffer("mask", mask.detach().clone().bool())

    def forward(self, original: torch.Tensor) -> torch.Tensor:
        w = self.codebook[self.indices]
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
    """

    conv_bits: int = 8
    fc_bits: int = 5
    layer_bits: dict | None = None
    init: str = "linear"
    iters: int = 30
    seed: int = 0
    finetune: TrainConfig | None = None
    layers: tuple | None = None

    def __post_init__(self) -> None:
        _check_bits(self.conv_bits, "conv_bits")
        if self.layers is not None and (isinstance(self.layers, str) or not all(isinstance(n, str) for n in self.layers)):
            raise ValueError(f"layers={self.layers!r} must be a tuple of layer names or None")
        _check_bits(self.fc_bits, "fc_bits")
        for name, bits in (self.layer_bits or {}).items():
            _check_bits(bits, f"layer_bits[{name!r}]")
        if self.init not in INITS:
            raise ValueError(f"init={self.init!r} must be one of {INITS}")
        if not isinstance(self.iters, int) or not 0 <= self.iters <= 1000:
            raise ValueError(f"iters={self.iters!r} must be an integer in [0, 1000]")

    def bits_for(self, name: str, layer: nn.Module) -> int:
        if self.layer_bits and name in self.layer_bits:
            return self.layer_bits[name]
        return self.conv_bits if isinstance(layer, nn.Conv2d) else self.fc_bits


@dataclass
class SharingReport:
    config: ShareConfig
    accuracy_before: float | None
    accuracy_shared: float | None  # right after k-means, before fine-tuning
    accuracy_after: float | None
    seconds: float
    layers: list[dict] = field(default_factory=list)
    codebooks: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"init": self.config.init, "accuracy_before": self.accuracy_before,
                "accuracy_shared": self.accuracy_shared, "accuracy_after": self.accuracy_after,
                "seconds": self.seconds, "layers": self.layers}

    def table(self):
        import pandas as pd

        return pd.DataFrame(self.layers)

    def _repr_html_(self) -> str:
        def pct(x):
            return "n/a" if x is None else f"{100 * x:.2f}%"

        head = (f"<p>init {self.config.init} &middot; accuracy {pct(self.accuracy_before)} &rarr; shared "
                f"{pct(self.accuracy_shared)} &rarr; fine-tuned {pct(self.accuracy_after)} "
                f"&middot; {self.seconds:.1f} s</p>")
        return head + self.table().to_html(index=False)


def share_layer(w: torch.Tensor, bits: int, init: str = "linear", iters: int = 30, seed: int = 0):
    """k-means over the non-zeros of `w`: (codebook [k], indices like w (0 where pruned), mask)."""
    _check_bits(bits)
    mask = w != 0
    nz = w[mask]
    if nz.numel() == 0:
        return torch.zeros(1), torch.zeros_like(w, dtype=torch.long), mask
    codebook, idx_nz = kmeans_1d(nz, 2 ** bits, init, iters, seed)
    indices = torch.zeros_like(w, dtype=torch.long)
    indices[mask] = idx_nz
    return codebook, indices, mask


def apply_sharing(
    model: nn.Module, config: ShareConfig, data: Dataset | None = None, inplace: bool = False,
    progress: bool | None = None, loss_fn: LossFn | None = None,
) -> tuple[nn.Module, SharingReport]:
    """k-means-share every Linear/Conv2d weight of a copy of `model`, then fine-tune the centroids
    (if config.finetune and data, with `loss_fn`, cross-entropy when None). Returns a plain model
    whose weights take <= 2^b values per layer."""
    acc = accuracy_fn(data, config.finetune)
    start = time.perf_counter()
    model = model if inplace else copy.deepcopy(model)
    acc_before = acc(model)
    from compresslab.techniques.pruning import make_permanent

    make_permanent(model)
    layers = prunable_layers(model)
    for what, names in (("layer_bits", config.layer_bits or {}), ("layers", config.layers or ())):
        unknown = set(names) - set(layers)
        if unknown:
            raise ValueError(f"{what} names unknown layers {sorted(unknown)}; choose from {list(layers)}")
    if config.layers is not None:
        layers = {n: m for n, m in layers.items() if n in config.layers}
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
    report = SharingReport(config, acc_before, acc_shared, acc(model), time.perf_counter() - start, rows, codebooks)
    return model, report


def _rmse(shared: torch.Tensor, original: torch.Tensor) -> float:
    """Root-mean-square difference over the surviving (non-zero) weights."""
    keep = original != 0
    return float((shared - original)[keep].pow(2).mean().sqrt()) if keep.any() else 0.0


def distinct_values(model: nn.Module) -> dict[str, int]:
    """Number of distinct non-zero weight values per Linear/Conv2d layer."""
    return {n: int(torch.unique(w[w != 0]).numel())
            for n, w in ((n, metrics.effective_weight(m)) for n, m in prunable_layers(model).items())}
