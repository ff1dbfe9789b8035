"""ONNX Runtime: one .onnx file (dynamo export, weights inside, dynamic batch), run on the CPU.

Precisions: fp32; int8 = static QDQ (QuantizeLinear/DequantizeLinear pairs around every conv/matmul,
per-channel int8 weights, int8 activations with scales from a calibration pass), which ORT fuses
into integer kernels; int8_dynamic = int8 weights, activations quantized per batch at run time
(ConvInteger on conv nets: slower than FP32 there); fp16 = float16 weights (half the file; ORT's
CPU optimizer casts back to float32, so it runs at FP32 speed).

The QDQ arithmetic (what `qdq_layers` reads back from a file): q(x) = clamp(round(x / s) + z, -128, 127),
dq(q) = (q - z) * s; a layer computes y = dq(q(x)) @ dq(W_q)^T + b with one scale per output channel.
"""

from __future__ import annotations

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

__all__ = ["OnnxRuntimeAdapter", "OnnxDeployed", "export_onnx", "session", "qdq_layers", "first_layer_model"]

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


def session(path: str | os.PathLike, threads: int):
    """An ORT CPU session with `threads` intra-op threads and 1 inter-op thread, all graph optimizations."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


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
        return OnnxDeployed(self.name, options.precision, path, options.threads, options, notes,
                            session=session(path, options.threads))


def qdq_layers(path: str | os.PathLike) -> list[dict]:
    """For each Gemm/MatMul/Conv of a QDQ file, in graph order: its input's (scale, zero point), its
    int8 weight with per-channel scales and zero points, its float bias, and the names of its
    input and output tensors."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    init = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}

    def dq_params(tensor: str):
        node = producer.get(tensor)
        if node is None or node.op_type != "DequantizeLinear":
            return None
        value = init.get(node.input[0])
        if value is None:  # an activation: DQ(Q(x)), read the Q's input
            q = producer[node.input[0]]
            value = q.input[0]
        return {"value": value, "scale": init[node.input[1]], "zero_point": init[node.input[2]]}

    layers = []
    for node in graph.node:
        if node.op_type not in ("Gemm", "MatMul", "Conv"):
            continue
        x, w = dq_params(node.input[0]), dq_params(node.input[1])
        if x is None or w is None:
            continue
        bias = _bias(node.input[2], init, dq_params) if len(node.input) > 2 else None
        layers.append({"op": node.op_type, "input": x["value"], "output": node.output[0],
                       "input_scale": float(x["scale"]), "input_zero_point": int(x["zero_point"]),
                       "weight_q": w["value"], "weight_scale": np.asarray(w["scale"]),
                       "weight_zero_point": np.asarray(w["zero_point"]),
                       "bias": bias, "trans_b": any(
                           a.name == "transB" and a.i == 1 for a in node.attribute)})
    return layers


def _bias(name: str, init: dict, dq_params) -> np.ndarray | None:
    """A float bias, or an int32 one behind a DequantizeLinear: (q - z) * s."""
    if name in init:
        return init[name]
    dq = dq_params(name)
    if dq is None or isinstance(dq["value"], str):
        return None
    return (dq["value"].astype(np.float64) - dq["zero_point"]) * dq["scale"]


def first_layer_model(path: str | os.PathLike, out_path: str | os.PathLike) -> Path:
    """The sub-graph of a QDQ file from its input to the first quantized layer's float output
    (before any activation), written to `out_path`: what ORT computes for one layer, to check by hand."""
    import onnx

    layer = qdq_layers(path)[0]
    model = onnx.load(str(path))
    extractor = onnx.utils.Extractor(model)
    sub = extractor.extract_model([model.graph.input[0].name], [layer["output"]])
    onnx.save(sub, str(out_path))
    return Path(out_path)
