"""Iterative magnitude pruning, mask and state level: the pieces of a lottery-ticket level.

One level prunes a fraction p of each layer's surviving weights (smallest |w| after training), so
masks nest; random controls keep as many weights per layer as the ticket; a ticket is rewound to
saved weights theta_k with its mask attached, a control re-drawn from the initial distribution.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from compresslab.core import metrics
from compresslab.core.models import prunable_layers
from compresslab.core.training import Callback, TrainHistory, TrainState
from compresslab.techniques.masks import global_magnitude_masks, magnitude_mask, set_masks

__all__ = [
    "Masks",
    "State",
    "prune_survivors",
    "prune_survivors_global",
    "layer_keep_counts",
    "random_scores",
    "random_masks_like",
    "density",
    "state_of",
    "RewindPoint",
    "rewind",
    "reinitialize",
    "LevelResult",
]

Masks = dict[str, torch.Tensor]
State = dict[str, torch.Tensor]


# ----------------------------------------------------------------- masks per level

def prune_survivors(w: torch.Tensor, mask: torch.Tensor, rate: float) -> torch.Tensor:
    """Next mask of one layer: of its n surviving weights (mask == 1), remove the round(rate * n) of
    smallest |w| (at least one weight always survives). Zeros of `mask` stay zero.

    >>> w = torch.tensor([0.3, -2.0, 0.0, 1.0, -0.5])
    >>> prune_survivors(w, torch.tensor([1.0, 1.0, 0.0, 1.0, 1.0]), 0.5)  # 4 survivors: the 2 smallest go
    tensor([0., 1., 0., 1., 0.])
    """
    keep = mask.bool()
    n = int(keep.sum())
    k = min(int(round(rate * n)), max(n - 1, 0))
    out = torch.zeros_like(mask, dtype=torch.float32)
    if n:
        out[keep] = magnitude_mask(w.detach()[keep].float(), k / n)
    return out


def prune_survivors_global(weights: dict[str, torch.Tensor], masks: Masks, rate: float) -> Masks:
    """Next masks of several layers ranked together: remove round(rate * N) of their N survivors."""
    keep = {n: masks[n].bool() for n in weights}
    survivors = {n: weights[n].detach()[keep[n]].float() for n in weights}
    total = sum(v.numel() for v in survivors.values())
    k = min(int(round(rate * total)), max(total - 1, 0))
    sub = global_magnitude_masks(survivors, k / total) if total else survivors
    out = {}
    for n in weights:
        out[n] = torch.zeros_like(masks[n], dtype=torch.float32)
        out[n][keep[n]] = sub[n]
    return out


def layer_keep_counts(sizes: dict[str, int], rates: dict[str, float], level: int) -> dict[str, int]:
    """Survivors per layer after `level` layer-wise levels: n_L = n_{L-1} - round(p * n_{L-1}).

    >>> layer_keep_counts({"fc1": 235200, "fc2": 30000, "fc3": 1000}, {"fc1": 0.2, "fc2": 0.2, "fc3": 0.1}, 3)
    {'fc1': 120422, 'fc2': 15360, 'fc3': 729}
    """
    counts = dict(sizes)
    for _ in range(level):
        counts = {n: c - min(int(round(rates[n] * c)), max(c - 1, 0)) for n, c in counts.items()}
    return counts


def random_scores(shapes: dict[str, torch.Size], seed: int) -> dict[str, torch.Tensor]:
    """One uniform random score per weight, drawn layer by layer from a generator seeded by `seed`."""
    gen = torch.Generator().manual_seed(seed)
    return {n: torch.rand(tuple(s), generator=gen) for n, s in shapes.items()}


def random_masks_like(masks: Masks, scores: dict[str, torch.Tensor]) -> Masks:
    """Masks keeping, in each layer, as many weights as `masks` does: those of highest score.

    With scores fixed across levels, the random masks nest as the ticket's do."""
    out = {}
    for n, m in masks.items():
        count = int(m.sum())
        mask = torch.zeros(m.numel())
        if count:
            mask[torch.topk(scores[n].reshape(-1), count).indices] = 1.0
        out[n] = mask.reshape(m.shape)
    return out


def density(masks: Masks) -> tuple[float, dict[str, float]]:
    """Fraction of weights kept, overall and per layer."""
    per_layer = {n: float(m.sum()) / m.numel() for n, m in masks.items()}
    total = sum(m.numel() for m in masks.values())
    return float(sum(m.sum() for m in masks.values())) / total, per_layer


# ----------------------------------------------------------------- states, rewinding, controls

def state_of(model: nn.Module) -> State:
    """A detached CPU copy of the model's state dict."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


class RewindPoint(Callback):
    """Saves the model's state at the given steps (step 0 = before the first update)."""

    def __init__(self, steps: Sequence[int]):
        self.steps = set(int(s) for s in steps)
        self.states: dict[int, State] = {}

    def on_train_start(self, state: TrainState) -> None:
        if 0 in self.steps:
            self.states[0] = state_of(state.model)

    def on_batch_end(self, state: TrainState) -> None:
        if state.step in self.steps:
            self.states[state.step] = state_of(state.model)


def check_unpruned(model: nn.Module) -> None:
    if any(hasattr(layer, "weight_mask") for layer in prunable_layers(model).values()):
        raise ValueError("model already carries pruning masks; pass the unpruned network (its weights are theta_0)")


def rewind(template: nn.Module, state: State, masks: Masks) -> nn.Module:
    """A copy of the unpruned `template` holding `state` (e.g. theta_k) with `masks` attached:
    surviving weights take exactly their saved values, pruned weights are zero."""
    check_unpruned(template)
    model = copy.deepcopy(template)
    model.load_state_dict(state)
    set_masks(model, masks)
    return model


def reinitialize(template: nn.Module, seed: int) -> nn.Module:
    """A copy of the unpruned `template` with every layer re-drawn by its own `reset_parameters`
    under torch seed `seed` (the same distribution as the original initialisation)."""
    check_unpruned(template)
    model = copy.deepcopy(template)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in model.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
    return model


def effective_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: metrics.effective_weight(m).cpu() for n, m in prunable_layers(model).items()}


# ----------------------------------------------------------------- one trained network

@dataclass
class LevelResult:
    """One trained network: IMP level, branch, how much it keeps, how it trained."""

    level: int
    branch: str
    remaining: float
    layer_density: dict[str, float]
    test_accuracy: float  # percent, at the end of training
    early_stop_step: int  # step of minimum validation loss, counted from theta_0
    early_stop_accuracy: float  # percent, test accuracy at that step
    seconds: float
    history: dict

    def to_dict(self) -> dict:
        return asdict(self)


def level_result(level: int, branch: str, masks: Masks, history: TrainHistory) -> LevelResult:
    remaining, per_layer = density(masks)
    best = int(np.argmin(history.val_loss))
    return LevelResult(
        level=level, branch=branch, remaining=remaining, layer_density=per_layer,
        test_accuracy=history.test_accuracy[-1], early_stop_step=history.best_val_step(),
        early_stop_accuracy=history.test_accuracy[best], seconds=history.seconds, history=history.to_dict(),
    )
