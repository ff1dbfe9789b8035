"""Low-rank factorization of Linear and Conv2d layers by truncated SVD.

A weight matrix W (m x n) with SVD W = U diag(s) V^T is replaced by the product of two thin
factors A = U_r diag(sqrt(s_r)) (m x r) and B = diag(sqrt(s_r)) V_r^T (r x n). By the
Eckart-Young theorem A B is the best rank-r approximation in the Frobenius norm, with error
||W - A B||_F = sqrt(sum_{i > r} s_i^2). It stores r (m + n) numbers instead of m n, so it saves
parameters only while r < m n / (m + n) (the break-even rank).

A Linear (in -> out) becomes Linear(in -> r) then Linear(r -> out) (bias kept on the second).
A Conv2d (C -> N, k x k) is reshaped to N x (C k k) and becomes a k x k conv C -> r followed by a
1 x 1 conv r -> N; or, with the spatial split of Jaderberg et al. (2014), the kernel is reshaped to
(C k_h) x (N k_w) and becomes a k_h x 1 conv C -> r followed by a 1 x k_w conv r -> N.
"""

from __future__ import annotations

import copy
import math
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import nn

from compresslab.core import metrics
from compresslab.core.data import Dataset
from compresslab.core.models import prunable_layers
from compresslab.core.results import LayerTableReport, pct
from compresslab.core.training import TrainConfig, accuracy_fn, train

__all__ = [
    "CONV_MODES",
    "SCOPES",
    "SVD",
    "svd",
    "svd_factorize",
    "singular_values",
    "energy_curve",
    "rank_for_energy",
    "eckart_young_error",
    "break_even_rank",
    "rank_for_ratio",
    "layer_matrix",
    "factorized_params",
    "factorize_layer",
    "reconstructed_weight",
    "LowRankConfig",
    "target_layers",
    "factorizable_layers",
    "decompose",
    "select_ranks",
    "LowRankReport",
    "apply_lowrank",
    "spectra",
]

CONV_MODES = ("channel", "spatial")
SCOPES = ("layer", "model")


# ----------------------------------------------------------------- tensor primitives

@contextmanager
def _one_thread() -> Iterator[None]:
    """Run LAPACK's SVD on one thread: it is a chain of small steps whose thread synchronisation
    costs more than it saves on a small (or busy) CPU (seconds instead of milliseconds)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _check_matrix(w: torch.Tensor) -> None:
    if w.dim() != 2:
        raise ValueError(f"w must be a 2-D matrix, got shape {tuple(w.shape)}")


def _check_rank(rank: object, max_rank: int, what: str = "rank") -> int:
    if isinstance(rank, bool) or not isinstance(rank, int):
        raise ValueError(f"{what}={rank!r} must be an integer in [1, {max_rank}]")
    if not 1 <= rank <= max_rank:
        raise ValueError(f"{what}={rank} must be in [1, {max_rank}] (the rank of a matrix is at most "
                         f"min(rows, cols) = {max_rank})")
    return rank


class SVD(NamedTuple):
    """Thin SVD w = u diag(s) vh of an m x n matrix (u: m x k, s: k, vh: k x n, k = min(m, n))."""

    u: torch.Tensor
    s: torch.Tensor
    vh: torch.Tensor


def svd(w: torch.Tensor) -> SVD:
    """The thin SVD of the matrix `w` (torch.linalg.svd, full_matrices=False)."""
    _check_matrix(w)
    with _one_thread():
        return SVD(*torch.linalg.svd(w.detach(), full_matrices=False))


def _check_svd(w: torch.Tensor, dec: SVD) -> None:
    """A precomputed SVD must be the SVD of `w`: same shape, and U diag(s) V^T x = W x for a few
    seeded random x (O(mn) work instead of rebuilding W)."""
    if (dec.u.shape[0], dec.vh.shape[1]) != tuple(w.shape):
        raise ValueError(f"the given SVD is of a {dec.u.shape[0]}x{dec.vh.shape[1]} matrix, not {tuple(w.shape)}")
    x = torch.randn(w.shape[1], 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    expected = w.detach().double() @ x
    got = dec.u.double() @ (dec.s.double()[:, None] * (dec.vh.double() @ x))
    if float((got - expected).norm()) > 1e-4 * float(expected.norm()) + 1e-12:
        raise ValueError("the given SVD does not reconstruct this weight (computed for other weights?)")


def svd_factorize(w: torch.Tensor, rank: int, decomposition: SVD | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(a, b) with a @ b the best rank-`rank` approximation of `w` (m x n); a: m x r, b: r x n.

    a = U_r diag(sqrt(s_r)), b = diag(sqrt(s_r)) V_r^T (the singular values split evenly, so both
    factors have the same scale, which helps fine-tuning). `decomposition`: svd(w), if already known."""
    _check_matrix(w)
    _check_rank(rank, min(w.shape))
    if decomposition is None:
        decomposition = svd(w)
    else:
        _check_svd(w, decomposition)
    u, s, vh = decomposition
    root = s[:rank].sqrt()
    return (u[:, :rank] * root).to(w.dtype), (root[:, None] * vh[:rank]).to(w.dtype)


