"""Deep Compression (Han et al. 2016): prune -> share weights -> Huffman-code, into a real file.

The pipeline: prune with retraining (pruning.apply_pruning), share weights with k-means and
fine-tune the centroids (sharing.apply_sharing), then write the file whose format lives in
`compressedfile` (codebook, Huffman-coded cluster indices and relative positions, bias; header,
metadata and CRC-32) and load it back. `PAPER` holds the paper's reported results, which
`paper_summary` compares a run with.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType

import numpy as np
import torch
from torch import nn

from compresslab.core import metrics
from compresslab.core.data import Dataset
from compresslab.core.models import prunable_layers
from compresslab.core.params import CODE_BITS, DATASET, PROFILE, SEED, WEIGHT, Param, choice
from compresslab.core.report import Report
from compresslab.core.training import LossFn, evaluate
from compresslab.core.validate import (
    check_bits,
    check_choice,
    check_config,
    check_float,
    check_layer_names,
    check_per_layer,
    nested,
)
from compresslab.techniques.compressedfile import (
    decode_bytes,
    encode_model,
    load,
    model_from_state,
    save,
)
from compresslab.techniques.distillation import (
    check_alpha,
    check_temperature,
    distillation_loss_fn,
)
from compresslab.techniques.filelayers import (
    LayerRecord,
    relative_encode,
    table_bytes,
    table_size,
)
from compresslab.techniques.huffman import codewords, symbol_counts
from compresslab.techniques.masks import make_permanent
from compresslab.techniques.pruning import PruneConfig, PruningReport, apply_pruning
from compresslab.techniques.registry import StepContext, Technique, register, tiny_mlp
from compresslab.techniques.sharing import ShareConfig, SharingReport, apply_sharing

__all__ = [
    "EncodeConfig", "DeepCompressionConfig", "std_threshold_sparsity", "layer_table",
    "DeepCompressionReport", "stage_sizes", "prune_stage", "share_stage", "Encoded", "encode_stage",
    "load_stage", "apply_deep_compression", "byte_parts", "stream_statistics", "stage_accuracies",
    "PaperResult", "PAPER", "paper_summary"
]

# ----------------------------------------------------------------- the pipeline

@dataclass(frozen=True)
class EncodeConfig:
    """How the file stores positions: bits of a relative index (gap) in conv / fc layers (paper: 8 / 5)."""

    conv_index_bits: int = 8
    fc_index_bits: int = 5

    def __post_init__(self) -> None:
        owner = "EncodeConfig"
        check_bits(owner, "conv_index_bits", self.conv_index_bits, 1, 16)
        check_bits(owner, "fc_index_bits", self.fc_index_bits, 1, 16)

    def index_bits_for(self, layer: nn.Module) -> int:
        return self.conv_index_bits if isinstance(layer, nn.Conv2d) else self.fc_index_bits


def _default_prune() -> PruneConfig:
    return PruneConfig(sparsity=0.9, scope="layer", schedule="iterative", iterations=3)


@dataclass(frozen=True)
class DeepCompressionConfig:
    """Prune -> share -> Huffman-code, one config per stage.

    prune: the PruneConfig of pruning.apply_pruning (Han et al.: layer scope, iterative, per-layer
    rates in layer_sparsity). threshold_std: Han et al.'s rule instead of fixed rates, prune
    |w| < threshold_std * std(w) per layer (needs prune.scope='layer' and no layer_sparsity).
    share: the ShareConfig of sharing.apply_sharing (cluster-index bits 8 / 5, centroid fine-tuning).
    encode: relative-index bits of the file. Retraining loss: cross-entropy with the labels when
    `distill_temperature` is None; else the dense model teaches its pruned copy
    (distillation.kd_loss at T = distill_temperature, weight `distill_alpha` on the soft term) in
    both the pruning and the centroid fine-tuning.
    """

    prune: PruneConfig = field(default_factory=_default_prune)
    share: ShareConfig = field(default_factory=ShareConfig)
    encode: EncodeConfig = field(default_factory=EncodeConfig)
    threshold_std: float | dict | None = None
    distill_temperature: float | None = None
    distill_alpha: float = 0.9

    def __post_init__(self) -> None:
        owner = "DeepCompressionConfig"
        check_config(owner, "prune", self.prune, PruneConfig)
        check_config(owner, "share", self.share, ShareConfig)
        check_config(owner, "encode", self.encode, EncodeConfig)
        if self.distill_temperature is not None:
            check_temperature(self.distill_temperature, "distill_temperature", owner)
        check_alpha(self.distill_alpha, "distill_alpha", owner)
        if self.threshold_std is not None:
            if self.prune.layer_sparsity is not None:
                raise ValueError(f"{owner}: give prune.layer_sparsity or threshold_std, not both")
            if self.prune.scope != "layer":
                raise ValueError(f"{owner}.threshold_std sets per-layer rates: prune.scope={self.prune.scope!r} "
                                 f"must be 'layer'")
            if isinstance(self.threshold_std, dict):
                check_per_layer(owner, "threshold_std", self.threshold_std, lambda o, f, v: check_float(o, f, v, 0, 10))
            else:
                check_float(owner, "threshold_std", self.threshold_std, 0, 10)

    def check_layers(self, model: nn.Module) -> None:
        """Every per-layer mapping of the stages (prune.layer_sparsity, share.layer_bits and layers,
        threshold_std) names only Linear/Conv2d layers of `model`: checked before the first stage trains."""
        owner = "DeepCompressionConfig"
        with nested(owner, "prune", "PruneConfig"):
            self.prune.check_layers(model)
        with nested(owner, "share", "ShareConfig"):
            self.share.check_layers(model)
        if isinstance(self.threshold_std, dict):
            check_layer_names(owner, "threshold_std", self.threshold_std, prunable_layers(model))

    def retrain_loss(self, dense: nn.Module) -> LossFn | None:
        """The loss_fn for retraining: None (labels only), or distillation from a frozen copy of `dense`."""
        if self.distill_temperature is None:
            return None
        return distillation_loss_fn(copy.deepcopy(dense), self.distill_temperature, self.distill_alpha)

    def layer_bits(self, model: nn.Module) -> tuple[dict[str, int], dict[str, int]]:
        """(relative-index bits, cluster-index bits) of every Linear/Conv2d layer of `model`."""
        layers = prunable_layers(model)
        return ({n: self.encode.index_bits_for(m) for n, m in layers.items()},
                {n: self.share.bits_for(n, m) for n, m in layers.items()})


def std_threshold_sparsity(model: nn.Module, threshold_std: float | dict) -> dict[str, float]:
    """Per-layer sparsity of Han et al.'s rule: prune |w| < q * std(w) (q per layer or one q)."""
    if isinstance(threshold_std, dict):
        check_layer_names("", "threshold_std", threshold_std, prunable_layers(model))
    out = {}
    for name, layer in prunable_layers(model).items():
        q = threshold_std.get(name, 0.0) if isinstance(threshold_std, dict) else threshold_std
        w = metrics.effective_weight(layer)
        out[name] = min(float((w.abs() < q * w.std()).float().mean()), 0.999)
    return out


