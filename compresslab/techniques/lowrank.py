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
SVD primitives: `svd` (re-exported here); conv_mode 'tucker2' / 'cp' (conv only): `tensordecomp`.
"""

from __future__ import annotations

import copy
import time
from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn

from compresslab.core import metrics
from compresslab.core.data import Dataset
from compresslab.core.models import prunable_layers, replace_module
from compresslab.core.params import DATASET, EPOCHS, PROFILE, SEED, SHARE, choice
from compresslab.core.report import Report, fmt_percent
from compresslab.core.training import LossFn, TrainConfig, accuracy_fn, train
from compresslab.core.validate import (
    check_bool,
    check_choice,
    check_config,
    check_float,
    check_int,
    check_layer_names,
    check_names,
    check_per_layer,
)
from compresslab.techniques import tensordecomp
from compresslab.techniques.registry import TINY_TRAIN, Technique, register, tiny_mlp
from compresslab.techniques.svd import (
    SVD,
    break_even_rank,
    check_rank,
    check_svd,
    eckart_young_error,
    energy_curve,
    rank_for_energy,
    rank_for_ratio,
    singular_values,
    svd,
    svd_factorize,
)

__all__ = [
    "CONV_MODES", "SCOPES", "layer_matrix", "factorized_params", "factorize_layer",
    "reconstructed_weight", "LowRankConfig", "target_layers", "factorizable_layers", "decompose",
    "select_ranks", "LowRankReport", "apply_lowrank", "spectra"
]

CONV_MODES = ("channel", "spatial") + tensordecomp.TENSOR_MODES  # the last two: rank only, conv only
SCOPES = ("layer", "model")


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
    check_choice("", "conv_mode", conv_mode, CONV_MODES)
    n, c, kh, kw = w.shape
    if conv_mode != "spatial":  # tucker2 / cp rank checks and spectra use the channel matrix
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
    check_rank(rank, min(mat.shape))
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
    dense when it would not save parameters. finetune: TrainConfig or None. conv_mode: 'channel' |
    'spatial' (SVD splits) | 'tucker2' | 'cp' (tensordecomp; rank only; Linear layers still use the SVD)."""

    rank: int | dict | None = None
    energy: float | None = None
    param_ratio: float | None = None
    scope: str = "layer"
    layers: tuple | None = None
    conv_mode: str = "channel"
    skip_unprofitable: bool = True
    finetune: TrainConfig | None = None

    def __post_init__(self) -> None:
        owner = "LowRankConfig"
        given = [k for k in ("rank", "energy", "param_ratio") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"{owner}: give exactly one of rank, energy, param_ratio (got {given or 'none'})")
        check_choice(owner, "scope", self.scope, SCOPES)
        check_choice(owner, "conv_mode", self.conv_mode, CONV_MODES)
        if self.conv_mode in tensordecomp.TENSOR_MODES and self.rank is None:
            raise ValueError(f"{owner}.conv_mode={self.conv_mode!r} needs rank (energy and param_ratio are SVD rules)")
        if self.rank is not None:
            if self.scope != "layer":
                raise ValueError(f"{owner}.rank fixes each layer's rank: use scope='layer' (scope='model' is for "
                                 "energy or param_ratio)")
            if isinstance(self.rank, dict):
                check_per_layer(owner, "rank", self.rank, lambda o, f, v: check_int(o, f, v, 1, None))
            else:
                check_int(owner, "rank", self.rank, 1, None)
        if self.energy is not None:
            check_float(owner, "energy", self.energy, 0, 1, lo_open=True)
        if self.param_ratio is not None:
            check_float(owner, "param_ratio", self.param_ratio, 0, 1, lo_open=True)
        check_names(owner, "layers", self.layers)
        check_bool(owner, "skip_unprofitable", self.skip_unprofitable)
        check_config(owner, "finetune", self.finetune, TrainConfig, optional=True)

    def check_layers(self, model: nn.Module) -> None:
        """rank (per layer) and layers name only Linear/Conv2d layers of `model` (ValueError naming the valid ones)."""
        layers = prunable_layers(model)
        check_layer_names("LowRankConfig", "rank", self.rank if isinstance(self.rank, dict) else None, layers)
        check_layer_names("LowRankConfig", "layers", self.layers, layers)


def target_layers(model: nn.Module, config: LowRankConfig) -> dict[str, nn.Module]:
    """The layers `config` names (all Linear/Conv2d by default), checked to exist."""
    config.check_layers(model)
    layers = prunable_layers(model)
    names = list(config.layers) if config.layers is not None else list(layers)
    if isinstance(config.rank, dict):
        names = [n for n in names if n in config.rank] if config.layers is None else names
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
    check_layer_names("decompose", "layers", layers, all_layers)
    names = list(layers) if layers is not None else list(all_layers)
    return {n: svd(layer_matrix(all_layers[n], conv_mode)) for n in names}


def _svds_for(model: nn.Module, config: LowRankConfig, svds: dict[str, SVD] | None) -> dict[str, SVD]:
    layers = target_layers(model, config)
    svds = dict(svds or {})
    missing = tuple(n for n in layers if n not in svds)
    if missing:
        svds.update(decompose(model, config.conv_mode, missing))
    for n, layer in layers.items():
        if n not in missing:
            check_svd(layer_matrix(layer, config.conv_mode), svds[n])
    return {n: svds[n] for n in layers}


