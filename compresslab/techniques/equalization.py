"""BatchNorm folding and cross-layer equalization (Nagel et al. 2019, "Data-free quantization").

Folding: a BatchNorm after a conv or linear layer is an affine map per output channel, so it moves
into the layer: with g = gamma / sqrt(var + eps),

    W'[i] = g_i W[i],    b'[i] = g_i (b_i - mean_i) + beta_i.

Equalization: for two layers with only ReLU (and pooling or flattening) between them, scaling output
channel i of the first by 1/s_i and input channel i of the second by s_i leaves the function
unchanged, because ReLU(x / s) = ReLU(x) / s for s > 0 (positive homogeneity). With r1_i the range
(max |w|) of the first layer's output channel i and r2_i that of the second layer's input channel i,

    s_i = sqrt(r1_i r2_i) / r2_i

makes both ranges sqrt(r1_i r2_i): the channels' ranges are as alike as they can be, which is what
one scale per tensor needs. A chain of layers is swept pair by pair until the scales settle.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from compresslab.core.validate import check_float, check_int, check_tensor

__all__ = ["PASS_THROUGH", "fold_batchnorm", "equalization_pairs", "output_ranges", "input_ranges",
           "range_spread", "equalization_scales", "scale_pair", "cross_layer_equalize"]

# modules that may sit between the two layers of a pair: each commutes with a positive per-channel scale
PASS_THROUGH = (nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Flatten, nn.Identity, nn.Dropout)
_WEIGHTED = (nn.Linear, nn.Conv2d)


def _children(model: nn.Module) -> list[tuple[str, nn.Module]]:
    if not isinstance(model, nn.Sequential):
        raise ValueError(f"model must be an nn.Sequential with named layers (the workbook's models), "
                         f"got {type(model).__name__}")
    return list(model.named_children())


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> tuple[nn.Module, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """A copy of `model` (an nn.Sequential, in eval mode) with every BatchNorm that directly follows a
    Linear or Conv2d folded into it (W' = g W, b' = g (b - mean) + beta, g = gamma / sqrt(var + eps))
    and replaced by nn.Identity; and, per folded layer, (beta, |gamma|): the mean and standard
    deviation BatchNorm gives each of its output channels (used by the data-free bias correction).

    >>> seq = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)).eval()
    >>> seq[1].running_mean.fill_(0.5); seq[1].weight.data.fill_(2.0)  # doctest: +ELLIPSIS
    tensor(...)
    >>> x = torch.randn(1, 1, 5, 5)
    >>> folded, stats = fold_batchnorm(seq)
    >>> torch.allclose(folded(x), seq(x), atol=1e-5), type(folded[1]).__name__, list(stats)
    (True, 'Identity', ['0'])
    """
    out = copy.deepcopy(model).eval()
    stats: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    children = _children(out)
    for (prev_name, prev), (name, bn) in zip(children[:-1], children[1:]):
        if not isinstance(bn, (nn.BatchNorm1d, nn.BatchNorm2d)) or not isinstance(prev, _WEIGHTED):
            continue
        if bn.running_var is None or bn.running_mean is None:
            raise ValueError(f"BatchNorm {name!r} keeps no running statistics: nothing to fold")
        gamma = bn.weight if bn.affine else torch.ones_like(bn.running_var)
        beta = bn.bias if bn.affine else torch.zeros_like(bn.running_var)
        g = gamma / torch.sqrt(bn.running_var + bn.eps)
        bias = prev.bias if prev.bias is not None else torch.zeros_like(bn.running_mean)
        prev.weight.mul_(g.reshape(-1, *([1] * (prev.weight.dim() - 1))))
        prev.bias = nn.Parameter(g * (bias - bn.running_mean) + beta)
        stats[prev_name] = (beta.detach().clone(), gamma.detach().abs().clone())
        setattr(out, name, nn.Identity())
    return out, stats


def _pair_ok(first: nn.Module, second: nn.Module) -> bool:
    channels = first.out_channels if isinstance(first, nn.Conv2d) else first.out_features
    if isinstance(second, nn.Conv2d):
        depthwise = second.groups == channels and second.out_channels == channels
        return second.in_channels == channels and (second.groups == 1 or depthwise)
    return second.in_features % channels == 0


def equalization_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """Consecutive (first, second) weighted layers of an nn.Sequential with only `PASS_THROUGH`
    modules between them, whose channels match (a grouped conv only if depthwise or ungrouped).

    >>> from compresslab.core import models
    >>> equalization_pairs(models.lenet5())
    [('conv1', 'conv2'), ('conv2', 'fc1'), ('fc1', 'fc2')]
    """
    pairs, prev = [], None
    for name, module in _children(model):
        if isinstance(module, _WEIGHTED):
            if prev is not None and _pair_ok(model.get_submodule(prev), module):
                pairs.append((prev, name))
            prev = name
        elif not isinstance(module, PASS_THROUGH):
            prev = None
    return pairs


def output_ranges(layer: nn.Module) -> torch.Tensor:
    """r1: max |w| of each output channel (row) of a Linear or Conv2d weight."""
    return layer.weight.detach().abs().flatten(1).amax(1)


def _input_view(layer: nn.Module, channels: int) -> tuple[torch.Tensor, int]:
    """The weight viewed so that input channel i is index i of dimension `dim`; and `dim`."""
    w = layer.weight
    if isinstance(layer, nn.Conv2d):
        return (w, 0) if layer.groups == channels and layer.groups > 1 else (w, 1)
    return w.reshape(w.shape[0], channels, -1), 1


def input_ranges(layer: nn.Module, channels: int) -> torch.Tensor:
    """r2: max |w| over the weights that read input channel i (a depthwise conv: its own filter i;
    a Linear after flattening C channels: the columns of channel i)."""
    w, dim = _input_view(layer, channels)
    w = w.detach().abs().transpose(0, dim)
    return w.reshape(w.shape[0], -1).amax(1)


def range_spread(ranges) -> float:
    """max_i r_i / median_i r_i of a layer's channel ranges (the median of an even count: the mean of
    the two middle values; floored at 1e-12): how many times wider the widest channel is than the
    typical one, which one scale per tensor must cover.

    >>> range_spread([1.0, 2.0, 3.0, 10.0])
    4.0
    """
    r = (ranges.detach().double() if isinstance(ranges, torch.Tensor)
         else torch.tensor([float(v) for v in ranges], dtype=torch.float64))
    check_tensor("ranges", r, dim=1)
    return float(r.max() / r.quantile(0.5).clamp_min(1e-12))


def equalization_scales(r1: torch.Tensor, r2: torch.Tensor) -> torch.Tensor:
    """s_i = sqrt(r1_i r2_i) / r2_i, so that r1_i / s_i = r2_i s_i = sqrt(r1_i r2_i); 1 where either
    range is 0 (a dead channel has nothing to balance).

    >>> equalization_scales(torch.tensor([4.0, 1.0, 0.0]), torch.tensor([1.0, 4.0, 2.0]))
    tensor([2.0000, 0.5000, 1.0000])
    """
    check_tensor("r1", r1, dim=1, kind="float")
    check_tensor("r2", r2, shape=tuple(r1.shape), kind="float")
    if bool((r1 < 0).any() or (r2 < 0).any()):
        raise ValueError("ranges r1 and r2 must be non-negative (they are max |w|)")
    live = (r1 > 0) & (r2 > 0)
    return torch.where(live, torch.sqrt(r1 * r2) / torch.where(live, r2, 1.0), torch.ones_like(r1))


@torch.no_grad()
def scale_pair(first: nn.Module, second: nn.Module, s: torch.Tensor) -> None:
    """In place: output channel i of `first` (weight row and bias) divided by s_i, input channel i of
    `second` multiplied by s_i."""
    shape = (-1, *([1] * (first.weight.dim() - 1)))
    first.weight.div_(s.reshape(shape))
    if first.bias is not None:
        first.bias.div_(s)
    w, dim = _input_view(second, len(s))
    view = [1] * w.dim()
    view[dim] = -1
    w.mul_(s.reshape(view))


def cross_layer_equalize(model: nn.Module, iterations: int = 20, tolerance: float = 1e-4,
                         ) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """Equalize every pair of `equalization_pairs(model)` in place, sweeping the chain until no scale
    moves by more than `tolerance` (|s - 1|) or `iterations` sweeps are done. Returns the model and,
    per first layer of a pair, the product of the scales its output channels were divided by.

    >>> torch.manual_seed(0) is not None
    True
    >>> seq = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    >>> x = torch.randn(5, 4); before = seq(x)
    >>> _, scales = cross_layer_equalize(seq)
    >>> torch.allclose(seq(x), before, atol=1e-5), torch.allclose(output_ranges(seq[0]), input_ranges(seq[2], 3))
    (True, True)
    """
    check_int("cross_layer_equalize", "iterations", iterations, 1, 10_000)
    check_float("cross_layer_equalize", "tolerance", tolerance, 0, 1, lo_open=True)
    pairs = equalization_pairs(model)
    total = {first: torch.ones(len(output_ranges(model.get_submodule(first)))) for first, _ in pairs}
    for _ in range(iterations):
        moved = 0.0
        for first, second in pairs:
            a, b = model.get_submodule(first), model.get_submodule(second)
            s = equalization_scales(output_ranges(a), input_ranges(b, len(total[first])))
            scale_pair(a, b, s)
            total[first] = total[first] * s
            moved = max(moved, float((s - 1).abs().max()))
        if moved <= tolerance:
            break
    return model, total
