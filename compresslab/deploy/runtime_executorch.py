"""ExecuTorch with the XNNPACK backend: a .pte program run through ExecuTorch's Python runtime.

    torch.export -> to_edge_transform_and_lower(partitioner=[XnnpackPartitioner()]) -> .to_executorch()

int8: PT2E with XNNPACK's quantizer (symmetric per-channel int8 weights, int8 activations from a
calibration pass) before lowering; XNNPACK then runs integer kernels. The exported program has a
dynamic batch dimension, planned for batches up to `MAX_BATCH` (larger ones run in chunks).
ExecuTorch's thread pool is process-wide and XNNPACK binds a loaded program to the pool that existed
at load time: after the pool is resized, older programs must be loaded again (running one would use
a freed pool). `run` therefore resizes the pool to this model's thread count when it differs and
reloads its program whenever the pool changed since it was loaded (warm-up calls absorb this).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from compresslab.deploy.base import (
    Adapter,
    Deployed,
    DeployOptions,
    native_stderr_captured,
    plain_copy,
    quiet,
    register,
)

__all__ = ["ExecuTorchAdapter", "ExecuTorchDeployed", "MAX_BATCH", "resize_pool"]

MAX_BATCH = 256  # exported with an example of this batch: XNNPACK's buffers are planned for it


def _quiet():
    return quiet(("torch.utils._pytree", "executorch", "root"))


_POOL = {"generation": 0}


def resize_pool(threads: int) -> int:
    """Resize ExecuTorch's (process-wide) thread pool if needed; return the pool's generation
    (incremented by every resize: programs loaded under an older generation must be reloaded)."""
    portable_lib = _portable_lib()
    if portable_lib._threadpool_get_thread_count() != threads:  # on every call: keep this path free of work
        with native_stderr_captured():  # the runtime logs every resize on stderr
            portable_lib._unsafe_reset_threadpool(threads)
        _POOL["generation"] += 1
    return _POOL["generation"]


@functools.cache
def _portable_lib():
    """ExecuTorch's runtime bindings, imported once, their thread pool started (which logs its CPU
    probing on stderr)."""
    with native_stderr_captured():
        from executorch.extension.pybindings import portable_lib

        portable_lib._threadpool_get_thread_count()
    return portable_lib


def _load(path: Path):
    from executorch.runtime import Runtime

    with native_stderr_captured():  # the first load logs its CPU probing on stderr
        return Runtime.get().load_program(str(path)).load_method("forward")


@dataclass
class ExecuTorchDeployed(Deployed):
    method: object = None
    generation: int = -1

    def run(self, x: np.ndarray) -> np.ndarray:
        generation = resize_pool(self.threads)
        if generation != self.generation or self.method is None:
            self.method, self.generation = _load(self.path), generation
        if len(x) > MAX_BATCH:
            return np.concatenate([self.run(x[i:i + MAX_BATCH]) for i in range(0, len(x), MAX_BATCH)])
        return self.method.execute([torch.from_numpy(x)])[0].numpy()

    def with_threads(self, threads: int) -> ExecuTorchDeployed:
        return ExecuTorchDeployed(self.runtime, self.precision, self.path, threads, self.options, list(self.notes),
                                  method=None)


def _quantize_xnnpack(model: torch.nn.Module, example: torch.Tensor, calibration: torch.Tensor, batch: int):
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    graph = torch.export.export(model, (example,), dynamic_shapes=_dims()).module()
    prepared = prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for i in range(0, len(calibration), batch):
            prepared(calibration[i:i + batch])
    return convert_pt2e(prepared)


def _dims():
    return ({0: torch.export.Dim("batch", min=1, max=MAX_BATCH)},)


@register
class ExecuTorchAdapter(Adapter):
    name = "executorch"
    title = "ExecuTorch"
    packages = ("executorch", "executorch.runtime")
    install = 'install it with `pip install -e ".[dev]"` (executorch)'
    precisions = ("fp32", "int8")

    def export(self, model, example, options: DeployOptions, calibration=None, workdir="."):
        self.check(options)
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower

        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        model = plain_copy(model)
        example = example[:1].expand(MAX_BATCH, *example.shape[1:]).contiguous()
        with _quiet(), native_stderr_captured():
            if options.precision == "int8":
                if calibration is None:
                    raise ValueError("precision='int8' needs calibration images")
                model = _quantize_xnnpack(model, example, calibration.contiguous(), options.calibration_batch)
            program = torch.export.export(model, (example,), dynamic_shapes=_dims())
            lowered = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch()
        path = workdir / f"model_{options.precision}.pte"
        path.write_bytes(lowered.buffer)
        return ExecuTorchDeployed(self.name, options.precision, path, options.threads, options, [])
