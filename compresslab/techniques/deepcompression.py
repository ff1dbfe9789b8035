"""Deep Compression (Han et al. 2016): prune -> share weights -> Huffman-code, into a real file.

The pipeline: prune with retraining (pruning.apply_pruning), share weights with k-means and
fine-tune the centroids (sharing.apply_sharing), then write the file whose format lives in
`compressedfile` (codebook, Huffman-coded cluster indices and relative positions, bias; header,
metadata and CRC-32) and load it back. The file-format names are re-exported here.
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from compresslab.core import metrics
from compresslab.core.data import Dataset
from compresslab.core.models import prunable_layers
from compresslab.core.training import LossFn, TrainConfig, evaluate
from compresslab.techniques.compressedfile import (  # noqa: F401  (re-exported: the notebook and exercises use dc.save, dc.load, ...)
    MAGIC,
    META_FIELDS,
    VERSION,
    LayerRecord,
    _check_index_bits,
    _from_state,
    _table_bytes,
    _table_size,
    decode_bytes,
    decode_layer,
    encode_layer,
    encode_model,
    infer_architecture,
    load,
    relative_decode,
    relative_encode,
    save,
)
from compresslab.techniques.distillation import (
    _check_alpha,
    _check_temperature,
    distillation_loss_fn,
)
from compresslab.techniques.huffman import symbol_counts
from compresslab.techniques.pruning import PruneConfig, apply_pruning
from compresslab.techniques.sharing import ShareConfig, apply_sharing

__all__ = [
    "DeepCompressionConfig",
    "std_threshold_sparsity",
    "layer_table",
    "DeepCompressionReport",
    "stage_sizes",
    "apply_deep_compression",
    "byte_parts",
    "stream_statistics",
]

# ----------------------------------------------------------------- the pipeline

@dataclass(frozen=True)
class DeepCompressionConfig:
    """Prune -> share -> Huffman-code.

    Pruning (iterative, layer by layer, through pruning.apply_pruning): per-layer rates
    `layer_sparsity`, else Han et al.'s threshold |w| < threshold_std * std(w) per layer, else
    one `sparsity` for every layer; `prune_iterations` rounds of prune + `prune_finetune`.
    Sharing: conv_bits / fc_bits cluster-index bits (paper: 8 / 5), `init`, centroid fine-tuning
    with `share_finetune`. Storage: relative indices in conv_index_bits / fc_index_bits (8 / 5).
    Retraining loss: cross-entropy with the labels when `distill_temperature` is None; else the
    dense model teaches its pruned copy (distillation.kd_loss at T = distill_temperature, weight
    `distill_alpha` on the soft term) in both the pruning and the centroid fine-tuning.
    """

    sparsity: float = 0.9
    layer_sparsity: dict | None = None
    threshold_std: float | dict | None = None
    prune_iterations: int = 3
    prune_finetune: TrainConfig | None = None
    conv_bits: int = 8
    fc_bits: int = 5
    layer_bits: dict | None = None
    init: str = "linear"
    kmeans_iters: int = 30
    share_finetune: TrainConfig | None = None
    conv_index_bits: int = 8
    fc_index_bits: int = 5
    distill_temperature: float | None = None
    distill_alpha: float = 0.9
    seed: int = 0

    def __post_init__(self) -> None:
        if self.distill_temperature is not None:
            _check_temperature(self.distill_temperature, "distill_temperature")
        _check_alpha(self.distill_alpha, "distill_alpha")
        if self.layer_sparsity is not None and self.threshold_std is not None:
            raise ValueError("give layer_sparsity or threshold_std, not both")
        if self.threshold_std is not None:
            values = self.threshold_std.values() if isinstance(self.threshold_std, dict) else [self.threshold_std]
            for q in values:
                if not (isinstance(q, (int, float)) and 0 <= q <= 10):
                    raise ValueError(f"threshold_std={q!r} must be in [0, 10] standard deviations")
        _check_index_bits(self.conv_index_bits, "conv_index_bits")
        _check_index_bits(self.fc_index_bits, "fc_index_bits")
        # the pruning and sharing configs validate the rest
        self.prune_config({})
        self.share_config()

    def prune_config(self, layer_sparsity: dict | None) -> PruneConfig:
        return PruneConfig(sparsity=self.sparsity, scope="layer", layer_sparsity=layer_sparsity or self.layer_sparsity,
                           schedule="iterative", iterations=self.prune_iterations, finetune=self.prune_finetune)

    def share_config(self) -> ShareConfig:
        return ShareConfig(conv_bits=self.conv_bits, fc_bits=self.fc_bits, layer_bits=self.layer_bits,
                           init=self.init, iters=self.kmeans_iters, seed=self.seed, finetune=self.share_finetune)

    def index_bits_for(self, layer: nn.Module) -> int:
        return self.conv_index_bits if isinstance(layer, nn.Conv2d) else self.fc_index_bits

    def retrain_loss(self, dense: nn.Module) -> LossFn | None:
        """The loss_fn for retraining: None (labels only), or distillation from a frozen copy of `dense`."""
        if self.distill_temperature is None:
            return None
        return distillation_loss_fn(copy.deepcopy(dense), self.distill_temperature, self.distill_alpha)


def std_threshold_sparsity(model: nn.Module, threshold_std: float | dict) -> dict[str, float]:
    """Per-layer sparsity of Han et al.'s rule: prune |w| < q * std(w) (q per layer or one q)."""
    out = {}
    for name, layer in prunable_layers(model).items():
        q = threshold_std.get(name, 0.0) if isinstance(threshold_std, dict) else threshold_std
        w = metrics.effective_weight(layer)
        out[name] = min(float((w.abs() < q * w.std()).float().mean()), 0.999)
    return out


