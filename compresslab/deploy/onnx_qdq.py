"""Reading a static INT8 (QDQ) ONNX file back and computing its layers by hand.

A QDQ file writes every quantized Gemm / MatMul / Conv as float ops fed by DequantizeLinear nodes:

    q(x) = clamp(round(x / s) + z, -128, 127),   dq(q) = (q - z) * s   (per tensor, or per channel
    along the node's `axis`),   y = dq(q(x)) @ dq(W_q)^T + dq(b_q)       (Gemm; Conv likewise).

`qdq_layers` finds each layer's parameters by following the node's own inputs through their
DequantizeLinear nodes (never by node order or tensor names), honouring `transB`, `alpha`, `beta`,
each DequantizeLinear's `axis` and an int32 bias behind its own DequantizeLinear. `by_hand` computes
a layer from those parameters with numpy/torch in float64; `first_layer_model` cuts the file at one
layer's own output so a runtime can run exactly that layer.

`u8s8_saturated` emulates the fused integer kernel ONNX Runtime uses on x86 CPUs without VNNI:
activations shifted to uint8 (q + 128), weights int8, and each pair of adjacent products summed in
*saturating 16-bit* arithmetic (the `vpmaddubsw` instruction) before the int32 accumulation:
255 * 127 * 2 = 64,770 is clamped to 32,767. VNNI's `vpdpbusd` sums in 32 bits and is exact.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

__all__ = ["QdqLayer", "qdq_layers", "dequantize", "by_hand", "u8s8_saturated", "first_layer_model",
           "sub_model"]

LAYER_OPS = ("Gemm", "MatMul", "Conv")
INT16_MIN, INT16_MAX = -(2**15), 2**15 - 1


@dataclass(frozen=True)
class QdqLayer:
    """One quantized layer of a QDQ file, in its file's own terms.

    op: Gemm | MatMul | Conv; input: the float tensor the layer's input QuantizeLinear reads;
    output: the layer's own output tensor; weight_q: the stored integer weight as laid out in the
    file, with weight_scale / weight_zero_point along weight_axis (scalars: per tensor);
    bias: the dequantized float bias or None; attributes: the node's attributes (transB, alpha,
    beta, strides, pads, dilations, group)."""

    op: str
    input: str
    output: str
    input_scale: float
    input_zero_point: int
    weight_q: np.ndarray
    weight_scale: np.ndarray
    weight_zero_point: np.ndarray
    weight_axis: int
    bias: np.ndarray | None
    attributes: dict = field(default_factory=dict)

    @property
    def trans_b(self) -> bool:
        return bool(self.attributes.get("transB", 0))

    @property
    def per_channel(self) -> bool:
        return np.asarray(self.weight_scale).size > 1

    def weight(self) -> np.ndarray:
        """dq(W_q) in float64, laid out as torch's layers keep it: (out, in) for Gemm / MatMul,
        (out, in / group, kh, kw) for Conv."""
        w = dequantize(self.weight_q, self.weight_scale, self.weight_zero_point, self.weight_axis)
        if self.op == "MatMul" or (self.op == "Gemm" and not self.trans_b):
            w = w.T
        return w


def dequantize(q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, axis: int = 1) -> np.ndarray:
    """ONNX DequantizeLinear in float64: (q - z) * s, with s and z scalars or 1-D along `axis`."""
    q = np.asarray(q).astype(np.float64)
    scale, zero_point = np.asarray(scale, np.float64), np.asarray(zero_point, np.float64)
    if scale.size > 1:
        shape = [1] * q.ndim
        shape[axis % q.ndim] = -1
        scale, zero_point = scale.reshape(shape), zero_point.reshape(shape)
    return (q - zero_point) * scale


def _quantize(x: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """ONNX QuantizeLinear to int8: clamp(round_half_even(x / s) + z, -128, 127), the division in
    float32 as the runtime does it (a float64 division can round a tie the other way); returned as
    float64 integers."""
    q = np.rint(np.asarray(x, np.float32) / np.float32(scale)).astype(np.float64)
    return np.clip(q + zero_point, -128, 127)


def qdq_layers(path: str | os.PathLike) -> list[QdqLayer]:
    """Every Gemm / MatMul / Conv of a QDQ file whose activation input and weight both come
    through DequantizeLinear, in graph order."""
    import onnx
    from onnx import helper, numpy_helper

    graph = onnx.load(str(path)).graph
    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:  # constants written as Constant nodes count as initializers
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    producer = {out: node for node in graph.node for out in node.output}

    def dq(tensor: str):
        """(stored value or None, scale, zero point, axis, the DQ's input name) of a DQ output."""
        node = producer.get(tensor)
        if node is None or node.op_type != "DequantizeLinear" or node.input[1] not in consts:
            return None
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        zp_name = node.input[2] if len(node.input) > 2 and node.input[2] else None
        scale = consts[node.input[1]]
        zero = consts[zp_name] if zp_name in consts else np.zeros_like(scale, dtype=np.int8)
        return consts.get(node.input[0]), scale, zero, int(attrs.get("axis", 1)), node.input[0]

    layers = []
    for node in graph.node:
        if node.op_type not in LAYER_OPS or len(node.input) < 2:
            continue
        x, w = dq(node.input[0]), dq(node.input[1])
        if x is None or w is None or x[0] is not None or w[0] is None:
            continue
        quantize = producer.get(x[4])
        source = quantize.input[0] if quantize is not None and quantize.op_type == "QuantizeLinear" else x[4]
        bias = None
        if len(node.input) > 2 and node.input[2]:
            name = node.input[2]
            b = dq(name)
            if name in consts:
                bias = consts[name].astype(np.float64)
            elif b is not None and b[0] is not None:
                bias = dequantize(b[0], b[1], b[2], b[3] if b[0].ndim > 1 else 0)
            else:
                raise ValueError(f"{node.op_type} {node.name!r}: bias {name!r} is neither a constant nor "
                                 "a DequantizeLinear of one")
        layers.append(QdqLayer(
            op=node.op_type, input=source, output=node.output[0],
            input_scale=float(np.asarray(x[1]).reshape(-1)[0]),
            input_zero_point=int(np.asarray(x[2]).reshape(-1)[0]),
            weight_q=w[0], weight_scale=np.asarray(w[1]), weight_zero_point=np.asarray(w[2]),
            weight_axis=w[3], bias=bias,
            attributes={a.name: helper.get_attribute_value(a) for a in node.attribute}))
    return layers


def _quantized_input(layer: QdqLayer, x: np.ndarray) -> np.ndarray:
    """q(x) of the layer's input (float64 integers); Gemm / MatMul see x flattened per sample."""
    x = np.asarray(x, np.float64)
    if layer.op != "Conv":
        x = x.reshape(len(x), -1)
    return _quantize(x, layer.input_scale, layer.input_zero_point)


def by_hand(layer: QdqLayer, x: np.ndarray | torch.Tensor) -> np.ndarray:
    """The layer's float output for input `x` (its own input tensor, e.g. the images), computed
    from the file's integers: dq(q(x)) @ dq(W_q)^T * alpha + dq(b) * beta, or the convolution."""
    x = x.numpy() if isinstance(x, torch.Tensor) else x
    xd = (_quantized_input(layer, x) - layer.input_zero_point) * layer.input_scale
    w = layer.weight()
    if layer.op == "Conv":
        a = layer.attributes
        pads = a.get("pads", [0, 0, 0, 0])
        if pads[:2] != pads[2:]:
            raise ValueError(f"Conv pads {pads}: only symmetric padding is computed by hand")
        bias = None if layer.bias is None else torch.from_numpy(layer.bias)
        return torch.nn.functional.conv2d(
            torch.from_numpy(xd), torch.from_numpy(w), bias, stride=tuple(a.get("strides", [1, 1])),
            padding=tuple(pads[:2]), dilation=tuple(a.get("dilations", [1, 1])),
            groups=int(a.get("group", 1))).numpy()
    y = xd @ w.T * float(layer.attributes.get("alpha", 1.0))
    if layer.bias is not None:
        y = y + layer.bias * float(layer.attributes.get("beta", 1.0))
    return y


def u8s8_saturated(layer: QdqLayer, x: np.ndarray | torch.Tensor) -> np.ndarray:
    """`by_hand` as a U8S8 kernel without VNNI computes it (Gemm / MatMul, per-tensor or per-channel
    int8 weights with zero point 0): a = q(x) + 128 in uint8, sum_k a_k w_k accumulated pair by pair,
    each pair a_2i w_2i + a_2i+1 w_2i+1 clamped to int16 first; then the zero-point correction
    -(z + 128) sum_k w_k and the float rescale s * s_w + b. Exact wherever no pair leaves int16."""
    if layer.op == "Conv":
        raise ValueError("u8s8_saturated emulates Gemm / MatMul layers only (op='Conv' given)")
    if np.any(np.asarray(layer.weight_zero_point) != 0):
        raise ValueError("u8s8_saturated needs symmetric weights (weight zero point 0)")
    x = x.numpy() if isinstance(x, torch.Tensor) else x
    a = (_quantized_input(layer, x) + 128).astype(np.int64)
    w_q = np.asarray(layer.weight_q, np.int64)
    if layer.op == "MatMul" or not layer.trans_b:
        w_q = w_q.T  # (out, in)
    if a.shape[1] % 2:
        a, w_q = np.pad(a, ((0, 0), (0, 1))), np.pad(w_q, ((0, 0), (0, 1)))
    pairs = np.einsum("mkt,nkt->mnk", a.reshape(len(a), -1, 2), w_q.reshape(len(w_q), -1, 2))
    acc = np.clip(pairs, INT16_MIN, INT16_MAX).sum(-1) - (layer.input_zero_point + 128) * w_q.sum(1)
    y = acc * (layer.input_scale * np.broadcast_to(np.asarray(layer.weight_scale, np.float64), (len(w_q),)))
    y = y * float(layer.attributes.get("alpha", 1.0))
    if layer.bias is not None:
        y = y + layer.bias * float(layer.attributes.get("beta", 1.0))
    return y


def first_layer_model(path: str | os.PathLike, out_path: str | os.PathLike, index: int = 0) -> Path:
    """The sub-graph of a QDQ file from its input to the `index`-th quantized layer's own output
    (before any activation or requantization), written to `out_path`: what the runtime computes for
    that layer, to check by hand."""
    import onnx

    layers = qdq_layers(path)
    if not 0 <= index < len(layers):
        raise ValueError(f"index={index} is out of range: the file has {len(layers)} quantized layers")
    onnx.save(sub_model(path, [layers[index].output]), str(out_path))
    return Path(out_path)


def sub_model(path: str | os.PathLike, outputs: list[str]):
    """The file's graph from its first input to the tensors `outputs` (an onnx ModelProto); shapes
    are inferred first, so any intermediate tensor can be an output."""
    import onnx

    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    return onnx.utils.Extractor(model).extract_model([model.graph.input[0].name], list(outputs))
