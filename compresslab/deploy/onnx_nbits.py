"""4-bit weight-only layers in ONNX Runtime (`MatMulNBits`): the block quantizer by hand, the graph
rewrite that makes a Linear layer a MatMul, and reading the 4-bit weights back from a file.

ONNX Runtime's `MatMulNBitsQuantizer` (symmetric, `block_size` 32) cuts each output row w of a
Linear layer (its K inputs) into blocks of 32 consecutive inputs (the last one zero-padded) and for
each block b stores one float32 scale and 4-bit codes:

    m_b = max(b) if |max(b)| > |min(b)| else min(b)      (the value of largest magnitude, with its sign)
    s_b = m_b / -8,   q = clamp(round(w / s_b) + 8, 0, 15),   w' = (q - 8) s_b

so the largest-magnitude value lands on code 0 (-8 s_b) exactly and the 16 codes span [-8, 7] s_b.
With `accuracy_level` unset the kernel multiplies float32 activations by the dequantized w'.

The quantizer handles MatMul nodes only, and the dynamo exporter writes a Linear layer as
Gemm(x, W, b, transB=1): `gemm_to_matmul` rewrites the chosen Gemms into MatMul(x, W^T) + Add(b),
keeping the weight initializer's name (the parameter's name, e.g. "fc1.weight") so the 4-bit
tensor is called "fc1.weight_Q4" and a file can be read back by layer (`nbits_layers`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import numpy as np

__all__ = ["BLOCK_SIZE", "int4_blocks", "int4_dequantized", "gemm_to_matmul", "nbits_layers"]

BLOCK_SIZE = 32


def int4_blocks(w: np.ndarray, block_size: int = BLOCK_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric 4-bit codes of a (N, K) weight (torch's Linear layout), in blocks of `block_size`
    along K: returns (codes (N, K) in 0..15, scales (N, ceil(K / block_size)) float32), with
    s = m / -8 for m the block's value of largest magnitude (a tie: the negative one) and
    q = clamp(round(w / s) + 8, 0, 15) (q = 8 where s = 0).

    >>> q, s = int4_blocks(np.array([[1.0, -0.5, 0.25, 0.0]], np.float32), block_size=4)
    >>> s.tolist(), q.tolist()
    ([[-0.125]], [[0, 12, 6, 8]])
    """
    w = np.asarray(w, np.float32)
    if w.ndim != 2 or w.size == 0 or not np.isfinite(w).all():
        raise ValueError(f"w must be a finite, non-empty 2-D (N, K) array; got shape {w.shape}")
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size={block_size!r} must be a positive integer (ONNX Runtime: 16 to 256, a power of 2)")
    n, k = w.shape
    blocks = -(-k // block_size)
    padded = np.zeros((n, blocks * block_size), np.float32)
    padded[:, :k] = w
    padded = padded.reshape(n, blocks, block_size)
    lo, hi = padded.min(-1), padded.max(-1)
    m = np.where(np.abs(hi) > np.abs(lo), hi, lo)
    scales = (m / np.float32(-8)).astype(np.float32)
    safe = np.where(scales == 0, np.float32(1), scales)
    codes = np.clip(np.rint(padded / safe[..., None]) + 8, 0, 15)
    codes = np.where(scales[..., None] == 0, 8, codes)
    return codes.reshape(n, -1)[:, :k].astype(np.uint8), scales


def int4_dequantized(w: np.ndarray, block_size: int = BLOCK_SIZE) -> np.ndarray:
    """w' = (q - 8) s of `int4_blocks`: the float32 weight a 4-bit layer computes with, (N, K).

    >>> int4_dequantized(np.array([[1.0, -0.3, 0.2, 0.1]], np.float32), block_size=4).tolist()
    [[1.0, -0.25, 0.25, 0.125]]
    """
    codes, scales = int4_blocks(w, block_size)
    k = codes.shape[1]
    per_input = np.repeat(scales, block_size, axis=1)[:, :k]
    return ((codes.astype(np.float32) - 8) * per_input).astype(np.float32)


def gemm_to_matmul(model, weights: Iterable[str]):
    """Rewrite, in the onnx ModelProto `model` (changed in place and returned), each Gemm whose
    weight initializer is named in `weights` into MatMul(x, W^T) (+ Add(b) when it has a bias):
    alpha = beta = 1, transA = 0 and transB = 1 are required (torch's Linear as exported). The
    transposed weight keeps the initializer's name; the MatMul is named '<gemm name>_matmul'."""
    from onnx import helper, numpy_helper

    wanted = set(weights)
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    nodes, done = [], set()
    for node in graph.node:
        if node.op_type != "Gemm" or len(node.input) < 2 or node.input[1] not in wanted:
            nodes.append(node)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("transA", 0) or not attrs.get("transB", 0) or attrs.get("alpha", 1.0) != 1.0 \
                or attrs.get("beta", 1.0) != 1.0:
            raise ValueError(f"Gemm {node.name!r} has attributes {attrs}; only x @ W^T + b "
                             "(transB=1, alpha=beta=1) is rewritten")
        name = node.input[1]
        if name not in inits:
            raise ValueError(f"Gemm {node.name!r}: its weight {name!r} is not an initializer")
        w = numpy_helper.to_array(inits[name])
        graph.initializer.remove(inits[name])
        graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(w.T), name))
        has_bias = len(node.input) > 2 and bool(node.input[2])
        out = node.output[0] + "_matmul" if has_bias else node.output[0]
        base = node.name or name
        nodes.append(helper.make_node("MatMul", [node.input[0], name], [out], name=base + "_matmul"))
        if has_bias:
            nodes.append(helper.make_node("Add", [out, node.input[2]], [node.output[0]], name=base + "_add"))
        done.add(name)
    missing = sorted(wanted - done)
    if missing:
        raise ValueError(f"no Gemm node reads the weights {missing}")
    graph.ClearField("node")
    graph.node.extend(nodes)
    return model


def nbits_layers(path: str | os.PathLike) -> dict[str, dict]:
    """Every MatMulNBits node of an ONNX file, by its weight's name (the '_Q<bits>' suffix removed):
    {"node", "bits", "block_size", "K", "N", "weight"}, "weight" being the dequantized float32
    (N, K) weight (q - zero point) s with zero point 8 (2^(bits-1)) for a symmetric file."""
    import onnx
    from onnx import helper, numpy_helper

    graph = onnx.load(str(path)).graph
    consts = {t.name: t for t in graph.initializer}
    out = {}
    for node in graph.node:
        if node.op_type != "MatMulNBits":
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        bits, block, k, n = (int(attrs[key]) for key in ("bits", "block_size", "K", "N"))
        if bits != 4 or len(node.input) > 3 and node.input[3]:
            raise ValueError(f"MatMulNBits {node.name!r}: only symmetric 4-bit weights are read "
                             f"(bits={bits}, zero points {'given' if len(node.input) > 3 else 'none'})")
        packed = numpy_helper.to_array(consts[node.input[1]])  # (N, blocks, block / 2) uint8
        scales = numpy_helper.to_array(consts[node.input[2]]).astype(np.float32).reshape(n, -1)
        codes = np.stack([packed & 0x0F, packed >> 4], axis=-1).reshape(n, -1)[:, :k].astype(np.float32)
        weight = (codes - 8) * np.repeat(scales, block, axis=1)[:, :k]
        name = node.input[1]
        name = name[: -len(f"_Q{bits}")] if name.endswith(f"_Q{bits}") else name
        out[name] = {"node": node.name, "bits": bits, "block_size": block, "K": k, "N": n, "weight": weight}
    return out
