"""The layer records of the Deep Compression file (see compressedfile for the whole file).

A layer is its codebook, the Huffman-coded cluster index of every non-zero weight, the
Huffman-coded relative positions of the non-zeros (gaps of r index bits, longer gaps split by
filler zeros), the code lengths of both codes, and its bias. The codebook and the bias are stored
as float16 when every one of their values is exactly a float16 (sharing with value_dtype="float16"
rounds them so), else as float32: the file is lossless either way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from compresslab.core.validate import check_bits, check_tensor
from compresslab.techniques.huffman import HuffmanCode, symbol_counts

__all__ = [
    "relative_encode",
    "relative_decode",
    "LayerRecord",
    "META_FIELDS",
    "encode_layer",
    "decode_layer",
    "value_bytes_for",
]


# ----------------------------------------------------------------- relative indices

def check_index_bits(bits: int, name: str = "index_bits") -> None:
    check_bits("", name, bits, 1, 16)


def relative_encode(positions, index_bits: int) -> np.ndarray:
    """Gap symbols for strictly increasing flat `positions` (first gap counted from -1).

    A gap g <= M = 2^r - 1 is stored as g; a larger one as q = (g - 1) // M filler zeros
    (each skips M positions) followed by g - q M, which lies in [1, M].

    >>> relative_encode([1, 4, 20], index_bits=3)  # gaps 2, 3, 16; M = 7: 16 = two fillers (7 + 7) + 2
    array([2, 3, 0, 0, 2])
    """
    check_index_bits(index_bits)
    pos = np.asarray(positions, dtype=np.int64)
    if pos.size == 0:
        return np.zeros(0, dtype=np.int64)
    gaps = np.diff(pos, prepend=-1)
    if gaps.min() < 1:
        raise ValueError("positions must be non-negative and strictly increasing")
    m = (1 << index_bits) - 1
    fillers = (gaps - 1) // m
    out = np.zeros(int(fillers.sum()) + len(gaps), dtype=np.int64)
    out[np.cumsum(fillers + 1) - 1] = gaps - fillers * m
    return out


def relative_decode(symbols, index_bits: int) -> np.ndarray:
    """Inverse of `relative_encode`: the flat positions of the non-zeros.

    >>> relative_decode([2, 3, 0, 0, 2], index_bits=3)
    array([ 1,  4, 20])
    """
    check_index_bits(index_bits)
    s = np.asarray(symbols, dtype=np.int64)
    m = (1 << index_bits) - 1
    if s.size and (s.min() < 0 or s.max() > m):
        raise ValueError(f"gap symbols must be in [0, {m}] for index_bits={index_bits}")
    if s.size and s[-1] == 0:
        raise ValueError("gap stream ends with a filler: corrupt relative indices")
    advance = np.where(s == 0, m, s)
    return (np.cumsum(advance) - 1)[s != 0]


# ----------------------------------------------------------------- one layer

@dataclass
class LayerRecord:
    """One encoded layer: what the file holds for it."""

    name: str
    kind: str  # "linear" or "conv"
    shape: tuple[int, ...]
    bits: int
    index_bits: int
    codebook: np.ndarray  # float32 [k] (its values exact in the stored precision)
    weight_code: HuffmanCode
    index_code: HuffmanCode
    weight_stream: bytes
    index_stream: bytes
    nnz: int
    n_gaps: int
    bias: np.ndarray | None
    value_bytes: int = 4  # bytes per codebook and bias value in the file: 2 (float16) or 4 (float32)

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape))

    def meta(self) -> list:
        """This layer's entry in the file's metadata: the values of META_FIELDS, in order."""
        w_tab, i_tab = table_size(self.weight_code.lengths), table_size(self.index_code.lengths)
        return [self.name, self.kind, list(self.shape), self.bits, self.index_bits, len(self.codebook), self.nnz,
                self.n_gaps, self.weight_code.single, self.index_code.single, len(self.weight_stream),
                len(self.index_stream), 0 if self.bias is None else int(self.bias.size), w_tab, i_tab,
                self.value_bytes]

    def body(self) -> bytes:
        dtype = VALUE_DTYPES[self.value_bytes]
        parts = [self.codebook.astype(dtype).tobytes(), pack_lengths(self.weight_code.lengths),
                 pack_lengths(self.index_code.lengths), self.weight_stream, self.index_stream]
        if self.bias is not None:
            parts.append(self.bias.astype(dtype).tobytes())
        return b"".join(parts)


# the order of a layer's values in the metadata (fixed by the file version; versions 1 and 2 lack
# value_bytes and store every value as float32)
META_FIELDS = ("name", "kind", "shape", "bits", "index_bits", "k", "nnz", "n_gaps", "w_single", "i_single",
               "w_bytes", "i_bytes", "bias", "w_table", "i_table", "value_bytes")
META_FIELDS_V2 = META_FIELDS[:-1]
VALUE_DTYPES = {2: "<f2", 4: "<f4"}  # value_bytes -> the little-endian dtype of the codebook and bias


def value_bytes_for(*arrays: np.ndarray | None) -> int:
    """2 when every value of `arrays` is exactly a float16 (so float16 storage loses nothing), else 4."""
    for a in arrays:
        if a is None or a.size == 0:
            continue
        with np.errstate(over="ignore"):
            if not np.array_equal(a.astype(np.float16).astype(np.float32), a.astype(np.float32)):
                return 4
    return 2


def table_size(lengths: np.ndarray) -> int:
    """Code lengths stored: up to the last used symbol (the rest are 0), negative = 4-bit packed."""
    used = np.flatnonzero(lengths)
    n = int(used[-1]) + 1 if len(used) else 0
    return -n if n and lengths.max() <= 15 else n


def pack_lengths(lengths: np.ndarray) -> bytes:
    """Code lengths up to the last used symbol: two per byte when all are <= 15, else one per byte."""
    size = table_size(lengths)
    if size >= 0:
        return lengths[:size].astype(np.uint8).tobytes()
    n = -size
    padded = np.zeros(n + n % 2, np.uint8)
    padded[:n] = lengths[:n]
    return (padded[0::2] << 4 | padded[1::2]).astype(np.uint8).tobytes()


def table_bytes(size: int) -> int:
    return (-size + 1) // 2 if size < 0 else size


def unpack_lengths(raw: bytes, size: int, alphabet: int) -> np.ndarray:
    n = abs(size)
    if n > alphabet:
        raise ValueError(f"corrupt file: code table of {n} entries for an alphabet of {alphabet}")
    b = np.frombuffer(raw, np.uint8)
    values = np.stack([b >> 4, b & 15], axis=1).reshape(-1)[:n] if size < 0 else b
    lengths = np.zeros(alphabet, np.uint8)
    lengths[:n] = values
    return lengths


def encode_layer(name: str, weight: torch.Tensor, bias: torch.Tensor | None, bits: int, index_bits: int) -> LayerRecord:
    """Codebook + Huffman-coded indices + Huffman-coded relative positions of one weight tensor.

    The weight must already be shared: at most 2^bits distinct non-zero values, all finite."""
    check_index_bits(index_bits)
    check_tensor(f"layer {name!r} weight", weight)
    if bias is not None:
        check_tensor(f"layer {name!r} bias", bias, allow_empty=True)
    w = weight.detach().cpu().float().reshape(-1).numpy()
    positions = np.flatnonzero(w)
    codebook, idx = np.unique(w[positions], return_inverse=True)
    if len(codebook) > 2 ** bits:
        raise ValueError(f"layer {name!r} has {len(codebook)} distinct non-zero values, more than 2^{bits}: "
                         "share its weights first (sharing.apply_sharing)")
    gaps = relative_encode(positions, index_bits)
    weight_code = HuffmanCode.from_counts(symbol_counts(idx, len(codebook)))
    index_code = HuffmanCode.from_counts(symbol_counts(gaps, 1 << index_bits))
    kind = "conv" if weight.dim() == 4 else "linear"
    codebook = codebook.astype(np.float32)
    b = None if bias is None else bias.detach().cpu().float().numpy().reshape(-1).copy()
    return LayerRecord(name, kind, tuple(weight.shape), bits, index_bits, codebook,
                       weight_code, index_code, weight_code.encode(idx), index_code.encode(gaps),
                       len(positions), len(gaps), b, value_bytes_for(codebook, b))


def decode_layer(record: LayerRecord) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(weight, bias) tensors of a record, exactly the values that were encoded."""
    gaps = record.index_code.decode(record.index_stream, record.n_gaps)
    positions = relative_decode(gaps, record.index_bits)
    if len(positions) != record.nnz or (len(positions) and positions[-1] >= record.numel):
        raise ValueError(f"layer {record.name!r}: relative indices give {len(positions)} positions "
                         f"(last {positions[-1] if len(positions) else None}), expected {record.nnz} below {record.numel}")
    idx = record.weight_code.decode(record.weight_stream, record.nnz)
    if idx.size and idx.max() >= len(record.codebook):
        raise ValueError(f"layer {record.name!r}: cluster index {idx.max()} outside a codebook of {len(record.codebook)}")
    w = np.zeros(record.numel, dtype=np.float32)
    w[positions] = record.codebook[idx]
    bias = None if record.bias is None else torch.from_numpy(record.bias.astype(np.float32).copy())
    return torch.from_numpy(w).reshape(record.shape), bias
