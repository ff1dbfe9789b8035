"""Core ML: convert to an ML program (.mlpackage) and compress its weights; prediction needs macOS.

On Linux coremltools converts (torch.jit.trace -> ct.convert(convert_to="mlprogram")) and compresses
the weights: 8-bit linear quantization (w = s * (q - z) per output channel), k-means palettization
(each weight replaced by the index of one of 2^bits centroids: a lookup table per layer) and
magnitude pruning (a sparse representation). Running the model is macOS-only, so `Deployed.run`
raises; the accuracy of the palettized model is measured on the PyTorch side with coremltools'
post-training palettizer, which computes the same k-means lookup tables.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from compresslab.deploy.base import Adapter, Deployed, DeployOptions, plain_copy, quiet, register

__all__ = ["CoreMLAdapter", "CoreMLDeployed", "MACOS_ONLY", "convert", "compress", "palettize_torch"]

MACOS_ONLY = ("Core ML prediction runs only on macOS (and iOS): here the model is converted and "
              "compressed, and its on-device latency needs a Mac")


def _quiet():
    return quiet(("coremltools", "root", "coremltools.optimize.torch._utils.k_means"), stderr=True)


def convert(model: nn.Module, example: torch.Tensor, precision: str = "fp32"):
    """An ML program of `model` traced on `example` (fixed shape), computing in float32 or float16."""
    with _quiet(), torch.no_grad():
        import coremltools as ct  # its import logs version notices: inside the quiet block

        traced = torch.jit.trace(plain_copy(model), example)
        return ct.convert(traced, inputs=[ct.TensorType(name="x", shape=tuple(example.shape))],
                          convert_to="mlprogram", minimum_deployment_target=ct.target.iOS16,
                          compute_precision=ct.precision.FLOAT32 if precision == "fp32" else ct.precision.FLOAT16)


def compress(mlmodel, kind: str, nbits: int = 8, sparsity: float = 0.9):
    """Weight compression of an ML program: kind = "linear8" (8-bit linear quantization per channel),
    "palettize" (k-means lookup table of 2^nbits entries per layer) or "prune" (magnitude, sparse)."""
    with _quiet():
        import coremltools.optimize.coreml as cto

        if kind == "linear8":
            cfg = cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(mode="linear_symmetric"))
            return cto.linear_quantize_weights(mlmodel, cfg)
        if kind == "palettize":
            cfg = cto.OptimizationConfig(global_config=cto.OpPalettizerConfig(mode="kmeans", nbits=nbits))
            return cto.palettize_weights(mlmodel, cfg)
        if kind == "prune":
            cfg = cto.OptimizationConfig(global_config=cto.OpMagnitudePrunerConfig(target_sparsity=sparsity))
            return cto.prune_weights(mlmodel, cfg)
    raise ValueError(f"kind={kind!r} must be 'linear8', 'palettize' or 'prune'")


def palettize_torch(model: nn.Module, nbits: int) -> nn.Module:
    """The PyTorch model with every conv/linear weight replaced by its k-means palette (2^nbits
    centroids per layer), through coremltools.optimize.torch's post-training palettizer."""
    from coremltools.optimize.torch.palettization import (
        PostTrainingPalettizer,
        PostTrainingPalettizerConfig,
    )

    config = PostTrainingPalettizerConfig.from_dict({"global_config": {"n_bits": nbits, "granularity": "per_tensor"}})
    with _quiet():
        return PostTrainingPalettizer(copy.deepcopy(model).cpu().eval(), config).compress()


def _bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


@dataclass
class CoreMLDeployed(Deployed):
    def run(self, x: np.ndarray) -> np.ndarray:
        raise RuntimeError(MACOS_ONLY)

    def with_threads(self, threads: int) -> CoreMLDeployed:
        return self

    @property
    def file_bytes(self) -> int:
        return _bytes(self.path)


@register
class CoreMLAdapter(Adapter):
    name = "coreml"
    title = "Core ML (coremltools)"
    packages = ("coremltools",)
    install = 'install it with `pip install -e ".[dev]"` (coremltools)'
    precisions = ("fp32", "fp16", "int8_weights")
    fixed_batch = True
    can_run = False

    def export(self, model, example, options: DeployOptions, calibration=None, workdir="."):
        self.check(options)
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        example = example[:1].expand(options.batch_size, *example.shape[1:]).contiguous()
        mlmodel = convert(model, example, "fp32" if options.precision == "fp32" else "fp16")
        if options.precision == "int8_weights":
            mlmodel = compress(mlmodel, "linear8")
        path = workdir / f"model_{options.precision}.mlpackage"
        with _quiet():
            mlmodel.save(str(path))
        return CoreMLDeployed(self.name, options.precision, path, options.threads, options, [MACOS_ONLY])
