"""The Deep Compression file (Han et al. 2016): a pruned, weight-shared model, Huffman-coded.

Each Linear/Conv2d layer is stored as
  * its codebook: the distinct non-zero weight values (float32, at most 2^b of them);
  * the cluster index of every non-zero weight, Huffman-coded;
  * the positions of the non-zeros as relative indices: the gap to the previous non-zero in the
    flattened weight, in [1, 2^r - 1] for r index bits; a longer gap is split by filler zeros,
    each meaning "skip 2^r - 1 positions, no weight here". The gaps are Huffman-coded as well;
  * its bias, plainly.
The codebook and the bias are float16 when all their values are exactly float16 (version 3 on;
`sharing.ShareConfig(value_dtype="float16")` rounds them so), else float32: nothing is lost.
Both Huffman codes are canonical, so only their code lengths are stored (up to the last used
symbol, 4 bits each when all are <= 15). Han et al. store a filler as an explicit zero weight;
here it is gap symbol 0, which needs no entry in the cluster-index stream.

File layout (little-endian):
  magic (8 bytes) | version u16 | reserved u16 | meta length u32 | file length u64
  | meta (UTF-8 JSON, zlib-compressed since version 2: architecture; per layer the META_FIELDS values,
    the last of them, value_bytes, since version 3)
  | per-layer records (codebook, code lengths, cluster-index stream, gap stream, bias) | other tensors | CRC-32 of everything before it (u32)
`load` reads the 24-byte header first and refuses anything that is not a regular file, then checks
magic, version, length and checksum, validates every declared size against the file and against
the limits below before allocating anything, decodes every layer, checks the SHA-256 of the decoded
tensors recorded at save time, and builds the model only when all of it decoded: a damaged file
raises ValueError and never yields a half-loaded model.

The CRC-32 and the SHA-256 detect accidental damage (a flipped bit, a truncated copy); they do not
protect against tampering: anyone can write a file with valid checksums. Load files you trust.
"""

from __future__ import annotations

import copy
import json
import os
import stat
import struct
import zlib

import numpy as np
import torch
from torch import nn

from compresslab.core import metrics, models
from compresslab.core.cache import weights_digest
from compresslab.core.io import write_bytes_atomic
from compresslab.core.models import prunable_layers
from compresslab.core.validate import check_tensor
from compresslab.techniques.filelayers import (
    META_FIELDS,
    META_FIELDS_V2,
    VALUE_DTYPES,
    LayerRecord,
    decode_layer,
    encode_layer,
    table_bytes,
    unpack_lengths,
)
from compresslab.techniques.huffman import HuffmanCode

__all__ = [
    "MAGIC", "VERSION", "READABLE_VERSIONS", "infer_architecture", "encode_model", "decode_bytes",
    "read_file", "save", "load"
]

MAGIC = b"CLDEEPC\x00"
VERSION = 3  # 1: plain-JSON metadata; 2: zlib metadata; 3: float16 codebooks and biases where exact
READABLE_VERSIONS = (1, 2, 3)
_HEAD = struct.Struct("<8sHHIQ")
_CRC = struct.Struct("<I")
# limits checked before anything is allocated (far above what any model of the workbook needs)
MAX_FILE_BYTES = 1 << 30
MAX_META_BYTES = 1 << 24  # decompressed metadata
MAX_ELEMENTS = 1 << 27  # elements of all tensors together (512 MiB of float32)
MAX_LAYERS = 4096
OTHER_DTYPES = ("float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool")


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
    for k, v in others.items():
        check_tensor(k, v, allow_empty=True)
        if str(v.dtype).replace("torch.", "") not in OTHER_DTYPES:
            raise ValueError(f"{k} has dtype {v.dtype}; the file stores {OTHER_DTYPES}")
    arch = architecture if architecture is not None else infer_architecture(model)
    other_meta = [{"key": k, "dtype": str(v.dtype).replace("torch.", ""), "shape": list(v.shape)} for k, v in others.items()]
    decoded = {}
    for r in records:
        weight, bias = decode_layer(r)
        decoded[f"{r.name}.weight"] = weight
        if bias is not None:
            decoded[f"{r.name}.bias"] = bias
    digest = weights_digest({**decoded, **others})
    meta = zlib.compress(json.dumps({"architecture": arch, "layers": [r.meta() for r in records],
                                     "others": other_meta, "sha256": digest}, separators=(",", ":")).encode(), 9)
    body = b"".join(r.body() for r in records) + b"".join(v.contiguous().numpy().tobytes() for v in others.values())
    total = _HEAD.size + len(meta) + len(body) + _CRC.size
    content = _HEAD.pack(MAGIC, VERSION, 0, len(meta), total) + meta + body
    return content + _CRC.pack(zlib.crc32(content)), records


