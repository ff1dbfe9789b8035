"""OpenVINO on the CPU: `ov.convert_model` from PyTorch, INT8 through NNCF's post-training quantization.

Precisions: fp32 (INFERENCE_PRECISION_HINT f32: every op in float32); bf16 (the CPU plugin's
default hint on a CPU with bfloat16 instructions: it silently computes in bfloat16, 8 mantissa
bits instead of 23); int8 (nncf.quantize: int8 weights per channel, int8 activations with scales
from the calibration images, executed by the CPU's integer dot-product instructions).
Files: the .xml graph and .bin weights saved with compress_to_fp16=False (float32 weights).
"""

from __future__ import annotations

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

__all__ = ["OpenVinoAdapter", "OpenVinoDeployed", "compile_ov"]

HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}  # int8: the non-quantized ops stay float32


def compile_ov(path: str | Path, threads: int, hint: str):
    """Read an IR file and compile it for the CPU with `threads` inference threads and a precision hint."""
    import openvino as ov

    core = ov.Core()
    config = {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": hint,
              "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
    return core.compile_model(core.read_model(str(path)), "CPU", config)


@dataclass
class OpenVinoDeployed(Deployed):
    compiled: object = None
    hint: str = "f32"

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.compiled(x)[0]

    def with_threads(self, threads: int) -> OpenVinoDeployed:
        return OpenVinoDeployed(self.runtime, self.precision, self.path, threads, self.options, list(self.notes),
                                compiled=compile_ov(self.path, threads, self.hint), hint=self.hint)

    @property
    def file_bytes(self) -> int:
        xml = Path(self.path)
        return xml.stat().st_size + xml.with_suffix(".bin").stat().st_size

    def execution_precision(self) -> str:
        """What the plugin really computes in (the compiled model's hint)."""
        value = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        return value.get_type_name() if hasattr(value, "get_type_name") else str(value)


def _quiet():
    return quiet(("nncf",), stderr=True)


@register
class OpenVinoAdapter(Adapter):
    name = "openvino"
    title = "OpenVINO"
    packages = ("openvino", "nncf")
    install = 'install it with `pip install -e ".[dev]"` (openvino, nncf)'
    precisions = ("fp32", "bf16", "int8")

    def export(self, model, example, options: DeployOptions, calibration=None, workdir="."):
        self.check(options)
        import openvino as ov

        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        model = plain_copy(model)
        shape = [-1, *example.shape[1:]]
        with _quiet():
            ovm = ov.convert_model(model, example_input=example.contiguous(), input=[tuple(shape)])
        notes = []
        if options.precision == "int8":
            if calibration is None:
                raise ValueError("precision='int8' needs calibration images")
            with _quiet():
                import nncf

                batches = [to_numpy(calibration[i:i + options.calibration_batch])
                           for i in range(0, len(calibration), options.calibration_batch)]
                ovm = nncf.quantize(ovm, nncf.Dataset(batches), subset_size=len(calibration))
        if options.precision == "bf16":
            notes.append("the CPU plugin's default precision hint on this CPU: computes in bfloat16")
        path = workdir / f"model_{options.precision}.xml"
        ov.save_model(ovm, str(path), compress_to_fp16=False)
        hint = HINTS[options.precision]
        return OpenVinoDeployed(self.name, options.precision, path, options.threads, options, notes,
                                compiled=compile_ov(path, options.threads, hint), hint=hint)


def default_hint() -> str:
    """The CPU plugin's default INFERENCE_PRECISION_HINT on this machine (bf16 where the CPU has it)."""
    import openvino as ov

    value = ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT")
    return value.get_type_name() if hasattr(value, "get_type_name") else str(value)
