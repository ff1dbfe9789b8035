"""A small packed weight file for every rung of the precision ladder: the real artifact whose bytes
the Pareto notebook counts.

Per Linear/Conv layer the file stores the weight as codes of one kind, its scales, and the FP32 bias:

    fp32 / fp16 / bf16   the values themselves (4 / 2 / 2 bytes each), no scale
    int8 / int4 / int3 / int2
                         symmetric per-channel codes q = round(w / s_c), s_c = max|w_c| / q_max
                         (q_max = 2^(b-1) - 1: 127 / 7 / 3 / 1); int8 codes are bytes, the narrower
                         ones are stored q + q_max + 1 in b bits each, packed least significant bit
                         first (int4: two per byte)
    ternary              codes t in {-1, 0, 1}, 5 per byte (t + 1 as base-3 digits: 3^5 = 243 <= 256),
                         one FP32 scale per layer
    binary               signs, 8 per byte, one FP32 scale per output channel

sparse=True stores a bitmap of the non-zero positions (1 bit per weight) and codes for those only.
Layout: magic b"CLPK1", a 4-byte header length, a JSON header (names, kinds, shapes, blob lengths),
then the raw blobs in header order. `read` checks the magic and every length before using them.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from compresslab.core.io import write_bytes_atomic
from compresslab.core.models import prunable_layers
from compresslab.core.validate import check_choice, check_int, check_layer_names, check_tensor, show
from compresslab.techniques.lowbitops import binarize, ternarize

__all__ = ["KINDS", "CHANNEL_BITS", "MAGIC", "pack_trits", "unpack_trits", "pack_bits", "unpack_bits",
           "channel_codes", "CLIPS", "MSE_RATIOS", "PackedLayer", "pack_layer", "pack_model",
           "write", "read", "unpack_into", "save_model"]

KINDS = ("fp32", "fp16", "bf16", "int8", "int4", "int3", "int2", "ternary", "binary")
MAGIC = b"CLPK1"
CHANNEL_BITS = {"int8": 8, "int4": 4, "int3": 3, "int2": 2}  # the per-channel integer kinds and their bits
_QMAX = {kind: 2 ** (bits - 1) - 1 for kind, bits in CHANNEL_BITS.items()}


def pack_bits(values: np.ndarray, bits: int) -> bytes:
    """Unsigned integers below 2^bits, `bits` bits each, least significant bit first, zero-padded
    to whole bytes.

    >>> list(pack_bits(np.array([5, 3, 7]), 3))  # low bit first: 1,0,1 | 1,1,0 | 1,1 and 1 -> 221, 1
    [221, 1]
    """
    check_int("pack_bits", "bits", bits, 1, 8)
    array = np.asarray(values).astype(np.int64).ravel()
    if array.size and (array.min() < 0 or array.max() >= 2 ** bits):
        raise ValueError(f"pack_bits: values must lie in [0, {2 ** bits - 1}] for {bits} bits")
    planes = (array[:, None] >> np.arange(bits)) & 1
    return np.packbits(planes.astype(np.uint8).ravel(), bitorder="little").tobytes()


def unpack_bits(blob: bytes, bits: int, n: int) -> np.ndarray:
    """The inverse of pack_bits: n unsigned `bits`-bit integers (int64)."""
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise TypeError(f"blob must be bytes, got {type(blob).__name__}")
    check_int("unpack_bits", "bits", bits, 1, 8)
    check_int("unpack_bits", "n", n, 0, None)
    flat = np.unpackbits(np.frombuffer(blob, np.uint8), bitorder="little")
    if flat.size < n * bits:
        raise ValueError(f"the {bits}-bit blob holds {flat.size // bits} codes, {n} needed")
    return (flat[:n * bits].reshape(n, bits).astype(np.int64) << np.arange(bits)).sum(1)


CLIPS = ("max", "mse")
MSE_RATIOS = 41  # clip="mse" tries r = 1, 0.98, ..., 0.2 of max|w_c|


def channel_codes(w: torch.Tensor, kind: str, clip: str = "max") -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel codes of an integer kind: (q, s) with q = clamp(round(w / s_c),
    -q_max, q_max), so w is about q * s_c. clip="max": s_c = max|w_c| / q_max (nothing clipped);
    clip="mse": s_c = r_c max|w_c| / q_max with r_c on the grid 1, 0.98, ..., 0.2 minimising the
    channel's squared error sum (w - q s_c)^2 (ties keep the larger r). s_c is at least float32's eps.

    >>> q, s = channel_codes(torch.tensor([[0.3, -0.9], [0.0, 0.2]]), "int2")
    >>> q.tolist(), s.tolist()
    ([[0.0, -1.0], [0.0, 1.0]], [0.8999999761581421, 0.20000000298023224])
    >>> q, s = channel_codes(torch.tensor([[0.1, 0.2, 0.3, 1.0]]), "int3", clip="mse")  # r = 0.96
    >>> q.tolist(), round(float(s[0]), 4)
    ([[0.0, 1.0, 1.0, 3.0]], 0.32)
    """
    check_choice("channel_codes", "kind", kind, tuple(CHANNEL_BITS))
    check_choice("channel_codes", "clip", clip, CLIPS)
    check_tensor("weight", w)
    w = w.detach().float()
    qmax = _QMAX[kind]
    rows = w.reshape(w.shape[0], -1)
    top = rows.abs().amax(1)
    eps = torch.finfo(torch.float32).eps
    if clip == "max":
        s = (top / qmax).clamp_min(eps)
    else:
        ratios = torch.linspace(1.0, 0.2, MSE_RATIOS)
        scales = (ratios[:, None] * top[None, :] / qmax).clamp_min(eps)  # (R, C)
        error = ((torch.round(rows[None] / scales[..., None]).clamp(-qmax, qmax) * scales[..., None] - rows[None]) ** 2
                 ).sum(2)
        s = scales.gather(0, error.argmin(0)[None])[0]  # argmin takes the first (largest r) of equal errors
    q = torch.round(w / s.reshape(-1, *[1] * (w.dim() - 1))).clamp(-qmax, qmax)
    return q, s


