"""Affine quantization from scratch, model level: fake-quant modules, calibration, PTQ and QAT.

The tensor maths (q = clamp(round(x / s) + z, q_min, q_max), qparams, the straight-through
estimator, observers) is in `quantops`; its names are re-exported here.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from compresslab.core import metrics
from compresslab.core.data import Dataset
from compresslab.core.models import (
    is_convnet,
    prepare_input,
    prunable_layers,
    replace_module,
    to_model_layout,
)
from compresslab.core.params import DATASET, EPOCHS, PROFILE, QUANT_BITS, SEED, Param, choice
from compresslab.core.report import Report
from compresslab.core.training import LossFn, TrainConfig, evaluate, train
from compresslab.core.validate import (
    check_bits,
    check_choice,
    check_config,
    check_float,
    check_int,
    check_seed,
)
from compresslab.techniques.quantlayers import (
    FakeQuantize,
    QuantConv2d,
    QuantLinear,
    plain_layers,
    quant_layers,
)
from compresslab.techniques.quantops import (
    ACT_GRANULARITIES,
    GRANULARITIES,
    OBSERVERS,
    SCHEMES,
    check_grid,
    check_percentile,
    choose_qparams,
    fake_quantize,
    quantize_affine,
    sqnr_db,
)
from compresslab.techniques.registry import TINY_TRAIN, StepContext, Technique, register, tiny_mlp

__all__ = [
    "QuantConfig", "QATConfig", "insert_fake_quant", "calibration_inputs", "calibrate",
    "QuantReport", "inputs_by_layer", "layer_outputs", "scale_overhead_bits", "quant_report", "apply_ptq",
    "apply_qat"
]

# ----------------------------------------------------------------- configs

@dataclass(frozen=True)
class QuantConfig:
    """What to quantize and how.

    weight_bits / act_bits in [2, 16] (act_bits=None keeps activations float: weight-only).
    Schemes: symmetric | asymmetric; weights per_tensor | per_channel (output channels), activations
    per_tensor. Observers: minmax | percentile | mse. Calibration: `calibration_size` random training
    examples (seeded), fed in batches of `calibration_batch`.
    """

    weight_bits: int = 8
    act_bits: int | None = 8
    weight_scheme: str = "symmetric"
    act_scheme: str = "asymmetric"
    weight_granularity: str = "per_channel"
    act_granularity: str = "per_tensor"
    weight_observer: str = "minmax"
    act_observer: str = "minmax"
    percentile: float = 99.99
    mse_grid: int = 20
    calibration_size: int = 1000
    calibration_batch: int = 250
    seed: int = 0

    def __post_init__(self) -> None:
        owner = "QuantConfig"
        check_bits(owner, "weight_bits", self.weight_bits, 2, 16)
        if self.act_bits is not None:
            check_bits(owner, "act_bits", self.act_bits, 2, 16)
        check_choice(owner, "weight_scheme", self.weight_scheme, SCHEMES)
        check_choice(owner, "act_scheme", self.act_scheme, SCHEMES)
        check_choice(owner, "weight_granularity", self.weight_granularity, GRANULARITIES)
        check_choice(owner, "act_granularity", self.act_granularity, ACT_GRANULARITIES)
        check_choice(owner, "weight_observer", self.weight_observer, OBSERVERS)
        check_choice(owner, "act_observer", self.act_observer, OBSERVERS)
        check_percentile(self.percentile, owner)
        check_grid(self.mse_grid, owner)
        check_int(owner, "calibration_size", self.calibration_size, 1, 10**7)
        check_int(owner, "calibration_batch", self.calibration_batch, 1, 10**6)
        check_seed(owner, "seed", self.seed)


@dataclass(frozen=True)
class QATConfig:
    """QAT = PTQ initialisation (quant) + fine-tuning through fake-quant (finetune).

    During fine-tuning the weight ranges follow the weights (recomputed every step with the weight
    observer); activation ranges start from calibration and, if act_momentum > 0, track each
    batch's min/max with that EMA momentum (0 keeps the calibrated ranges fixed).
    """

    quant: QuantConfig = field(default_factory=QuantConfig)
    finetune: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=2, lr=0.01, lr_schedule="cosine"))
    act_momentum: float = 0.0

    def __post_init__(self) -> None:
        owner = "QATConfig"
        check_config(owner, "quant", self.quant, QuantConfig)
        check_config(owner, "finetune", self.finetune, TrainConfig)
        check_float(owner, "act_momentum", self.act_momentum, 0, 1, hi_open=True)


# ----------------------------------------------------------------- building and calibrating

def insert_fake_quant(model: nn.Module, config: QuantConfig) -> nn.Module:
    """Swap every Linear/Conv2d of `model` (in place) for QuantLinear/QuantConv2d sharing its parameters."""
    for name, layer in list(prunable_layers(model).items()):
        if hasattr(layer, "weight_mask"):
            raise ValueError(f"layer {name!r} still carries a pruning mask: call pruning.make_permanent first")
        if isinstance(layer, (QuantLinear, QuantConv2d)):
            raise ValueError(f"layer {name!r} is already quantized")
        if isinstance(layer, nn.Conv2d):
            new = QuantConv2d(layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride,
                              padding=layer.padding, dilation=layer.dilation, groups=layer.groups,
                              bias=layer.bias is not None, padding_mode=layer.padding_mode, device="meta")
        else:
            new = QuantLinear(layer.in_features, layer.out_features, bias=layer.bias is not None, device="meta")
        new.weight, new.bias = layer.weight, layer.bias
        axis = 0 if config.weight_granularity == "per_channel" else None
        new.weight_fake_quant = FakeQuantize(config.weight_bits, config.weight_scheme, config.weight_observer,
                                             axis, config.percentile, config.mse_grid, config.seed)
        new.input_fake_quant = nn.Identity() if config.act_bits is None else FakeQuantize(
            config.act_bits, config.act_scheme, config.act_observer, None, config.percentile, config.mse_grid,
            config.seed)
        new.train(layer.training)
        replace_module(model, name, new)
    return model


def calibration_inputs(data: Dataset, n: int, seed: int = 0) -> torch.Tensor:
    """n training inputs drawn at random (seeded), normalised: the calibration set."""
    n = min(n, len(data.train))
    idx = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(seed))[:n]
    return data.train.normalise(data.train.images[idx])


@torch.no_grad()
def calibrate(model: nn.Module, inputs: torch.Tensor, batch_size: int = 250) -> nn.Module:
    """Fix every weight range from the weight itself and every activation range from `inputs`."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    layers = quant_layers(model)
    for layer in layers.values():
        layer.weight_fake_quant.observer.update(layer.weight)
        layer.weight_fake_quant.set_range_from_observer()
        if isinstance(layer.input_fake_quant, FakeQuantize):
            layer.input_fake_quant.observer.reset()
            layer.input_fake_quant.observing = True
    convnet = is_convnet(model)
    for start in range(0, len(inputs), batch_size):
        x = inputs[start:start + batch_size].to(device)
        model(to_model_layout(x, convnet))
    for layer in layers.values():
        if isinstance(layer.input_fake_quant, FakeQuantize):
            layer.input_fake_quant.set_range_from_observer()
    model.train(was_training)
    return model


