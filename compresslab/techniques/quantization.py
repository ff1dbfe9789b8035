"""Affine quantization from scratch, model level: fake-quant modules, calibration, PTQ and QAT.

The tensor maths (q = clamp(round(x / s) + z, q_min, q_max), qparams, the straight-through
estimator, observers) is in `quantops`; its names are re-exported here.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from compresslab.core import metrics
from compresslab.core.data import Dataset
from compresslab.core.models import is_convnet, prunable_layers
from compresslab.core.training import TrainConfig, evaluate, train
from compresslab.techniques.quantops import (  # noqa: F401  (re-exported: notebooks and tests use Q.choose_qparams, ...)
    ACT_GRANULARITIES,
    GRANULARITIES,
    MAX_SAMPLES,
    OBSERVERS,
    SCHEMES,
    MinMaxObserver,
    MSEObserver,
    Observer,
    PercentileObserver,
    QuantizedTensor,
    _check_bits,
    _check_choice,
    _check_grid,
    _check_percentile,
    _rows,
    choose_qparams,
    dequantize_affine,
    error_split,
    fake_quantize,
    make_observer,
    qrange,
    quantize_affine,
    quantize_tensor,
    sqnr_db,
)

__all__ = [
    "FakeQuantize",
    "QuantLinear",
    "QuantConv2d",
    "QuantConfig",
    "QATConfig",
    "insert_fake_quant",
    "quant_layers",
    "calibration_inputs",
    "calibrate",
    "QuantReport",
    "layer_inputs",
    "scale_overhead_bits",
    "quant_report",
    "apply_ptq",
    "apply_qat",
]

# ----------------------------------------------------------------- fake-quant modules

class FakeQuantize(nn.Module):
    """x -> s (clamp(round(x/s) + z, q_min, q_max) - z) with the straight-through gradient.

    States: `observing` (calibration: record x, pass it through unchanged); otherwise quantize with the
    range [lo, hi] held in buffers. `dynamic` (weights in QAT): the range follows every input, its
    min/max times the clipping ratio the observer chose at calibration (1 for min-max), so a percentile
    or MSE choice carries over at no search cost per step. `momentum` > 0: while training, move
    [lo, hi] towards each batch's min/max (activations in QAT).
    """

    def __init__(self, bits: int = 8, scheme: str = "asymmetric", observer: str = "minmax",
                 axis: int | None = None, percentile: float = 99.99, mse_grid: int = 20, seed: int = 0):
        super().__init__()
        self.bits, self.scheme, self.axis = bits, scheme, axis
        self.qmin, self.qmax = qrange(bits, scheme)
        self.observer = make_observer(observer, bits, scheme, axis, percentile, mse_grid, seed)
        self.register_buffer("lo", torch.zeros(()))
        self.register_buffer("hi", torch.zeros(()))
        self.register_buffer("clip_lo", torch.ones(()))  # lo / min at calibration
        self.register_buffer("clip_hi", torch.ones(()))  # hi / max at calibration
        self.observing = False
        self.calibrated = False
        self.dynamic = False
        self.momentum = 0.0

    def extra_repr(self) -> str:
        return f"bits={self.bits}, scheme={self.scheme}, axis={self.axis}, observer={type(self.observer).__name__}"

    def set_range_from_observer(self) -> None:
        """Freeze [lo, hi] at the observer's proposal (and its clipping ratios); free its samples."""
        lo, hi = self.observer.range()
        mn, mx = self.observer._squeeze(self.observer.min_val, self.observer.max_val)
        self.lo, self.hi = lo.clone(), hi.clone()
        self.clip_lo = torch.where(mn < 0, lo / torch.where(mn < 0, mn, -1.0), 1.0)
        self.clip_hi = torch.where(mx > 0, hi / torch.where(mx > 0, mx, 1.0), 1.0)
        self.observer.reset()
        self.observing, self.calibrated = False, True

    def qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.calibrated:
            raise RuntimeError("FakeQuantize is not calibrated: run calibration (apply_ptq) first")
        return choose_qparams(self.lo, self.hi, self.bits, self.scheme)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observing:
            self.observer.update(x)
            return x
        if self.dynamic:
            rows = _rows(x, self.axis)
            mn, mx = rows.amin(1), rows.amax(1)
            if self.axis is None:
                mn, mx = mn[0], mx[0]
            self.lo, self.hi = self.clip_lo * mn, self.clip_hi * mx
        elif self.training and self.momentum > 0 and self.calibrated:
            with torch.no_grad():
                m = self.momentum
                self.lo = (1 - m) * self.lo + m * x.detach().amin()
                self.hi = (1 - m) * self.hi + m * x.detach().amax()
        scale, zp = self.qparams()
        return fake_quantize(x, scale.to(x.device), zp.to(x.device), self.qmin, self.qmax, self.axis)


