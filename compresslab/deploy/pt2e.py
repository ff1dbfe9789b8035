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
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from compresslab.core import latency, metrics, models
from compresslab.core.data import Dataset, Split
from compresslab.core.models import is_convnet, to_model_layout
from compresslab.core.params import DATASET, PROFILE, SEED, Param, choice
from compresslab.core.report import percent
from compresslab.core.training import LossFn, TrainConfig, train
from compresslab.core.validate import (
    check_bool,
    check_config,
    check_instance,
    check_int,
    check_seed,
)
from compresslab.deploy.report import DeployReport
from compresslab.techniques.quantization import calibration_inputs
from compresslab.techniques.registry import Technique, register, tiny_mlp

__all__ = [
    "NOT_COMPILED_WARNING",
    "Int8Config",
    "export",
    "x86_quantizer",
    "quantize_ptq",
    "quantize_qat",
    "compile_static",
    "Int8Model",
    "weight_bytes",
    "benchmark",
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
class Int8Config:
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
        owner = "Int8Config"
        check_instance(owner, "batch_sizes", self.batch_sizes, (tuple, list))
        if not self.batch_sizes:
            raise ValueError(f"{owner}.batch_sizes=() must hold at least one batch size")
        for i, b in enumerate(self.batch_sizes):
            check_int(owner, f"batch_sizes[{i}]", b, 1, 2**16)
        check_int(owner, "calibration_size", self.calibration_size, 1, 10**7)
        check_int(owner, "calibration_batch", self.calibration_batch, 1, 10**6)
        check_int(owner, "rounds", self.rounds, 1, 10**4)
        check_int(owner, "repeats", self.repeats, 1, 10**6)
        check_config(owner, "qat", self.qat, TrainConfig, optional=True)
        check_bool(owner, "compile", self.compile)
        check_bool(owner, "benchmark", self.benchmark)
        if self.threads is not None:
            check_int(owner, "threads", self.threads, 1, 4096)
        check_seed(owner, "seed", self.seed)


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
    return to_model_layout(torch.randn(batch, *shape, generator=torch.Generator().manual_seed(0)), channels_last)


class Int8Model(nn.Module):
    """A converted PT2E graph and its compiled form, as a module: called on any batch, which it pads
    to the largest compiled batch size (new shapes would mean new compilations). Inference only:
    train(mode) just sets the flag (an exported graph cannot switch modes); the graph is kept out of
    the module tree, and an empty parameter marks the device (CPU) for training.evaluate."""

    def __init__(self, converted: torch.fx.GraphModule, runner: Callable, batch_sizes: Sequence[int],
                 compiled: bool, channels_last: bool):
        super().__init__()
        self.__dict__.update(converted=converted, runner=runner)  # not submodules: no train()/eval() on them
        self.batch_sizes, self.compiled, self.channels_last = tuple(batch_sizes), compiled, channels_last
        self.device_anchor = nn.Parameter(torch.empty(0), requires_grad=False)
        self.training = False

    def train(self, mode: bool = True) -> Int8Model:
        self.training = mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = to_model_layout(x, self.channels_last)
        with torch.inference_mode():
            if not self.compiled or x.shape[0] in self.batch_sizes:
                return self.runner(x)
            size = max(self.batch_sizes)
            outs = []
            for start in range(0, x.shape[0], size):
                chunk = x[start:start + size]
                n = chunk.shape[0]
                if n < size:
                    chunk = to_model_layout(torch.cat([chunk, chunk.new_zeros(size - n, *chunk.shape[1:])]),
                                            self.channels_last)
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
              rounds: int = 5, repeats: int = 20, threads: int | None = None, baseline: str = "") -> latency.SpeedTable:
    """`latency.latency_rounds` over variants label -> (fn, channels_last), each fed batches in its
    own layout (a compiled graph is fixed to one), as a SpeedTable against `baseline`."""
    rows = latency.latency_rounds({label: fn for label, (fn, _) in variants.items()}, rounds=rounds,
                                  channels_last={label: cl for label, (_, cl) in variants.items()},
                                  batch_sizes=tuple(batch_sizes), input_shape=tuple(input_shape),
                                  repeats=repeats, warmup=2, threads=threads)
    table = latency.SpeedTable(baseline=baseline)
    table.add(rows)
    return table


# ----------------------------------------------------------------- the model-level verb

def predictions(fn: Callable[[torch.Tensor], torch.Tensor], split: Split, batch_size: int = 256,
                channels_last: bool = False) -> torch.Tensor:
    """argmax of fn over `split`, batch by batch."""
    preds = []
    with torch.inference_mode():
        for x, _ in split.batches(batch_size):
            preds.append(fn(to_model_layout(x, channels_last)).argmax(1))
    return torch.cat(preds)


def agreement(preds_a: torch.Tensor, preds_b: torch.Tensor) -> float:
    """Share of examples where two models predict the same class."""
    return float((preds_a == preds_b).float().mean())


