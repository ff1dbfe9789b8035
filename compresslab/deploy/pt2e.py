"""Real INT8 execution on CPU through torchao's PT2E flow, and honest latency against FP32.

    torch.export -> prepare_pt2e(X86InductorQuantizer) -> calibrate -> convert_pt2e -> torch.compile

The converted graph still computes in float (quantize/dequantize around each op, the reference
semantics); torch.compile with Inductor's freezing passes fuses each dq -> conv/linear -> q into
oneDNN INT8 kernels (u8 activations, s8 per-channel weights, s32 accumulation). QAT: the same
graph with fake-quant nodes (prepare_qat_pt2e) is fine-tuned through `training.train` first.
Timings are fair only against FP32 that is also channels_last and compiled, so all are measured.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from compresslab.core import metrics
from compresslab.core.data import Dataset, Split
from compresslab.core.models import is_convnet
from compresslab.core.training import TrainConfig, train
from compresslab.techniques.quantization import calibration_inputs

__all__ = [
    "NOT_COMPILED_WARNING",
    "DeployConfig",
    "export",
    "x86_quantizer",
    "quantize_ptq",
    "quantize_qat",
    "compile_static",
    "Int8Model",
    "weight_bytes",
    "benchmark",
    "DeployReport",
    "predictions",
    "agreement",
    "apply_int8",
]

NOT_COMPILED_WARNING = (
    "torch.compile is unavailable ({err}); using the uncompiled converted graph. Its quantize/"
    "dequantize ops run in float, so INT8 timings are NOT representative of INT8 kernels."
)


@contextlib.contextmanager
def _quiet():
    """Silence the notices torch and torchao print on every import/export/compile (an Enum registration
    deprecation, 'no CUDA runtime', a tensor-copy hint inside Inductor): they say nothing about the model."""
    loggers = [logging.getLogger(name) for name in ("torch.utils._pytree", "torch.utils.cpp_extension")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="To copy construct from a tensor", category=UserWarning)
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _pt2e():
    """torchao's PT2E entry points (imported lazily: torchao is slow to import)."""
    with _quiet():
        from torchao.quantization.pt2e import allow_exported_model_train_eval, disable_observer
        from torchao.quantization.pt2e.quantize_pt2e import (
            convert_pt2e,
            prepare_pt2e,
            prepare_qat_pt2e,
        )
        from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq

    return dict(convert=convert_pt2e, prepare=prepare_pt2e, prepare_qat=prepare_qat_pt2e, xiq=xiq,
                allow_train_eval=allow_exported_model_train_eval, disable_observer=disable_observer)