class QuantLinear(nn.Linear):
    """nn.Linear computing with fake-quantized input and weight; the bias stays float
    (a real INT8 kernel keeps it in int32 at scale s_x s_w, which is exact enough)."""

    weight_fake_quant: FakeQuantize
    input_fake_quant: nn.Module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.input_fake_quant(x), self.weight_fake_quant(self.weight), self.bias)


class QuantConv2d(nn.Conv2d):
    """nn.Conv2d computing with fake-quantized input and weight (bias float, as in QuantLinear)."""

    weight_fake_quant: FakeQuantize
    input_fake_quant: nn.Module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(self.input_fake_quant(x), self.weight_fake_quant(self.weight), self.bias)


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
        _check_bits(self.weight_bits, "weight_bits")
        if self.act_bits is not None:
            _check_bits(self.act_bits, "act_bits")
        _check_choice(self.weight_scheme, SCHEMES, "weight_scheme")
        _check_choice(self.act_scheme, SCHEMES, "act_scheme")
        _check_choice(self.weight_granularity, GRANULARITIES, "weight_granularity")
        _check_choice(self.act_granularity, ACT_GRANULARITIES, "act_granularity")
        _check_choice(self.weight_observer, OBSERVERS, "weight_observer")
        _check_choice(self.act_observer, OBSERVERS, "act_observer")
        _check_percentile(self.percentile)
        _check_grid(self.mse_grid)
        for name in ("calibration_size", "calibration_batch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be an integer >= 1")


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
        if not isinstance(self.quant, QuantConfig):
            raise ValueError(f"quant={self.quant!r} must be a QuantConfig")
        if not isinstance(self.finetune, TrainConfig):
            raise ValueError(f"finetune={self.finetune!r} must be a TrainConfig")
        if not 0 <= self.act_momentum < 1:
            raise ValueError(f"act_momentum={self.act_momentum!r} must be in [0, 1)")


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
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
    return model


def quant_layers(model: nn.Module) -> dict[str, QuantLinear | QuantConv2d]:
    return {n: m for n, m in model.named_modules() if isinstance(m, (QuantLinear, QuantConv2d))}


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
        model(x.contiguous(memory_format=torch.channels_last) if convnet and x.dim() == 4 else x)
    for layer in layers.values():
        if isinstance(layer.input_fake_quant, FakeQuantize):
            layer.input_fake_quant.set_range_from_observer()
    model.train(was_training)
    return model


# ----------------------------------------------------------------- reports

