"""The Deep Compression file (Han et al. 2016): a pruned, weight-shared model, Huffman-coded.

Each Linear/Conv2d layer is stored as
  * its codebook: the distinct non-zero weight values (float32, at most 2^b of them);
  * the cluster index of every non-zero weight, Huffman-coded;
  * the positions of the non-zeros as relative indices: the gap to the previous non-zero in the
    flattened weight, in [1, 2^r - 1] for r index bits; a longer gap is split by filler zeros,
    each meaning "skip 2^r - 1 positions, no weight here". The gaps are Huffman-coded as well;
  * its bias, plainly (float32).
Both Huffman codes are canonical, so only their code lengths are stored (up to the last used
symbol, 4 bits each when all are <= 15). Han et al. store a filler as an explicit zero weight;
here it is gap symbol 0, which needs no entry in the cluster-index stream.

File layout (little-endian):
  magic (8 bytes) | version u16 | reserved u16 | meta length u32 | file length u64
  | meta (UTF-8 JSON, zlib-compressed since version 2: architecture; per layer the META_FIELDS values)
  | per-layer records (codebook, code lengths, cluster-index stream, gap stream, bias) | other tensors | CRC-32 of everything before it (u32)
`load` checks magic, version, length and checksum, decodes every layer and builds the model only
when all of it decoded: a damaged file raises ValueError and never yields a half-loaded model.
"""

from __future__ import annotations

import copy
import json
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from compresslab.core import metrics, models
from compresslab.core.models import prunable_layers
from compresslab.techniques.huffman import HuffmanCode, symbol_counts

__all__ = [
    "MAGIC",
    "VERSION",
    "READABLE_VERSIONS",
    "relative_encode",
    "relative_decode",
    "LayerRecord",
    "META_FIELDS",
    "encode_layer",
    "decode_layer",
    "infer_architecture",
    "encode_model",
    "decode_bytes",
    "save",
    "load",
]

MAGIC = b"CLDEEPC\x00"
VERSION = 2  # version 1 stored the metadata as plain JSON; both are read
READABLE_VERSIONS = (1, 2)
_HEAD = struct.Struct("<8sHHIQ")
_CRC = struct.Struct("<I")


# ----------------------------------------------------------------- relative indices

def _check_index_bits(bits: int, name: str = "index_bits") -> None:
    if not isinstance(bits, int) or isinstance(bits, bool) or not 1 <= bits <= 16:
        raise ValueError(f"{name}={bits!r} must be an integer in [1, 16]")


def relative_encode(positions, index_bits: int) -> np.ndarray:
    """Gap symbols for strictly increasing flat `positions` (first gap counted from -1).

    A gap g <= M = 2^r - 1 is stored as g; a larger one as q = (g - 1) // M filler zeros
    (each skips M positions) followed by g - q M, which lies in [1, M]."""
    _check_index_bits(index_bits)
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
    """Inverse of `relative_encode`: the flat positions of the non-zeros."""
    _check_index_bits(index_bits)
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
    codebook: np.ndarray  # float32 [k]
    weight_code: HuffmanCode
    index_code: HuffmanCode
    weight_stream: bytes
    index_stream: bytes
    nnz: int
    n_gaps: int
    bias: np.ndarray | None

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape))

    def meta(self) -> list:
        """This layer's entry in the file's metadata: the values of META_FIELDS, in order."""
        w_tab, i_tab = _table_size(self.weight_code.lengths), _table_size(self.index_code.lengths)
        return [self.name, self.kind, list(self.shape), self.bits, self.index_bits, len(self.codebook), self.nnz,
                self.n_gaps, self.weight_code.single, self.index_code.single, len(self.weight_stream),
                len(self.index_stream), 0 if self.bias is None else int(self.bias.size), w_tab, i_tab]

    def body(self) -> bytes:
        parts = [self.codebook.astype("<f4").tobytes(), _pack_lengths(self.weight_code.lengths),
                 _pack_lengths(self.index_code.lengths), self.weight_stream, self.index_stream]
        if self.bias is not None:
            parts.append(self.bias.astype("<f4").tobytes())
        return b"".join(parts)


# the order of a layer's values in the metadata (fixed by the file version)
META_FIELDS = ("name", "kind", "shape", "bits", "index_bits", "k", "nnz", "n_gaps", "w_single", "i_single",
               "w_bytes", "i_bytes", "bias", "w_table", "i_table")