def select_ranks(model: nn.Module, config: LowRankConfig, svds: dict[str, SVD] | None = None) -> dict[str, int]:
    """The rank of every target layer under `config` (before the break-even check)."""
    layers = target_layers(model, config)
    mats = {n: layer_matrix(m, config.conv_mode) for n, m in layers.items()}
    svds = _svds_for(model, config, svds) if config.rank is None else svds
    if config.rank is not None:
        ranks = {}
        for n, mat in mats.items():
            if isinstance(config.rank, dict) and n not in config.rank:
                raise ValueError(f"rank has no entry for layer {n!r}; give one for each of {list(mats)}")
            r = config.rank[n] if isinstance(config.rank, dict) else config.rank
            cp = config.conv_mode == "cp" and isinstance(layers[n], nn.Conv2d)  # a CP rank can exceed min(m, n)
            ranks[n] = check_rank(r, mat.numel() if cp else min(mat.shape), f"rank for layer {n!r} ({tuple(mat.shape)})")
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

@dataclass(kw_only=True, repr=False)
class LowRankReport(Report):
    """Report of apply_lowrank. factorized_params_before / _after: weights + biases of the target
    layers, dense and after factorization (or left dense); accuracy_truncated: percent right
    after truncation, before fine-tuning. Stored bytes: the factorized model in FP32."""

    factorized_params_before: int = 0
    factorized_params_after: int = 0
    accuracy_truncated: float | None = None

    technique = "low-rank"

    @property
    def params_before(self) -> int:
        return self.size_before.params

    @property
    def params_after(self) -> int:
        return self.size_after.params

    @property
    def reduction(self) -> float:
        """Fraction of the target layers' parameters removed (0 when no layer was a target)."""
        if not self.factorized_params_before:
            return 0.0
        return 1 - self.factorized_params_after / self.factorized_params_before

    def headline_extra(self) -> list[str]:
        return [f"factorized layers: {100 * self.reduction:.1f}% fewer params",
                f"accuracy right after truncation {fmt_percent(self.accuracy_truncated)}"]


def apply_lowrank(
    model: nn.Module, config: LowRankConfig, data: Dataset | None = None, *, inplace: bool = False,
    progress: bool | None = None, loss_fn: LossFn | None = None, svds: dict[str, SVD] | None = None,
) -> tuple[nn.Module, LowRankReport]:
    """Factorize a copy of `model` by truncated SVD (then fine-tune if config.finetune and data).

    Each target layer `name` is replaced in place in the Sequential by a two-layer Sequential of the
    same name (name.reduce / name.expand, or name.vertical / name.horizontal for the spatial split).
    svds: decompose(model, config.conv_mode) computed earlier (checked against the weights), to
    reuse the SVDs over many calls; missing layers are decomposed here. loss_fn: the fine-tuning
    loss (cross-entropy when None).
    """
    accuracy = accuracy_fn(data, config.finetune)

    def acc(m: nn.Module) -> float | None:
        return accuracy(m)

    start = time.perf_counter()
    config.check_layers(model)
    model = model if inplace else copy.deepcopy(model)
    acc_before = acc(model)
    size_before = metrics.model_size(model)
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
        tensor = isinstance(layer, nn.Conv2d) and config.conv_mode in tensordecomp.TENSOR_MODES
        if tensor:  # Tucker-2 / CP: its own parameter count; saves when it has fewer weights
            new = tensordecomp.decompose_conv(layer, r, config.conv_mode)
            new_params = sum(p.numel() for p in new.parameters())
            saves = new_params < dense_params
            factorize = saves or not config.skip_unprofitable
            new_params = new_params if factorize else dense_params
        if factorize:
            new = new if tensor else factorize_layer(layer, r, config.conv_mode, svds[name])
            rebuilt = tensordecomp.decomposed_weight(new) if tensor else reconstructed_weight(new)
            diff = rebuilt - metrics.effective_weight(layer)
            err = float(diff.norm() / metrics.effective_weight(layer).norm())
            replace_module(model, name, new)
        rows.append({"layer": name, "kind": type(layer).__name__, "matrix": f"{m}x{n}", "max_rank": min(m, n),
                     "rank": r, "break_even": round(even, 1), "saves": saves, "factorized": factorize,
                     "energy": float(energy_curve(s)[min(r, len(s)) - 1]), "rel_error": err if factorize else 0.0,
                     "eckart_young": eckart_young_error(s, r) / float(s.double().norm())
                     if factorize and not tensor else 0.0,
                     "params_before": dense_params, "params_after": new_params})
    acc_truncated = acc(model)
    if config.finetune is not None:
        train(model, data, config.finetune, loss_fn=loss_fn, progress=progress)
    report = LowRankReport(
        config=config, size_before=size_before, size_after=metrics.model_size(model),
        factorized_params_before=before, factorized_params_after=after, accuracy_before=acc_before,
        accuracy_truncated=acc_truncated,
        accuracy_after=acc(model) if config.finetune is not None else acc_truncated,
        seconds=time.perf_counter() - start, layers=rows)
    return model, report


def spectra(model: nn.Module, conv_mode: str = "channel") -> dict[str, torch.Tensor]:
    """Singular values of every Linear/Conv2d layer's matrix, by layer name."""
    return {n: singular_values(layer_matrix(m, conv_mode)) for n, m in prunable_layers(model).items()}


# ----------------------------------------------------------------- registration

register(Technique(
    name="lowrank", apply=apply_lowrank, config=LowRankConfig,
    example=lambda: (tiny_mlp(), LowRankConfig(rank=4, layers=("fc1",), finetune=TINY_TRAIN), {}),
    verb="lowrank", notebook="05_svd_factorization",
    params={
        "profile": PROFILE, "model_name": choice("mlp1200", "lenet300", "lenet5"), "dataset": DATASET,
        "param_ratio": SHARE, "scope": choice("model", "layer"), "energy": SHARE,
        "conv_mode": choice("channel", "spatial"), "finetune_epochs": EPOCHS, "seed": SEED,
    },
    references={"svd_factorize": svd_factorize, "rank_for_energy": rank_for_energy,
                "factorize_linear": factorize_layer}))