def layer_table(records: list[LayerRecord], file_bytes: int, dense_bytes: int) -> list[dict]:
    """Rows in the shape of Han et al.'s Tables 2 and 3, plus a total row from the file size.

    Bits are per non-zero weight. P+Q: fixed-width cluster index (b) and gap (r) bits with the
    codebook and bias at their stored precision; P+Q+H: the Huffman-coded streams. Compress rate: stored bytes / dense FP32 bytes."""
    rows = []
    for r in records:
        n_bias = 0 if r.bias is None else r.bias.size
        dense = 4 * (r.numel + n_bias)
        nnz = max(r.nnz, 1)
        fixed_bits = r.nnz * r.bits + r.n_gaps * r.index_bits + 8 * r.value_bytes * (len(r.codebook) + n_bias)
        stored = len(r.body())
        rows.append({
            "layer": r.name, "weights": r.numel, "weights kept %": round(100 * r.nnz / r.numel, 2),
            "weight bits (P+Q)": r.bits, "weight bits (P+Q+H)": round(8 * len(r.weight_stream) / nnz, 2),
            "index bits (P+Q)": round(r.index_bits * r.n_gaps / nnz, 2),
            "index bits (P+Q+H)": round(8 * len(r.index_stream) / nnz, 2),
            "compress rate (P+Q) %": round(100 * fixed_bits / 8 / dense, 2),
            "compress rate (P+Q+H) %": round(100 * stored / dense, 2), "bytes": stored,
            "codebook + bias": {2: "FP16", 4: "FP32"}[r.value_bytes],
        })
    weights = sum(r.numel for r in records)
    nnz = sum(r.nnz for r in records)
    rows.append({"layer": "total (file)", "weights": weights, "weights kept %": round(100 * nnz / weights, 2),
                 "compress rate (P+Q+H) %": round(100 * file_bytes / dense_bytes, 2), "bytes": file_bytes,
                 "compression x": round(dense_bytes / file_bytes, 1)})
    return rows


