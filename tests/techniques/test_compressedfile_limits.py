"""Crafted compressed files (valid CRC) are refused before they cost memory or time."""

from __future__ import annotations

import os
import resource
import time

import pytest
import torch
from filefuzz import ARCH, assemble, file_bytes, recrc, shared_model, split, with_meta

from compresslab.techniques import compressedfile as cf
from compresslab.techniques import filelayers


@pytest.fixture(scope="module")
def valid():
    model = shared_model()
    return model, file_bytes(model)


def _field(name: str) -> int:
    return filelayers.META_FIELDS.index(name)


def _refused(content: bytes, match: str, seconds: float = 2.0) -> None:
    """decode_bytes raises ValueError matching `match`, quickly and without a big allocation."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    with pytest.raises(ValueError, match=match):
        cf.decode_bytes(content)
    assert time.perf_counter() - start < seconds
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 100, f"peak memory grew by {grown_mb:.0f} MB"


def test_round_trip_is_exact_and_records_a_hash(valid, tmp_path):
    model, content = valid
    _, meta, _ = split(content)
    assert len(meta["sha256"]) == 64
    path = tmp_path / "m.dc"
    path.write_bytes(content)
    loaded = cf.load(path)
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)


def test_huge_gap_count_is_refused(valid):
    _, content = valid
    _, meta, _ = split(content)
    meta["layers"][0][_field("n_gaps")] = 10**8
    _refused(with_meta(content, meta), "n_gaps")


def test_huge_index_bits_are_refused(valid):
    _, content = valid
    _, meta, _ = split(content)
    meta["layers"][0][_field("index_bits")] = 28
    _refused(with_meta(content, meta), "index_bits")


def test_huge_shape_is_refused(valid):
    _, content = valid
    _, meta, _ = split(content)
    meta["layers"][0][_field("shape")] = [10**6, 10**6]
    _refused(with_meta(content, meta), "weights in all")


def test_a_single_symbol_code_cannot_claim_millions_of_symbols(valid):
    _, content = valid
    _, meta, _ = split(content)
    layer = meta["layers"][1]  # fc2 of a 784-12-10 MLP: 120 weights
    layer[_field("nnz")] = 10**7
    _refused(with_meta(content, meta), "nnz")


def test_deeply_nested_metadata_is_refused(valid):
    _, content = valid
    _, meta, body = split(content)
    deep = "[" * 100_000 + "]" * 100_000
    raw = ('{"architecture":null,"layers":' + deep + ',"others":[]}').encode()
    import zlib

    _refused(assemble(zlib.compress(raw), body), "nested|layers")


def test_metadata_that_inflates_past_the_limit_is_refused(valid):
    import zlib

    _, content = valid
    _, _, body = split(content)
    bomb = zlib.compress(b" " * (cf.MAX_META_BYTES + 10), 9)
    _refused(assemble(bomb, body), "zlib|metadata")


def test_architecture_arguments_are_checked_without_allocating(valid, tmp_path):
    _, content = valid
    _, meta, _ = split(content)
    meta["architecture"] = {"name": "mlp", "kwargs": {"hidden": [10**12]}}
    path = tmp_path / "big.dc"
    path.write_bytes(with_meta(content, meta))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ValueError, match="architecture"):
        cf.load(path)
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024 < 100
    meta["architecture"] = {"name": "mlp", "kwargs": {"hidden": "x"}}
    path.write_bytes(with_meta(content, meta))
    with pytest.raises(ValueError, match="architecture"):
        cf.load(path)


def test_header_is_checked_before_a_large_file_is_read(valid, tmp_path):
    _, content = valid
    path = tmp_path / "huge.dc"
    with open(path, "wb") as f:  # a sparse 1 GiB file whose header says 26 KB
        f.write(content[:cf._HEAD.size])
        f.truncate(1 << 30)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ValueError, match="truncated or padded"):
        cf.load(path)
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024 < 100


def test_a_fifo_is_refused_without_blocking(tmp_path):
    path = tmp_path / "pipe"
    os.mkfifo(path)
    start = time.perf_counter()
    with pytest.raises(ValueError, match="not a regular file"):
        cf.load(path)
    assert time.perf_counter() - start < 2
    with pytest.raises(ValueError, match="not a regular file"):
        cf.load(tmp_path)


def test_a_changed_codebook_value_is_caught_by_the_hash(valid):
    model, content = valid
    _, meta, body = split(content)
    changed = bytearray(body)
    changed[0] ^= 0x01  # the first codebook value of fc1, lowest mantissa bit
    with pytest.raises(ValueError, match="SHA-256"):
        cf.decode_bytes(with_meta(content, meta, bytes(changed)))


def test_nan_in_the_codebook_is_refused(valid):
    _, content = valid
    _, meta, body = split(content)
    changed = bytearray(body)
    changed[0:4] = bytes.fromhex("0000c07f")  # float32 NaN
    with pytest.raises(ValueError, match="NaN"):
        cf.decode_bytes(with_meta(content, meta, bytes(changed)))


def test_saving_nan_weights_is_refused(tmp_path):
    model = shared_model()
    with torch.no_grad():
        model.fc1.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        cf.save(model, tmp_path / "nan.dc", index_bits=4, bits=3, architecture=ARCH)
    assert not (tmp_path / "nan.dc").exists()


def test_a_wrong_version_or_length_in_the_header_is_refused(valid):
    _, content = valid
    bad = bytearray(content)
    bad[8] = 9  # version
    with pytest.raises(ValueError, match="version"):
        cf.decode_bytes(recrc(bytes(bad)))