def singular_values(w: torch.Tensor) -> torch.Tensor:
    """Singular values of the matrix `w`, largest first."""
    _check_matrix(w)
    with _one_thread():
        return torch.linalg.svdvals(w.detach())


def energy_curve(s: torch.Tensor) -> torch.Tensor:
    """E(r) = sum_{i <= r} s_i^2 / sum_i s_i^2 for r = 1..len(s) (the kept 'energy')."""
    sq = s.double() ** 2
    return torch.cumsum(sq, 0) / sq.sum()


def rank_for_energy(s: torch.Tensor, energy: float) -> int:
    """The smallest r with E(r) >= energy, energy in (0, 1]."""
    _check_fraction(energy, "energy")
    curve = energy_curve(s)
    return min(int((curve < energy - 1e-12).sum()) + 1, len(s))


def eckart_young_error(s: torch.Tensor, rank: int) -> float:
    """||W - W_r||_F = sqrt(sum_{i > r} s_i^2), the error of the best rank-r approximation."""
    return float((s.double()[rank:] ** 2).sum().sqrt())


def break_even_rank(m: int, n: int) -> float:
    """m n / (m + n): a rank-r factorization of an m x n matrix saves parameters iff r < this."""
    return m * n / (m + n)


def rank_for_ratio(m: int, n: int, ratio: float) -> int:
    """The largest r >= 1 with r (m + n) <= ratio * m n (factor weights over dense weights)."""
    _check_fraction(ratio, "param_ratio")
    return max(1, min(min(m, n), math.floor(ratio * m * n / (m + n) + 1e-9)))


def _check_fraction(x: object, what: str) -> None:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not 0.0 < x <= 1.0:
        raise ValueError(f"{what}={x!r} must be in (0, 1]")


# ----------------------------------------------------------------- layers

def layer_matrix(layer: nn.Module, conv_mode: str = "channel") -> torch.Tensor:
    """The matrix that a layer's factorization approximates.

    Linear: W (out x in). Conv2d, conv_mode='channel': W reshaped to N x (C k_h k_w);
    'spatial': W permuted to (C, k_h, N, k_w) and reshaped to (C k_h) x (N k_w)."""
    w = metrics.effective_weight(layer)
    if isinstance(layer, nn.Linear):
        return w
    if not isinstance(layer, nn.Conv2d):
        raise ValueError(f"only nn.Linear and nn.Conv2d can be factorized, got {type(layer).__name__}")
    if layer.groups != 1:
        raise ValueError(f"grouped convolutions (groups={layer.groups}) are not supported; groups must be 1")
    if conv_mode not in CONV_MODES:
        raise ValueError(f"conv_mode={conv_mode!r} must be one of {CONV_MODES}")
    n, c, kh, kw = w.shape
    if conv_mode == "channel":
        return w.reshape(n, c * kh * kw)
    return w.permute(1, 2, 0, 3).reshape(c * kh, n * kw)