def pack_trits(codes: np.ndarray) -> bytes:
    """Ternary codes (-1, 0, 1) packed 5 per byte as base-3 digits of (code + 1).

    >>> list(pack_trits(np.array([1, 0, -1, 0, 1, -1])))  # 2 + 1*3 + 0*9 + 1*27 + 2*81; then -1 and four 0 pads
    [194, 120]
    """
    array = codes.numpy() if isinstance(codes, torch.Tensor) else np.asarray(codes)
    if array.dtype.kind not in "biuf" or (array.dtype.kind == "f" and not np.isin(array, (-1.0, 0.0, 1.0)).all()):
        raise ValueError(f"ternary codes must be -1, 0 or 1, got {array.dtype} values")
    digits = array.astype(np.int64).ravel() + 1
    if digits.size and (digits.min() < 0 or digits.max() > 2):
        raise ValueError("ternary codes must be -1, 0 or 1")
    pad = (-digits.size) % 5
    groups = np.concatenate([digits, np.ones(pad, np.int64)]).reshape(-1, 5)
    return (groups @ (3 ** np.arange(5))).astype(np.uint8).tobytes()


def unpack_trits(blob: bytes, n: int) -> np.ndarray:
    """The inverse of pack_trits: n codes in {-1, 0, 1} (int8)."""
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise TypeError(f"blob must be bytes, got {type(blob).__name__}")
    check_int("unpack_trits", "n", n, 0, None)
    values = np.frombuffer(blob, dtype=np.uint8).astype(np.int64)
    if values.size and values.max() > 242:
        raise ValueError("a ternary byte is larger than 242 (3^5 - 1): the file is damaged")
    digits = (values[:, None] // (3 ** np.arange(5))) % 3
    if digits.size < n:
        raise ValueError(f"the ternary blob holds {digits.size} codes, {n} needed")
    return (digits.ravel()[:n] - 1).astype(np.int8)


@dataclass
class PackedLayer:
    """One layer as stored: kind, weight shape, codes blob, optional non-zero bitmap, scales, bias."""

    kind: str
    shape: tuple[int, ...]
    codes: bytes
    scale: np.ndarray  # float32: () per layer, (out,) per channel, (0,) none
    bias: np.ndarray | None
    mask: bytes | None = None  # packbits of the non-zero positions (sparse storage)

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape))

    def nnz(self) -> int:
        return self.numel if self.mask is None else int(np.unpackbits(np.frombuffer(self.mask, np.uint8))[:self.numel].sum())

    def weight(self) -> torch.Tensor:
        """The dequantized float32 weight."""
        n = self.nnz()
        if self.kind in ("fp32", "fp16", "bf16"):
            raw = torch.frombuffer(bytearray(self.codes), dtype={"fp32": torch.float32, "fp16": torch.float16,
                                                                  "bf16": torch.bfloat16}[self.kind])
            values = raw.float().numpy()
        elif self.kind == "int8":
            values = np.frombuffer(self.codes, np.int8).astype(np.float32)
        elif self.kind in CHANNEL_BITS:
            values = (unpack_bits(self.codes, CHANNEL_BITS[self.kind], n)
                      - _QMAX[self.kind] - 1).astype(np.float32)
        elif self.kind == "ternary":
            values = unpack_trits(self.codes, n).astype(np.float32)
        elif self.kind == "binary":
            values = np.where(np.unpackbits(np.frombuffer(self.codes, np.uint8))[:n] > 0, 1.0, -1.0).astype(np.float32)
        else:
            raise ValueError(f"unknown layer kind {self.kind!r}; the kinds are {KINDS}")
        if values.size != n:
            raise ValueError(f"a {self.kind} layer holds {values.size} values, {n} expected")
        full = np.zeros(self.numel, np.float32)
        if self.mask is None:
            full[:] = values
        else:
            full[np.unpackbits(np.frombuffer(self.mask, np.uint8))[:self.numel] > 0] = values
        w = full.reshape(self.shape)
        if self.scale.size:
            w = w * (self.scale.reshape(-1, *[1] * (len(self.shape) - 1)) if self.scale.ndim else self.scale)
        if not np.isfinite(w).all():
            raise ValueError(f"a {self.kind} layer holds non-finite weights (NaN or inf): the file is damaged")
        return torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32))


