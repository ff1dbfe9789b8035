"""The one size ledger, sparsity tables and MAC counts (latency timing: `core.latency`, re-exported).

Sizes: dense FP32 bytes = 4 * params. Every notebook reports compression against the dense FP32
bytes of the same architecture, so ratios from different techniques are comparable.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from compresslab.core.models import prunable_layers

__all__ = [
    "effective_weight", "LayerSize", "SizeReport", "Size", "parameter_count", "model_size",
    "serialized_bytes", "size_report", "sparsity_table", "weight_sparsity", "macs"
]


def _table(rows: list[dict]):
    import pandas as pd

    return pd.DataFrame(rows)


def effective_weight(layer: nn.Module) -> torch.Tensor:
    """The weight a layer computes with: weight_orig * weight_mask if pruned with torch's prune."""
    if hasattr(layer, "weight_mask"):
        return (layer.weight_orig * layer.weight_mask).detach()
    return layer.weight.detach()


@dataclass(frozen=True)
class LayerSize:
    name: str
    params: int
    nonzeros: int
    dense_bytes: int
    encoded_bits: int | None = None

    @property
    def sparsity(self) -> float:
        return 1.0 - self.nonzeros / self.params if self.params else 0.0


@dataclass
class SizeReport:
    """Per-layer and total sizes of one model.

    dense_bytes = 4 * params (FP32); encoded_bits: the analytic size under some encoding (if any);
    torch_save_bytes / gzip_bytes: a real serialisation of the state dict and its gzip (None unless
    `size_report(..., serialized=True)` asked for them: serialising costs far more than counting);
    file_bytes: the size of a technique's own file (Deep Compression), when there is one.
    """

    layers: list[LayerSize]
    other_params: int
    torch_save_bytes: int | None
    gzip_bytes: int | None
    file_bytes: int | None = None
    reference_bytes: int | None = None  # dense FP32 bytes of the uncompressed architecture

    @property
    def params(self) -> int:
        return sum(layer.params for layer in self.layers) + self.other_params

    @property
    def nonzeros(self) -> int:
        return sum(layer.nonzeros for layer in self.layers) + self.other_params

    @property
    def dense_bytes(self) -> int:
        return 4 * self.params

    @property
    def encoded_bytes(self) -> float | None:
        if any(layer.encoded_bits is None for layer in self.layers):
            return None
        return (sum(layer.encoded_bits for layer in self.layers) + 32 * self.other_params) / 8

    def compression(self, bytes_: float | None = None) -> float:
        """reference dense FP32 bytes / `bytes_` (default: the best real size we have)."""
        reference = self.reference_bytes or self.dense_bytes
        if bytes_ is None:
            bytes_ = self.file_bytes or self.encoded_bytes or self.dense_bytes
        return reference / bytes_

    def to_dict(self) -> dict:
        return {
            "params": self.params, "nonzeros": self.nonzeros, "dense_bytes": self.dense_bytes,
            "encoded_bytes": self.encoded_bytes, "torch_save_bytes": self.torch_save_bytes,
            "gzip_bytes": self.gzip_bytes, "file_bytes": self.file_bytes,
            "reference_bytes": self.reference_bytes or self.dense_bytes,
            "compression": self.compression(),
            "layers": [asdict(layer) for layer in self.layers],
        }

    def table(self):
        """Per-layer rows plus a total row, as a DataFrame."""
        rows = [{"layer": lay.name, "params": lay.params, "nonzeros": lay.nonzeros,
                 "sparsity %": round(100 * lay.sparsity, 2), "dense FP32 bytes": lay.dense_bytes,
                 "encoded bytes": None if lay.encoded_bits is None else lay.encoded_bits / 8}
                for lay in self.layers]
        rows.append({"layer": "total", "params": self.params, "nonzeros": self.nonzeros,
                     "sparsity %": round(100 * (1 - self.nonzeros / self.params), 2),
                     "dense FP32 bytes": self.dense_bytes, "encoded bytes": self.encoded_bytes})
        return _table(rows)

    def _repr_html_(self) -> str:
        return self.table().to_html(index=False)

    def __repr__(self) -> str:
        return self.table().to_string(index=False)


def parameter_count(model: nn.Module) -> int:
    """Number of parameters the model computes with: each pruned weight counts once (weight_orig,
    not its mask), a tied or shared tensor once (model.parameters() skips repeats)."""
    return sum(p.numel() for p in model.parameters())


@dataclass(frozen=True)
class Size:
    """One model's place in the ledger: params, non-zeros, dense FP32 bytes = 4 * params, and
    stored bytes, the bytes of the form a technique keeps it in (FP32 when it has no other)."""

    params: int
    nonzeros: int
    fp32_bytes: int
    stored_bytes: float

    @property
    def compression(self) -> float:
        """fp32_bytes / stored_bytes of this model (ratios across models use the reference's bytes)."""
        return self.fp32_bytes / self.stored_bytes if self.stored_bytes else float("inf")


def model_size(model: nn.Module, stored_bytes: float | None = None,
               bits_per_weight: dict[str, float] | float | None = None) -> Size:
    """The ledger's Size of `model` without serialising it: params and non-zeros of its
    Linear/Conv weights (+ all other parameters), fp32_bytes = 4 params; stored_bytes as given, else
    the analytic bytes under `bits_per_weight` (see size_report), else fp32_bytes."""
    layers = prunable_layers(model)
    counted: set[int] = set()
    params = nonzeros = encoded_bits = 0
    for name, layer in layers.items():
        w = effective_weight(layer)
        bias = layer.bias.numel() if layer.bias is not None else 0
        nz = int((w != 0).sum())
        params += w.numel() + bias
        nonzeros += nz + bias
        bits = bits_per_weight.get(name, 32) if isinstance(bits_per_weight, dict) else bits_per_weight
        encoded_bits += (32 if bits is None else bits) * nz + 32 * bias
        counted.update(id(p) for p in layer.parameters(recurse=False))
    other = sum(p.numel() for p in model.parameters() if id(p) not in counted and not _is_prune_orig(model, p))
    params, nonzeros = params + other, nonzeros + other
    if stored_bytes is None:
        stored_bytes = (encoded_bits + 32 * other) / 8 if bits_per_weight is not None else 4 * params
    return Size(params, nonzeros, 4 * params, stored_bytes)


