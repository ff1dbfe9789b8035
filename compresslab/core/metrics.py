"""The one size ledger, sparsity tables, MAC counts and latency timing.

Sizes: dense FP32 bytes = 4 * params. Every notebook reports compression against the dense FP32
bytes of the same architecture, so ratios from different techniques are comparable.
"""

from __future__ import annotations

import gzip
import io
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from compresslab.core.models import is_convnet, prunable_layers

__all__ = [
    "effective_weight",
    "LayerSize",
    "SizeReport",
    "serialized_bytes",
    "size_report",
    "sparsity_table",
    "weight_sparsity",
    "macs",
    "Latency",
    "latency",
    "SpeedTable",
    "latency_rounds",
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
    torch_save_bytes / gzip_bytes: a real serialisation of the state dict and its gzip;
    file_bytes: the size of a technique's own file (Deep Compression), when there is one.
    """

    layers: list[LayerSize]
    other_params: int
    torch_save_bytes: int
    gzip_bytes: int
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
) -> SizeReport:
    """The size ledger of `model`.

    bits_per_weight: an analytic encoding, per layer name or one number for all weight tensors;
    encoded bits of a layer = bits * nonzeros + 32 * bias (pass None to leave it out).
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
    save_bytes, gz_bytes = serialized_bytes(model)
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
    """Fraction of zero entries over all Linear/Conv weights."""
    total = nz = 0
    for layer in prunable_layers(model).values():
        w = effective_weight(layer)
        total += w.numel()
        nz += int((w != 0).sum())
    return 1.0 - nz / total


def macs(model: nn.Module, input_shape: Sequence[int] = (1, 28, 28)) -> dict[str, int]:
    """Multiply-accumulates per layer for one example: Linear in*out, Conv out_elems*in/groups*k*k."""
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


@dataclass
class Latency:
    """Median (and spread) of wall-clock time per call, in milliseconds."""

    label: str
    batch_size: int
    median_ms: float
    p10_ms: float
    p90_ms: float
    repeats: int
    threads: int

    def to_dict(self) -> dict:
        return asdict(self)


def latency(
    fn: Callable[[torch.Tensor], object] | nn.Module,
    batch_sizes: Sequence[int] = (1, 256),
    input_shape: Sequence[int] = (1, 28, 28),
    repeats: int = 50,
    warmup: int = 5,
    label: str = "",
    threads: int | None = None,
    channels_last: bool | None = None,
    min_seconds: float = 0.0,
) -> list[Latency]:
    """Time `fn(x)` for x of shape (batch, *input_shape): warm-up, then `repeats` calls; median.

    Runs under torch.inference_mode with `threads` intra-op threads (default: current setting).
    Keeps repeating until `min_seconds` have passed, so tiny kernels get enough samples.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats={repeats} must be >= 1 and warmup={warmup} >= 0")
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    if isinstance(fn, nn.Module):
        fn.eval()
        if channels_last is None:
            channels_last = is_convnet(fn)
    results = []
    try:
        with torch.inference_mode():
            for batch in batch_sizes:
                x = torch.randn(batch, *input_shape, generator=torch.Generator().manual_seed(0))
                if channels_last and x.dim() == 4:
                    x = x.contiguous(memory_format=torch.channels_last)
                for _ in range(warmup):
                    fn(x)
                times = []
                begin = time.perf_counter()
                while len(times) < repeats or time.perf_counter() - begin < min_seconds:
                    t0 = time.perf_counter()
                    fn(x)
                    times.append(time.perf_counter() - t0)
                times_ms = sorted(1000 * t for t in times)
                q = statistics.quantiles(times_ms, n=10) if len(times_ms) > 1 else [times_ms[0]] * 9
                results.append(Latency(label, batch, statistics.median(times_ms), q[0], q[-1],
                                       len(times_ms), torch.get_num_threads()))
    finally:
        torch.set_num_threads(old_threads)
    return results


@dataclass
class SpeedTable:
    """Latencies of several variants, side by side, with ratios to a baseline label."""

    rows: list[Latency] = field(default_factory=list)
    baseline: str = ""

    def add(self, rows: list[Latency]) -> None:
        self.rows.extend(rows)

    def speedup(self, label: str, batch_size: int) -> float:
        """baseline median / `label` median at `batch_size` (> 1 means faster than baseline)."""
        base = self._get(self.baseline or self.rows[0].label, batch_size)
        return base.median_ms / self._get(label, batch_size).median_ms

    def _get(self, label: str, batch_size: int) -> Latency:
        for row in self.rows:
            if row.label == label and row.batch_size == batch_size:
                return row
        raise KeyError(f"no timing for label={label!r} at batch_size={batch_size}")

    def table(self):
        base = self.baseline or (self.rows[0].label if self.rows else "")
        out = []
        for r in self.rows:
            out.append({"variant": r.label, "batch": r.batch_size, "median ms": round(r.median_ms, 4),
                        "p10 ms": round(r.p10_ms, 4), "p90 ms": round(r.p90_ms, 4),
                        f"speed-up vs {base}": round(self.speedup(r.label, r.batch_size), 2),
                        "threads": r.threads})
        return _table(out)

    def _repr_html_(self) -> str:
        return self.table().to_html(index=False)


def latency_rounds(
    variants: dict[str, Callable[[torch.Tensor], object] | nn.Module],
    rounds: int = 5,
    **kwargs,
) -> list[Latency]:
    """Time several variants in interleaved rounds: each round runs `latency(...)` once per variant
    (in a rotated order), so a slow spell of a shared or throttled CPU hits every variant alike.

    Per (label, batch): median_ms / p10_ms / p90_ms are the medians over rounds of each round's
    median / p10 / p90; repeats counts all timed calls. `kwargs` go to `latency` (not `label`).
    """
    if rounds < 1:
        raise ValueError(f"rounds={rounds} must be >= 1")
    if not variants:
        raise ValueError("variants is empty: give {label: model or function}")
    labels = list(variants)
    per: dict[tuple[str, int], list[Latency]] = {}
    for r in range(rounds):
        for label in labels[r % len(labels):] + labels[:r % len(labels)]:
            for row in latency(variants[label], label=label, **kwargs):
                per.setdefault((label, row.batch_size), []).append(row)
    out = []
    for label in labels:
        for (lab, batch), rows in per.items():
            if lab == label:
                out.append(Latency(label, batch, statistics.median(x.median_ms for x in rows),
                                   statistics.median(x.p10_ms for x in rows),
                                   statistics.median(x.p90_ms for x in rows),
                                   sum(x.repeats for x in rows), rows[-1].threads))
    return out