def factorized_params(layer: nn.Module, rank: int, conv_mode: str = "channel") -> int:
    """Weights (no bias) of the rank-r factorization: r (rows + cols) of `layer_matrix`."""
    return rank * sum(layer_matrix(layer, conv_mode).shape)


def factorize_layer(layer: nn.Module, rank: int, conv_mode: str = "channel",
                    decomposition: SVD | None = None) -> nn.Sequential:
    """Two layers computing the rank-`rank` truncation of `layer` (bias on the second).

    Linear -> Sequential(reduce: Linear(in, r, bias=False), expand: Linear(r, out)).
    Conv2d 'channel' -> Sequential(reduce: k x k conv C -> r, expand: 1 x 1 conv r -> N).
    Conv2d 'spatial' -> Sequential(vertical: k_h x 1 conv C -> r, horizontal: 1 x k_w conv r -> N).
    """
    mat = layer_matrix(layer, conv_mode)
    _check_rank(rank, min(mat.shape))
    a, b = svd_factorize(mat, rank, decomposition)
    w = layer.weight
    kw = dict(device=w.device, dtype=w.dtype)
    has_bias = layer.bias is not None
    if isinstance(layer, nn.Linear):
        first = nn.Linear(layer.in_features, rank, bias=False, **kw)
        second = nn.Linear(rank, layer.out_features, bias=has_bias, **kw)
        first_w, second_w, names = b, a, ("reduce", "expand")
    elif conv_mode == "channel":
        n, c, kh, kwid = w.shape
        first = nn.Conv2d(c, rank, (kh, kwid), layer.stride, layer.padding, layer.dilation,
                          bias=False, padding_mode=layer.padding_mode, **kw)
        second = nn.Conv2d(rank, n, 1, bias=has_bias, **kw)
        first_w, second_w, names = b.reshape(rank, c, kh, kwid), a.reshape(n, rank, 1, 1), ("reduce", "expand")
    else:
        if isinstance(layer.padding, str):
            raise ValueError(f"conv_mode='spatial' needs numeric padding, got padding={layer.padding!r}")
        n, c, kh, kwid = w.shape
        (sh, sw), (ph, pw), (dh, dw) = layer.stride, layer.padding, layer.dilation
        first = nn.Conv2d(c, rank, (kh, 1), (sh, 1), (ph, 0), (dh, 1), bias=False,
                          padding_mode=layer.padding_mode, **kw)
        second = nn.Conv2d(rank, n, (1, kwid), (1, sw), (0, pw), (1, dw), bias=has_bias,
                           padding_mode=layer.padding_mode, **kw)
        # a[(c, y), r] -> vertical[r, c, y, 0]; b[r, (n, x)] -> horizontal[n, r, 0, x]
        first_w = a.reshape(c, kh, rank).permute(2, 0, 1).unsqueeze(-1)
        second_w = b.reshape(rank, n, kwid).permute(1, 0, 2).unsqueeze(2)
        names = ("vertical", "horizontal")
    with torch.no_grad():
        first.weight.copy_(first_w)
        second.weight.copy_(second_w)
        if has_bias:
            second.bias.copy_(layer.bias.detach())
    return nn.Sequential(OrderedDict([(names[0], first), (names[1], second)]))


def reconstructed_weight(factorized: nn.Sequential) -> torch.Tensor:
    """The single weight a two-layer factorization computes, in the original layer's shape."""
    first, second = list(factorized.children())
    a, b = second.weight.detach(), first.weight.detach()
    if isinstance(first, nn.Linear):
        return a @ b
    if hasattr(factorized, "vertical"):
        # vertical[r, c, y, 0], horizontal[n, r, 0, x] -> W[n, c, y, x] = sum_r h[n, r, x] v[r, c, y]
        return torch.einsum("nrx,rcy->ncyx", a[:, :, 0, :], b[:, :, :, 0])
    return (a.flatten(1) @ b.flatten(1)).reshape(a.shape[0], *b.shape[1:])


# ----------------------------------------------------------------- config and rank selection