def pack_layer(w: torch.Tensor, bias: torch.Tensor | None, kind: str, sparse: bool = False,
               ratio: float = 0.7, clip: str = "max") -> PackedLayer:
    """Pack one weight (see the module docstring for each kind's codes and scales; clip: how an
    integer kind's per-channel scale is chosen, `channel_codes`)."""
    check_choice("", "kind", kind, KINDS)
    check_tensor("weight", w)
    if bias is not None:
        check_tensor("bias", bias, allow_empty=True)
    w = w.detach().float().cpu()
    b = None if bias is None else bias.detach().float().cpu().numpy()
    flat_keep = None
    if kind in ("fp32", "fp16", "bf16"):
        values, scale = w, np.zeros(0, np.float32)
    elif kind in _QMAX:
        values, s = channel_codes(w, kind, clip)
        scale = s.numpy().astype(np.float32)
    elif kind == "ternary":
        values, alpha = ternarize(w, ratio)
        scale = np.asarray(float(alpha), np.float32)
    else:
        values, alpha = binarize(w)
        scale = alpha.numpy().astype(np.float32)
    mask = None
    flat = values.reshape(-1)
    if sparse:
        flat_keep = (w.reshape(-1) != 0) if kind == "binary" else (flat != 0)
        mask = np.packbits(flat_keep.numpy().astype(np.uint8)).tobytes()
        flat = flat[flat_keep]
    if kind == "fp32":
        codes = flat.numpy().astype(np.float32).tobytes()
    elif kind in ("fp16", "bf16"):
        t = flat.to(torch.float16 if kind == "fp16" else torch.bfloat16).contiguous()
        codes = t.view(torch.int16).numpy().tobytes()
    elif kind == "int8":
        codes = flat.numpy().astype(np.int8).tobytes()
    elif kind in CHANNEL_BITS:
        codes = pack_bits(flat.numpy().astype(np.int64) + _QMAX[kind] + 1, CHANNEL_BITS[kind])
    elif kind == "ternary":
        codes = pack_trits(flat.numpy())
    else:
        codes = np.packbits((flat.numpy() > 0).astype(np.uint8)).tobytes()
    return PackedLayer(kind, tuple(w.shape), codes, scale, b, mask)