def _take(buf: memoryview, offset: int, n: int, what: str) -> tuple[bytes, int]:
    if n < 0 or offset + n > len(buf):
        raise ValueError(f"corrupt file: {what} runs past the end")
    return bytes(buf[offset:offset + n]), offset + n


def _check_header(head: bytes, size: int) -> tuple[int, int]:
    """(version, metadata length) from the first 24 bytes of a file of `size` bytes; ValueError if bad."""
    if size < _HEAD.size + _CRC.size or len(head) < _HEAD.size:
        raise ValueError(f"not a Deep Compression file: {size} bytes is shorter than the header")
    magic, version, _, meta_len, total = _HEAD.unpack_from(head)
    if magic != MAGIC:
        raise ValueError(f"not a Deep Compression file: magic {magic!r}, expected {MAGIC!r}")
    if version not in READABLE_VERSIONS:
        raise ValueError(f"unsupported file version {version}; this reader reads versions {READABLE_VERSIONS}")
    if total != size:
        raise ValueError(f"file is truncated or padded: header says {total} bytes, found {size}")
    if size > MAX_FILE_BYTES:
        raise ValueError(f"file of {size} bytes is larger than the limit of {MAX_FILE_BYTES}")
    if meta_len > size - _HEAD.size - _CRC.size:
        raise ValueError(f"corrupt file: metadata of {meta_len} bytes in a file of {size}")
    return version, meta_len


def _int(m: dict, key: str, lo: int, hi: int) -> int:
    value = m[key]
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"corrupt file: layer {str(m.get('name'))[:40]!r} field {key}={str(value)[:40]} "
                         f"is not an integer in [{lo}, {hi}]")
    return value


def _shape(value: object, what: str, dims: tuple[int, ...]) -> tuple[int, ...]:
    if not isinstance(value, list) or len(value) not in dims or \
            not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= MAX_ELEMENTS for d in value):
        raise ValueError(f"corrupt file: shape of {what} is {str(value)[:60]}, not {dims} sizes in [0, {MAX_ELEMENTS}]")
    return tuple(value)


