"""Sparse variational dropout, then posterior-variance quantization, into notebook 06's file.

`apply_sparse_vd` turns every Linear / Conv2d of a trained model into its variational twin
(`variational.VDLinear` / `VDConv2d`, theta = the trained weight), trains it through
`core.training.train` on the variational objective

    loss = CE(logits, y) + beta(step) * KL(q || p) / N_train,

with beta rising linearly from 0 to `kl_weight` over the first `warmup` of the steps (a `Callback`
sets it), keeps the weights with log alpha < threshold, rounds each layer's survivors to a uniform
grid whose step is `step_scale` times the median posterior standard deviation of its kept weights
(Louizos et al. 2017: no finer than the posterior is sure), and writes the result with
`compressedfile` (the Deep Compression format: codebook, Huffman-coded value indices and gaps),
each layer with the gap width that gives it the fewest bytes. The model is loaded back from the file.
`REPORTED` holds the papers' reported points.
"""

from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import torch
import torch.nn.functional as F
from torch import nn

from compresslab.core import metrics
from compresslab.core.data import Dataset
from compresslab.core.models import prunable_layers
from compresslab.core.params import DATASET, PROFILE, SEED, WEIGHT, Param, choice
from compresslab.core.report import Report, fmt_percent, transient
from compresslab.core.training import (
    Callback,
    LossFn,
    TrainConfig,
    TrainState,
    evaluate,
    flat_targets,
    train,
)
from compresslab.core.validate import (
    check_config,
    check_float,
    check_int,
    check_layer_names,
    check_names,
    check_tensor,
)
from compresslab.techniques.compressedfile import decode_bytes, encode_model, model_from_state
from compresslab.techniques.filelayers import LayerRecord, encode_layer
from compresslab.techniques.masks import make_permanent, set_masks
from compresslab.techniques.registry import StepContext, Technique, register, tiny_mlp
from compresslab.techniques.variational import (
    layer_log_alphas,
    posterior_step,
    snap_to_grid,
    to_plain,
    to_variational,
    total_kl,
    variational_layers,
)

__all__ = ["SparseVDConfig", "KLWarmup", "vd_loss_fn", "finetune_kept", "quantize_posterior", "best_index_bits", "encode_sparse",
           "SparseVDReport", "apply_sparse_vd", "mask_overlap", "ReportedPoint", "REPORTED"]


def _default_train() -> TrainConfig:
    return TrainConfig(epochs=10, lr=1e-3, optimizer="adam", lr_schedule="cosine")


@dataclass(frozen=True)
class SparseVDConfig:
    """train: the training of the variational model (Adam, from the trained weights); kl_weight: the
    final weight beta of the KL term per training example (1: the ELBO); warmup: the fraction of the
    steps over which beta rises linearly from 0; threshold: keep log alpha < threshold (paper: 3);
    init_log_sigma2: log sigma^2 of every weight at the start (alpha tiny: the dense model);
    step_scale: quantization step = step_scale * median posterior sigma of a layer's kept weights;
    max_index_bits: the widest gap tried per layer; layers: the layers made variational (None: all);
    finetune: after masking, train the kept theta without noise (masks through torch's prune, the same
    loss_fn without the KL) before quantizing (None: no fine-tuning)."""

    train: TrainConfig = field(default_factory=_default_train)
    kl_weight: float = 1.0
    warmup: float = 0.3
    threshold: float = 3.0
    init_log_sigma2: float = -10.0
    step_scale: float = 1.0
    max_index_bits: int = 12
    layers: tuple[str, ...] | None = None
    finetune: TrainConfig | None = None

    def __post_init__(self) -> None:
        owner = "SparseVDConfig"
        check_config(owner, "train", self.train, TrainConfig)
        check_config(owner, "finetune", self.finetune, TrainConfig, optional=True)
        check_float(owner, "kl_weight", self.kl_weight, 0, 1e3)
        check_float(owner, "warmup", self.warmup, 0, 1)
        check_float(owner, "threshold", self.threshold, -10, 10)
        check_float(owner, "init_log_sigma2", self.init_log_sigma2, -20, 0)
        check_float(owner, "step_scale", self.step_scale, 0, 100, lo_open=True)
        check_int(owner, "max_index_bits", self.max_index_bits, 1, 16)
        object.__setattr__(self, "layers", check_names(owner, "layers", self.layers))

    def check_layers(self, model: nn.Module) -> None:
        """`layers` names only Linear / Conv2d layers of `model`."""
        check_layer_names("SparseVDConfig", "layers", self.layers, prunable_layers(model))