def pack_model(model: nn.Module, kind: str | dict[str, str], sparse: bool = False,
               ratio: float = 0.7, clip: str = "max") -> dict[str, PackedLayer]:
    """Every Linear/Conv2d layer of `model` packed with `kind` (one kind, or per layer name)."""
    check_choice("pack_model", "clip", clip, CLIPS)
    layers = prunable_layers(model)
    if isinstance(kind, dict):
        check_layer_names("pack_model", "kind", kind, layers)
    out = {}
    for name, layer in layers.items():
        k = kind.get(name, "fp32") if isinstance(kind, dict) else kind
        out[name] = pack_layer(layer.weight, layer.bias, k, sparse, ratio, clip)
    return out


def write(path: str | os.PathLike, layers: dict[str, PackedLayer]) -> int:
    """Write the packed layers to `path` (atomically); return the file's bytes."""
    header, blobs = [], []
    for name, lay in layers.items():
        scale = np.asarray(lay.scale, np.float32)
        parts = [lay.codes, lay.mask or b"", scale.tobytes(), b"" if lay.bias is None else
                 np.asarray(lay.bias, np.float32).tobytes()]
        header.append({"name": name, "kind": lay.kind, "shape": list(lay.shape), "scale_shape": list(scale.shape),
                       "sparse": lay.mask is not None, "bias": lay.bias is not None, "lengths": [len(p) for p in parts]})
        blobs.extend(parts)
    head = json.dumps(header, separators=(",", ":")).encode()
    payload = MAGIC + struct.pack("<I", len(head)) + head + b"".join(blobs)
    write_bytes_atomic(Path(path), payload)
    return len(payload)