@dataclass(frozen=True)
class LowRankConfig:
    """Which layers to factorize and at what rank.

    Give exactly one of: rank (one int, or {layer: int}), energy in (0, 1] (keep sum s_i^2 share),
    param_ratio in (0, 1] (factor weights / dense weights). scope='layer' applies energy/param_ratio
    to every layer alone; scope='model' spends one budget over all chosen layers, greedily keeping
    the singular values that buy the most relative energy s_i^2 / ||W||_F^2 per parameter
    (param_ratio: until the total budget is spent; energy: until the mean kept energy >= energy).
    layers: names to factorize (None = every Linear and Conv2d); skip_unprofitable leaves a layer
    dense when its rank r >= m n / (m + n) would not save parameters. finetune: TrainConfig or None.
    """

    rank: int | dict | None = None
    energy: float | None = None
    param_ratio: float | None = None
    scope: str = "layer"
    layers: tuple | None = None
    conv_mode: str = "channel"
    skip_unprofitable: bool = True
    finetune: TrainConfig | None = None

    def __post_init__(self) -> None:
        given = [k for k in ("rank", "energy", "param_ratio") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of rank, energy, param_ratio (got {given or 'none'})")
        if self.scope not in SCOPES:
            raise ValueError(f"scope={self.scope!r} must be one of {SCOPES}")
        if self.conv_mode not in CONV_MODES:
            raise ValueError(f"conv_mode={self.conv_mode!r} must be one of {CONV_MODES}")
        if self.rank is not None:
            if self.scope != "layer":
                raise ValueError("rank= fixes each layer's rank: use scope='layer' (scope='model' is for "
                                 "energy or param_ratio)")
            ranks = self.rank.items() if isinstance(self.rank, dict) else [(None, self.rank)]
            for name, r in ranks:
                what = "rank" if name is None else f"rank[{name!r}]"
                if isinstance(r, bool) or not isinstance(r, int) or r < 1:
                    raise ValueError(f"{what}={r!r} must be an integer >= 1")
        if self.energy is not None:
            _check_fraction(self.energy, "energy")
        if self.param_ratio is not None:
            _check_fraction(self.param_ratio, "param_ratio")
        if self.layers is not None and (isinstance(self.layers, str) or not self.layers):
            raise ValueError(f"layers={self.layers!r} must be a non-empty tuple of layer names or None")
        if self.finetune is not None and not isinstance(self.finetune, TrainConfig):
            raise ValueError(f"finetune={self.finetune!r} must be a TrainConfig or None")


def target_layers(model: nn.Module, config: LowRankConfig) -> dict[str, nn.Module]:
    """The layers `config` names (all Linear/Conv2d by default), checked to exist."""
    layers = prunable_layers(model)
    names = list(config.layers) if config.layers is not None else list(layers)
    if isinstance(config.rank, dict):
        names = [n for n in names if n in config.rank] if config.layers is None else names
        unknown = sorted(set(config.rank) - set(layers))
        if unknown:
            raise ValueError(f"rank names unknown layers {unknown}; choose from {list(layers)}")
    unknown = [n for n in names if n not in layers]
    if unknown:
        raise ValueError(f"layers names unknown layers {unknown}; choose from {list(layers)}")
    return {n: layers[n] for n in names}


def factorizable_layers(model: nn.Module, conv_mode: str = "channel", min_break_even: float = 16.0) -> tuple:
    """Layers worth factorizing: every Linear/Conv2d but the last (the classifier) whose break-even
    rank m n / (m + n) is at least `min_break_even` (below it, any useful rank saves almost nothing)."""
    layers = list(prunable_layers(model).items())[:-1]
    return tuple(n for n, m in layers if break_even_rank(*layer_matrix(m, conv_mode).shape) >= min_break_even)


def decompose(model: nn.Module, conv_mode: str = "channel", layers: tuple | None = None) -> dict[str, SVD]:
    """The SVD of every Linear/Conv2d layer's matrix (or of `layers`), by name: compute once, then
    pass as `svds=` to select_ranks / apply_lowrank to try many ranks without repeating the SVDs."""
    all_layers = prunable_layers(model)
    names = list(layers) if layers is not None else list(all_layers)
    unknown = [n for n in names if n not in all_layers]
    if unknown:
        raise ValueError(f"layers names unknown layers {unknown}; choose from {list(all_layers)}")
    return {n: svd(layer_matrix(all_layers[n], conv_mode)) for n in names}


def _svds_for(model: nn.Module, config: LowRankConfig, svds: dict[str, SVD] | None) -> dict[str, SVD]:
    layers = target_layers(model, config)
    svds = dict(svds or {})
    missing = tuple(n for n in layers if n not in svds)
    if missing:
        svds.update(decompose(model, config.conv_mode, missing))
    for n, layer in layers.items():
        if n not in missing:
            _check_svd(layer_matrix(layer, config.conv_mode), svds[n])
    return {n: svds[n] for n in layers}


def select_ranks(model: nn.Module, config: LowRankConfig, svds: dict[str, SVD] | None = None) -> dict[str, int]:
    """The rank of every target layer under `config` (before the break-even check)."""
    layers = target_layers(model, config)
    mats = {n: layer_matrix(m, config.conv_mode) for n, m in layers.items()}
    if config.rank is None:
        svds = _svds_for(model, config, svds)
    if config.rank is not None:
        ranks = {}
        for n, mat in mats.items():
            if isinstance(config.rank, dict) and n not in config.rank:
                raise ValueError(f"rank has no entry for layer {n!r}; give one for each of {list(mats)}")
            r = config.rank[n] if isinstance(config.rank, dict) else config.rank
            ranks[n] = _check_rank(r, min(mat.shape), f"rank for layer {n!r} ({tuple(mat.shape)})")
        return ranks
    if config.scope == "layer":
        if config.energy is not None:
            return {n: rank_for_energy(svds[n].s, config.energy) for n in mats}
        return {n: rank_for_ratio(*mat.shape, config.param_ratio) for n, mat in mats.items()}
    return _greedy_ranks(mats, {n: d.s for n, d in svds.items()}, config)


def _greedy_ranks(mats: dict[str, torch.Tensor], spectra: dict[str, torch.Tensor],
                  config: LowRankConfig) -> dict[str, int]:
    """Model scope: take singular values in order of relative energy per parameter, s^2/||W||^2/(m+n)."""
    gains = {n: s.double() ** 2 / (s.double() ** 2).sum() for n, s in spectra.items()}
    ranks = {n: 1 for n in mats}  # every factorized layer keeps at least its leading direction
    cost = {n: sum(m.shape) for n, m in mats.items()}
    candidates = sorted(((float(g[i]) / cost[n], n) for n, g in gains.items() for i in range(1, len(g))),
                        key=lambda t: -t[0])
    if config.param_ratio is not None:
        budget = config.param_ratio * sum(m.numel() for m in mats.values())
        spent = sum(cost.values())
        for _, n in candidates:
            if spent + cost[n] > budget:
                continue
            ranks[n] += 1
            spent += cost[n]
        return ranks
    kept = {n: float(g[0]) for n, g in gains.items()}
    target = config.energy * len(mats) - 1e-12
    for _, n in candidates:
        if sum(kept.values()) >= target:
            break
        kept[n] += float(gains[n][ranks[n]])
        ranks[n] += 1
    return ranks


# ----------------------------------------------------------------- the model-level verb

@dataclass
class LowRankReport(LayerTableReport):
    config: LowRankConfig
    params_before: int
    params_after: int
    factorized_params_before: int  # weights + biases of the target layers, dense
    factorized_params_after: int  # the same layers after factorization (or left dense)
    accuracy_before: float | None
    accuracy_truncated: float | None  # right after truncation, before fine-tuning
    accuracy_after: float | None
    seconds: float
    layers: list[dict] = field(default_factory=list)

    @property
    def reduction(self) -> float:
        """Fraction of the target layers' parameters removed."""
        return 1 - self.factorized_params_after / self.factorized_params_before

    def to_dict(self) -> dict:
        return {"params_before": self.params_before, "params_after": self.params_after,
                "factorized_params_before": self.factorized_params_before,
                "factorized_params_after": self.factorized_params_after, "reduction": self.reduction,
                "accuracy_before": self.accuracy_before, "accuracy_truncated": self.accuracy_truncated,
                "accuracy_after": self.accuracy_after, "seconds": self.seconds, "layers": self.layers,
                "scope": self.config.scope, "conv_mode": self.config.conv_mode}

    def headline(self) -> str:
        return (f"params {self.params_before:,} &rarr; {self.params_after:,} "
                f"(factorized layers: {100 * self.reduction:.1f}% fewer) &middot; accuracy "
                f"{pct(self.accuracy_before)} &rarr; truncated {pct(self.accuracy_truncated)} &rarr; "
                f"fine-tuned {pct(self.accuracy_after)} &middot; {self.seconds:.1f} s")


def _params(model: nn.Module) -> int:
    """Parameter count, the same as metrics.size_report(model).params (without serialising)."""
    return sum(p.numel() for p in model.parameters())


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def apply_lowrank(
    model: nn.Module, config: LowRankConfig, data: Dataset | None = None, inplace: bool = False,
    progress: bool | None = None, svds: dict[str, SVD] | None = None,
) -> tuple[nn.Module, LowRankReport]:
    """Factorize a copy of `model` by truncated SVD (then fine-tune if config.finetune and data).

    Each target layer `name` is replaced in place in the Sequential by a two-layer Sequential of the
    same name (name.reduce / name.expand, or name.vertical / name.horizontal for the spatial split).
    svds: decompose(model, config.conv_mode) computed earlier (checked against the weights), to
    reuse the SVDs over many calls; missing layers are decomposed here.
    """
    acc = accuracy_fn(data, config.finetune)
    start = time.perf_counter()
    model = model if inplace else copy.deepcopy(model)
    acc_before = acc(model)
    params_before = _params(model)
    svds = _svds_for(model, config, svds)
    ranks = select_ranks(model, config, svds)
    layers = target_layers(model, config)
    rows, before, after = [], 0, 0
    for name, layer in layers.items():
        mat = layer_matrix(layer, config.conv_mode)
        m, n = mat.shape
        s = svds[name].s
        r = ranks[name]
        bias = layer.bias.numel() if layer.bias is not None else 0
        even = break_even_rank(m, n)
        dense_params = layer.weight.numel() + bias
        saves = r < even
        factorize = saves or not config.skip_unprofitable
        new_params = r * (m + n) + bias if factorize else dense_params
        before, after = before + dense_params, after + new_params
        err = 0.0
        if factorize:
            new = factorize_layer(layer, r, config.conv_mode, svds[name])
            diff = reconstructed_weight(new) - metrics.effective_weight(layer)
            err = float(diff.norm() / metrics.effective_weight(layer).norm())
            _set_module(model, name, new)
        rows.append({"layer": name, "kind": type(layer).__name__, "matrix": f"{m}x{n}", "max_rank": min(m, n),
                     "rank": r, "break_even": round(even, 1), "saves": saves, "factorized": factorize,
                     "energy": float(energy_curve(s)[r - 1]), "rel_error": err if factorize else 0.0,
                     "eckart_young": eckart_young_error(s, r) / float(s.double().norm()) if factorize else 0.0,
                     "params_before": dense_params, "params_after": new_params})
    acc_truncated = acc(model)
    if config.finetune is not None:
        train(model, data, config.finetune, progress=progress)
    report = LowRankReport(config, params_before, _params(model), before, after,
                           acc_before, acc_truncated, acc(model) if config.finetune is not None else acc_truncated,
                           time.perf_counter() - start, rows)
    return model, report


def spectra(model: nn.Module, conv_mode: str = "channel") -> dict[str, torch.Tensor]:
    """Singular values of every Linear/Conv2d layer's matrix, by layer name."""
    return {n: singular_values(layer_matrix(m, conv_mode)) for n, m in prunable_layers(model).items()}

