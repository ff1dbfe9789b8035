"""The set-up every one-layer-after-another verb shares (GPTQ, Wanda, SmoothQuant, AdaRound): the inputs a
layer receives on calibration data, and the copy / evaluation / layer choice / calibration windows."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from compresslab.core import metrics
from compresslab.core.data import Dataset
from compresslab.core.training import EvalResult, evaluate
from compresslab.core.validate import check_layer_names

__all__ = ["layer_inputs", "input_rows", "Layerwise", "layerwise_setup"]


def input_rows(layer: nn.Module, inp: torch.Tensor) -> torch.Tensor:
    """One layer's input as the rows X it multiplies, so that its output is X W^T (+ b) with W the
    weight as a (out, in) matrix: a Linear's input flattened to rows of in_features; a Conv2d's
    (groups 1, zero padding) unfolded to one row of C * kh * kw values per output position
    (im2col), W = weight.reshape(out_channels, -1). A depthwise Conv2d (groups = in = out channels)
    gives (rows, C, kh * kw): output channel c reads only its own channel's patch X[:, c], so its
    output is X[:, c] @ W[c].

    >>> conv = nn.Conv2d(2, 3, 3, padding=1)
    >>> x = torch.randn(1, 2, 5, 5)
    >>> y = input_rows(conv, x) @ conv.weight.reshape(3, -1).T + conv.bias
    >>> torch.allclose(y.reshape(1, 5, 5, 3).permute(0, 3, 1, 2), conv(x), atol=1e-5)
    True
    >>> dw = nn.Conv2d(2, 2, 3, padding=1, groups=2)
    >>> y = torch.einsum("nck,ck->nc", input_rows(dw, x), dw.weight.reshape(2, -1)) + dw.bias
    >>> torch.allclose(y.reshape(1, 5, 5, 2).permute(0, 3, 1, 2), dw(x), atol=1e-5)
    True
    """
    if isinstance(layer, nn.Conv2d):
        depthwise = layer.groups > 1 and layer.groups == layer.in_channels == layer.out_channels
        if (layer.groups != 1 and not depthwise) or layer.padding_mode != "zeros" or isinstance(layer.padding, str):
            raise ValueError(f"input_rows: a Conv2d with groups={layer.groups}, padding={layer.padding!r}, "
                             f"padding_mode={layer.padding_mode!r} has no im2col rows here (groups 1 or depthwise, "
                             f"numeric zero padding)")
        cols = F.unfold(inp, layer.kernel_size, dilation=layer.dilation, padding=layer.padding, stride=layer.stride)
        rows = cols.transpose(1, 2).reshape(-1, cols.shape[1])
        return rows.reshape(rows.shape[0], layer.in_channels, -1) if depthwise else rows
    return inp.reshape(-1, inp.shape[-1])


@torch.no_grad()
def layer_inputs(model: nn.Module, layer: nn.Module, x: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """The inputs `layer` receives while `model` runs on x, as the rows of `input_rows` (a Linear's
    flattened to rows of in_features, a Conv2d's unfolded to patches)."""
    seen: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda m, inp, out: seen.append(input_rows(m, inp[0].detach())))
    try:
        for i in range(0, len(x), batch_size):
            model(x[i:i + batch_size])
    finally:
        handle.remove()
    return torch.cat(seen)


@dataclass
class Layerwise:
    """The set-up of a one-layer-after-another verb (GPTQ, Wanda): the model it works on (a copy unless
    in place, in eval mode), its evaluation before, its size before, the Linear layers to treat (in
    model order) and the calibration windows (None without data)."""

    model: nn.Module
    before: EvalResult | None
    size_before: metrics.Size
    layers: dict[str, nn.Linear]
    calibration: torch.Tensor | None


def layerwise_setup(model: nn.Module, data: Dataset | None, layers: tuple[str, ...] | None, calibration: int,
                    owner: str, inplace: bool = False, before: EvalResult | None = None) -> Layerwise:
    """Copy (unless `inplace`), evaluate (unless `before` is given), pick the Linear layers named in
    `layers` (None: every Linear but the last, the output head; an unknown name raises, naming
    `owner`.layers) and take the first `calibration` training windows."""
    linears = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    check_layer_names(owner, "layers", layers, linears)  # before any work
    model = model if inplace else copy.deepcopy(model)
    model.eval()
    if before is None and data is not None:
        before = evaluate(model, data.test)
    linears = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    names = list(layers) if layers is not None else list(linears)[:-1]
    calib = data.train.tensors(calibration)[0] if data is not None else None
    return Layerwise(model, before, metrics.model_size(model), {n: linears[n] for n in names}, calib)
