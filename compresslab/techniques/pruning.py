"""Magnitude pruning: masks, layer-wise and global scope, structured shrinking, schedules.

Unstructured: keep the weights of largest |w|; a mask m in {0,1} multiplies the weight,
w_eff = w * m, applied through torch.nn.utils.prune so it survives fine-tuning.
Structured: drop whole output neurons / conv channels of smallest L1 or L2 norm and rebuild
the layer (and the next layer's inputs) as a physically smaller dense layer.
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.utils import prune

from compresslab.core import metrics
from compresslab.core.data import Dataset
from compresslab.core.models import prunable_layers
from compresslab.core.results import LayerTableReport, pct
from compresslab.core.training import (
    Callback,
    LossFn,
    TrainConfig,
    TrainState,
    accuracy_fn,
    evaluate,
    train,
)

__all__ = [
    "SCOPES",
    "SCHEDULES",
    "magnitude_mask",
    "global_magnitude_masks",
    "cubic_sparsity",
    "current_masks",
    "set_masks",
    "copy_model",
    "make_permanent",
    "masks_for",
    "prune_magnitude",
    "structured_keep",
    "apply_structured_masks",
    "shrink",
    "structured_prune",
    "GradualPruning",
    "PruneConfig",
    "PruningReport",
    "apply_pruning",
    "sensitivity_scan",
    "CSRLinear",
    "to_sparse",
]

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
SCOPES = ("layer", "global")
SCHEDULES = ("one_shot", "iterative", "gradual")


def _check_sparsity(sparsity: float, field_name: str = "sparsity") -> None:
    if not (isinstance(sparsity, (int, float)) and 0.0 <= sparsity < 1.0):
        raise ValueError(f"{field_name}={sparsity!r} must be in [0, 1)")


def magnitude_mask(w: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Mask (same shape, float 0/1) zeroing the k = round(sparsity * n) smallest |w|."""
    _check_sparsity(sparsity)
    k = int(round(sparsity * w.numel()))
    mask = torch.ones_like(w, memory_format=torch.contiguous_format)  # view(-1) below needs contiguous
    if k:
        idx = torch.topk(w.detach().abs().reshape(-1), k=k, largest=False).indices
        mask.view(-1)[idx] = 0.0
    return mask


def global_magnitude_masks(weights: dict[str, torch.Tensor], sparsity: float) -> dict[str, torch.Tensor]:
    """Masks that zero the round(sparsity * N) smallest |w| over all tensors together."""
    _check_sparsity(sparsity)
    if not weights:
        raise ValueError("weights is empty: nothing to prune")
    flat = torch.cat([w.detach().abs().reshape(-1) for w in weights.values()])
    flat_mask = magnitude_mask(flat, sparsity)
    masks, start = {}, 0
    for name, w in weights.items():
        masks[name] = flat_mask[start:start + w.numel()].reshape(w.shape)
        start += w.numel()
    return masks


def cubic_sparsity(step: int, initial: float, final: float, start: int, n: int, interval: int) -> float:
    """Zhu & Gupta (2017): s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt))^3, clamped to [t0, t0 + n dt]."""
    _check_sparsity(initial, "initial")
    _check_sparsity(final, "final")
    if n < 1 or interval < 1:
        raise ValueError(f"n={n} and interval={interval} must be >= 1")
    progress = min(max((step - start) / (n * interval), 0.0), 1.0)
    return final + (initial - final) * (1.0 - progress) ** 3


# ----------------------------------------------------------------- applying masks

def current_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """The masks in force (ones for unpruned layers), by layer name."""
    out = {}
    for name, layer in prunable_layers(model).items():
        mask = getattr(layer, "weight_mask", None)
        out[name] = mask.detach().clone() if mask is not None else torch.ones_like(layer.weight)
    return out