@dataclass(frozen=True)
class DeployConfig:
    """How to build and time the INT8 model.

    batch_sizes: one static compiled graph each (conv lowering needs static shapes).
    qat: a TrainConfig fine-tunes the exported graph with fake-quant first; None = post-training.
    benchmark: time INT8 against FP32 (eager, channels_last, compiled); False only builds and scores.
    rounds x repeats: timing calls per variant, interleaved round by round so that noise from other
    processes hits every variant alike; threads: intra-op threads while timing (None = current).
    """

    batch_sizes: tuple[int, ...] = (1, 256)
    calibration_size: int = 1000
    calibration_batch: int = 250
    qat: TrainConfig | None = None
    compile: bool = True
    benchmark: bool = True
    rounds: int = 5
    repeats: int = 20
    threads: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.batch_sizes or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in self.batch_sizes):
            raise ValueError(f"batch_sizes={self.batch_sizes!r} must be a non-empty tuple of integers >= 1")
        for name in ("calibration_size", "calibration_batch", "rounds", "repeats"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be an integer >= 1")
        if self.qat is not None and not isinstance(self.qat, TrainConfig):
            raise ValueError(f"qat={self.qat!r} must be a TrainConfig or None")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ValueError(f"threads={self.threads!r} must be an integer >= 1 or None")


# ----------------------------------------------------------------- building

def export(model: nn.Module, example: torch.Tensor) -> torch.fx.GraphModule:
    """torch.export with a dynamic batch dimension, as an fx GraphModule."""
    dims = ({0: torch.export.Dim.DYNAMIC},)
    return torch.export.export(model, (example,), dynamic_shapes=dims).module()


def x86_quantizer(is_qat: bool = False):
    """X86InductorQuantizer with its default config: u8 per-tensor activations, s8 per-channel weights."""
    xiq = _pt2e()["xiq"]
    quantizer = xiq.X86InductorQuantizer()
    quantizer.set_global(xiq.get_default_x86_inductor_quantization_config(is_qat=is_qat))
    return quantizer


@torch.no_grad()
def quantize_ptq(model: nn.Module, calibration: torch.Tensor, batch_size: int = 250) -> torch.fx.GraphModule:
    """export -> prepare_pt2e -> run the calibration inputs -> convert_pt2e (a q/dq graph)."""
    api = _pt2e()
    model = copy.deepcopy(model).eval()
    prepared = api["prepare"](export(model, calibration[:2]), x86_quantizer())
    for start in range(0, len(calibration), batch_size):
        prepared(calibration[start:start + batch_size])
    return api["convert"](prepared)


def quantize_qat(model: nn.Module, data: Dataset, config: TrainConfig, example: torch.Tensor,
                 progress: bool | None = None) -> torch.fx.GraphModule:
    """export -> prepare_qat_pt2e -> fine-tune with `training.train` -> freeze observers -> convert_pt2e.

    train() switches modes with .train()/.eval(); on an exported graph these only work through
    torchao's allow_exported_model_train_eval (which moves dropout/batch-norm between modes).
    """
    api = _pt2e()
    model = copy.deepcopy(model).train()
    prepared = api["prepare_qat"](export(model, example[:2]), x86_quantizer(is_qat=True))
    api["allow_train_eval"](prepared)
    train(prepared, data, config, progress=progress, evaluate_test=False)
    prepared.apply(api["disable_observer"])
    prepared.eval()
    return api["convert"](prepared)


def compile_static(fn: nn.Module, batch_sizes: Sequence[int], example_shape: Sequence[int],
                   channels_last: bool) -> tuple[Callable, float, str | None]:
    """torch.compile(dynamic=False) with Inductor freezing, warmed up once per batch size.

    Returns (callable, compile seconds, warning or None); if compilation fails (for example no
    C++ compiler) the uncompiled module is returned with a warning.
    """
    import torch._inductor.config as inductor_config

    start = time.perf_counter()
    try:
        with inductor_config.patch(freezing=True), _quiet():
            compiled = torch.compile(fn, dynamic=False)
            with torch.inference_mode():
                for b in batch_sizes:
                    compiled(_example(b, example_shape, channels_last))
    except Exception as err:  # noqa: BLE001 - any failure to compile falls back to eager
        message = NOT_COMPILED_WARNING.format(err=f"{type(err).__name__}: {str(err).splitlines()[0][:200]}")
        warnings.warn(message, RuntimeWarning, stacklevel=2)
        return fn, time.perf_counter() - start, message
    return compiled, time.perf_counter() - start, None


def _example(batch: int, shape: Sequence[int], channels_last: bool) -> torch.Tensor:
    x = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(0))
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x


class Int8Model:
    """A converted PT2E graph and its compiled form; called on any batch, which it pads to the
    largest compiled batch size (new shapes would mean new compilations)."""

    def __init__(self, converted: torch.fx.GraphModule, runner: Callable, batch_sizes: Sequence[int],
                 compiled: bool, channels_last: bool):
        self.converted, self.runner, self.batch_sizes = converted, runner, tuple(batch_sizes)
        self.compiled, self.channels_last = compiled, channels_last

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            if not self.compiled or x.shape[0] in self.batch_sizes:
                return self.runner(x)
            size = max(self.batch_sizes)
            outs = []
            for start in range(0, x.shape[0], size):
                chunk = x[start:start + size]
                n = chunk.shape[0]
                if n < size:
                    chunk = torch.cat([chunk, chunk.new_zeros(size - n, *chunk.shape[1:])])
                    if self.channels_last and chunk.dim() == 4:
                        chunk = chunk.contiguous(memory_format=torch.channels_last)
                outs.append(self.runner(chunk)[:n].clone())
            return torch.cat(outs)

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        """The converted graph run as is: quantize/dequantize in float (torchao's simulation)."""
        with torch.inference_mode():
            return self.converted(x)


