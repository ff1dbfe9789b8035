"""ONNX Runtime: one .onnx file (dynamo export, weights inside, dynamic batch), run on the CPU.

Precisions: fp32; int8 = static QDQ (QuantizeLinear/DequantizeLinear pairs around every conv/matmul,
per-channel int8 weights, int8 activations with scales from a calibration pass), which ORT fuses
into integer kernels; int8_dynamic = int8 weights, activations quantized per batch at run time
(ConvInteger on conv nets: slower than FP32 there); fp16 = float16 weights (half the file; ORT's
CPU optimizer casts back to float32, so it runs at FP32 speed).

The QDQ arithmetic (what `onnx_qdq` reads back from a file and computes by hand): q(x) = clamp(round(x / s)
+ z, -128, 127), dq(q) = (q - z) * s; a layer computes y = dq(q(x)) @ dq(W_q)^T + b with one scale per
output channel.

Exact INT8 on every x86 CPU: ORT's fast U8S8 kernels sum pairs of int8 products in saturating 16-bit
arithmetic on CPUs without VNNI (AVX2, AVX-512 without VNNI), so a layer's output can be off by whole
units there. `session` then sets ORT's `session.x64quantprecision` (U8U8 kernels, exact, slower); with
VNNI the fast kernels are already exact and are kept.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from compresslab.deploy.base import (
    Adapter,
    Deployed,
    DeployOptions,
    plain_copy,
    quiet,
    register,
    to_numpy,
)
from compresslab.deploy.bench import cpu_features

__all__ = ["OnnxRuntimeAdapter", "OnnxDeployed", "export_onnx", "session", "needs_exact_int8"]

INPUT = "x"


def _silent():
    """The exporter and the quantizer print progress lines, warnings about the graph and advice on
    the root logger: not about the model."""
    return quiet(("root", "onnxruntime"))


def export_onnx(model: nn.Module, example: torch.Tensor, path: str | os.PathLike) -> Path:
    """torch.onnx.export with the dynamo exporter, a dynamic batch dimension, weights in the file."""
    path = Path(path)
    model = plain_copy(model)
    with _silent():
        torch.onnx.export(model, (example.contiguous(),), str(path), dynamo=True, external_data=False,
                          input_names=[INPUT], output_names=["logits"],
                          dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)
    return path


def needs_exact_int8(cpu: dict | None = None) -> bool:
    """True on an x86 CPU without VNNI (`bench.cpu_features()`; None: this machine's, read once),
    where ORT's U8S8 kernels saturate."""
    if cpu is None:
        return _this_cpu_needs_exact_int8()
    return bool(cpu["avx2"] and not cpu["vnni"])


@functools.cache
def _this_cpu_needs_exact_int8() -> bool:
    """This machine's answer: /proc/cpuinfo is read once, not for every session."""
    return needs_exact_int8(cpu_features())


# ORT's WeightBiasQuantization quantizes a float Conv / Gemm's weights on load when its input comes
# from a DequantizeLinear and its output reaches a QuantizeLinear (through Relu, MaxPool, Reshape):
# a per-layer file's FP32 layer between two int8 layers would run int8 (LeNet-5: conv1 and fc1 int8
# ran conv2 as a QLinearConv). Disabled, every layer runs at the precision its file gives it.
KEEP_FLOAT = ("WeightBiasQuantization",)


def session(path: str | os.PathLike, threads: int, exact_int8: bool | None = None):
    """An ORT CPU session with `threads` intra-op threads and 1 inter-op thread, all graph optimizations
    but `KEEP_FLOAT` (a float layer runs in float, as the file says). exact_int8: use ORT's U8U8
    kernels (no 16-bit saturation); None decides by `needs_exact_int8()`."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    if needs_exact_int8() if exact_int8 is None else exact_int8:
        opts.add_session_config_entry("session.x64quantprecision", "1")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"],
                                disabled_optimizers=list(KEEP_FLOAT))


@dataclass
class OnnxDeployed(Deployed):
    session: object = None

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.session.get_inputs()[0].name: x})[0]

    def with_threads(self, threads: int) -> OnnxDeployed:
        return OnnxDeployed(self.runtime, self.precision, self.path, threads, self.options, list(self.notes),
                            session=session(self.path, threads))


class _Reader:
    """onnxruntime.quantization's CalibrationDataReader protocol: get_next() -> {input: batch} or None."""

    def __init__(self, name: str, calibration: torch.Tensor, batch: int):
        self.batches = iter([{name: to_numpy(calibration[i:i + batch])}
                             for i in range(0, len(calibration), batch)])

    def get_next(self):
        return next(self.batches, None)

    def rewind(self):  # pragma: no cover - part of the protocol, unused by quantize_static
        pass


@register
class OnnxRuntimeAdapter(Adapter):
    name = "onnxruntime"
    title = "ONNX Runtime"
    packages = ("onnx", "onnxruntime", "onnxscript")
    install = 'install it with `pip install -e ".[dev]"` (onnx, onnxruntime, onnxscript, onnxconverter-common)'
    precisions = ("fp32", "int8", "int8_dynamic", "fp16")

    def export(self, model, example, options: DeployOptions, calibration=None, workdir="."):
        self.check(options)
        from onnxruntime.quantization import (
            QuantFormat,
            QuantType,
            quant_pre_process,
            quantize_dynamic,
            quantize_static,
        )

        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        fp32 = export_onnx(model, example, workdir / "model_fp32.onnx")
        path, notes = fp32, []
        if options.precision == "int8":
            if calibration is None:
                raise ValueError("precision='int8' (static) needs calibration images")
            pre = workdir / "model_pre.onnx"
            with _silent():
                quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
                path = workdir / "model_int8.onnx"
                quantize_static(str(pre), str(path), _Reader(INPUT, calibration, options.calibration_batch),
                                quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QInt8,
                                weight_type=QuantType.QInt8)
        elif options.precision == "int8_dynamic":
            path = workdir / "model_int8_dynamic.onnx"
            with _silent():
                quantize_dynamic(str(fp32), str(path), weight_type=QuantType.QInt8)
        elif options.precision == "fp16":
            import onnx
            from onnxconverter_common import float16

            path = workdir / "model_fp16.onnx"
            with _silent():
                onnx.save(float16.convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True), str(path))
            notes.append("float16 weights; the CPU kernels compute in float32")
        if options.precision.startswith("int8") and needs_exact_int8():
            notes.append("U8U8 kernels (session.x64quantprecision): this CPU has no VNNI, where the fast "
                         "U8S8 kernels saturate 16-bit sums")
        return OnnxDeployed(self.name, options.precision, path, options.threads, options, notes,
                            session=session(path, options.threads))