def apply_int8(model: nn.Module, config: Int8Config, data: Dataset, *, inplace: bool = False,
               progress: bool | None = None, loss_fn: LossFn | None = None) -> tuple[Int8Model, DeployReport]:
    """Build a real INT8 model of `model` (PTQ, or QAT if config.qat), check its accuracy, time it.
    The float model is exported from a copy (from `model` itself, moved to CPU, when inplace);
    loss_fn must be None (the QAT fine-tuning uses cross-entropy).

    Latency variants: FP32 eager (NCHW), FP32 channels_last, FP32 compiled (channels_last, Inductor
    freezing) and INT8 compiled; speed-ups are FP32 / INT8 median latency at each batch size.
    """
    if loss_fn is not None:
        raise ValueError("loss_fn must be None: apply_int8's QAT fine-tunes with cross-entropy")
    if not isinstance(data, Dataset):
        raise ValueError(f"apply_int8 needs a Dataset to calibrate and evaluate on, got {type(data).__name__}")
    start = time.perf_counter()
    model = (model if inplace else copy.deepcopy(model)).cpu().eval()
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

    timings, speedups, fair = [], {}, None
    if config.benchmark:
        table, fair, seconds = _time_variants(model, int8, config, shape)
        compile_seconds += seconds
        timings = table.table().to_dict("records")
        for b in config.batch_sizes:
            speedups[f"int8 vs {fair} @ batch {b}"] = latency.time_ratio(table.speedup("int8", b), table.speedup(fair, b))
            speedups[f"int8 vs fp32 eager @ batch {b}"] = table.speedup("int8", b)

    ref_preds = predictions(int8.reference, data.test)
    int8_preds = predictions(int8, data.test, batch_size=max(config.batch_sizes))
    fp32_preds = predictions(model, data.test, channels_last=False)
    labels = data.test.labels
    smallest = min((r for r in table.rows if r.label == "int8"), key=lambda r: r.batch_size) if timings else None
    report = DeployReport(
        method=method, compiled=warning is None, threads=config.threads or torch.get_num_threads(),
        accuracy_before=percent(agreement(fp32_preds, labels)), accuracy_after=percent(agreement(int8_preds, labels)),
        accuracy_reference=percent(agreement(ref_preds, labels)),
        agreement_reference=percent(agreement(int8_preds, ref_preds)),
        size_before=metrics.model_size(model),
        size_after=metrics.model_size(model, stored_bytes=weight_bytes(converted)["total_bytes"]),
        int8_bytes=weight_bytes(converted), timings=timings, speedups=speedups,
        latency=None if smallest is None else {"batch_size": smallest.batch_size, "median_ms": smallest.median_ms,
                                               "p10_ms": smallest.p10_ms, "p90_ms": smallest.p90_ms},
        compile_seconds=compile_seconds, seconds=time.perf_counter() - start, config=config, warning=warning,
        extra={"fair_baseline": fair, "input_shape": list(shape)},
    )
    return int8, report


def _time_variants(model: nn.Module, int8: Int8Model, config: Int8Config,
                   shape: tuple[int, ...]) -> tuple[latency.SpeedTable, str, float]:
    """Time FP32 eager (NCHW weights and batches), FP32 channels_last, FP32 compiled and INT8; return the
    table, the fair FP32 label (the fastest kind of FP32 we built: compiled if it compiled) and the FP32
    compile seconds."""
    conv = is_convnet(model)
    fp32_cl = models.prepare_model(copy.deepcopy(model)) if conv else model
    fp32_nchw = copy.deepcopy(model).to(memory_format=torch.contiguous_format) if conv else model
    variants: dict[str, tuple[Callable, bool]] = {"fp32 eager": (_no_module(fp32_nchw), False)}
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
    """Wrap a module as a plain function (latency.latency would otherwise call .eval() on it)."""
    model.eval()
    return lambda x: model(x)


# ----------------------------------------------------------------- registration

register(Technique(
    name="int8", apply=apply_int8, config=Int8Config,
    example=lambda: (tiny_mlp(), Int8Config(batch_sizes=(32,), calibration_size=64, compile=False, benchmark=False), {}),
    notebook="07_deployment", params={
        "profile": PROFILE, "dataset": DATASET,
        "architectures": Param("choices", choices=("lenet300", "lenet5")),
        "headline": choice("lenet300", "lenet5"), "compressed_arch": choice("lenet300", "lenet5"),
        "runtimes": Param("choices", choices=("onnxruntime", "openvino", "executorch", "litert", "coreml", "tensorrt"),
                          empty_ok=True),
        "calibration_size": Param("int", 1, 60000), "rounds": Param("int", 1, 1000),
        "drift_window": Param("int", 10, 10000), "drift_method": choice("ks", "threshold"), "seed": SEED,
    }))