def serialized_bytes(model: nn.Module) -> tuple[int, int]:
    """(bytes of torch.save(state_dict), bytes of its gzip at level 9)."""
    buffer = io.BytesIO()
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    torch.save(state, buffer)
    raw = buffer.getvalue()
    return len(raw), len(gzip.compress(raw, compresslevel=9, mtime=0))


def size_report(
    model: nn.Module,
    bits_per_weight: dict[str, float] | float | None = None,
    file_bytes: int | None = None,
    reference_bytes: int | None = None,
    serialized: bool = False,
) -> SizeReport:
    """The size ledger of `model`.

    bits_per_weight: an analytic encoding, per layer name or one number for all weight tensors;
    encoded bits of a layer = bits * nonzeros + 32 * bias (pass None to leave it out).
    serialized: also measure torch.save bytes and their gzip (else those two fields are None).

    >>> model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    >>> with torch.no_grad():
    ...     _ = model[0].weight[0].zero_()  # 4 of the 18 weights
    >>> r = size_report(model, bits_per_weight=8)
    >>> r.params, r.nonzeros, r.dense_bytes  # 4*3 + 3 + 3*2 + 2 parameters, 4 bytes each in FP32
    (23, 19, 92)
    >>> r.encoded_bytes  # (8 bits * 14 non-zero weights + 32 bits * 5 biases) / 8
    34.0
    >>> r.torch_save_bytes is None, size_report(model, serialized=True).torch_save_bytes > 0
    (True, True)
    """
    layers = []
    counted = set()
    for name, layer in prunable_layers(model).items():
        w = effective_weight(layer)
        bias = layer.bias.numel() if layer.bias is not None else 0
        params = w.numel() + bias
        nonzeros = int((w != 0).sum()) + bias
        bits = bits_per_weight.get(name) if isinstance(bits_per_weight, dict) else bits_per_weight
        encoded = None if bits is None else int(round(bits * int((w != 0).sum()) + 32 * bias))
        layers.append(LayerSize(name, params, nonzeros, 4 * params, encoded))
        counted.update(id(p) for p in layer.parameters(recurse=False))
    other = sum(p.numel() for p in model.parameters() if id(p) not in counted and not _is_prune_orig(model, p))
    save_bytes, gz_bytes = serialized_bytes(model) if serialized else (None, None)
    return SizeReport(layers, other, save_bytes, gz_bytes, file_bytes, reference_bytes)


def _is_prune_orig(model: nn.Module, p: nn.Parameter) -> bool:
    """True for the `weight_orig` parameters that torch.nn.utils.prune adds (already counted)."""
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if param is p and name.endswith("_orig"):
                return True
    return False


def sparsity_table(model: nn.Module):
    """Per-layer weights, non-zeros and sparsity (%) of the Linear/Conv weights, as a DataFrame."""
    rows = []
    for name, layer in prunable_layers(model).items():
        w = effective_weight(layer)
        nz = int((w != 0).sum())
        rows.append({"layer": name, "shape": tuple(w.shape), "weights": w.numel(), "nonzeros": nz,
                     "sparsity %": round(100 * (1 - nz / w.numel()), 2)})
    total = sum(r["weights"] for r in rows)
    nz = sum(r["nonzeros"] for r in rows)
    rows.append({"layer": "total", "shape": "", "weights": total, "nonzeros": nz,
                 "sparsity %": round(100 * (1 - nz / total), 2)})
    return _table(rows)


def weight_sparsity(model: nn.Module) -> float:
    """Fraction of zero entries over all Linear/Conv weights.

    >>> model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    >>> with torch.no_grad():
    ...     _ = model[0].weight[0].zero_()
    >>> round(weight_sparsity(model), 4)  # 4 zeros / 18 weights (biases are not weights)
    0.2222
    """
    total = nz = 0
    for layer in prunable_layers(model).values():
        w = effective_weight(layer)
        total += w.numel()
        nz += int((w != 0).sum())
    if total == 0:
        raise ValueError(f"weight sparsity of a model without Linear/Conv2d weights ({type(model).__name__}) "
                         "is undefined")
    return 1.0 - nz / total


def macs(model: nn.Module, input_shape: Sequence[int] = (1, 28, 28)) -> dict[str, int]:
    """Multiply-accumulates per layer for one example: Linear in*out, Conv out_elems*in/groups*k*k.

    >>> from compresslab.core.models import lenet300
    >>> macs(lenet300())  # Linear: in * out per example
    {'fc1': 235200, 'fc2': 30000, 'fc3': 1000, 'total': 266200}
    """
    counts: dict[str, int] = {}
    hooks = []
    for name, layer in prunable_layers(model).items():
        def hook(mod, inputs, output, name=name):
            if isinstance(mod, nn.Linear):
                counts[name] = mod.in_features * mod.out_features
            else:
                kh, kw = mod.kernel_size
                counts[name] = output[0].numel() * (mod.in_channels // mod.groups) * kh * kw
        hooks.append(layer.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=next(model.parameters()).device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    counts["total"] = sum(counts.values())
    return counts