@dataclass(kw_only=True, repr=False)
class DeepCompressionReport(Report):
    """Report of apply_deep_compression. Accuracies in percent: before = dense, after = the model
    loaded back from the file; accuracy_pruned / accuracy_shared after those stages. stages: the
    size ledger per stage; layers: Han et al.'s Table 2/3 rows. Stored bytes: the file's bytes."""

    stages: list[dict] = field(default_factory=list)
    file_bytes: int = 0
    dense_bytes: int = 0
    accuracy_pruned: float | None = None
    accuracy_shared: float | None = None
    bit_exact: bool = False
    pruning: PruningReport | None = None
    sharing: SharingReport | None = None

    technique = "deep compression"

    def headline_extra(self) -> list[str]:
        return [f"file {self.file_bytes:,} bytes vs dense FP32 {self.dense_bytes:,} bytes",
                f"loaded back bit-exact: {self.bit_exact}"]

    def stage_table(self):
        import pandas as pd

        return pd.DataFrame(self.stages)

    def extra_tables(self) -> list:
        return [self.stage_table()]


def stage_sizes(dense: nn.Module, pruned: nn.Module, shared: nn.Module, config: DeepCompressionConfig,
                file_bytes: int) -> list[dict]:
    """The size ledger at each stage, against the dense FP32 bytes.

    pruned: 32-bit values + relative indices; shared: b-bit cluster indices + relative indices
    (fixed width); Huffman: the file's bytes. gzip: torch.save of each model, gzipped."""
    idx_bits, share_bits = config.layer_bits(dense)
    layers = prunable_layers(dense)
    rows, ref = [], None
    for stage, model, bits in (("dense", dense, None), ("pruned", pruned, {n: 32 + idx_bits[n] for n in layers}),
                               ("shared", shared, {n: share_bits[n] + idx_bits[n] for n in layers})):
        rep = metrics.size_report(model, bits_per_weight=bits, reference_bytes=ref, serialized=True)
        ref = ref or rep.dense_bytes
        size = rep.encoded_bytes if bits is not None else rep.dense_bytes
        rows.append({"stage": stage, "nonzeros": rep.nonzeros, "bytes": size, "compression x": ref / size,
                     "gzip bytes": rep.gzip_bytes})
    rows.append({"stage": "huffman (file)", "nonzeros": rows[-1]["nonzeros"], "bytes": file_bytes,
                 "compression x": ref / file_bytes, "gzip bytes": None})
    return rows


def stage_accuracies(stages: list[dict], accuracies: Sequence[float]) -> list[dict]:
    """`stage_sizes`' rows with each stage's accuracy ("accuracy %", 2 decimals) beside its bytes,
    in the stages' order: dense, pruned, shared, the file."""
    if len(accuracies) != len(stages):
        raise ValueError(f"stage_accuracies: {len(accuracies)} accuracies for {len(stages)} stages")
    return [{**row, "accuracy %": round(float(acc), 2)} for row, acc in zip(stages, accuracies, strict=True)]


@dataclass(frozen=True)
class PaperResult:
    """One model as Han, Mao and Dally (2016) report it, the reported numbers: the per-layer
    pruning rates (fraction removed), the whole pipeline's compression factor, and the error
    increase a reproduction may show (points; the paper's own change is below zero)."""

    layer_sparsity: Mapping[str, float]
    compression_x: float
    max_error_increase_points: float = 0.1


PAPER = MappingProxyType({
    "lenet300": PaperResult(MappingProxyType({"fc1": 0.92, "fc2": 0.91, "fc3": 0.74}), 40.0),
    "lenet5": PaperResult(MappingProxyType({"conv1": 0.34, "conv2": 0.88, "fc1": 0.92, "fc2": 0.81}), 39.0),
})