@dataclass
class QuantReport:
    """What quantization did: accuracy before/after, per-layer SQNR, bits and the size ledger."""

    method: str
    config: QuantConfig
    accuracy_float: float | None
    accuracy_quant: float | None
    layers: list[dict]
    size: dict
    calibration_size: int
    seconds: float
    accuracy_ptq: float | None = None  # QAT: accuracy of the PTQ starting point
    history: dict | None = None

    @property
    def compression(self) -> float:
        return self.size["compression"]

    def to_dict(self) -> dict:
        return {"method": self.method, "config": asdict(self.config), "accuracy_float": self.accuracy_float,
                "accuracy_quant": self.accuracy_quant, "accuracy_ptq": self.accuracy_ptq,
                "layers": self.layers, "size": self.size, "compression": self.compression,
                "calibration_size": self.calibration_size, "seconds": self.seconds, "history": self.history}

    def table(self):
        import pandas as pd

        return pd.DataFrame(self.layers)

    def _repr_html_(self) -> str:
        c = self.config
        acts = "float" if c.act_bits is None else f"{c.act_bits}-bit {c.act_scheme} {c.act_observer}"
        head = (f"<p>{self.method.upper()}: weights {c.weight_bits}-bit {c.weight_scheme} {c.weight_granularity} "
                f"{c.weight_observer}, activations {acts} &middot; accuracy {_pct(self.accuracy_float)} &rarr; "
                f"{_pct(self.accuracy_quant)} &middot; {self.compression:.2f}x smaller than FP32 "
                f"&middot; {self.seconds:.1f} s</p>")
        return head + self.table().to_html(index=False)

    def __repr__(self) -> str:
        return (f"QuantReport({self.method}, accuracy {_pct(self.accuracy_float)} -> {_pct(self.accuracy_quant)}, "
                f"{self.compression:.2f}x smaller)\n{self.table().to_string(index=False)}")


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def layer_inputs(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The input each Linear/Conv2d layer receives when `model` runs on x: what activation observers see."""
    return _layer_outputs(model, list(prunable_layers(model)), x, inputs=True)


def _layer_outputs(model: nn.Module, names: list[str], x: torch.Tensor, inputs: bool = False) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    hooks = [model.get_submodule(n).register_forward_hook(
        lambda mod, inp, res, n=n: out.__setitem__(n, (inp[0] if inputs else res).detach())) for n in names]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(x.contiguous(memory_format=torch.channels_last) if is_convnet(model) and x.dim() == 4 else x)
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
    """Per layer: weight SQNR, output SQNR on `probe` (error accumulated up to that layer), bits, zeros, bytes."""
    layers = quant_layers(model_q)
    names = list(layers)
    ref = _layer_outputs(model_float, names, probe)
    got = _layer_outputs(model_q, names, probe)
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
    size = ledger.to_dict()
    return QuantReport(method, config, accuracy_float, accuracy_quant, rows, size, calibration_size, seconds)


# ----------------------------------------------------------------- the model-level verbs

def _probe(calibration: torch.Tensor, data: Dataset | None) -> torch.Tensor:
    if data is not None:
        return data.test.tensors(limit=500)[0]
    return calibration[:500]


def apply_ptq(model: nn.Module, config: QuantConfig, calibration_data: Dataset | torch.Tensor,
              inplace: bool = False, float_accuracy: float | None = None) -> tuple[nn.Module, QuantReport]:
    """Post-training quantization: insert fake-quant, calibrate ranges, no training.

    calibration_data: a Dataset (calibrate on `config.calibration_size` random training examples,
    report test accuracy) or a tensor of inputs (no accuracy in the report).
    float_accuracy: the model's known test accuracy, to skip evaluating the float model again in sweeps.
    """
    start = time.perf_counter()
    data = calibration_data if isinstance(calibration_data, Dataset) else None
    if data is not None:
        inputs = calibration_inputs(data, config.calibration_size, config.seed)
    elif isinstance(calibration_data, torch.Tensor):
        inputs = calibration_data[:config.calibration_size]
    else:
        raise ValueError(f"calibration_data must be a Dataset or a tensor of inputs, got {type(calibration_data).__name__}")
    reference = copy.deepcopy(model)
    model_q = insert_fake_quant(model if inplace else copy.deepcopy(model), config)
    calibrate(model_q, inputs, config.calibration_batch)
    acc_float = None if data is None else (
        float_accuracy if float_accuracy is not None else evaluate(reference, data.test).accuracy)
    acc_quant = evaluate(model_q, data.test).accuracy if data is not None else None
    report = quant_report(model_q, reference, config, _probe(inputs, data), "ptq", acc_float, acc_quant,
                          len(inputs), time.perf_counter() - start)
    return model_q, report


def apply_qat(model: nn.Module, config: QATConfig, data: Dataset, progress: bool | None = None,
              float_accuracy: float | None = None) -> tuple[nn.Module, QuantReport]:
    """Quantization-aware training: PTQ to initialise the ranges, then fine-tune through fake-quant.

    The forward pass sees quantized weights and activations; the backward pass uses the
    straight-through estimator, so the float weights keep receiving gradients.
    """
    if not isinstance(data, Dataset):
        raise ValueError(f"apply_qat needs a Dataset to train on, got {type(data).__name__}")
    start = time.perf_counter()
    model_q, ptq = apply_ptq(model, config.quant, data, float_accuracy=float_accuracy)
    for layer in quant_layers(model_q).values():
        layer.weight_fake_quant.dynamic = True
        if isinstance(layer.input_fake_quant, FakeQuantize):
            layer.input_fake_quant.momentum = config.act_momentum
    history = train(model_q, data, config.finetune, progress=progress)
    with torch.no_grad():
        for layer in quant_layers(model_q).values():  # freeze the weight ranges at the final weights
            layer.weight_fake_quant(layer.weight)
            layer.weight_fake_quant.dynamic = False
    reference = copy.deepcopy(model)
    acc = evaluate(model_q, data.test).accuracy
    report = quant_report(model_q, reference, config.quant, _probe(None, data), "qat", ptq.accuracy_float, acc,
                          ptq.calibration_size, time.perf_counter() - start)
    report.accuracy_ptq = ptq.accuracy_quant
    report.history = history.to_dict()
    return model_q, report