class KLWarmup(Callback):
    """beta(step) = kl_weight * min(1, step / (warmup * total_steps)) in `value`, updated after every
    batch; `history` gets (epoch, step, beta, KL, percent of weights kept) at each epoch end."""

    def __init__(self, kl_weight: float, warmup: float) -> None:
        self.kl_weight, self.warmup = kl_weight, warmup
        self.value, self.total, self.history = 0.0, 1, []

    def beta(self, step: int) -> float:
        ramp = self.warmup * self.total
        return self.kl_weight * (min(1.0, step / ramp) if ramp > 0 else 1.0)

    def on_train_start(self, state: TrainState) -> None:
        self.total = state.total_steps
        self.value = self.beta(state.step)

    def on_batch_end(self, state: TrainState) -> None:
        self.value = self.beta(state.step)

    def on_epoch_end(self, state: TrainState) -> None:
        layers = variational_layers(state.model).values()
        kept = sum(int(m.mask().sum()) for m in layers)
        total = sum(m.weight.numel() for m in layers)
        with torch.no_grad():
            kl = float(total_kl(state.model))
        self.history.append({"epoch": state.epoch, "step": state.step, "kl weight": self.value, "KL": kl,
                             "weights kept %": 100 * kept / max(total, 1)})


def vd_loss_fn(model: nn.Module, n_train: int, warmup: KLWarmup, loss_fn: LossFn | None = None) -> LossFn:
    """loss_fn(logits, y, x) + warmup.value * total_kl(model) / n_train (cross-entropy by default)."""
    base = loss_fn or (lambda logits, y, x: F.cross_entropy(*flat_targets(logits, y)))

    def loss(logits: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        data_term = base(logits, y, x)
        return data_term + warmup.value * total_kl(model) / n_train if warmup.value else data_term

    return loss


def finetune_kept(variational: nn.Module, data: Dataset, config: TrainConfig, threshold: float,
                  loss_fn: LossFn | None = None, progress: bool | None = None) -> None:
    """Train the kept weights (log alpha < threshold) of `variational` without noise: a plain copy
    with the masks attached through torch's prune (`masks.set_masks`) goes through `train`, and its
    kept theta (and biases) are written back into `variational` (log sigma^2 is left as it was)."""
    keep = {n: m.mask(threshold) for n, m in variational_layers(variational).items()}
    plain = to_plain(copy.deepcopy(variational), threshold)
    set_masks(plain, {n: k.float() for n, k in keep.items()})
    train(plain, data, config, loss_fn=loss_fn, progress=progress, evaluate_test=False)
    make_permanent(plain)
    tuned = prunable_layers(plain)
    with torch.no_grad():
        for name, layer in variational_layers(variational).items():
            layer.weight[keep[name]] = tuned[name].weight.to(layer.weight)[keep[name]]
            if layer.bias is not None:
                layer.bias.copy_(tuned[name].bias)


def quantize_posterior(variational: nn.Module, threshold: float, step_scale: float) -> tuple[nn.Module, list[dict]]:
    """A plain copy of `variational`: weights with log alpha >= threshold zeroed, the rest snapped to each
    layer's grid (`posterior_step`, `snap_to_grid`), biases rounded to FP16. Returns (model, per-layer rows)."""
    values, rows = {}, []
    for name, layer in variational_layers(variational).items():
        keep = layer.mask(threshold).cpu()
        theta, log_sigma2 = layer.weight.detach().cpu(), layer.log_sigma2.detach().cpu()
        step = posterior_step(log_sigma2, keep, step_scale)
        snapped, step = snap_to_grid(theta * keep, step)
        values[name] = snapped
        distinct = int(torch.unique(snapped[snapped != 0]).numel())
        rows.append({"layer": name, "weights": theta.numel(), "kept": int(keep.sum()),
                     "kept %": round(100 * float(keep.float().mean()), 3), "step": step,
                     "distinct values": distinct, "lost to rounding": int(keep.sum()) - int((snapped != 0).sum())})
    plain = to_plain(copy.deepcopy(variational), threshold, values)
    with torch.no_grad():
        for layer in prunable_layers(plain).values():
            if layer.bias is not None:
                layer.bias.copy_(layer.bias.half().float())
    return plain, rows


def best_index_bits(name: str, weight: torch.Tensor, bias: torch.Tensor | None, bits: int,
                    max_index_bits: int = 12) -> tuple[int, LayerRecord]:
    """The gap width r in [1, max_index_bits] whose layer record (Huffman-coded gaps with fillers every
    2^r - 1 positions, plus the code table) is smallest, and that record (ties: the narrower r)."""
    check_int("best_index_bits", "max_index_bits", max_index_bits, 1, 16)
    best = None
    for r in range(1, max_index_bits + 1):
        record = encode_layer(name, weight, bias, bits, r)
        if best is None or len(record.body()) < len(best[1].body()):
            best = (r, record)
    return best


def encode_sparse(model: nn.Module, max_index_bits: int = 12) -> tuple[bytes, list[LayerRecord], dict, dict]:
    """The file contents of a sparse, quantized plain `model` (compressedfile's format), each layer with
    bits = ceil(log2(distinct non-zero values)) and its best gap width: (content, records, bits, index bits)."""
    bits, index_bits = {}, {}
    for name, layer in prunable_layers(model).items():
        w = metrics.effective_weight(layer)
        k = int(torch.unique(w[w != 0]).numel())
        bits[name] = max(1, math.ceil(math.log2(max(k, 1))))
        if bits[name] > 16:
            raise ValueError(f"layer {name!r} has {k} distinct values, more than the file's 2^16: raise step_scale")
        index_bits[name], _ = best_index_bits(name, w, layer.bias, bits[name], max_index_bits)
    content, records = encode_model(model, index_bits, bits)
    return content, records, bits, index_bits


@dataclass(kw_only=True, repr=False)
class SparseVDReport(Report):
    """Report of apply_sparse_vd. Accuracies in percent: before = dense; accuracy_sparse = the
    variational model masked at the threshold (theta unrounded); accuracy_finetuned = the same after
    config.finetune (None without); accuracy_shared = after the
    posterior-variance quantization, in memory; after = the model loaded back from the file.
    sparsity: the fraction of the variational layers' weights that are zero in the file (dropped by the
    threshold or rounded to 0). history: per epoch the KL weight, the KL and the percent of weights kept.
    Stored bytes: the file's."""

    file_bytes: int = 0
    dense_bytes: int = 0
    accuracy_sparse: float | None = None
    accuracy_finetuned: float | None = None
    accuracy_shared: float | None = None
    bit_exact: bool = False
    sparsity: float = 0.0
    history: list[dict] = field(default_factory=list)
    variational: nn.Module | None = transient()
    trained_state: dict | None = transient()  # the variational model's state_dict before fine-tuning
    content: bytes | None = transient()

    technique = "sparse variational dropout"

    def headline_extra(self) -> list[str]:
        return [f"{100 * self.sparsity:.2f}% of weights dropped (log alpha > {self.config.threshold:g})",
                f"masked {fmt_percent(self.accuracy_sparse)}, fine-tuned {fmt_percent(self.accuracy_finetuned)}, quantized {fmt_percent(self.accuracy_shared)}",
                f"file {self.file_bytes:,} bytes vs dense FP32 {self.dense_bytes:,} bytes; bit-exact: {self.bit_exact}"]

    def history_table(self):
        import pandas as pd

        return pd.DataFrame(self.history)

    def extra_tables(self) -> list:
        return [self.history_table()]


def apply_sparse_vd(
    model: nn.Module, config: SparseVDConfig, data: Dataset, *, inplace: bool = False, progress: bool | None = None,
    loss_fn: LossFn | None = None, path: str | os.PathLike | None = None,
) -> tuple[nn.Module, SparseVDReport]:
    """Train `model`'s variational twin on `data`, mask, quantize, write the file (to `path`, or in memory)
    and load it back. loss_fn replaces the data term (cross-entropy); the KL term is always added.
    Returns (the model loaded from the file, the report)."""
    if not isinstance(data, Dataset):
        raise ValueError(f"apply_sparse_vd needs a Dataset to train on, got {type(data).__name__}")
    config.check_layers(model)
    start = time.perf_counter()
    dense = copy.deepcopy(model)
    accuracy_before = evaluate(dense, data.test).accuracy
    vd = to_variational(model if inplace else copy.deepcopy(model), config.layers, config.init_log_sigma2,
                        config.threshold)
    warmup = KLWarmup(config.kl_weight, config.warmup)
    train(vd, data, config.train, loss_fn=vd_loss_fn(vd, len(data.train), warmup, loss_fn), callbacks=[warmup],
          progress=progress, evaluate_test=False)
    accuracy_sparse = evaluate(vd, data.test).accuracy
    trained_state = {k: v.detach().clone() for k, v in vd.state_dict().items()}
    accuracy_finetuned = None
    if config.finetune is not None:
        finetune_kept(vd, data, config.finetune, config.threshold, loss_fn, progress)
        accuracy_finetuned = evaluate(vd, data.test).accuracy
    shared, rows = quantize_posterior(vd, config.threshold, config.step_scale)
    accuracy_shared = evaluate(shared, data.test).accuracy
    content, records, bits, index_bits = encode_sparse(shared, config.max_index_bits)
    if path is not None:
        from compresslab.core.io import write_bytes_atomic

        write_bytes_atomic(path, content)
        content = Path(path).read_bytes()
    _, state, _ = decode_bytes(content)
    loaded = model_from_state(shared, state)
    bit_exact = all(torch.equal(state[k].cpu(), v.detach().cpu()) for k, v in shared.state_dict().items())
    accuracy_after = evaluate(loaded, data.test).accuracy
    by_name = {r.name: r for r in records}
    for row in rows:
        record = by_name[row["layer"]]
        row.update({"bits": bits[row["layer"]], "index bits": index_bits[row["layer"]], "bytes": len(record.body()),
                    "median log alpha": round(float(layer_log_alphas(vd)[row["layer"]].median()), 3)})
    kept = sum(r["kept"] - r["lost to rounding"] for r in rows)
    weights = sum(r["weights"] for r in rows)
    report = SparseVDReport(
        config=config, accuracy_before=accuracy_before, accuracy_after=accuracy_after,
        size_before=metrics.model_size(dense), size_after=metrics.model_size(loaded, stored_bytes=len(content)),
        seconds=time.perf_counter() - start, layers=rows, file_bytes=len(content),
        dense_bytes=metrics.model_size(dense).fp32_bytes, accuracy_sparse=accuracy_sparse,
        accuracy_finetuned=accuracy_finetuned, accuracy_shared=accuracy_shared, bit_exact=bit_exact, sparsity=1 - kept / max(weights, 1),
        history=warmup.history, variational=vd, trained_state=trained_state, content=content)
    return loaded, report


def mask_overlap(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    """How far two kept sets agree: |a & b| / |a| ("shared %", percent of a's kept weights that b keeps
    too) and the Jaccard index |a & b| / |a | b| (percent); 100 for two empty sets.

    >>> {k: round(v, 2) for k, v in mask_overlap(torch.tensor([1, 1, 0, 0]), torch.tensor([1, 0, 1, 0])).items()}
    {'shared %': 50.0, 'jaccard %': 33.33}
    """
    check_tensor("a", a, allow_empty=True)
    check_tensor("b", b, allow_empty=True, shape=tuple(a.shape))
    a, b = a.bool(), b.bool()
    both, either, n_a = int((a & b).sum()), int((a | b).sum()), int(a.sum())
    return {"shared %": 100 * both / n_a if n_a else 100.0, "jaccard %": 100 * both / either if either else 100.0}


@dataclass(frozen=True)
class ReportedPoint:
    """A paper's reported point: compression (x) at a test error (percent); `measure` says what the
    compression counts ("file": stored bytes vs FP32 bytes; "params": |W| / |W != 0|)."""

    method: str
    compression_x: float
    error_pct: float
    measure: str
    source: str


REPORTED = MappingProxyType({
    "lenet300": (ReportedPoint("Deep Compression", 40.0, 1.58, "file", "Han et al. 2016"),
                 ReportedPoint("sparse VD", 68.0, 1.92, "params", "Molchanov et al. 2017"),
                 ReportedPoint("soft weight-sharing", 64.0, 1.94, "file", "Ullrich et al. 2017")),
    "lenet5": (ReportedPoint("Deep Compression", 39.0, 0.74, "file", "Han et al. 2016"),
               ReportedPoint("sparse VD", 280.0, 0.75, "params", "Molchanov et al. 2017"),
               ReportedPoint("soft weight-sharing", 162.0, 0.97, "file", "Ullrich et al. 2017")),
})


def _recipe_step(model: nn.Module, config: SparseVDConfig, data: Dataset, context: StepContext):
    """A recipe's sparse_vd step: the file written to context.file (if any)."""
    if context.file is not None:
        Path(context.file).parent.mkdir(parents=True, exist_ok=True)
    return apply_sparse_vd(model, config, data, progress=context.progress, path=context.file)


def _frontier(arch: str, epochs: float, seed: int) -> list[dict]:
    """Notebook 08: sparse variational dropout with the paper's recipe (labels only, KL weight 1, log
    alpha threshold 3), trained for 5x the notebook's fine-tuning epochs, written as notebook 06's file."""
    config = SparseVDConfig(train=TrainConfig(epochs=5 * epochs, lr=1e-3, optimizer="adam", lr_schedule="cosine",
                                              seed=seed + 1))
    return [{"name": "Sparse VD", "precision": "fp32", "family": "single", "steps": [("sparse_vd", config)]}]


register(Technique(
    name="sparse_vd", apply=apply_sparse_vd, config=SparseVDConfig,
    example=lambda: (tiny_mlp(), SparseVDConfig(train=TrainConfig(epochs=1, batch_size=64, lr=1e-3,
                                                                  optimizer="adam")), {}),
    verb="sparse_vd", step=_recipe_step, writes_file=".dcz", frontier=_frontier, notebook="10_learned_sparsity",
    params={
        "profile": PROFILE, "model_name": choice("lenet300", "lenet5"), "dataset": DATASET,
        "vd_epochs": Param("float", 0, 1000, lo_open=True, optional=True), "kl_weight": Param("float", 0, 1e3),
        "warmup": Param("float", 0, 1), "threshold": Param("float", -10, 10),
        "step_scale": Param("float", 0, 100, lo_open=True),
        "distill_temperature": Param("float", 1e-3, 1e4, optional=True), "distill_alpha": WEIGHT,
        "finetune_epochs": Param("float", 0, 1000), "seed": SEED,
    }))
