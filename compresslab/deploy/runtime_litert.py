"""LiteRT (formerly TensorFlow Lite): convert with litert-torch, quantize with ai-edge-quantizer, run
with ai-edge-litert's interpreter (XNNPACK on the CPU).

A converted model has a fixed batch size (`DeployOptions.batch_size`): convert once per batch size.
Precisions: fp32; int8_dynamic = dynamic-range quantization (int8 weights, activations quantized per
batch at run time); int8 = full integer (int8 weights and activations, calibrated, int8 input and
output tensors): the caller's float input is quantized with the model's input (scale, zero point),
q = clamp(round(x / s) + z, -128, 127), and the int8 output dequantized, (q - z) * s.

Its install is large and pins older packages (see the README): it lives in its own virtual
environment, and this adapter reports it missing wherever it is not installed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compresslab.deploy.base import (
    Adapter,
    Deployed,
    DeployOptions,
    plain_copy,
    quiet,
    register,
    to_numpy,
)

__all__ = ["LiteRTAdapter", "LiteRTDeployed", "quantize_input", "dequantize_output"]

INSTALL = ("make a second environment layered on this one with `tools/litert_env.sh .venv-litert` and run "
           "with its interpreter (see the README: LiteRT pins an older typing_extensions than Jupyter needs)")


def quantize_input(x: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """int8 q = clamp(round(x / scale) + zero_point, -128, 127) (round half to even, as the runtime).

    >>> quantize_input(np.array([0.0, 0.5, 100.0]), 0.1, -3).tolist()
    [-3, 2, 127]
    """
    return np.clip(np.round(x / scale) + zero_point, -128, 127).astype(np.int8)


def dequantize_output(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """float (q - zero_point) * scale."""
    return (q.astype(np.float32) - zero_point) * scale


def _quiet():
    return quiet(("absl",))


def _interpreter(path: Path, threads: int):
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path), num_threads=threads)
    interp.allocate_tensors()
    return interp


@dataclass
class LiteRTDeployed(Deployed):
    interpreter: object = None

    def run(self, x: np.ndarray) -> np.ndarray:
        batch = self.options.batch_size
        if len(x) != batch:  # a fixed-batch model: run in chunks, padding the last one
            outs = []
            for i in range(0, len(x), batch):
                chunk = x[i:i + batch]
                n = len(chunk)
                if n < batch:
                    chunk = np.concatenate([chunk, np.zeros((batch - n, *chunk.shape[1:]), np.float32)])
                outs.append(self.run(chunk)[:n])
            return np.concatenate(outs)
        inp = self.interpreter.get_input_details()[0]
        out = self.interpreter.get_output_details()[0]
        if inp["dtype"] == np.int8:
            scale, zero = inp["quantization"]
            x = quantize_input(x, scale, zero)
        self.interpreter.set_tensor(inp["index"], np.ascontiguousarray(x))
        self.interpreter.invoke()
        y = self.interpreter.get_tensor(out["index"])
        if out["dtype"] == np.int8:
            scale, zero = out["quantization"]
            y = dequantize_output(y, scale, zero)
        return y

    def with_threads(self, threads: int) -> LiteRTDeployed:
        return LiteRTDeployed(self.runtime, self.precision, self.path, threads, self.options, list(self.notes),
                              interpreter=_interpreter(self.path, threads))


@register
class LiteRTAdapter(Adapter):
    name = "litert"
    title = "LiteRT (litert-torch + ai-edge-litert)"
    packages = ("litert_torch", "ai_edge_litert.interpreter", "ai_edge_quantizer")
    install = INSTALL
    precisions = ("fp32", "int8_dynamic", "int8")
    fixed_batch = True

    def export(self, model, example, options: DeployOptions, calibration=None, workdir="."):
        self.check(options)
        import litert_torch

        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        batch = options.batch_size
        example = example[:1].expand(batch, *example.shape[1:]).contiguous()
        fp32 = workdir / f"model_fp32_b{batch}.tflite"
        with _quiet():
            litert_torch.convert(plain_copy(model), (example,)).export(str(fp32))
        path = fp32
        if options.precision != "fp32":
            path = workdir / f"model_{options.precision}_b{batch}.tflite"
            _quantize(fp32, path, options, calibration)
        return LiteRTDeployed(self.name, options.precision, path, options.threads, options, [],
                              interpreter=_interpreter(path, options.threads))


def _quantize(fp32: Path, path: Path, options: DeployOptions, calibration) -> None:
    """ai-edge-quantizer: dynamic_wi8_afp32 or static_wi8_ai8 (calibrated on batches of the fixed size)."""
    from ai_edge_quantizer import quantizer, recipe

    qt = quantizer.Quantizer(str(fp32))
    qt.load_quantization_recipe(recipe.static_wi8_ai8() if options.precision == "int8" else recipe.dynamic_wi8_afp32())
    result = None
    if qt.need_calibration:
        if calibration is None:
            raise ValueError("precision='int8' needs calibration images")
        interp = _interpreter(fp32, 1)
        (signature, runner), = interp.get_signature_list().items()
        name = runner["inputs"][0]
        batch = options.batch_size
        samples = [{name: to_numpy(calibration[i:i + batch])} for i in range(0, len(calibration) - batch + 1, batch)]
        with _quiet():
            result = qt.calibrate({signature: samples})
    with _quiet():
        quantized = qt.quantize(result)
    if os.path.exists(path):
        os.remove(path)
    quantized.export_model(str(path))
