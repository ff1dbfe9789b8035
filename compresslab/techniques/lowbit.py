"""Ternary and binary weights, model level: `apply_lowbit(model, LowBitConfig, data)`.

Each chosen layer's weight gets a parametrization (lowbitops.FakeLowBit): the forward pass computes
with alpha * t (ternary, one alpha per layer) or alpha_c * sign(w) (binary, one alpha per output
channel), the backward pass is the straight-through estimator. Fine-tuning goes through
`training.train` (pass a distillation loss as `loss_fn` to learn from a teacher). At the end the
parametrization is baked in: the model's weights *are* the low-bit values, in float32, ready to be
packed (`packedfile`, 1.6 bits per ternary weight, 1 bit per binary one) or exported.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

from torch import nn
from torch.nn.utils import parametrize

from compresslab.core import metrics
from compresslab.core.data import Dataset
from compresslab.core.models import prunable_layers
from compresslab.core.params import (
    CODE_BITS,
    DATASET,
    EPOCHS,
    FRACTION,
    PROFILE,
    SEED,
    Param,
    choice,
)
from compresslab.core.report import Report
from compresslab.core.training import LossFn, TrainConfig, accuracy_fn, train
from compresslab.core.validate import (
    check_choice,
    check_config,
    check_float,
    check_layer_names,
    check_names,
)
from compresslab.techniques.lowbitops import LOWBIT_KINDS, FakeLowBit, binarize, ternarize
from compresslab.techniques.registry import TINY_TRAIN, StepContext, Technique, register, tiny_mlp

__all__ = ["LowBitConfig", "LowBitReport", "bits_per_weight", "lowbit_layers", "bake", "apply_lowbit"]


def _default_finetune() -> TrainConfig:
    return TrainConfig(epochs=2, lr=0.01, lr_schedule="cosine")


@dataclass(frozen=True)
class LowBitConfig:
    """kind: 'ternary' or 'binary'; threshold_ratio: r of the ternary threshold r * mean|w| in (0, 10];
    layers: names to quantize (None = every Linear/Conv2d); finetune: STE training (None = none)."""

    kind: str = "ternary"
    threshold_ratio: float = 0.7
    layers: tuple | None = None
    finetune: TrainConfig | None = field(default_factory=_default_finetune)

    def __post_init__(self) -> None:
        owner = "LowBitConfig"
        check_choice(owner, "kind", self.kind, LOWBIT_KINDS)
        check_float(owner, "threshold_ratio", self.threshold_ratio, 0, 10, lo_open=True)
        check_names(owner, "layers", self.layers)
        check_config(owner, "finetune", self.finetune, TrainConfig, optional=True)

    def check_layers(self, model: nn.Module) -> None:
        """layers names only Linear/Conv2d layers of `model` (ValueError naming the valid ones)."""
        check_layer_names("LowBitConfig", "layers", self.layers, prunable_layers(model))


def bits_per_weight(layer: nn.Module, kind: str) -> float:
    """Stored bits per weight: 8/5 per ternary code + one 32-bit scale per layer; 1 per binary sign
    + one 32-bit scale per output channel."""
    n = layer.weight.numel()
    if kind == "ternary":
        return 8 * math.ceil(n / 5) / n + 32 / n
    return 8 * math.ceil(n / 8) / n + 32 * layer.weight.shape[0] / n


def lowbit_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The layers of `model` whose weight carries a FakeLowBit parametrization."""
    return {n: m for n, m in prunable_layers(model).items() if parametrize.is_parametrized(m, "weight")
            and any(isinstance(p, FakeLowBit) for p in m.parametrizations.weight)}


def bake(model: nn.Module) -> nn.Module:
    """Replace each parametrized weight by its low-bit value (float32 tensor of alpha * codes), in place."""
    for layer in lowbit_layers(model).values():
        parametrize.remove_parametrizations(layer, "weight", leave_parametrized=True)
    return model


@dataclass(kw_only=True, repr=False)
class LowBitReport(Report):
    """Report of apply_lowbit: accuracies (percent) of the float model and of the baked low-bit model;
    per layer: weights, zero share, scales, stored bits per weight. Stored bytes: the packed codes and
    scales of the chosen layers + FP32 for everything else. history: the STE training, if any."""

    kind: str = "ternary"
    history: dict | None = None

    technique = "low-bit"

    def headline_extra(self) -> list[str]:
        layers = len(self.layers)
        return [f"{self.kind} weights in {layers} layer(s)"]