def layer_table(records: list[LayerRecord], file_bytes: int, dense_bytes: int) -> list[dict]:
    """Rows in the shape of Han et al.'s Tables 2 and 3, plus a total row from the file size.

    Bits are per non-zero weight. P+Q: fixed-width cluster index (b) and gap (r) bits with the
    codebook; P+Q+H: the Huffman-coded streams. Compress rate: stored bytes / dense FP32 bytes."""
    rows = []
    for r in records:
        n_bias = 0 if r.bias is None else r.bias.size
        dense = 4 * (r.numel + n_bias)
        nnz = max(r.nnz, 1)
        fixed_bits = r.nnz * r.bits + r.n_gaps * r.index_bits + 32 * (len(r.codebook) + n_bias)
        stored = len(r.body())
        rows.append({
            "layer": r.name, "weights": r.numel, "weights kept %": round(100 * r.nnz / r.numel, 2),
            "weight bits (P+Q)": r.bits, "weight bits (P+Q+H)": round(8 * len(r.weight_stream) / nnz, 2),
            "index bits (P+Q)": round(r.index_bits * r.n_gaps / nnz, 2),
            "index bits (P+Q+H)": round(8 * len(r.index_stream) / nnz, 2),
            "compress rate (P+Q) %": round(100 * fixed_bits / 8 / dense, 2),
            "compress rate (P+Q+H) %": round(100 * stored / dense, 2), "bytes": stored,
        })
    weights = sum(r.numel for r in records)
    nnz = sum(r.nnz for r in records)
    rows.append({"layer": "total (file)", "weights": weights, "weights kept %": round(100 * nnz / weights, 2),
                 "compress rate (P+Q+H) %": round(100 * file_bytes / dense_bytes, 2), "bytes": file_bytes,
                 "compression x": round(dense_bytes / file_bytes, 1)})
    return rows


@dataclass
class DeepCompressionReport:
    config: DeepCompressionConfig
    stages: list[dict]  # one row per stage: accuracy, sizes
    layers: list[dict]  # the Table 2/3 rows
    file_bytes: int
    dense_bytes: int
    accuracy_dense: float | None
    accuracy_pruned: float | None
    accuracy_shared: float | None
    accuracy_loaded: float | None
    bit_exact: bool
    seconds: float
    pruning: dict = field(default_factory=dict)
    sharing: dict = field(default_factory=dict)

    @property
    def compression(self) -> float:
        """Dense FP32 bytes / bytes of the file on disk."""
        return self.dense_bytes / self.file_bytes

    def to_dict(self) -> dict:
        return {"stages": self.stages, "layers": self.layers, "file_bytes": self.file_bytes,
                "dense_bytes": self.dense_bytes, "compression": self.compression,
                "accuracy_dense": self.accuracy_dense, "accuracy_pruned": self.accuracy_pruned,
                "accuracy_shared": self.accuracy_shared, "accuracy_loaded": self.accuracy_loaded,
                "bit_exact": self.bit_exact, "seconds": self.seconds, "pruning": self.pruning,
                "sharing": self.sharing}

    def table(self):
        import pandas as pd

        return pd.DataFrame(self.layers)

    def stage_table(self):
        import pandas as pd

        return pd.DataFrame(self.stages)

    def _repr_html_(self) -> str:
        head = (f"<p>file {self.file_bytes:,} bytes vs dense FP32 {self.dense_bytes:,} bytes: "
                f"<b>{self.compression:.1f}x</b> &middot; loaded back bit-exact: {self.bit_exact} "
                f"&middot; {self.seconds:.1f} s</p>")
        return head + self.stage_table().to_html(index=False) + self.table().to_html(index=False)


