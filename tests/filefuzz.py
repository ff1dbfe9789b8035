"""Helpers to build small Deep Compression files and to rewrite them with a recomputed CRC."""

from __future__ import annotations

import json
import struct
import zlib

import torch

from compresslab.core import models
from compresslab.techniques import compressedfile as cf

ARCH = {"name": "mlp", "kwargs": {"hidden": [12]}}


def shared_model(seed: int = 0, k: int = 6, density: float = 0.3) -> torch.nn.Module:
    """A 784-12-10 MLP whose weights take at most k distinct non-zero values (a valid file source)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = models.create(ARCH["name"], **ARCH["kwargs"])
    with torch.no_grad():
        for layer in models.prunable_layers(model).values():
            codebook = torch.randn(k, generator=gen)
            idx = torch.randint(0, k, layer.weight.shape, generator=gen)
            keep = torch.rand(layer.weight.shape, generator=gen) < density
            layer.weight.copy_(torch.where(keep, codebook[idx], torch.zeros(())))
    return model.eval()


def file_bytes(model: torch.nn.Module, index_bits: int = 4, bits: int = 3) -> bytes:
    content, _ = cf.encode_model(model, index_bits=index_bits, bits=bits, architecture=ARCH)
    return content


def sparse_vd_bytes(model: torch.nn.Module) -> bytes:
    """The file sparse VD writes for `model`: each layer with the gap width that makes its record
    smallest (`sparsevd.best_index_bits`), bits for its distinct values (a very sparse `shared_model`)."""
    from compresslab.techniques import sparsevd

    index_bits, bits = {}, {}
    for name, layer in models.prunable_layers(model).items():
        k = len(torch.unique(layer.weight[layer.weight != 0]))
        bits[name] = max(1, (k - 1).bit_length())
        index_bits[name], _ = sparsevd.best_index_bits(name, layer.weight, layer.bias, bits[name])
    content, _ = cf.encode_model(model, index_bits=index_bits, bits=bits, architecture=ARCH)
    return content


def split(content: bytes) -> tuple[int, dict, bytes]:
    """(version, metadata, body between metadata and CRC) of a valid file."""
    _, version, _, meta_len, _ = cf._HEAD.unpack_from(content)
    raw = content[cf._HEAD.size:cf._HEAD.size + meta_len]
    meta = json.loads(zlib.decompress(raw))
    return version, meta, content[cf._HEAD.size + meta_len:-cf._CRC.size]


def assemble(meta_raw: bytes, body: bytes, version: int = cf.VERSION, total: int | None = None) -> bytes:
    """A file from compressed metadata and body, with the header's length and the CRC made to fit."""
    size = cf._HEAD.size + len(meta_raw) + len(body) + cf._CRC.size
    content = cf._HEAD.pack(cf.MAGIC, version, 0, len(meta_raw), size if total is None else total) + meta_raw + body
    return content + struct.pack("<I", zlib.crc32(content))


def with_meta(content: bytes, meta: object, body: bytes | None = None) -> bytes:
    """`content` with its metadata replaced by `meta` (JSON, compressed), CRC and length recomputed."""
    version, _, old_body = split(content)
    raw = zlib.compress(json.dumps(meta, separators=(",", ":")).encode())
    return assemble(raw, old_body if body is None else body, version)


def recrc(content: bytes) -> bytes:
    """`content` (header, metadata and body possibly changed) with the CRC recomputed."""
    body = content[:-cf._CRC.size]
    return body + struct.pack("<I", zlib.crc32(body))


def packed_bytes(model: torch.nn.Module, kind: str = "int4", sparse: bool = False) -> bytes:
    """The bytes of `model` as a packed weight file (packedfile.write, through a temporary file)."""
    import tempfile
    from pathlib import Path

    from compresslab.techniques import packedfile as pf

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "m.pk"
        pf.save_model(model, path, kind, sparse)
        return path.read_bytes()