def _rows(model: nn.Module, names: list[str], kind: str, ratio: float) -> tuple[list[dict], dict[str, float]]:
    rows, bits = [], {}
    for name in names:
        layer = prunable_layers(model)[name]
        w = layer.weight.detach()
        if kind == "ternary":
            codes, alpha = ternarize(w, ratio)
            scales = alpha.reshape(1)
        else:
            codes, scales = binarize(w)
        bits[name] = bits_per_weight(layer, kind)
        rows.append({"layer": name, "weights": w.numel(), "zero weights %": round(100 * float((codes == 0).float().mean()), 2),
                     "scales": scales.numel(), "scale min": float(scales.min()), "scale max": float(scales.max()),
                     "bits/weight incl. scales": round(bits[name], 4)})
    return rows, bits


def apply_lowbit(model: nn.Module, config: LowBitConfig, data: Dataset | None = None, *, inplace: bool = False,
                 progress: bool | None = None, loss_fn: LossFn | None = None) -> tuple[nn.Module, LowBitReport]:
    """Ternarize or binarize the weights of a copy of `model`, train through the STE if
    config.finetune and data (loss_fn: the training loss, cross-entropy when None), bake the low-bit
    weights in. Returns the model (plain layers, low-bit float32 weights) and the report."""
    accuracy = accuracy_fn(data, config.finetune)
    start = time.perf_counter()
    config.check_layers(model)
    before = accuracy(model)
    size_before = metrics.model_size(model)
    model = model if inplace else copy.deepcopy(model)
    layers = prunable_layers(model)
    names = list(config.layers) if config.layers is not None else list(layers)
    for name in names:
        if hasattr(layers[name], "weight_mask"):
            raise ValueError(f"layer {name!r} still carries a pruning mask: call masks.make_permanent first")
        parametrize.register_parametrization(layers[name], "weight", FakeLowBit(config.kind, config.threshold_ratio))
    history = None
    if config.finetune is not None and data is not None:
        history = train(model, data, config.finetune, loss_fn=loss_fn, progress=progress).to_dict()
    bake(model)
    model.eval()
    rows, bits = _rows(model, names, config.kind, config.threshold_ratio)
    stored = sum(bits.get(n, 32.0) * lay.weight.numel() / 8 for n, lay in layers.items())  # every code is stored
    stored += 4 * (metrics.parameter_count(model) - sum(lay.weight.numel() for lay in layers.values()))
    after = accuracy(model)
    return model, LowBitReport(
        config=config, kind=config.kind, accuracy_before=before, accuracy_after=after,
        size_before=size_before, size_after=metrics.model_size(model, stored_bytes=stored),
        layers=rows, history=history, seconds=time.perf_counter() - start)


# ----------------------------------------------------------------- registration

def _recipe_step(model: nn.Module, config: LowBitConfig, data: Dataset, context: StepContext) -> tuple[nn.Module, Report]:
    """A recipe's lowbit step; with context.teacher_temperature set, trained with the distillation
    loss from the recipe's starting (dense) model."""
    from compresslab.techniques.distillation import distillation_loss_fn

    loss = None if context.teacher_temperature is None else distillation_loss_fn(
        context.dense, context.teacher_temperature, context.teacher_alpha)
    return apply_lowbit(model, config, data, progress=context.progress, loss_fn=loss)


register(Technique(
    name="lowbit", apply=apply_lowbit, config=LowBitConfig,
    example=lambda: (tiny_mlp(), LowBitConfig(kind="ternary", finetune=TINY_TRAIN), {}),
    verb="lowbit", step=_recipe_step, teacher=True, notebook="08_pareto_frontier",
    params={
        "profile": PROFILE, "dataset": DATASET, "model_name": choice("lenet300", "lenet5"),
        "runtime": choice("onnxruntime", "openvino"), "finetune_epochs": EPOCHS, "sparsity": FRACTION,
        "student_hidden": Param("int", 1, 10000), "ternary_ratio": Param("float", 0, 10, lo_open=True),
        "dc_iterations": Param("int", 1, 100), "dc_fc_bits": CODE_BITS,
        "sram_kb": Param("float", 0, 10**7, lo_open=True), "rounds": Param("int", 1, 1000),
        "results_dir": Param("text"), "budget_kb": Param("float", 0, 10**7, lo_open=True),
        "budget_ms": Param("float", 0, 10**4, lo_open=True), "budget_accuracy": Param("float", 0, 100),
        "budget_batch": choice(1, 256), "seed": SEED,
    }))