def paper_summary(model_name: str, dense_accuracy: float, loaded_accuracy: float, dense_bytes: int,
                  file_bytes: int, stages: list[dict]) -> dict:
    """The headline of a run against the paper: errors (100 - accuracy, percent), the error increase
    (points), the compression factors of the file and of each stage (dense bytes / bytes; gzip of
    the dense and the shared model), and whether the paper's compression and accuracy are met
    (compression_x >= the paper's factor; increase <= its allowance, with 1e-9 for rounding)."""
    check_choice("paper_summary", "model_name", model_name, tuple(PAPER))
    paper = PAPER[model_name]
    by_stage = {row["stage"]: row for row in stages}
    increase = dense_accuracy - loaded_accuracy
    return {"dense_error_pct": 100 - dense_accuracy, "compressed_error_pct": 100 - loaded_accuracy,
            "error_increase_points": increase, "compression_x": dense_bytes / file_bytes,
            "pruned_compression_x": by_stage["pruned"]["compression x"],
            "shared_compression_x": by_stage["shared"]["compression x"],
            "gzip_dense_compression_x": dense_bytes / by_stage["dense"]["gzip bytes"],
            "gzip_shared_compression_x": dense_bytes / by_stage["shared"]["gzip bytes"],
            "paper_compression_x": paper.compression_x,
            "paper_max_error_increase_points": paper.max_error_increase_points,
            "compression_target_met": dense_bytes / file_bytes >= paper.compression_x,
            "accuracy_target_met": increase <= paper.max_error_increase_points + 1e-9}


# ----------------------------------------------------------------- the stages, then the chain

def prune_stage(dense: nn.Module, config: DeepCompressionConfig, data: Dataset, *, progress: bool | None = None,
                loss_fn: LossFn | None = None) -> tuple[nn.Module, PruningReport]:
    """Stage 1: prune a copy of `dense` with config.prune (rates from threshold_std if set) and retrain."""
    prune = config.prune
    if config.threshold_std is not None:
        prune = replace(prune, layer_sparsity=std_threshold_sparsity(dense, config.threshold_std))
    return apply_pruning(dense, prune, data, progress=progress, loss_fn=loss_fn)


def share_stage(pruned: nn.Module, config: DeepCompressionConfig, data: Dataset, *, progress: bool | None = None,
                loss_fn: LossFn | None = None) -> tuple[nn.Module, SharingReport]:
    """Stage 2: k-means-share a copy of `pruned` with config.share and fine-tune the centroids."""
    return apply_sharing(pruned, config.share, data, progress=progress, loss_fn=loss_fn)


@dataclass
class Encoded:
    """Stage 3's output: the file's bytes (written to `path` when given) and what it decodes to."""

    content: bytes
    path: Path | None
    records: list[LayerRecord]
    state: dict
    meta: dict

    @property
    def file_bytes(self) -> int:
        return len(self.content)


def encode_stage(shared: nn.Module, config: DeepCompressionConfig, path: str | os.PathLike | None = None) -> Encoded:
    """Stage 3: Huffman-code `shared` into the file format (saved to `path`, or kept in memory)."""
    index_bits, bits = config.layer_bits(shared)
    if path is not None:
        save(shared, path, index_bits, bits)
        content = Path(path).read_bytes()
    else:
        content, _ = encode_model(shared, index_bits, bits)
    meta, state, records = decode_bytes(content)
    return Encoded(content, None if path is None else Path(path), records, state, meta)


def load_stage(encoded: Encoded, shared: nn.Module) -> tuple[nn.Module, bool]:
    """Stage 4: load the model back from the file (from memory when it was not saved); True when
    every tensor of `shared` comes back bit-exact."""
    loaded = load(encoded.path, model=shared) if encoded.path is not None else model_from_state(shared, encoded.state)
    bit_exact = all(torch.equal(encoded.state[k].cpu(), v.detach().cpu()) for k, v in shared.state_dict().items())
    return loaded, bit_exact