def stage_sizes(dense: nn.Module, pruned: nn.Module, shared: nn.Module, config: DeepCompressionConfig,
                file_bytes: int) -> list[dict]:
    """The size ledger at each stage, against the dense FP32 bytes.

    pruned: 32-bit values + relative indices; shared: b-bit cluster indices + relative indices
    (fixed width); Huffman: the file's bytes. gzip: torch.save of each model, gzipped."""
    layers = prunable_layers(dense)
    idx_bits = {n: config.index_bits_for(m) for n, m in layers.items()}
    share_bits = {n: config.share_config().bits_for(n, m) for n, m in layers.items()}
    rows, ref = [], None
    for stage, model, bits in (("dense", dense, None), ("pruned", pruned, {n: 32 + idx_bits[n] for n in layers}),
                               ("shared", shared, {n: share_bits[n] + idx_bits[n] for n in layers})):
        rep = metrics.size_report(model, bits_per_weight=bits, reference_bytes=ref)
        ref = ref or rep.dense_bytes
        size = rep.encoded_bytes if bits is not None else rep.dense_bytes
        rows.append({"stage": stage, "nonzeros": rep.nonzeros, "bytes": size, "compression x": ref / size,
                     "gzip bytes": rep.gzip_bytes})
    rows.append({"stage": "huffman (file)", "nonzeros": rows[-1]["nonzeros"], "bytes": file_bytes,
                 "compression x": ref / file_bytes, "gzip bytes": None})
    return rows


def apply_deep_compression(
    model: nn.Module, config: DeepCompressionConfig, data: Dataset, path: str | os.PathLike | None = None,
    progress: bool | None = None,
) -> tuple[nn.Module, DeepCompressionReport]:
    """Prune (with retraining), share weights (with centroid fine-tuning), write the file (to
    `path`, or only in memory) and load it back. Returns the loaded model and the report."""
    start = time.perf_counter()
    dense = copy.deepcopy(model)

    def acc(m: nn.Module) -> float:
        return evaluate(m, data.test).accuracy

    layer_sparsity = std_threshold_sparsity(dense, config.threshold_std) if config.threshold_std is not None else None
    loss_fn = config.retrain_loss(dense)
    pruned, prune_report = apply_pruning(dense, config.prune_config(layer_sparsity), data, progress=progress,
                                         loss_fn=loss_fn)
    shared, share_report = apply_sharing(pruned, config.share_config(), data, progress=progress, loss_fn=loss_fn)
    layers = prunable_layers(shared)
    index_bits = {n: config.index_bits_for(m) for n, m in layers.items()}
    bits = {n: config.share_config().bits_for(n, m) for n, m in layers.items()}
    if path is not None:
        file_bytes = save(shared, path, index_bits, bits)
        content = Path(path).read_bytes()
    else:
        content, _ = encode_model(shared, index_bits, bits)
        file_bytes = len(content)
    _, state, records = decode_bytes(content)
    loaded = load(path, model=shared) if path is not None else _from_state(shared, state)
    bit_exact = all(torch.equal(state[k].cpu(), v.detach().cpu()) for k, v in shared.state_dict().items())
    stages = stage_sizes(dense, pruned, shared, config, file_bytes)
    dense_bytes = stages[0]["bytes"]
    report = DeepCompressionReport(
        config=config, stages=stages,
        layers=layer_table(records, file_bytes, dense_bytes), file_bytes=file_bytes, dense_bytes=dense_bytes,
        accuracy_dense=prune_report.accuracy_before, accuracy_pruned=prune_report.accuracy_after,
        accuracy_shared=share_report.accuracy_after, accuracy_loaded=acc(loaded), bit_exact=bit_exact,
        seconds=time.perf_counter() - start, pruning=prune_report.to_dict(), sharing=share_report.to_dict(),
    )
    for row, name in zip(report.stages, ("accuracy_dense", "accuracy_pruned", "accuracy_shared", "accuracy_loaded"),
                         strict=True):
        row["accuracy"] = getattr(report, name)
    return loaded, report


# ----------------------------------------------------------------- views for the notebook

def byte_parts(records: list[LayerRecord], file_bytes: int) -> list[dict]:
    """Bytes of each part of the file, per layer, plus the header/metadata/checksum."""
    rows = []
    for r in records:
        rows.append({"layer": r.name, "codebook": 4 * len(r.codebook),
                     "code tables": _table_bytes(_table_size(r.weight_code.lengths))
                     + _table_bytes(_table_size(r.index_code.lengths)),
                     "cluster indices (Huffman)": len(r.weight_stream), "positions (Huffman)": len(r.index_stream),
                     "bias (FP32)": 0 if r.bias is None else 4 * r.bias.size})
    body = sum(len(r.body()) for r in records)
    rows.append({"layer": "header", "codebook": 0, "code tables": 0, "cluster indices (Huffman)": 0,
                 "positions (Huffman)": 0, "bias (FP32)": 0, "header + metadata + checksum": file_bytes - body})
    for row in rows[:-1]:
        row["header + metadata + checksum"] = 0
    return rows


def stream_statistics(record: LayerRecord) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(symbol counts, Huffman code lengths) of a layer's cluster indices and index gaps."""
    idx = record.weight_code.decode(record.weight_stream, record.nnz)
    gaps = record.index_code.decode(record.index_stream, record.n_gaps)
    return {f"{record.name}: cluster indices": (symbol_counts(idx, len(record.codebook)), record.weight_code.lengths),
            f"{record.name}: index gaps": (symbol_counts(gaps, 1 << record.index_bits), record.index_code.lengths)}
