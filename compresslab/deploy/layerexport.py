"""One precision per layer, deployed: a model exported with each Linear / Conv2d layer at its own option.

Options per runtime (`layer_options`): ONNX Runtime: "fp32", "int8" (static QDQ as the ONNX Runtime
adapter's int8: per-channel int8 weights, int8 activations with calibrated scales, only on the
chosen layers and the activation / pooling / shape nodes after them: `quantize_static(...,
nodes_to_quantize=...)`; all layers int8 gives the adapter's whole-model file), "int4" (Linear layers only: 4-bit
weight-only `MatMulNBits`, symmetric blocks of 32 inputs, see `onnx_nbits`); OpenVINO: "fp32"
(f32 hint) and "int8" (`nncf.quantize` with every other layer in its `ignored_scope`).

A layer is found in a file by its weight: the exported weight initializer (ONNX) or constant
(OpenVINO) carries the parameter's name ("fc1.weight"); where an exporter names it otherwise the
tensor whose values equal the layer's weight is renamed to it, so every file of a model speaks of
its layers by their PyTorch names. `quantized_layers(path)` reads a file back (weights behind an
int8 DequantizeLinear with a quantized input: int8; a MatMulNBits: int4; an IR's int8 constants
or FakeQuantize on the weight: int8): `export_config` checks every file it writes against it.

The FP32 export of a model is made once per workdir and model (a hash of its weights): each
config's file is written under `<workdir>/<runtime>-<model hash>/<config slug>/`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from compresslab.core.models import prunable_layers
from compresslab.core.validate import check_choice, check_int, check_layer_names, show
from compresslab.deploy.base import Deployed, DeployOptions, adapter, quiet, to_numpy

__all__ = ["RUNTIME_OPTIONS", "layer_options", "full_config", "config_slug", "model_hash", "export_config",
           "quantized_layers"]

RUNTIME_OPTIONS = {"onnxruntime": ("fp32", "int8", "int4"), "openvino": ("fp32", "int8")}
LINEAR_ONLY = ("int4",)  # options a Conv2d cannot take
OWNER = "export_config"
LAYER_OPS = ("Gemm", "MatMul", "Conv", "MatMulNBits")
FOLLOWERS = ("Relu", "Clip", "MaxPool", "AveragePool", "GlobalAveragePool", "Reshape", "Flatten", "Transpose",
             "Squeeze", "Unsqueeze")  # quantized with the int8 layer they follow
_WEIGHT = re.compile(r"^(?:self\.)?(?P<layer>.+)\.weight(?:_(?:Q4|quantized|DQ.*))?$")
_OV_MODULE = re.compile(r"^__module\.(?P<layer>[^/]+)/")


def layer_options(model: nn.Module, runtime: str) -> dict[str, tuple[str, ...]]:
    """{layer: the options it can take in `runtime`} for `prunable_layers(model)` (int4: Linear only).

    >>> layer_options(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 2)), "onnxruntime")
    {'0': ('fp32', 'int8'), '2': ('fp32', 'int8', 'int4')}
    """
    check_choice(OWNER, "runtime", runtime, tuple(RUNTIME_OPTIONS))
    return {name: tuple(o for o in RUNTIME_OPTIONS[runtime] if o not in LINEAR_ONLY or isinstance(layer, nn.Linear))
            for name, layer in prunable_layers(model).items()}


def full_config(model: nn.Module, runtime: str, config: Mapping[str, str]) -> dict[str, str]:
    """`config` checked against the model and runtime and completed: every layer, in model order,
    with its option ("fp32" where `config` names none). Unknown layers or an option the layer
    cannot take raise ValueError naming the field, the value and the allowed values."""
    options = layer_options(model, runtime)
    if not isinstance(config, Mapping) or not all(isinstance(k, str) for k in config):
        raise TypeError(f"{OWNER}.config={show(config)} must be a mapping {{layer name: option}}")
    check_layer_names(OWNER, "config", config.keys(), options)
    for name, option in config.items():
        check_choice(OWNER, f"config[{name!r}]", option, options[name])
    return {name: config.get(name, "fp32") for name in options}


def config_slug(config: Mapping[str, str]) -> str:
    """A stable file-system name for a config: 'fp32' when no layer changes, else the changed
    layers sorted by name ('fc1-int8_fc2-int4') and 8 hex digits of their hash (names with dots
    or other characters stay distinct).

    >>> config_slug({"fc1": "fp32", "fc2": "fp32"}), config_slug({"fc2": "int4", "fc1": "int8"})[:18]
    ('fp32', 'fc1-int8_fc2-int4-')
    """
    changed = sorted((k, v) for k, v in config.items() if v != "fp32")
    if not changed:
        return "fp32"
    text = "_".join(f"{re.sub(r'[^A-Za-z0-9]+', '.', k)}-{v}" for k, v in changed)[:80]
    digest = hashlib.sha256(json.dumps(changed).encode()).hexdigest()[:8]
    return f"{text}-{digest}"


def model_hash(model: nn.Module, example: torch.Tensor) -> str:
    """SHA-256 (16 hex digits) of the model's structure, every parameter and buffer, and the input's
    shape past the batch: the key of the cached FP32 export."""
    h = hashlib.sha256(repr(model).encode())
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    h.update(str(tuple(example.shape[1:])).encode())
    return h.hexdigest()[:16]


def _atomic_target(path: Path) -> Path:
    """A temporary name beside `path` for a writer that takes a path (renamed over it when done)."""
    return path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")


def _weights(model: nn.Module) -> dict[str, np.ndarray]:
    return {name: layer.weight.detach().cpu().float().numpy() for name, layer in prunable_layers(model).items()}


def _match(values: np.ndarray, weights: dict[str, np.ndarray]) -> str | None:
    """The layer whose weight equals `values` (as stored, or transposed), or None."""
    for name, w in weights.items():
        if values.shape == w.shape and np.array_equal(values, w):
            return name
        if values.ndim == 2 and values.T.shape == w.shape and np.array_equal(values.T, w):
            return name
    return None


def _name_onnx_weights(onnx_model, model: nn.Module) -> None:
    """Make every layer's weight initializer carry its parameter's name '<layer>.weight' (renamed
    by value where the exporter chose another); raise if a layer has no weight initializer."""
    from onnx import numpy_helper

    graph = onnx_model.graph
    weights = _weights(model)
    inits = {t.name: t for t in graph.initializer}
    found = {}
    for node in graph.node:
        if node.op_type in LAYER_OPS and len(node.input) > 1 and node.input[1] in inits:
            old = node.input[1]
            m = _WEIGHT.match(old)
            layer = m["layer"] if m and m["layer"] in weights else _match(numpy_helper.to_array(inits[old]), weights)
            if layer is None:
                continue
            new = f"{layer}.weight"
            if old != new:
                inits[old].name = new
                for other in graph.node:
                    for i, name in enumerate(other.input):
                        if name == old:
                            other.input[i] = new
            found[layer] = node.name
    missing = sorted(set(weights) - set(found))
    if missing:
        raise ValueError(f"the ONNX export has no weight initializer for the layers {missing}")


def _cached_fp32(model: nn.Module, example: torch.Tensor, runtime: str, workdir: Path) -> tuple[Path, Path]:
    """(the model's folder, its FP32 file) under `workdir`: exported on first use, reused afterwards;
    the file appears under its final name only once complete."""
    folder = workdir / f"{runtime}-{model_hash(model, example)}"
    folder.mkdir(parents=True, exist_ok=True)
    if runtime == "onnxruntime":
        path = folder / "fp32.onnx"
        if not path.exists():
            import onnx

            from compresslab.deploy.runtime_onnx import export_onnx

            tmp = _atomic_target(path)
            export_onnx(model, example, tmp)
            proto = onnx.load(str(tmp))
            _name_onnx_weights(proto, model)
            onnx.save(proto, str(tmp))
            os.replace(tmp, path)
        return folder, path
    path = folder / "fp32.xml"
    if not path.exists():
        import openvino as ov

        from compresslab.deploy.base import plain_copy

        with quiet(("nncf",), stderr=True):
            ovm = ov.convert_model(plain_copy(model), example_input=example.contiguous(),
                                   input=[(-1, *example.shape[1:])])
        tmp = _atomic_target(path)
        ov.save_model(ovm, str(tmp), compress_to_fp16=False)
        os.replace(tmp.with_suffix(".bin"), path.with_suffix(".bin"))
        os.replace(tmp, path)
    return folder, path


def export_config(model: nn.Module, runtime: str, config: Mapping[str, str], example: torch.Tensor,
                  calibration: torch.Tensor | None, workdir: str | os.PathLike, threads: int = 1,
                  calibration_batch: int = 100) -> Deployed:
    """`model` deployed in `runtime` with each layer at its option in `config` (missing: "fp32"),
    run with `threads` intra-op threads. Everything is checked before any work: the runtime, the
    layer names, each option, the thread count, calibration images when a layer is int8. The file
    written is read back (`quantized_layers`) and must hold exactly the config asked for."""
    check_choice(OWNER, "runtime", runtime, tuple(RUNTIME_OPTIONS))
    config = full_config(model, runtime, config)
    check_int(OWNER, "threads", threads, 1, 4096)
    check_int(OWNER, "calibration_batch", calibration_batch, 1, 10**6)
    if "int8" in config.values() and (not isinstance(calibration, torch.Tensor) or len(calibration) == 0):
        raise ValueError(f"{OWNER}.calibration={show(calibration)} must be a non-empty batch of images "
                         "when a layer is int8")
    if not isinstance(example, torch.Tensor) or example.dim() < 2:
        raise ValueError(f"{OWNER}.example={show(example)} must be a batch tensor (N, ...)")
    adapter(runtime)  # MissingRuntime (what to install) before any work
    folder, fp32 = _cached_fp32(model, example, runtime, Path(workdir))
    slug = config_slug(config)
    build = _build_onnx if runtime == "onnxruntime" else _build_openvino
    path = fp32 if slug == "fp32" else build(fp32, config, calibration, folder / slug, calibration_batch)
    found = quantized_layers(path)
    if found != config:
        raise RuntimeError(f"{path} holds {found}, not the config asked for {config}")
    options = DeployOptions(threads=threads, calibration_batch=calibration_batch)
    notes = [f"per-layer options: {slug}"]
    if runtime == "onnxruntime":
        from compresslab.deploy.runtime_onnx import OnnxDeployed, session

        return OnnxDeployed(runtime, slug, path, threads, options, notes, session=session(path, threads))
    from compresslab.deploy.runtime_openvino import HINTS, OpenVinoDeployed, compile_ov

    hint = HINTS["fp32"]
    return OpenVinoDeployed(runtime, slug, path, threads, options, notes, compiled=compile_ov(path, threads, hint),
                            hint=hint)


class _Reader:
    """onnxruntime.quantization's CalibrationDataReader protocol over `calibration` in batches."""

    def __init__(self, name: str, calibration: torch.Tensor, batch: int):
        self.batches = iter([{name: to_numpy(calibration[i:i + batch])} for i in range(0, len(calibration), batch)])

    def get_next(self):
        return next(self.batches, None)


def _nodes_reading(onnx_model, weights: set[str], op_types: tuple[str, ...]) -> dict[str, str]:
    """{weight name: name of the node of `op_types` that reads it as its second input}."""
    return {n.input[1]: n.name for n in onnx_model.graph.node
            if n.op_type in op_types and len(n.input) > 1 and n.input[1] in weights}


def _with_followers(onnx_model, layers: set[str]) -> set[str]:
    """The node names `layers` plus the activation, pooling and shape nodes that follow each of them
    up to the next layer (Relu, MaxPool, Reshape, ...): quantized with it as the whole-model
    quantizer does (a Relu after an int8 layer is folded into its output's requantization, not
    left as a float op between two requantizations)."""
    consumers: dict[str, list] = {}
    for node in onnx_model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    by_name = {n.name: n for n in onnx_model.graph.node}
    out, todo = set(layers), list(layers)
    while todo:
        for name in by_name[todo.pop()].output:
            for nxt in consumers.get(name, []):
                if nxt.op_type in FOLLOWERS and nxt.name not in out:
                    out.add(nxt.name)
                    todo.append(nxt.name)
    return out


def _build_onnx(fp32: Path, config: dict[str, str], calibration, folder: Path, calibration_batch: int) -> Path:
    """The config's ONNX file in `folder`: int8 layers through quantize_static (QDQ, per channel),
    then int4 layers through MatMulNBitsQuantizer (their Gemm rewritten as MatMul + Add first)."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quant_pre_process, quantize_static
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    from compresslab.deploy.onnx_nbits import BLOCK_SIZE, gemm_to_matmul
    from compresslab.deploy.runtime_onnx import INPUT

    folder.mkdir(parents=True, exist_ok=True)
    int8 = {f"{k}.weight" for k, v in config.items() if v == "int8"}
    int4 = {f"{k}.weight" for k, v in config.items() if v == "int4"}
    source = fp32
    with quiet(("root", "onnxruntime")):
        if int8:
            pre = fp32.with_name("fp32_pre.onnx")
            if not pre.exists():
                tmp = _atomic_target(pre)
                quant_pre_process(str(fp32), str(tmp), skip_symbolic_shape=True)
                os.replace(tmp, pre)
            graph = onnx.load(str(pre))
            nodes = _with_followers(graph, set(_nodes_reading(graph, int8, ("Gemm", "MatMul", "Conv")).values()))
            source = folder / "int8.onnx"
            quantize_static(str(pre), str(source), _Reader(INPUT, calibration, calibration_batch),
                            quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QInt8,
                            weight_type=QuantType.QInt8, nodes_to_quantize=sorted(nodes))
        if not int4:
            return source
        proto = gemm_to_matmul(onnx.load(str(source)), int4)
        chosen = set(_nodes_reading(proto, int4, ("MatMul",)).values())
        others = [n.name for n in proto.graph.node if n.op_type == "MatMul" and n.name not in chosen]
        quantizer = MatMulNBitsQuantizer(proto, bits=4, block_size=BLOCK_SIZE, is_symmetric=True,
                                         nodes_to_exclude=others, op_types_to_quantize=("MatMul",))
        quantizer.process()
        path = folder / "model.onnx"
        quantizer.model.save_model_to_file(str(path))
    return path


def _ov_weight_source(op) -> tuple[str, str]:
    """(option, name) of a layer op's weight input: follows Convert / Subtract / Multiply /
    Transpose / Reshape back to a Constant (int8 when an i8 / u8 constant or a FakeQuantize is met)."""
    node, option = op.input_value(1).get_node(), "fp32"
    while node.get_type_name() in ("Convert", "Subtract", "Multiply", "Transpose", "Reshape", "FakeQuantize"):
        if node.get_type_name() == "FakeQuantize":
            option = "int8"
        node = node.input_value(0).get_node()
    if node.get_type_name() == "Constant" and node.get_output_element_type(0).get_type_name() in ("i8", "u8"):
        option = "int8"
    return option, node.get_friendly_name()


def _ov_layer_ops(ovm, model: nn.Module | None = None) -> dict[str, tuple[str, str]]:
    """{layer: (op friendly name, option)} of an OpenVINO model's Convolution / MatMul ops with a
    constant weight; the layer from the op's module path ('__module.fc1/...'), else the weight
    constant's name ('self.fc1.weight'), else (given the model) the layer whose weight equals it."""
    weights = _weights(model) if model is not None else {}
    out = {}
    for op in ovm.get_ordered_ops():
        if op.get_type_name() not in ("Convolution", "GroupConvolution", "MatMul"):
            continue
        option, const = _ov_weight_source(op)
        m1, m2 = _OV_MODULE.match(op.get_friendly_name()), _WEIGHT.match(const)
        layer = m1["layer"] if m1 else m2["layer"] if m2 else None
        if layer is None and weights:
            source = op.input_value(1).get_node()
            if source.get_type_name() == "Constant":
                layer = _match(np.asarray(source.get_data(), np.float32), weights)
        if layer is not None:
            out[layer] = (op.get_friendly_name(), option)
    return out


def _build_openvino(fp32: Path, config: dict[str, str], calibration, folder: Path, calibration_batch: int) -> Path:
    """The config's IR in `folder`: nncf.quantize with every layer not int8 in the ignored scope."""
    import nncf
    import openvino as ov

    ovm = ov.Core().read_model(str(fp32))
    ops = _ov_layer_ops(ovm)
    missing = sorted(set(config) - set(ops))
    if missing:
        raise ValueError(f"the OpenVINO model has no Convolution / MatMul op for the layers {missing}")
    ignored = [ops[k][0] for k, v in config.items() if v != "int8"]
    batches = [to_numpy(calibration[i:i + calibration_batch]) for i in range(0, len(calibration), calibration_batch)]
    with quiet(("nncf",), stderr=True):
        ovm = nncf.quantize(ovm, nncf.Dataset(batches), subset_size=len(calibration),
                            ignored_scope=nncf.IgnoredScope(names=ignored) if ignored else None)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.xml"
    ov.save_model(ovm, str(path), compress_to_fp16=False)
    return path


def quantized_layers(path: str | os.PathLike) -> dict[str, str]:
    """{layer: option} read back from a file `export_config` wrote, in graph order. ONNX: a
    MatMulNBits node is int4; a Gemm / MatMul / Conv whose weight comes through a DequantizeLinear of
    an int8 initializer and whose input through a DequantizeLinear is int8 (a quantized weight
    without a quantized input: 'int8_weights'); a float weight initializer is fp32. OpenVINO IR
    (.xml): int8 where the weight comes from an i8 / u8 constant or through a FakeQuantize."""
    path = Path(path)
    if path.suffix == ".xml":
        import openvino as ov

        return {layer: option for layer, (_, option) in _ov_layer_ops(ov.Core().read_model(str(path))).items()}
    import onnx
    from onnx import TensorProto

    graph = onnx.load(str(path)).graph
    inits = {t.name: t for t in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    out = {}
    for node in graph.node:
        if node.op_type not in LAYER_OPS or len(node.input) < 2:
            continue
        name, option = node.input[1], "fp32"
        if node.op_type == "MatMulNBits":
            option = "int4"
        elif name not in inits:
            dq = producer.get(name)
            if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in inits:
                continue
            name = dq.input[0]
            if inits[name].data_type not in (TensorProto.INT8, TensorProto.UINT8):
                continue
            source = producer.get(node.input[0])
            option = "int8" if source is not None and source.op_type == "DequantizeLinear" else "int8_weights"
        elif inits[name].data_type != TensorProto.FLOAT:
            continue
        m = _WEIGHT.match(name)
        if m is None:
            raise ValueError(f"{path}: the weight {name!r} of {node.op_type} {node.name!r} does not carry a "
                             "layer's name ('<layer>.weight')")
        out[m["layer"]] = option
    return out