def set_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Apply masks through torch.nn.utils.prune; a weight pruned before stays pruned (masks nest)."""
    layers = prunable_layers(model)
    for name, mask in masks.items():
        if name not in layers:
            raise ValueError(f"layer={name!r} is not a prunable layer; choose from {list(layers)}")
        layer = layers[name]
        if hasattr(layer, "weight_mask"):
            with torch.no_grad():
                layer.weight_mask.mul_(mask.to(layer.weight_mask))
        else:
            prune.custom_from_mask(layer, "weight", mask.to(layer.weight))
        with torch.no_grad():  # a leaf until the next forward recomputes it, so copies work
            layer.weight = layer.weight_orig * layer.weight_mask


def copy_model(model: nn.Module) -> nn.Module:
    """A deep copy that also works for pruned models (whose masked weights are non-leaf tensors)."""
    with torch.no_grad():
        for layer in prunable_layers(model).values():
            for param in ("weight", "bias"):
                if hasattr(layer, f"{param}_mask"):
                    setattr(layer, param, getattr(layer, f"{param}_orig") * getattr(layer, f"{param}_mask"))
    return copy.deepcopy(model)


def make_permanent(model: nn.Module) -> nn.Module:
    """Fold every mask into its weight (torch.nn.utils.prune.remove); returns `model`."""
    for layer in prunable_layers(model).values():
        for param in ("weight", "bias"):
            if hasattr(layer, f"{param}_mask"):
                prune.remove(layer, param)
    return model


def masks_for(model: nn.Module, sparsity: float | dict[str, float], scope: str = "layer") -> dict[str, torch.Tensor]:
    """Magnitude masks at `sparsity` (one number, or per layer for scope='layer')."""
    if scope not in SCOPES:
        raise ValueError(f"scope={scope!r} must be one of {SCOPES}")
    weights = {n: metrics.effective_weight(m) for n, m in prunable_layers(model).items()}
    if scope == "global":
        if isinstance(sparsity, dict):
            raise ValueError("scope='global' takes one sparsity, not a per-layer dict")
        return global_magnitude_masks(weights, sparsity)
    per_layer = sparsity if isinstance(sparsity, dict) else {n: sparsity for n in weights}
    unknown = set(per_layer) - set(weights)
    if unknown:
        raise ValueError(f"layer_sparsity names unknown layers {sorted(unknown)}; choose from {list(weights)}")
    return {n: magnitude_mask(weights[n], s) for n, s in per_layer.items()}


def prune_magnitude(model: nn.Module, sparsity: float | dict[str, float], scope: str = "layer") -> nn.Module:
    """Prune `model` in place by magnitude and return it (masks stay attached)."""
    set_masks(model, masks_for(model, sparsity, scope))
    return model


# ----------------------------------------------------------------- structured

def _layer_chain(model: nn.Module) -> list[tuple[str, nn.Module]]:
    if not isinstance(model, nn.Sequential):
        raise ValueError("structured pruning needs an nn.Sequential model (all compresslab models are)")
    chain = [(n, m) for n, m in model.named_children() if isinstance(m, (nn.Linear, nn.Conv2d))]
    if len(chain) < 2:
        raise ValueError("structured pruning needs at least two Linear/Conv2d layers")
    return chain


def structured_keep(model: nn.Module, sparsity: float, norm: int = 1) -> dict[str, torch.Tensor]:
    """Indices of output units to keep in every layer but the last: the (1 - s) fraction of largest
    L`norm` norm of their weight rows (sorted, at least one kept)."""
    _check_sparsity(sparsity)
    if norm not in (1, 2):
        raise ValueError(f"norm={norm} must be 1 or 2")
    keep = {}
    for name, layer in _layer_chain(model)[:-1]:
        w = metrics.effective_weight(layer).reshape(layer.weight.shape[0], -1)
        scores = w.norm(p=norm, dim=1)
        n_keep = max(1, int(round((1 - sparsity) * len(scores))))
        keep[name] = torch.topk(scores, n_keep).indices.sort().values
    return keep


def apply_structured_masks(model: nn.Module, keep: dict[str, torch.Tensor]) -> nn.Module:
    """Zero the dropped units' weight rows and biases in place, through torch.nn.utils.prune.

    The masked model computes exactly what `shrink(model, keep)` computes, at the dense size."""
    layers = prunable_layers(model)
    for name, rows in keep.items():
        layer = layers[name]
        mask = torch.zeros_like(layer.weight)
        mask[rows] = 1.0
        set_masks(model, {name: mask})
        if layer.bias is not None:
            bias_mask = torch.zeros_like(layer.bias)
            bias_mask[rows] = 1.0
            prune.custom_from_mask(layer, "bias", bias_mask)
    return model


def _flatten_factor(model: nn.Sequential, input_shape: Sequence[int]) -> dict[str, int]:
    """For each Linear fed by a flattened conv map: spatial positions per channel (h * w)."""
    factors: dict[str, int] = {}
    x = torch.zeros(1, *input_shape)
    with torch.no_grad():
        last_channels = None
        for name, module in model.named_children():
            if isinstance(module, nn.Flatten) and x.dim() == 4:
                last_channels = x.shape[1]
            if isinstance(module, nn.Linear) and last_channels:
                factors[name] = module.in_features // last_channels
                last_channels = None
            x = module(x)
    return factors


def shrink(model: nn.Module, keep: dict[str, torch.Tensor], input_shape: Sequence[int] = (1, 28, 28)) -> nn.Sequential:
    """A new, physically smaller model keeping only the `keep` units of each layer.

    Dropping output unit j of a layer deletes row j of its weight and bias, and the matching input
    column(s) of the next Linear/Conv layer (h*w columns per channel after a Flatten)."""
    chain = _layer_chain(model)
    model = copy_model(model)
    make_permanent(model)
    factors = _flatten_factor(model, input_shape)
    layers = dict(model.named_children())
    incoming: torch.Tensor | None = None
    for name, _ in chain:
        old = layers[name]
        w = old.weight.detach()
        b = old.bias.detach() if old.bias is not None else None
        if incoming is not None:
            if isinstance(old, nn.Linear) and name in factors:
                f = factors[name]
                cols = (incoming[:, None] * f + torch.arange(f)[None, :]).reshape(-1)
                w = w[:, cols]
            else:
                w = w[:, incoming]
        rows = keep.get(name)
        if rows is not None:
            w = w[rows]
            b = b[rows] if b is not None else None
        if isinstance(old, nn.Linear):
            new = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
        else:
            new = nn.Conv2d(w.shape[1], w.shape[0], old.kernel_size, old.stride, old.padding,
                            old.dilation, old.groups, bias=b is not None)
        with torch.no_grad():
            new.weight.copy_(w)
            if b is not None:
                new.bias.copy_(b)
        setattr(model, name, new)
        incoming = rows
    return model


def structured_prune(model: nn.Module, sparsity: float, norm: int = 1, input_shape: Sequence[int] = (1, 28, 28)) -> nn.Sequential:
    """Remove `sparsity` of the neurons/channels of every hidden layer by L`norm` norm; new model."""
    return shrink(model, structured_keep(model, sparsity, norm), input_shape)


# ----------------------------------------------------------------- schedules as callbacks

class GradualPruning(Callback):
    """Raise sparsity along the cubic schedule every `interval` steps from `start` for `n` updates."""

    def __init__(self, final: float, scope: str, start: int, n: int, interval: int, initial: float = 0.0):
        cubic_sparsity(start, initial, final, start, n, interval)  # validates
        self.final, self.scope, self.start, self.n, self.interval, self.initial = final, scope, start, n, interval, initial
        self.trace: list[tuple[int, float]] = []

    def on_batch_end(self, state: TrainState) -> None:
        t = state.step
        if t < self.start or t > self.start + self.n * self.interval or (t - self.start) % self.interval:
            return
        s = cubic_sparsity(t, self.initial, self.final, self.start, self.n, self.interval)
        prune_magnitude(state.model, s, self.scope)
        self.trace.append((t, s))


# ----------------------------------------------------------------- the model-level verb

@dataclass(frozen=True)
class PruneConfig:
    """How to prune.

    sparsity: fraction of weights removed (unstructured) or of hidden units (structured), [0, 1).
    schedule: one_shot (prune, then fine-tune), iterative (`iterations` rounds of prune + fine-tune,
    equal fractions of the survivors per round), gradual (cubic schedule during fine-tuning).
    finetune: the TrainConfig for fine-tuning (per round when iterative); None = no fine-tuning.
    """

    sparsity: float = 0.9
    scope: str = "global"
    structured: bool = False
    norm: int = 1
    schedule: str = "one_shot"
    iterations: int = 1
    layer_sparsity: dict | None = None
    finetune: TrainConfig | None = None
    permanent: bool = True

    def __post_init__(self) -> None:
        _check_sparsity(self.sparsity)
        if self.scope not in SCOPES:
            raise ValueError(f"scope={self.scope!r} must be one of {SCOPES}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule={self.schedule!r} must be one of {SCHEDULES}")
        if self.norm not in (1, 2):
            raise ValueError(f"norm={self.norm} must be 1 or 2")
        if not isinstance(self.iterations, int) or not 1 <= self.iterations <= 100:
            raise ValueError(f"iterations={self.iterations} must be an integer in [1, 100]")
        if self.layer_sparsity is not None:
            if self.scope != "layer":
                raise ValueError("layer_sparsity needs scope='layer'")
            for name, s in self.layer_sparsity.items():
                _check_sparsity(s, f"layer_sparsity[{name!r}]")
        if self.structured and self.schedule == "gradual":
            raise ValueError("structured=True supports schedule 'one_shot' or 'iterative', not 'gradual'")
        if self.schedule == "gradual" and self.finetune is None:
            raise ValueError("schedule='gradual' prunes during fine-tuning: set finetune=TrainConfig(...)")


@dataclass
class PruningReport(LayerTableReport):
    config: PruneConfig
    sparsity: float
    params_before: int
    params_after: int
    accuracy_before: float | None
    accuracy_pruned: float | None  # right after pruning, before any fine-tuning
    accuracy_after: float | None
    seconds: float
    layers: list[dict] = field(default_factory=list)
    rounds: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"sparsity": self.sparsity, "params_before": self.params_before, "params_after": self.params_after,
                "accuracy_before": self.accuracy_before, "accuracy_pruned": self.accuracy_pruned,
                "accuracy_after": self.accuracy_after, "seconds": self.seconds, "layers": self.layers,
                "rounds": self.rounds, "schedule": self.config.schedule, "scope": self.config.scope,
                "structured": self.config.structured}

    def headline(self) -> str:
        return (f"sparsity {100 * self.sparsity:.2f}% &middot; params {self.params_before:,} &rarr; "
                f"{self.params_after:,} &middot; accuracy {pct(self.accuracy_before)} &rarr; pruned "
                f"{pct(self.accuracy_pruned)} &rarr; fine-tuned {pct(self.accuracy_after)} "
                f"&middot; {self.seconds:.1f} s")


def _param_count(model: nn.Module) -> int:
    return metrics.size_report(model).params


def apply_pruning(
    model: nn.Module, config: PruneConfig, data: Dataset | None = None, inplace: bool = False,
    progress: bool | None = None, loss_fn: LossFn | None = None,
) -> tuple[nn.Module, PruningReport]:
    """Prune (and fine-tune, if config.finetune and data) a copy of `model`; return it and a report.

    loss_fn: the fine-tuning loss (training.train's; cross-entropy when None), e.g. a distillation
    loss with the dense model as teacher."""
    acc = accuracy_fn(data, config.finetune)
    start = time.perf_counter()
    model = model if inplace else copy_model(model)
    acc_before = acc(model)
    params_before = _param_count(model)
    input_shape = data.input_shape if data is not None else (1, 28, 28)
    rounds: list[dict] = []
    acc_pruned = None
    target = config.layer_sparsity if config.layer_sparsity is not None else config.sparsity
    if config.schedule == "gradual":
        steps = config.finetune.total_steps(len(data.train))
        n = min(20, max(1, int(0.75 * steps)))
        interval = max(1, int(0.75 * steps) // n)
        callback = GradualPruning(config.sparsity, config.scope, start=0, n=n, interval=interval)
        history = train(model, data, config.finetune, loss_fn=loss_fn, callbacks=[callback], progress=progress)
        prune_magnitude(model, target, config.scope)  # land exactly on the target
        rounds.append({"round": 1, "sparsity": metrics.weight_sparsity(model),
                       "accuracy": acc(model), "schedule_points": len(callback.trace),
                       "train_seconds": history.seconds})
    else:
        for r in range(1, config.iterations + 1):
            frac = r / config.iterations
            if config.structured:  # each round drops the same share of the units still there
                per_round = 1 - (1 - config.sparsity) ** (1 / config.iterations)
                model = structured_prune(model, per_round, config.norm, input_shape)
            else:
                s_r = _round_sparsity(target, frac)
                prune_magnitude(model, s_r, config.scope)
            a_pruned = acc(model)
            if acc_pruned is None:
                acc_pruned = a_pruned
            seconds = 0.0
            if config.finetune is not None:
                seconds = train(model, data, config.finetune, loss_fn=loss_fn, progress=progress).seconds
            rounds.append({"round": r, "sparsity": metrics.weight_sparsity(model), "accuracy_pruned": a_pruned,
                           "accuracy": acc(model), "train_seconds": seconds})
    if config.permanent:
        make_permanent(model)
    report = PruningReport(
        config=config,
        sparsity=metrics.weight_sparsity(model) if not config.structured else 1 - _param_count(model) / params_before,
        params_before=params_before,
        params_after=_param_count(model) if config.structured else metrics.size_report(model).nonzeros,
        accuracy_before=acc_before,
        accuracy_pruned=acc_pruned if acc_pruned is not None else (rounds[0]["accuracy"] if rounds else None),
        accuracy_after=acc(model),
        seconds=time.perf_counter() - start,
        layers=metrics.sparsity_table(model).to_dict("records"),
        rounds=rounds,
    )
    return model, report


def _round_sparsity(target: float | dict[str, float], frac: float) -> float | dict[str, float]:
    """Sparsity after a fraction `frac` of the rounds: 1 - (1 - s)^frac (same share of survivors each round)."""
    if isinstance(target, dict):
        return {k: 1 - (1 - s) ** frac for k, s in target.items()}
    return 1 - (1 - target) ** frac


def sensitivity_scan(
    model: nn.Module, data: Dataset, sparsities: Sequence[float], limit: int | None = None,
) -> list[dict]:
    """Prune one layer at a time (no fine-tuning) at each sparsity; test accuracy per (layer, sparsity)."""
    rows = []
    split = data.test
    if limit is not None:
        from compresslab.core.data import Split

        split = Split(split.images[:limit], split.labels[:limit], split.mean, split.std)
    for name in prunable_layers(model):
        for s in sparsities:
            trial = copy_model(model)
            set_masks(trial, {name: magnitude_mask(metrics.effective_weight(prunable_layers(trial)[name]), s)})
            rows.append({"layer": name, "sparsity": s, "accuracy": evaluate(trial, split).accuracy})
    return rows


# ----------------------------------------------------------------- sparse kernels

class CSRLinear(nn.Module):
    """y = x W^T + b with W held as a torch.sparse CSR matrix (only the non-zeros are stored)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        with warnings.catch_warnings():  # "CSR support is in beta": the notebook measures it honestly
            warnings.simplefilter("ignore", UserWarning)
            self.weight_csr = metrics.effective_weight(linear).to_sparse_csr()
        self.bias = None if linear.bias is None else linear.bias.detach().clone()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = (self.weight_csr @ x.t()).t()
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, nnz={self.weight_csr.values().numel()}"


def to_sparse(model: nn.Module) -> nn.Module:
    """A copy of `model` whose Linear layers compute with CSR weights (conv layers stay dense)."""
    model = make_permanent(copy_model(model))
    for name, module in list(model.named_children()):
        if isinstance(module, nn.Linear):
            setattr(model, name, CSRLinear(module))
    return model.eval()
