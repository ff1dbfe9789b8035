"""The set-up every one-layer-after-another verb shares (GPTQ, Wanda, SmoothQuant): the inputs a layer
receives on calibration data, and the copy / evaluation / layer choice / calibration windows."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from compresslab.core import metrics
from compresslab.core.data import Dataset
from compresslab.core.training import EvalResult, evaluate
from compresslab.core.validate import check_layer_names

__all__ = ["layer_inputs", "Layerwise", "layerwise_setup"]


@torch.no_grad()
def layer_inputs(model: nn.Module, layer: nn.Module, x: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """The inputs `layer` receives while `model` runs on x (flattened to rows of in_features)."""
    seen: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda m, inp, out: seen.append(inp[0].detach().reshape(-1, inp[0].shape[-1])))
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