def read(path: str | os.PathLike) -> dict[str, PackedLayer]:
    """Read a packed file back (ValueError naming the file if it is not one or is damaged)."""
    path = Path(path)
    raw = path.read_bytes()
    if not raw.startswith(MAGIC) or len(raw) < len(MAGIC) + 4:
        raise ValueError(f"{path}: not a packed weight file (magic {MAGIC!r} expected)")
    (n,) = struct.unpack("<I", raw[len(MAGIC):len(MAGIC) + 4])
    start = len(MAGIC) + 4
    try:
        header = json.loads(raw[start:start + n].decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: damaged header ({err})") from None
    if not isinstance(header, list):
        raise ValueError(f"{path}: damaged header (a list of layers expected, got {type(header).__name__})")
    pos, out = start + n, {}
    for i, entry in enumerate(header):
        _check_entry(path, i, entry)
        if entry["name"] in out:
            raise ValueError(f"{path}: layer {entry['name']!r} appears twice")
        parts = []
        for length in entry["lengths"]:
            if pos + length > len(raw):
                raise ValueError(f"{path}: layer {entry['name']!r} runs past the end of the file")
            parts.append(raw[pos:pos + length])
            pos += length
        codes, mask, scale, bias = parts
        expected = {"scale": 4 * int(np.prod(entry["scale_shape"])),
                    "bias": 4 * entry["shape"][0] if entry["bias"] and entry["shape"] else 0,
                    "mask": (int(np.prod(entry["shape"])) + 7) // 8 if entry["sparse"] else 0}
        for what, blob in (("scale", scale), ("bias", bias), ("mask", mask)):
            if len(blob) != expected[what]:
                raise ValueError(f"{path}: layer {entry['name']!r} has {len(blob)} {what} bytes, {expected[what]} expected")
        for what, blob in (("scale", scale), ("bias", bias)):
            if not np.isfinite(np.frombuffer(blob, np.float32)).all():
                raise ValueError(f"{path}: layer {entry['name']!r} has a non-finite {what} (NaN or inf)")
        out[entry["name"]] = PackedLayer(
            entry["kind"], tuple(entry["shape"]), codes,
            np.frombuffer(scale, np.float32).reshape(entry["scale_shape"]).copy(),
            np.frombuffer(bias, np.float32).copy() if entry["bias"] else None, mask if entry["sparse"] else None)
    if pos != len(raw):
        raise ValueError(f"{path}: {len(raw) - pos} trailing bytes after the last layer")
    return out


_ENTRY_KEYS = {"name": str, "kind": str, "shape": list, "scale_shape": list, "sparse": bool, "bias": bool,
               "lengths": list}
_SCALE_DIMS = {"fp32": 1, "fp16": 1, "bf16": 1, "int8": 1, "int4": 1, "int3": 1, "int2": 1, "ternary": 0,
               "binary": 1}  # scale_shape length


def _check_entry(path: Path, i: int, entry: object) -> None:
    """One header entry is well formed: every key with its type, a known kind, non-negative integer
    shape and four non-negative blob lengths (ValueError naming the file and the layer otherwise)."""
    if not isinstance(entry, dict):
        raise ValueError(f"{path}: header entry {i} is not a layer record")
    where = f"{path}: layer {entry.get('name', i)!r}"
    for key, kind in _ENTRY_KEYS.items():
        if key not in entry:
            raise ValueError(f"{where}: the header has no {key!r}")
        if not isinstance(entry[key], kind):
            raise ValueError(f"{where}: {key}={show(entry[key])} is not a {kind.__name__}")
    if entry["kind"] not in KINDS:
        raise ValueError(f"{where}: unknown kind {show(entry['kind'])}; the kinds are {KINDS}")
    for key in ("shape", "scale_shape", "lengths"):
        if not all(type(v) is int and 0 <= v < 2**40 for v in entry[key]):
            raise ValueError(f"{where}: {key}={show(entry[key])} must hold non-negative integers")
    if len(entry["lengths"]) != 4:
        raise ValueError(f"{where}: lengths={show(entry['lengths'])} must give 4 blob lengths (codes, mask, scale, bias)")
    if not entry["shape"] or len(entry["scale_shape"]) != _SCALE_DIMS[entry["kind"]] \
            or (entry["scale_shape"] and entry["scale_shape"][0] != (0 if entry["kind"].startswith(("fp", "bf"))
                                                                     else entry["shape"][0])):
        raise ValueError(f"{where}: scale_shape={entry['scale_shape']} does not fit a {entry['kind']} weight "
                         f"of shape {entry['shape']}")


def unpack_into(model: nn.Module, layers: dict[str, PackedLayer]) -> nn.Module:
    """Load the dequantized weights (and biases) into `model` in place (same architecture)."""
    found = prunable_layers(model)
    if set(found) != set(layers):
        raise ValueError(f"the file holds layers {sorted(layers)}, the model has {sorted(found)}")
    with torch.no_grad():
        for name, lay in layers.items():
            layer = found[name]
            w = lay.weight()
            if tuple(layer.weight.shape) != tuple(w.shape):
                raise ValueError(f"layer {name!r}: file shape {tuple(w.shape)} != model {tuple(layer.weight.shape)}")
            layer.weight.copy_(w.to(layer.weight.dtype))
            if lay.bias is not None and layer.bias is not None:
                layer.bias.copy_(torch.from_numpy(lay.bias).reshape(layer.bias.shape))
    return model


def save_model(model: nn.Module, path: str | os.PathLike, kind: str | dict[str, str], sparse: bool = False,
               ratio: float = 0.7, clip: str = "max") -> int:
    """pack_model + write: the file's bytes."""
    return write(path, pack_model(model, kind, sparse, ratio, clip))