# ----------------------------------------------------------------- reports

@dataclass(kw_only=True, repr=False)
class QuantReport(Report):
    """Report of apply_ptq / apply_qat: accuracy of the float and the fake-quantized model (percent),
    per-layer SQNR and bits. Stored bytes: weight_bits per weight + its scales (and zero points)
    + FP32 biases. accuracy_ptq (QAT): percent of the PTQ starting point; ledger: the size ledger."""

    method: str = "ptq"
    calibration_size: int = 0
    accuracy_ptq: float | None = None
    history: dict | None = None
    ledger: dict = field(default_factory=dict)

    technique = "quantization"

    def headline_extra(self) -> list[str]:
        c = getattr(self.config, "quant", self.config)  # QAT: the QATConfig holds the QuantConfig
        acts = "float" if c.act_bits is None else f"{c.act_bits}-bit {c.act_scheme} {c.act_observer}"
        return [f"{self.method.upper()}: weights {c.weight_bits}-bit {c.weight_scheme} {c.weight_granularity} "
                f"{c.weight_observer}, activations {acts}"]


def inputs_by_layer(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The input each Linear/Conv2d layer receives when `model` runs on x: what activation observers see."""
    return layer_outputs(model, list(prunable_layers(model)), x, inputs=True)


def layer_outputs(model: nn.Module, names: list[str], x: torch.Tensor, inputs: bool = False) -> dict[str, torch.Tensor]:
    """The output (inputs=True: the input) of each named submodule when `model` runs on x, in eval mode."""
    out: dict[str, torch.Tensor] = {}
    hooks = [model.get_submodule(n).register_forward_hook(
        lambda mod, inp, res, n=n: out.__setitem__(n, (inp[0] if inputs else res).detach())) for n in names]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(prepare_input(x, model))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return out


def scale_overhead_bits(layer: nn.Module, config: QuantConfig) -> float:
    """Extra bits per weight for the stored qparams: 32-bit scale (+ 32-bit zero point if asymmetric) per channel or tensor."""
    n_params = layer.out_channels if isinstance(layer, nn.Conv2d) else layer.out_features
    groups = n_params if config.weight_granularity == "per_channel" else 1
    per_group = 32 + (32 if config.weight_scheme == "asymmetric" else 0)
    return groups * per_group / layer.weight.numel()


def quant_report(model_q: nn.Module, model_float: nn.Module, config: QuantConfig, probe: torch.Tensor,
                 method: str, accuracy_float: float | None, accuracy_quant: float | None,
                 calibration_size: int, seconds: float) -> QuantReport:
    """Per layer: weight SQNR, output SQNR on `probe` (error accumulated up to that layer), bits, zeros, bytes.
    Accuracies in percent."""
    layers = quant_layers(model_q)
    names = list(layers)
    ref = layer_outputs(model_float, names, probe)
    got = layer_outputs(model_q, names, probe)
    bits = {n: config.weight_bits + scale_overhead_bits(layer, config) for n, layer in layers.items()}
    ledger = metrics.size_report(model_q, bits_per_weight=bits)
    sizes = {lay.name: lay for lay in ledger.layers}
    rows = []
    for n, layer in layers.items():
        fq = layer.weight_fake_quant
        with torch.no_grad():
            w = layer.weight.detach()
            w_hat = fake_quantize(w, *fq.qparams(), fq.qmin, fq.qmax, fq.axis)
        scale = fq.qparams()[0]
        rows.append({"layer": n, "weights": w.numel(), "weight bits": config.weight_bits,
                     "act bits": config.act_bits, "weight SQNR dB": round(sqnr_db(w, w_hat), 2),
                     "output SQNR dB": round(sqnr_db(ref[n], got[n]), 2),
                     "zero weights %": round(100 * float((w_hat == 0).float().mean()), 2),
                     "scale min": float(scale.min()), "scale max": float(scale.max()),
                     "bits/weight incl. scales": round(bits[n], 4),
                     "bytes": sizes[n].encoded_bits / 8, "FP32 bytes": sizes[n].dense_bytes})
    return QuantReport(
        config=config, method=method, accuracy_before=accuracy_float, accuracy_after=accuracy_quant, layers=rows,
        ledger=ledger.to_dict(), size_before=metrics.model_size(model_float),
        size_after=metrics.model_size(model_q, stored_bytes=ledger.encoded_bytes),
        calibration_size=calibration_size, seconds=seconds)


# ----------------------------------------------------------------- the model-level verbs

def _probe(calibration: torch.Tensor, data: Dataset | None) -> torch.Tensor:
    if data is not None:
        return data.test.tensors(limit=500)[0]
    return calibration[:500]


def apply_ptq(model: nn.Module, config: QuantConfig, data: Dataset | None = None, *, inplace: bool = False,
              progress: bool | None = None, loss_fn: LossFn | None = None, calibration: torch.Tensor | None = None,
              float_accuracy: float | None = None) -> tuple[nn.Module, QuantReport]:
    """Post-training quantization: insert fake-quant, calibrate ranges, no training.

    data: calibrate on `config.calibration_size` random training examples and report test accuracy;
    or calibration: a tensor of inputs (no accuracy in the report without data). float_accuracy:
    the model's known test accuracy in percent, to skip evaluating the float model again in sweeps.
    progress is unused and loss_fn must be None: PTQ trains nothing.
    """
    if loss_fn is not None:
        raise ValueError("loss_fn must be None: post-training quantization trains nothing")
    if data is not None and not isinstance(data, Dataset):
        raise ValueError(f"data must be a Dataset or None (pass input tensors as calibration=), "
                         f"got {type(data).__name__}")
    start = time.perf_counter()
    if calibration is not None:
        if not isinstance(calibration, torch.Tensor):
            raise ValueError(f"calibration must be a tensor of inputs, got {type(calibration).__name__}")
        inputs = calibration[:config.calibration_size]
    elif data is not None:
        inputs = calibration_inputs(data, config.calibration_size, config.seed)
    else:
        raise ValueError("apply_ptq needs data (a Dataset) or calibration (a tensor of inputs)")
    reference = copy.deepcopy(model)
    model_q = insert_fake_quant(model if inplace else copy.deepcopy(model), config)
    calibrate(model_q, inputs, config.calibration_batch)
    acc_float = None if data is None else (
        float_accuracy if float_accuracy is not None else evaluate(reference, data.test).accuracy)
    acc_quant = evaluate(model_q, data.test).accuracy if data is not None else None
    report = quant_report(model_q, reference, config, _probe(inputs, data), "ptq", acc_float, acc_quant,
                          len(inputs), time.perf_counter() - start)
    return model_q, report


def apply_qat(model: nn.Module, config: QATConfig, data: Dataset, *, inplace: bool = False,
              progress: bool | None = None, loss_fn: LossFn | None = None,
              float_accuracy: float | None = None) -> tuple[nn.Module, QuantReport]:
    """Quantization-aware training: PTQ to initialise the ranges, then fine-tune through fake-quant
    (with `loss_fn`, cross-entropy when None).

    The forward pass sees quantized weights and activations; the backward pass uses the
    straight-through estimator, so the float weights keep receiving gradients.
    """
    if not isinstance(data, Dataset):
        raise ValueError(f"apply_qat needs a Dataset to train on, got {type(data).__name__}")
    start = time.perf_counter()
    reference = copy.deepcopy(model)
    model_q, ptq = apply_ptq(model, config.quant, data, inplace=inplace, float_accuracy=float_accuracy)
    for layer in quant_layers(model_q).values():
        layer.weight_fake_quant.dynamic = True
        if isinstance(layer.input_fake_quant, FakeQuantize):
            layer.input_fake_quant.momentum = config.act_momentum
    history = train(model_q, data, config.finetune, loss_fn=loss_fn, progress=progress)
    with torch.no_grad():
        for layer in quant_layers(model_q).values():  # freeze the weight ranges at the final weights
            layer.weight_fake_quant(layer.weight)
            layer.weight_fake_quant.dynamic = False
    acc = evaluate(model_q, data.test).accuracy
    report = quant_report(model_q, reference, config.quant, _probe(None, data), "qat", ptq.accuracy_before, acc,
                          ptq.calibration_size, time.perf_counter() - start)
    report.config = config
    report.accuracy_ptq = ptq.accuracy_after
    report.history = history.to_dict()
    return model_q, report


# ----------------------------------------------------------------- registration

def _qat_step(model: nn.Module, config: QATConfig, data: Dataset, context: StepContext) -> tuple[nn.Module, Report]:
    """A recipe's qat step: QAT, then plain layers holding the float weights (`plain_layers`)."""
    trained, report = apply_qat(model, config, data, progress=context.progress)
    return plain_layers(trained), report


register(Technique(
    name="ptq", apply=apply_ptq, config=QuantConfig,
    example=lambda: (tiny_mlp(), QuantConfig(calibration_size=64), {}),
    notebook="03_ptq_vs_qat", params={
        "profile": PROFILE, "model_name": choice("lenet5", "small_cnn", "lenet300"), "dataset": DATASET,
        "bit_widths": Param("ints", 2, 16), "qat_bit_widths": Param("ints", 2, 16), "qat_epochs": EPOCHS,
        "observer": choice("minmax", "percentile", "mse"), "granularity": choice("per_channel", "per_tensor"),
        "weight_bits": QUANT_BITS, "act_bits": QUANT_BITS, "calibration_size": Param("int", 1, 60000),
        "seed": SEED,
    },
    references={"choose_qparams": choose_qparams, "quantize_affine": quantize_affine, "fake_quantize": fake_quantize}))
register(Technique(
    name="qat", apply=apply_qat, config=QATConfig,
    example=lambda: (tiny_mlp(), QATConfig(quant=QuantConfig(weight_bits=4, act_bits=4, calibration_size=64),
                                           finetune=TINY_TRAIN), {}),
    verb="qat", step=_qat_step))