def weight_bytes(converted: torch.fx.GraphModule) -> dict[str, int]:
    """Bytes of the constants the converted graph holds, split into int8 weights and the rest
    (float biases, scales, zero points)."""
    int8 = other = 0
    seen: set[int] = set()
    for node in converted.graph.nodes:
        if node.op != "get_attr":
            continue
        value = converted
        for part in node.target.split("."):
            value = getattr(value, part)
        if not isinstance(value, torch.Tensor) or id(value) in seen:
            continue
        seen.add(id(value))
        size = value.numel() * value.element_size()
        if value.dtype in (torch.int8, torch.uint8):
            int8 += size
        else:
            other += size
    return {"int8_bytes": int8, "other_bytes": other, "total_bytes": int8 + other}


# ----------------------------------------------------------------- timing

def benchmark(variants: dict[str, tuple[Callable, bool]], batch_sizes: Sequence[int], input_shape: Sequence[int],
              rounds: int = 5, repeats: int = 20, threads: int | None = None, baseline: str = "") -> metrics.SpeedTable:
    """Median latency per (variant, batch): `rounds` interleaved passes of `repeats` timed calls each
    (metrics.latency), then the median of the per-round medians. variants: label -> (fn, channels_last)."""
    per: dict[tuple[str, int], list[metrics.Latency]] = {}
    for _ in range(rounds):
        for label, (fn, channels_last) in variants.items():
            for b in batch_sizes:
                row = metrics.latency(fn, batch_sizes=(b,), input_shape=input_shape, repeats=repeats, warmup=2,
                                      label=label, threads=threads, channels_last=channels_last)[0]
                per.setdefault((label, b), []).append(row)
    table = metrics.SpeedTable(baseline=baseline)
    for (label, b), rows in per.items():
        table.add([metrics.Latency(label, b, statistics.median(r.median_ms for r in rows),
                                   min(r.p10_ms for r in rows), max(r.p90_ms for r in rows),
                                   sum(r.repeats for r in rows), rows[0].threads)])
    return table


# ----------------------------------------------------------------- the model-level verb

@dataclass
class DeployReport:
    """Accuracy, size and latency of the real INT8 model against FP32."""

    method: str
    compiled: bool
    threads: int
    accuracy_fp32: float
    accuracy_int8: float
    accuracy_reference: float  # the converted graph uncompiled (float q/dq simulation)
    agreement_reference: float  # share of test predictions where INT8 == reference
    fp32_bytes: int
    int8_bytes: dict
    latency: list[dict]
    speedups: dict
    compile_seconds: float
    seconds: float
    config: DeployConfig
    warning: str | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["config"] = {k: (asdict(v) if isinstance(v, TrainConfig) else v) for k, v in asdict(self.config).items()}
        return out

    def table(self):
        import pandas as pd

        return pd.DataFrame(self.latency)

    def _repr_html_(self) -> str:
        ratio = self.fp32_bytes / self.int8_bytes["total_bytes"]
        head = (f"<p>INT8 ({self.method.upper()}, {'compiled' if self.compiled else 'NOT compiled'}, "
                f"{self.threads} threads): accuracy FP32 {100 * self.accuracy_fp32:.2f}% &rarr; INT8 "
                f"{100 * self.accuracy_int8:.2f}% (torchao reference {100 * self.accuracy_reference:.2f}%) "
                f"&middot; weights {self.fp32_bytes:,} &rarr; {self.int8_bytes['total_bytes']:,} bytes "
                f"({ratio:.2f}x)</p>")
        if self.warning:
            head += f"<p><b>Warning:</b> {self.warning}</p>"
        return head + self.table().to_html(index=False)

    def __repr__(self) -> str:
        return (f"DeployReport({self.method}, compiled={self.compiled}, threads={self.threads}, accuracy FP32 "
                f"{100 * self.accuracy_fp32:.2f}% -> INT8 {100 * self.accuracy_int8:.2f}%, speed-ups "
                f"{ {k: round(v, 2) for k, v in self.speedups.items()} })")


def predictions(fn: Callable[[torch.Tensor], torch.Tensor], split: Split, batch_size: int = 256,
                channels_last: bool = False) -> torch.Tensor:
    """argmax of fn over `split`, batch by batch."""
    preds = []
    with torch.inference_mode():
        for x, _ in split.batches(batch_size):
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            preds.append(fn(x).argmax(1))
    return torch.cat(preds)


