"""Unstructured magnitude pruning, tensor and mask level.

Keep the weights of largest |w|: a mask m in {0,1} multiplies the weight, w_eff = w * m, applied
through torch.nn.utils.prune so it survives fine-tuning; masks nest (a pruned weight stays pruned).
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils import prune

from compresslab.core import metrics
from compresslab.core.models import prunable_layers
from compresslab.core.validate import check_choice, check_float, check_layer_names

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
]
SCOPES = ("layer", "global")
SCHEDULES = ("one_shot", "iterative", "gradual")


def check_sparsity(sparsity: float, field_name: str = "sparsity") -> None:
    check_float("", field_name, sparsity, 0, 1, hi_open=True)


def magnitude_mask(w: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Mask (same shape, float 0/1) zeroing the k = round(sparsity * n) smallest |w|.

    >>> w = torch.tensor([[0.5, -0.1, 2.0, 0.03], [-3.0, 0.05, 0.2, -0.7]])
    >>> magnitude_mask(w, 0.5)  # the 4 smallest |w| (0.03, 0.05, 0.1, 0.2), as prune.l1_unstructured
    tensor([[1., 0., 1., 0.],
            [1., 0., 0., 1.]])
    """
    check_sparsity(sparsity)
    k = int(round(sparsity * w.numel()))
    mask = torch.ones_like(w, memory_format=torch.contiguous_format)  # view(-1) below needs contiguous
    if k:
        idx = torch.topk(w.detach().abs().reshape(-1), k=k, largest=False).indices
        mask.view(-1)[idx] = 0.0
    return mask


def global_magnitude_masks(weights: dict[str, torch.Tensor], sparsity: float) -> dict[str, torch.Tensor]:
    """Masks that zero the round(sparsity * N) smallest |w| over all tensors together.

    >>> weights = {"a": torch.tensor([1.0, -4.0]), "b": torch.tensor([0.5, 3.0, -2.0])}
    >>> global_magnitude_masks(weights, 0.4)  # one threshold over all 5 weights: 0.5 and 1.0 go
    {'a': tensor([0., 1.]), 'b': tensor([0., 1., 1.])}
    """
    check_sparsity(sparsity)
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
    """Zhu & Gupta (2017): s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt))^3, clamped to [t0, t0 + n dt].

    >>> steps = (0, 100, 200, 400, 1000)  # 4 pruning steps, 100 apart, from step 0: 0 -> 90%
    >>> [round(cubic_sparsity(t, initial=0.0, final=0.9, start=0, n=4, interval=100), 4) for t in steps]
    [0.0, 0.5203, 0.7875, 0.9, 0.9]
    """
    check_sparsity(initial, "initial")
    check_sparsity(final, "final")
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
    check_choice("", "scope", scope, SCOPES)
    weights = {n: metrics.effective_weight(m) for n, m in prunable_layers(model).items()}
    if scope == "global":
        if isinstance(sparsity, dict):
            raise ValueError("scope='global' takes one sparsity, not a per-layer dict")
        return global_magnitude_masks(weights, sparsity)
    per_layer = sparsity if isinstance(sparsity, dict) else {n: sparsity for n in weights}
    check_layer_names("", "layer_sparsity", per_layer, weights)
    return {n: magnitude_mask(weights[n], s) for n, s in per_layer.items()}


def prune_magnitude(model: nn.Module, sparsity: float | dict[str, float], scope: str = "layer") -> nn.Module:
    """Prune `model` in place by magnitude and return it (masks stay attached)."""
    set_masks(model, masks_for(model, sparsity, scope))
    return model