def apply_deep_compression(
    model: nn.Module, config: DeepCompressionConfig, data: Dataset, *, inplace: bool = False,
    progress: bool | None = None, loss_fn: LossFn | None = None, path: str | os.PathLike | None = None,
) -> tuple[nn.Module, DeepCompressionReport]:
    """prune_stage, share_stage, encode_stage (to `path`, or only in memory), load_stage. Returns the
    loaded model and the report. loss_fn: the retraining loss of both stages (default:
    config.retrain_loss(model)). inplace: the dense `model` itself is pruned (not a copy)."""
    if not isinstance(data, Dataset):
        raise ValueError(f"apply_deep_compression needs a Dataset to retrain on, got {type(data).__name__}")
    start = time.perf_counter()
    config.check_layers(model)
    dense = copy.deepcopy(model)
    if loss_fn is None:
        loss_fn = config.retrain_loss(dense)
    pruned, prune_report = prune_stage(model if inplace else dense, config, data, progress=progress, loss_fn=loss_fn)
    shared, share_report = share_stage(pruned, config, data, progress=progress, loss_fn=loss_fn)
    encoded = encode_stage(shared, config, path)
    loaded, bit_exact = load_stage(encoded, shared)
    stages = stage_sizes(dense, pruned, shared, config, encoded.file_bytes)
    accuracies = (prune_report.accuracy_before, prune_report.accuracy_after, share_report.accuracy_after,
                  evaluate(loaded, data.test).accuracy)
    for row, acc in zip(stages, accuracies, strict=True):
        row["accuracy"] = acc
    dense_bytes = stages[0]["bytes"]
    report = DeepCompressionReport(
        config=config, stages=stages, layers=layer_table(encoded.records, encoded.file_bytes, dense_bytes),
        file_bytes=encoded.file_bytes, dense_bytes=dense_bytes, accuracy_before=accuracies[0],
        accuracy_pruned=accuracies[1], accuracy_shared=accuracies[2], accuracy_after=accuracies[3],
        size_before=metrics.model_size(dense), size_after=metrics.model_size(loaded, stored_bytes=encoded.file_bytes),
        bit_exact=bit_exact, seconds=time.perf_counter() - start, pruning=prune_report, sharing=share_report,
    )
    return loaded, report


# ----------------------------------------------------------------- views for the notebook

def byte_parts(records: list[LayerRecord], file_bytes: int) -> list[dict]:
    """Bytes of each part of the file, per layer, plus the header/metadata/checksum."""
    rows = []
    for r in records:
        rows.append({"layer": r.name, "codebook": r.value_bytes * len(r.codebook),
                     "code tables": table_bytes(table_size(r.weight_code.lengths))
                     + table_bytes(table_size(r.index_code.lengths)),
                     "cluster indices (Huffman)": len(r.weight_stream), "positions (Huffman)": len(r.index_stream),
                     "bias": 0 if r.bias is None else r.value_bytes * r.bias.size})
    body = sum(len(r.body()) for r in records)
    rows.append({"layer": "header", "codebook": 0, "code tables": 0, "cluster indices (Huffman)": 0,
                 "positions (Huffman)": 0, "bias": 0, "header + metadata + checksum": file_bytes - body})
    for row in rows[:-1]:
        row["header + metadata + checksum"] = 0
    return rows


def stream_statistics(record: LayerRecord) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(symbol counts, Huffman code lengths) of a layer's cluster indices and index gaps."""
    idx = record.weight_code.decode(record.weight_stream, record.nnz)
    gaps = record.index_code.decode(record.index_stream, record.n_gaps)
    return {f"{record.name}: cluster indices": (symbol_counts(idx, len(record.codebook)), record.weight_code.lengths),
            f"{record.name}: index gaps": (symbol_counts(gaps, 1 << record.index_bits), record.index_code.lengths)}


# ----------------------------------------------------------------- registration

def _recipe_step(model: nn.Module, config: DeepCompressionConfig, data: Dataset, context: StepContext) -> tuple[nn.Module, Report]:
    """A recipe's deep_compression step: the file written to context.file (if any), masks folded."""
    if context.file is not None:
        Path(context.file).parent.mkdir(parents=True, exist_ok=True)
    loaded, report = apply_deep_compression(model, config, data, progress=context.progress, path=context.file)
    return make_permanent(loaded), report


register(Technique(
    name="deep_compression", apply=apply_deep_compression, config=DeepCompressionConfig,
    example=lambda: (tiny_mlp(), DeepCompressionConfig(
        prune=PruneConfig(sparsity=0.8, scope="layer", schedule="iterative", iterations=1),
        share=ShareConfig(fc_bits=3)), {}),
    verb="deep_compression", step=_recipe_step, writes_file=".dcz", notebook="06_deep_compression",
    params={
        "profile": PROFILE, "model_name": choice("lenet300", "lenet5"), "dataset": DATASET,
        "layer_sparsity": Param("fractions", 0, 1, hi_open=True, optional=True),
        "prune_iterations": Param("int", 1, 100),
        "distill_temperature": Param("float", 1e-3, 1e4, optional=True), "distill_alpha": WEIGHT,
        "conv_bits": CODE_BITS, "fc_bits": CODE_BITS, "conv_index_bits": CODE_BITS, "fc_index_bits": CODE_BITS,
        "init": choice("linear", "density", "random"), "value_dtype": choice("float16", "float32"), "seed": SEED,
    },
    references={"huffman_code": codewords, "relative_encode": relative_encode}))