def _table_size(lengths: np.ndarray) -> int:
    """Code lengths stored: up to the last used symbol (the rest are 0), negative = 4-bit packed."""
    used = np.flatnonzero(lengths)
    n = int(used[-1]) + 1 if len(used) else 0
    return -n if n and lengths.max() <= 15 else n


def _pack_lengths(lengths: np.ndarray) -> bytes:
    """Code lengths up to the last used symbol: two per byte when all are <= 15, else one per byte."""
    size = _table_size(lengths)
    if size >= 0:
        return lengths[:size].astype(np.uint8).tobytes()
    n = -size
    padded = np.zeros(n + n % 2, np.uint8)
    padded[:n] = lengths[:n]
    return (padded[0::2] << 4 | padded[1::2]).astype(np.uint8).tobytes()


def _table_bytes(size: int) -> int:
    return (-size + 1) // 2 if size < 0 else size


def _unpack_lengths(raw: bytes, size: int, alphabet: int) -> np.ndarray:
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

    The weight must already be shared: at most 2^bits distinct non-zero values."""
    _check_index_bits(index_bits)
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
    return LayerRecord(name, kind, tuple(weight.shape), bits, index_bits, codebook.astype(np.float32),
                       weight_code, index_code, weight_code.encode(idx), index_code.encode(gaps),
                       len(positions), len(gaps),
                       None if bias is None else bias.detach().cpu().float().numpy().reshape(-1).copy())


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


# ----------------------------------------------------------------- the file

def infer_architecture(model: nn.Module) -> dict | None:
    """{"name": ...} of the compresslab model with the same parameter names and shapes, if any."""
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    for name in models.MODELS:
        if name == "mlp":
            continue
        with torch.random.fork_rng():
            candidate = models.create(name)
        if {k: tuple(v.shape) for k, v in candidate.state_dict().items()} == shapes:
            return {"name": name, "kwargs": {}}
    return None


def encode_model(model: nn.Module, index_bits: dict[str, int] | int = 5, bits: dict[str, int] | int = 8,
                 architecture: dict | None = None) -> tuple[bytes, list[LayerRecord]]:
    """The file contents for a pruned and shared `model`, and its layer records."""
    layers = prunable_layers(model)
    state = model.state_dict()
    covered, records = set(), []
    for name, layer in layers.items():
        ib = index_bits[name] if isinstance(index_bits, dict) else index_bits
        b = bits[name] if isinstance(bits, dict) else bits
        records.append(encode_layer(name, metrics.effective_weight(layer), layer.bias, b, ib))
        covered.update({f"{name}.weight", f"{name}.bias"})
    others = {k: v.detach().cpu() for k, v in state.items() if k not in covered}
    if any(k.endswith(("_orig", "_mask")) for k in others):
        raise ValueError("model still has pruning masks attached: call pruning.make_permanent first")
    arch = architecture if architecture is not None else infer_architecture(model)
    other_meta = [{"key": k, "dtype": str(v.dtype).replace("torch.", ""), "shape": list(v.shape)} for k, v in others.items()]
    meta = zlib.compress(json.dumps({"architecture": arch, "layers": [r.meta() for r in records],
                                     "others": other_meta}, separators=(",", ":")).encode(), 9)
    body = b"".join(r.body() for r in records) + b"".join(v.contiguous().numpy().tobytes() for v in others.values())
    total = _HEAD.size + len(meta) + len(body) + _CRC.size
    content = _HEAD.pack(MAGIC, VERSION, 0, len(meta), total) + meta + body
    return content + _CRC.pack(zlib.crc32(content)), records


def _take(buf: memoryview, offset: int, n: int, what: str) -> tuple[bytes, int]:
    if n < 0 or offset + n > len(buf):
        raise ValueError(f"corrupt file: {what} runs past the end")
    return bytes(buf[offset:offset + n]), offset + n


def decode_bytes(content: bytes) -> tuple[dict, dict[str, torch.Tensor], list[LayerRecord]]:
    """Validate and decode file `content`: (meta, state_dict, records). Raises ValueError on damage."""
    if len(content) < _HEAD.size + _CRC.size:
        raise ValueError(f"not a Deep Compression file: {len(content)} bytes is shorter than the header")
    magic, version, _, meta_len, total = _HEAD.unpack_from(content)
    if magic != MAGIC:
        raise ValueError(f"not a Deep Compression file: magic {magic!r}, expected {MAGIC!r}")
    if version not in READABLE_VERSIONS:
        raise ValueError(f"unsupported file version {version}; this reader reads versions {READABLE_VERSIONS}")
    if total != len(content):
        raise ValueError(f"file is truncated or padded: header says {total} bytes, found {len(content)}")
    (crc,) = _CRC.unpack_from(content, len(content) - _CRC.size)
    if zlib.crc32(content[:-_CRC.size]) != crc:
        raise ValueError("checksum mismatch: the file is corrupted")
    buf = memoryview(content)[:-_CRC.size]
    try:
        raw_meta, off = _take(buf, _HEAD.size, meta_len, "metadata")
        meta = json.loads((zlib.decompress(raw_meta) if version >= 2 else raw_meta).decode())
        records, state = [], {}
        for values in meta["layers"]:
            m = dict(zip(META_FIELDS, values, strict=True))
            k = m["k"]
            codebook, off = _take(buf, off, 4 * k, "codebook")
            w_len, off = _take(buf, off, _table_bytes(m["w_table"]), "weight code")
            i_len, off = _take(buf, off, _table_bytes(m["i_table"]), "index code")
            w_stream, off = _take(buf, off, m["w_bytes"], "weight stream")
            i_stream, off = _take(buf, off, m["i_bytes"], "index stream")
            bias = None
            if m["bias"]:
                raw_bias, off = _take(buf, off, 4 * m["bias"], "bias")
                bias = np.frombuffer(raw_bias, "<f4").astype(np.float32)
            rec = LayerRecord(m["name"], m["kind"], tuple(m["shape"]), m["bits"], m["index_bits"],
                              np.frombuffer(codebook, "<f4").astype(np.float32),
                              HuffmanCode(_unpack_lengths(w_len, m["w_table"], k), m["w_single"]),
                              HuffmanCode(_unpack_lengths(i_len, m["i_table"], 1 << m["index_bits"]), m["i_single"]),
                              w_stream, i_stream, m["nnz"], m["n_gaps"], bias)
            weight, b = decode_layer(rec)
            state[f"{rec.name}.weight"] = weight
            if b is not None:
                state[f"{rec.name}.bias"] = b
            records.append(rec)
        for o in meta["others"]:
            dtype = getattr(torch, o["dtype"])
            n = int(np.prod(o["shape"])) * torch.empty((), dtype=dtype).element_size()
            raw, off = _take(buf, off, n, o["key"])
            state[o["key"]] = torch.frombuffer(bytearray(raw), dtype=dtype).reshape(o["shape"]).clone()
        if off != len(buf):
            raise ValueError(f"{len(buf) - off} unexpected bytes after the last record")
    except (KeyError, TypeError, IndexError, OverflowError, json.JSONDecodeError, UnicodeDecodeError,
            AttributeError, zlib.error) as err:
        raise ValueError(f"corrupt file: bad metadata ({err!r})") from None
    return meta, state, records


def save(model: nn.Module, path: str | os.PathLike, index_bits: dict[str, int] | int = 5,
         bits: dict[str, int] | int = 8, architecture: dict | None = None) -> int:
    """Write the compressed file atomically (tmp + os.replace); returns its size in bytes."""
    content, _ = encode_model(model, index_bits, bits, architecture)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(content)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return len(content)


def load(path: str | os.PathLike, model: nn.Module | None = None) -> nn.Module:
    """The model stored at `path` (a copy of `model` as the template, else its recorded
    architecture), in eval mode. Everything is validated before the model is built."""
    meta, state, _ = decode_bytes(Path(path).read_bytes())
    if model is not None:
        target = copy.deepcopy(model)
    elif meta.get("architecture"):
        arch = meta["architecture"]
        target = models.create(arch["name"], **arch.get("kwargs", {}))
    else:
        raise ValueError("the file records no known architecture: pass model= as the template")
    expected = {k: tuple(v.shape) for k, v in target.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    if expected != found:
        raise ValueError(f"file does not match the architecture: expected {expected}, found {found}")
    device = next(target.parameters()).device
    target.load_state_dict({k: v.to(device) for k, v in state.items()}, strict=True)
    return target.eval()


def _from_state(template: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    model = copy.deepcopy(template)
    device = next(model.parameters()).device
    model.load_state_dict({k: v.to(device) for k, v in state.items()}, strict=True)
    return model.eval()