def _parse_meta(raw: bytes, version: int) -> dict:
    """The metadata dict, structure checked; the layer entries as dicts of META_FIELDS."""
    if version >= 2:
        inflater = zlib.decompressobj()
        raw = inflater.decompress(raw, MAX_META_BYTES)
        if inflater.unconsumed_tail or not inflater.eof:
            raise ValueError(f"corrupt file: metadata is not complete zlib data of at most {MAX_META_BYTES} bytes")
    try:
        meta = json.loads(raw.decode())
    except RecursionError:
        raise ValueError("corrupt file: metadata nested too deeply") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("layers"), list) or not isinstance(meta.get("others"), list):
        raise ValueError("corrupt file: metadata lacks its layers and others lists")
    if len(meta["layers"]) + len(meta["others"]) > MAX_LAYERS:
        raise ValueError(f"corrupt file: more than {MAX_LAYERS} tensors")
    arch = meta.get("architecture")
    if arch is not None and not (isinstance(arch, dict) and isinstance(arch.get("name"), str)
                                 and isinstance(arch.get("kwargs", {}), dict)):
        raise ValueError(f"corrupt file: architecture {str(arch)[:60]} is not {{'name': str, 'kwargs': dict}}")
    if "sha256" in meta and not isinstance(meta["sha256"], str):
        raise ValueError("corrupt file: the recorded SHA-256 is not a string")
    fields = META_FIELDS if version >= 3 else META_FIELDS_V2
    layers, elements, names = [], 0, set()
    for values in meta["layers"]:
        if not isinstance(values, list) or len(values) != len(fields):
            raise ValueError(f"corrupt file: a layer entry is not a list of {len(fields)} values")
        m = {"value_bytes": 4, **dict(zip(fields, values))}
        if not isinstance(m["name"], str) or m["name"] in names or m["kind"] not in ("linear", "conv"):
            raise ValueError(f"corrupt file: layer name {str(m['name'])[:40]!r} or kind {str(m['kind'])[:20]!r} is bad")
        names.add(m["name"])
        shape = _shape(m["shape"], f"layer {m['name']!r}", (4,) if m["kind"] == "conv" else (2,))
        numel = int(np.prod(shape, dtype=object))
        elements += numel + (m["bias"] if isinstance(m["bias"], int) else 0)
        if elements > MAX_ELEMENTS:
            raise ValueError(f"corrupt file: more than {MAX_ELEMENTS} weights in all")
        bits, ib = _int(m, "bits", 1, 16), _int(m, "index_bits", 1, 16)
        k, nnz = _int(m, "k", 0, 1 << bits), _int(m, "nnz", 0, numel)
        # every gap symbol but the fillers marks a non-zero; a filler skips 2^r - 1 positions
        _int(m, "n_gaps", nnz, nnz + numel // ((1 << ib) - 1) + 1)
        for key in ("w_bytes", "i_bytes"):
            _int(m, key, 0, MAX_FILE_BYTES)
        _int(m, "bias", 0, MAX_ELEMENTS)
        if _int(m, "value_bytes", min(VALUE_DTYPES), max(VALUE_DTYPES)) not in VALUE_DTYPES:
            raise ValueError(f"corrupt file: layer {m['name']!r} field value_bytes={m['value_bytes']} "
                             f"is not one of {sorted(VALUE_DTYPES)}")
        _int(m, "w_table", -k, k)
        _int(m, "i_table", -(1 << ib), 1 << ib)
        for key, alphabet in (("w_single", k), ("i_single", 1 << ib)):
            if m[key] is not None:
                _int(m, key, 0, max(alphabet - 1, 0))
        m["shape"] = shape
        layers.append(m)
    for o in meta["others"]:
        if not isinstance(o, dict) or not isinstance(o.get("key"), str) or o.get("dtype") not in OTHER_DTYPES \
                or o["key"] in names:
            raise ValueError(f"corrupt file: bad entry for another tensor ({str(o)[:60]})")
        names.add(o["key"])
        o["shape"] = list(_shape(o.get("shape"), o["key"], tuple(range(9))))
        elements += int(np.prod(o["shape"], dtype=object))
        if elements > MAX_ELEMENTS:
            raise ValueError(f"corrupt file: more than {MAX_ELEMENTS} values in all")
    meta["layers"] = layers
    return meta


def _check_stream(code: HuffmanCode, stream: bytes, n: int, what: str) -> None:
    """Each symbol of a (non-degenerate) code takes at least one bit: n symbols need n / 8 bytes."""
    if n and code.single is None and n > 8 * len(stream):
        raise ValueError(f"corrupt file: {n} {what} cannot fit in {len(stream)} bytes")


def _finite(array: np.ndarray, what: str) -> np.ndarray:
    if not np.isfinite(array).all():
        raise ValueError(f"corrupt file: {what} holds NaN or inf")
    return array


def decode_bytes(content: bytes) -> tuple[dict, dict[str, torch.Tensor], list[LayerRecord]]:
    """Validate and decode file `content`: (meta, state_dict, records). Raises ValueError on damage.

    Every declared count and size is checked against the bytes present and the module's limits
    before anything of that size is allocated."""
    version, meta_len = _check_header(bytes(content[:_HEAD.size]), len(content))
    (crc,) = _CRC.unpack_from(content, len(content) - _CRC.size)
    if zlib.crc32(content[:-_CRC.size]) != crc:
        raise ValueError("checksum mismatch: the file is corrupted")
    buf = memoryview(content)[:-_CRC.size]
    try:
        raw_meta, off = _take(buf, _HEAD.size, meta_len, "metadata")
        meta = _parse_meta(raw_meta, version)
        records, state = [], {}
        for m in meta["layers"]:
            k, vb = m["k"], m["value_bytes"]
            codebook, off = _take(buf, off, vb * k, "codebook")
            w_len, off = _take(buf, off, table_bytes(m["w_table"]), "weight code")
            i_len, off = _take(buf, off, table_bytes(m["i_table"]), "index code")
            w_stream, off = _take(buf, off, m["w_bytes"], "weight stream")
            i_stream, off = _take(buf, off, m["i_bytes"], "index stream")
            bias = None
            if m["bias"]:
                raw_bias, off = _take(buf, off, vb * m["bias"], "bias")
                bias = _finite(np.frombuffer(raw_bias, VALUE_DTYPES[vb]).astype(np.float32), f"the bias of {m['name']!r}")
            rec = LayerRecord(m["name"], m["kind"], m["shape"], m["bits"], m["index_bits"],
                              _finite(np.frombuffer(codebook, VALUE_DTYPES[vb]).astype(np.float32),
                                      f"the codebook of {m['name']!r}"),
                              HuffmanCode(unpack_lengths(w_len, m["w_table"], k), m["w_single"]),
                              HuffmanCode(unpack_lengths(i_len, m["i_table"], 1 << m["index_bits"]), m["i_single"]),
                              w_stream, i_stream, m["nnz"], m["n_gaps"], bias, vb)
            _check_stream(rec.index_code, i_stream, rec.n_gaps, f"position gaps of layer {rec.name!r}")
            _check_stream(rec.weight_code, w_stream, rec.nnz, f"cluster indices of layer {rec.name!r}")
            weight, b = decode_layer(rec)
            state[f"{rec.name}.weight"] = weight
            if b is not None:
                state[f"{rec.name}.bias"] = b
            records.append(rec)
        for o in meta["others"]:
            dtype = getattr(torch, o["dtype"])
            n = int(np.prod(o["shape"])) * torch.empty((), dtype=dtype).element_size()
            raw, off = _take(buf, off, n, o["key"])
            tensor = torch.frombuffer(bytearray(raw), dtype=dtype).reshape(o["shape"]).clone() if n else \
                torch.zeros(o["shape"], dtype=dtype)
            if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                raise ValueError(f"corrupt file: {o['key']} holds NaN or inf")
            state[o["key"]] = tensor
        if off != len(buf):
            raise ValueError(f"{len(buf) - off} unexpected bytes after the last record")
    except (KeyError, TypeError, IndexError, OverflowError, json.JSONDecodeError, UnicodeDecodeError,
            AttributeError, zlib.error) as err:
        raise ValueError(f"corrupt file: bad metadata ({str(err)[:200]!r})") from None
    if "sha256" in meta and weights_digest(state) != meta["sha256"]:
        raise ValueError("the decoded tensors do not match the SHA-256 recorded when the file was saved")
    return meta, state, records


def read_file(path: str | os.PathLike) -> bytes:
    """The bytes of the compressed file at `path`: a regular file (a FIFO or device is refused
    without blocking), whose 24-byte header is checked before the rest is read."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as err:
        raise ValueError(f"{path}: cannot open ({err.strerror})") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise ValueError(f"{path}: not a regular file")
    with os.fdopen(fd, "rb") as f:
        head = f.read(_HEAD.size)
        _check_header(head, info.st_size)
        content = head + f.read(info.st_size - _HEAD.size + 1)
    if len(content) != info.st_size:
        raise ValueError(f"{path}: the file changed while it was read")
    return content


def save(model: nn.Module, path: str | os.PathLike, index_bits: dict[str, int] | int = 5,
         bits: dict[str, int] | int = 8, architecture: dict | None = None) -> int:
    """Write the compressed file atomically (`core.io.write_bytes_atomic`); returns its size in bytes."""
    content, _ = encode_model(model, index_bits, bits, architecture)
    return write_bytes_atomic(path, content)


def load(path: str | os.PathLike, model: nn.Module | None = None) -> nn.Module:
    """The model stored at `path` (a copy of `model` as the template, else its recorded
    architecture), in eval mode. Everything is validated before the model is built."""
    meta, state, _ = decode_bytes(read_file(path))
    found = {k: tuple(v.shape) for k, v in state.items()}
    if model is not None:
        target = copy.deepcopy(model)
    elif meta.get("architecture"):
        target = _build_architecture(meta["architecture"], found)
    else:
        raise ValueError("the file records no known architecture: pass model= as the template")
    expected = {k: tuple(v.shape) for k, v in target.state_dict().items()}
    if expected != found:
        raise ValueError(f"file does not match the architecture: expected {expected}, found {found}")
    device = next(target.parameters()).device
    target.load_state_dict({k: v.to(device) for k, v in state.items()}, strict=True)
    return target.eval()


def _build_architecture(arch: dict, found: dict[str, tuple[int, ...]]) -> nn.Module:
    """The recorded architecture, first built without memory (meta device) and compared with the
    shapes in the file, so that arguments such as hidden=[10**12] never allocate anything."""
    name, kwargs = arch["name"], arch.get("kwargs", {})
    try:
        with torch.device("meta"):
            skeleton = models.create(name, **kwargs)
    except Exception as err:  # noqa: BLE001 - any failure to build it means the record is bad
        raise ValueError(f"the file's architecture {name!r} {str(kwargs)[:80]} cannot be built: {str(err)[:200]}") from None
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    if expected != found:
        raise ValueError(f"file does not match its recorded architecture {name!r}: expected {expected}, found {found}")
    with torch.random.fork_rng():
        return models.create(name, **kwargs)


def model_from_state(template: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    model = copy.deepcopy(template)
    device = next(model.parameters()).device
    model.load_state_dict({k: v.to(device) for k, v in state.items()}, strict=True)
    return model.eval()
