"""Structured pruning and sparse kernels.

Structured: drop whole output neurons / conv channels of smallest L1 or L2 norm and rebuild the
layer (and the next layer's inputs) as a physically smaller dense layer.
Sparse kernels: Linear layers computing with a torch.sparse CSR weight (only non-zeros stored).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.utils import prune

from compresslab.core import metrics
from compresslab.core.models import prunable_layers
from compresslab.techniques.masks import check_sparsity, copy_model, make_permanent, set_masks

__all__ = [
    "structured_keep",
    "apply_structured_masks",
    "shrink",
    "structured_prune",
    "CSRLinear",
    "to_sparse",
]

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")


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
    check_sparsity(sparsity)
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
