"""TensorRT (NVIDIA GPUs only): the ONNX file built into a TensorRT engine, FP32, FP16 or INT8.

    ONNX (dynamo export, dynamic batch) -> trt.Builder + OnnxParser -> optimization profile
    (batch 1..max) -> serialized engine (the file) -> execution context, fed torch CUDA tensors.

Usable only where a CUDA GPU and the `tensorrt` package exist; anywhere else `requirement()` gives
one sentence and the adapter is skipped. int8 here is TensorRT's explicit-quantization path: the
QDQ file of `runtime_onnx` (scales from the calibration images) built with the INT8 flag.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from compresslab.deploy.base import Adapter, Deployed, DeployOptions, missing_message, register

__all__ = ["TensorRTAdapter", "TensorRTDeployed", "build_engine"]

MAX_BATCH = 256


def build_engine(onnx_path: str | os.PathLike, engine_path: str | os.PathLike, shape: tuple[int, ...],
                 precision: str) -> Path:
    """Parse an ONNX file and serialize a TensorRT engine for batches 1..MAX_BATCH of `shape`."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {parser.get_error(0)}")
    config = builder.create_builder_config()
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
    profile = builder.create_optimization_profile()
    name = network.get_input(0).name
    profile.set_shape(name, (1, *shape), (MAX_BATCH, *shape), (MAX_BATCH, *shape))
    config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    Path(engine_path).write_bytes(bytes(engine))
    return Path(engine_path)


@dataclass
class TensorRTDeployed(Deployed):
    context: object = None
    engine: object = None

    def run(self, x: np.ndarray) -> np.ndarray:
        inp = torch.from_numpy(x).cuda()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.context.set_input_shape(names[0], tuple(inp.shape))
        self.context.set_tensor_address(names[0], inp.data_ptr())
        out = torch.empty(tuple(self.context.get_tensor_shape(names[1])), device="cuda")
        self.context.set_tensor_address(names[1], out.data_ptr())
        self.context.execute_async_v3(torch.cuda.current_stream().cuda_stream)
        torch.cuda.synchronize()
        return out.cpu().numpy()

    def with_threads(self, threads: int) -> TensorRTDeployed:
        return self


@register
class TensorRTAdapter(Adapter):
    name = "tensorrt"
    title = "TensorRT"
    packages = ("tensorrt",)
    install = "it needs an NVIDIA GPU with CUDA and `pip install tensorrt` (skipped on this machine)"
    precisions = ("fp32", "fp16", "int8")

    def requirement(self) -> str | None:
        if not torch.cuda.is_available():
            return "TensorRT needs an NVIDIA GPU with CUDA; none is visible here, so it is skipped."
        why = super().requirement()
        return why if why is None else missing_message(self.title, self.install)

    def export(self, model, example, options: DeployOptions, calibration=None, workdir="."):
        self.check(options)
        import tensorrt as trt

        from compresslab.deploy.runtime_onnx import OnnxRuntimeAdapter

        workdir = Path(workdir)
        onnx_precision = "int8" if options.precision == "int8" else "fp32"
        onnx_file = OnnxRuntimeAdapter().export(model, example, DeployOptions(precision=onnx_precision),
                                                calibration, workdir).path
        path = build_engine(onnx_file, workdir / f"model_{options.precision}.engine", tuple(example.shape[1:]),
                            options.precision)
        engine = trt.Runtime(trt.Logger(trt.Logger.ERROR)).deserialize_cuda_engine(path.read_bytes())
        return TensorRTDeployed(self.name, options.precision, path, options.threads, options, [],
                                context=engine.create_execution_context(), engine=engine)