def agreement(preds_a: torch.Tensor, preds_b: torch.Tensor) -> float:
    """Share of examples where two models predict the same class."""
    return float((preds_a == preds_b).float().mean())


def apply_int8(model: nn.Module, config: DeployConfig, data: Dataset,
               progress: bool | None = None) -> tuple[Int8Model, DeployReport]:
    """Build a real INT8 model of `model` (PTQ, or QAT if config.qat), check its accuracy, time it.

    Latency variants: FP32 eager (NCHW), FP32 channels_last, FP32 compiled (channels_last, Inductor
    freezing) and INT8 compiled; speed-ups are FP32 / INT8 median latency at each batch size.
    """
    start = time.perf_counter()
    model = copy.deepcopy(model).cpu().eval()
    shape = tuple(data.input_shape)
    calib = calibration_inputs(data, config.calibration_size, config.seed)
    if config.qat is None:
        converted, method = quantize_ptq(model, calib, config.calibration_batch), "ptq"
    else:
        converted, method = quantize_qat(model, data, config.qat, calib, progress), "qat"
    conv = is_convnet(model)
    compile_seconds, warning = 0.0, None
    if config.compile:
        runner, seconds, warning = compile_static(converted, config.batch_sizes, shape, channels_last=conv)
        compile_seconds += seconds
    else:
        runner, warning = converted, "compile=False: the INT8 model runs uncompiled (float q/dq ops)"
    int8 = Int8Model(converted, runner, config.batch_sizes, warning is None, channels_last=conv)

    latency, speedups, fair = [], {}, None
    if config.benchmark:
        table, fair, seconds = _time_variants(model, int8, config, shape)
        compile_seconds += seconds
        latency = table.table().to_dict("records")
        for b in config.batch_sizes:
            speedups[f"int8 vs {fair} @ batch {b}"] = table.speedup("int8", b) / table.speedup(fair, b)
            speedups[f"int8 vs fp32 eager @ batch {b}"] = table.speedup("int8", b)

    ref_preds = predictions(int8.reference, data.test)
    int8_preds = predictions(int8, data.test, batch_size=max(config.batch_sizes))
    fp32_preds = predictions(model, data.test, channels_last=False)
    labels = data.test.labels
    report = DeployReport(
        method=method, compiled=warning is None, threads=config.threads or torch.get_num_threads(),
        accuracy_fp32=agreement(fp32_preds, labels), accuracy_int8=agreement(int8_preds, labels),
        accuracy_reference=agreement(ref_preds, labels), agreement_reference=agreement(int8_preds, ref_preds),
        fp32_bytes=metrics.size_report(model).dense_bytes, int8_bytes=weight_bytes(converted),
        latency=latency, speedups=speedups, compile_seconds=compile_seconds,
        seconds=time.perf_counter() - start, config=config, warning=warning,
        extra={"fair_baseline": fair, "input_shape": list(shape)},
    )
    return int8, report


def _time_variants(model: nn.Module, int8: Int8Model, config: DeployConfig,
                   shape: tuple[int, ...]) -> tuple[metrics.SpeedTable, str, float]:
    """Time FP32 eager, FP32 channels_last, FP32 compiled and INT8; return the table, the fair FP32
    label (the fastest kind of FP32 we built: compiled if it compiled) and the FP32 compile seconds."""
    conv = is_convnet(model)
    fp32_cl = copy.deepcopy(model).to(memory_format=torch.channels_last) if conv else model
    variants: dict[str, tuple[Callable, bool]] = {"fp32 eager": (_no_module(model), False)}
    if conv:
        variants["fp32 channels_last"] = (_no_module(fp32_cl), True)
    seconds = 0.0
    if config.compile:
        fp32_c, seconds, fp32_warning = compile_static(copy.deepcopy(fp32_cl), config.batch_sizes, shape, conv)
        if fp32_warning is None:
            variants["fp32 compiled"] = (fp32_c, conv)
    variants["int8"] = (int8, conv)
    table = benchmark(variants, config.batch_sizes, shape, config.rounds, config.repeats, config.threads,
                      baseline="fp32 eager")
    fair = "fp32 compiled" if "fp32 compiled" in variants else ("fp32 channels_last" if conv else "fp32 eager")
    return table, fair, seconds


def _no_module(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """Wrap a module as a plain function (metrics.latency would otherwise call .eval() on it)."""
    model.eval()
    return lambda x: model(x)
