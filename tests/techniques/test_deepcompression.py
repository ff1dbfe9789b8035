"""Relative indices, the compressed file format (round trip, damage), the pipeline's configs."""

import copy
import json
import struct
import zlib

import numpy as np
import pytest
import torch
from torch import nn

from compresslab.core import models
from compresslab.core.training import TrainConfig
from compresslab.techniques import compressedfile, filelayers
from compresslab.techniques import compressedfile as cf
from compresslab.techniques import deepcompression as dc
from compresslab.techniques.pruning import PruneConfig
from compresslab.techniques.sharing import ShareConfig, apply_sharing
from compresslab.views import deepcompression


def test_relative_indices_hand_case_with_fillers():
    # 2 index bits: gaps 1..3 stored as is; a longer gap gets filler zeros, each skipping 3
    positions = [0, 2, 3, 10, 13]
    symbols = filelayers.relative_encode(positions, 2)
    # gaps from -1: 1, 2, 1, 7 (= 3 + 3 + 1: two fillers then 1), 3
    assert symbols.tolist() == [1, 2, 1, 0, 0, 1, 3]
    assert filelayers.relative_decode(symbols, 2).tolist() == positions


def test_relative_indices_exact_multiple_of_max_gap():
    # a gap of exactly M needs no filler, 2M needs exactly one
    assert filelayers.relative_encode([2], 2).tolist() == [3]
    assert filelayers.relative_encode([5], 2).tolist() == [0, 3]
    assert filelayers.relative_decode([0, 3], 2).tolist() == [5]


@pytest.mark.parametrize("bits", [1, 3, 5, 8])
def test_relative_indices_round_trip_random(bits):
    rng = np.random.default_rng(bits)
    n = 5000
    positions = np.flatnonzero(rng.random(n) < 0.03)
    symbols = filelayers.relative_encode(positions, bits)
    m = 2 ** bits - 1
    assert symbols.max() <= m and (symbols != 0).sum() == len(positions)
    gaps = np.diff(positions, prepend=-1)
    assert (symbols == 0).sum() == ((gaps - 1) // m).sum()
    assert np.array_equal(filelayers.relative_decode(symbols, bits), positions)
    assert filelayers.relative_encode([], bits).size == 0 and filelayers.relative_decode([], bits).size == 0


def test_relative_indices_bad_input():
    with pytest.raises(ValueError, match="strictly increasing"):
        filelayers.relative_encode([3, 3], 4)
    with pytest.raises(ValueError, match="index_bits"):
        filelayers.relative_encode([1], 0)
    with pytest.raises(ValueError, match="filler"):
        filelayers.relative_decode([1, 0], 4)
    with pytest.raises(ValueError, match="gap symbols"):
        filelayers.relative_decode([16], 4)


def shared_lenet300(seed=0, sparsity=0.9):
    """A LeNet-300-100 with random pruned and shared weights (no training)."""
    torch.manual_seed(seed)
    model = models.create("lenet300")
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in models.prunable_layers(model).values():
            layer.weight[torch.rand(layer.weight.shape, generator=gen) < sparsity] = 0
    model, _ = apply_sharing(model, ShareConfig(fc_bits=5, iters=5))
    return model


@pytest.fixture(scope="module")
def shared_model():
    return shared_lenet300()


def test_file_round_trip_bit_exact(shared_model, tmp_path):
    path = tmp_path / "m.cldc"
    size = compressedfile.save(shared_model, path, index_bits=5, bits=5)
    assert size == path.stat().st_size
    assert not list(tmp_path.glob(".*tmp"))  # atomic write leaves no temporary file
    loaded = compressedfile.load(path)  # architecture recorded in the file
    original, back = shared_model.state_dict(), loaded.state_dict()
    assert set(original) == set(back)
    for k, v in original.items():
        assert torch.equal(v.view(torch.int32), back[k].view(torch.int32)), k  # the same bits
    x = torch.randn(7, 1, 28, 28)
    shared_model.eval()
    assert torch.equal(shared_model(x), loaded(x))
    # the size is what the parts add up to: codebooks, code lengths, streams, biases, header
    dense = 4 * sum(p.numel() for p in shared_model.parameters())
    assert size < dense / 10


def test_layer_record_sizes_and_table(shared_model):
    content, records = compressedfile.encode_model(shared_model, index_bits=5, bits=5)
    nnz = {n: int((m.weight != 0).sum()) for n, m in models.prunable_layers(shared_model).items()}
    for r in records:
        assert r.nnz == nnz[r.name] and len(r.codebook) <= 32
        assert r.n_gaps >= r.nnz
        # Huffman streams: byte-padded bit lengths of the coded symbols
        assert len(r.index_stream) == -(-r.index_code.bit_length(
            filelayers.relative_encode(np.flatnonzero(r_weight(shared_model, r.name)), 5)) // 8)
    rows = dc.layer_table(records, len(content), 4 * sum(p.numel() for p in shared_model.parameters()))
    assert [r["layer"] for r in rows] == ["fc1", "fc2", "fc3", "total (file)"]
    assert rows[-1]["bytes"] == len(content)
    assert sum(r["bytes"] for r in rows[:-1]) < len(content)  # the header and checksum cost a little
    for r in rows[:-1]:
        assert r["weight bits (P+Q+H)"] <= 5.0 + 8 / max(nnz[r["layer"]], 1)


def r_weight(model, name):
    return models.prunable_layers(model)[name].weight.detach().reshape(-1).numpy()


def test_unshared_model_rejected():
    model = models.create("lenet300")
    with pytest.raises(ValueError, match="distinct non-zero values"):
        compressedfile.encode_model(model, bits=5)


def test_template_model_and_unknown_architecture(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 2))
    with torch.no_grad():
        for m in (model[0], model[2]):
            m.weight.copy_(torch.randint(-2, 3, m.weight.shape).float() / 4)
    path = tmp_path / "tiny.cldc"
    compressedfile.save(model, path, bits=3)
    with pytest.raises(ValueError, match="no known architecture"):
        compressedfile.load(path)
    loaded = compressedfile.load(path, model=nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 2)))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values(), strict=True))
    with pytest.raises(ValueError, match="does not match the architecture"):
        compressedfile.load(path, model=nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 2)))


@pytest.fixture(scope="module")
def good_bytes(shared_model):
    return compressedfile.encode_model(shared_model, index_bits=5, bits=5)[0]


@pytest.mark.parametrize("cut", [1, 4, 100, 5000])
def test_truncated_file_rejected(good_bytes, tmp_path, cut):
    path = tmp_path / "cut.cldc"
    path.write_bytes(good_bytes[:-cut])
    with pytest.raises(ValueError, match="truncated"):
        compressedfile.load(path)
    path.write_bytes(good_bytes[:10])
    with pytest.raises(ValueError, match="shorter than the header"):
        compressedfile.load(path)


@pytest.mark.parametrize("seed", range(6))
def test_bit_flipped_file_rejected(good_bytes, tmp_path, seed):
    rng = np.random.default_rng(seed)
    data = bytearray(good_bytes)
    pos = int(rng.integers(24, len(data)))  # anywhere after the fixed header: meta, body, checksum
    data[pos] ^= 1 << int(rng.integers(8))
    path = tmp_path / "flip.cldc"
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum"):
        compressedfile.load(path)


def test_wrong_version_and_magic_rejected(good_bytes, tmp_path):
    path = tmp_path / "v.cldc"
    data = bytearray(good_bytes)
    struct.pack_into("<H", data, 8, compressedfile.VERSION + 1)
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="unsupported file version"):
        compressedfile.load(path)
    path.write_bytes(b"PK\x03\x04" + good_bytes[4:])
    with pytest.raises(ValueError, match="magic"):
        compressedfile.load(path)


def _with_meta(good_bytes: bytes, raw_meta: bytes, version: int) -> bytes:
    """`good_bytes` with its metadata replaced by `raw_meta`, under `version`, with a valid checksum."""
    magic, _, reserved, meta_len, total = cf._HEAD.unpack_from(good_bytes)
    start = cf._HEAD.size
    body = good_bytes[start + meta_len:-4]
    content = cf._HEAD.pack(magic, version, reserved, len(raw_meta), total + len(raw_meta) - meta_len) + raw_meta + body
    return content + struct.pack("<I", zlib.crc32(content))


def test_version_1_and_2_files_still_load(good_bytes):
    # versions 1 and 2 have no value_bytes field and store every value as float32, like this file
    _, version, _, meta_len, _ = cf._HEAD.unpack_from(good_bytes)
    assert version == compressedfile.VERSION == 3
    meta = json.loads(zlib.decompress(good_bytes[cf._HEAD.size:cf._HEAD.size + meta_len]))
    assert all(layer[-1] == 4 for layer in meta["layers"])  # random centroids are not float16 values
    meta["layers"] = [layer[:-1] for layer in meta["layers"]]
    plain = json.dumps(meta).encode()
    _, state_v1, _ = compressedfile.decode_bytes(_with_meta(good_bytes, plain, 1))
    _, state_v2, _ = compressedfile.decode_bytes(_with_meta(good_bytes, zlib.compress(plain), 2))
    _, state_v3, _ = compressedfile.decode_bytes(good_bytes)
    for state in (state_v1, state_v2):
        assert state.keys() == state_v3.keys() and all(torch.equal(state[k], state_v3[k]) for k in state_v3)
    with pytest.raises(ValueError, match="bad metadata"):  # version 2 metadata must be zlib data
        compressedfile.decode_bytes(_with_meta(good_bytes, plain, 2))
    with pytest.raises(ValueError, match="list of 16 values"):  # version 3 needs value_bytes
        compressedfile.decode_bytes(_with_meta(good_bytes, zlib.compress(plain), 3))


@pytest.mark.parametrize("values, expected", [
    ([0.5, -0.25, 1024.0], 2),  # exact float16 values
    ([0.1], 4),  # 0.1 is not a float16
    ([1e5], 4),  # beyond the float16 range
    ([], 2),
])
def test_value_bytes_for_hand_cases(values, expected):
    assert filelayers.value_bytes_for(np.array(values, np.float32), None) == expected


def test_float16_codebooks_and_biases_halve_their_bytes_losslessly(shared_model, tmp_path):
    half = copy.deepcopy(shared_model)
    with torch.no_grad():  # the rounding that ShareConfig(value_dtype="float16") applies
        for p in half.parameters():
            p.copy_(p.half().float())
    full_bytes, full_records = compressedfile.encode_model(shared_model, index_bits=5, bits=5)
    half_bytes, half_records = compressedfile.encode_model(half, index_bits=5, bits=5)
    assert [r.value_bytes for r in full_records] == [4, 4, 4] and [r.value_bytes for r in half_records] == [2, 2, 2]
    values = sum(len(r.codebook) + r.bias.size for r in half_records)
    # the same streams (rounding keeps the clusters apart here) and 2 bytes saved per value, give or
    # take the metadata's compressed JSON
    assert [len(r.weight_stream) for r in half_records] == [len(r.weight_stream) for r in full_records]
    assert abs((len(full_bytes) - len(half_bytes)) - 2 * values) <= 8
    path = tmp_path / "half.cldc"
    compressedfile.save(half, path, index_bits=5, bits=5)
    loaded = compressedfile.load(path)
    for k, v in half.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    magic, version, reserved, meta_len, total = cf._HEAD.unpack_from(half_bytes)
    meta = json.loads(zlib.decompress(half_bytes[cf._HEAD.size:cf._HEAD.size + meta_len]))
    for bad in (3, 2.0, True):  # not a byte count of the format, a float, a bool
        meta["layers"][1][filelayers.META_FIELDS.index("value_bytes")] = bad
        with pytest.raises(ValueError, match="value_bytes"):
            compressedfile.decode_bytes(_with_meta(half_bytes, zlib.compress(json.dumps(meta).encode()), 3))


def test_damage_behind_a_valid_checksum_is_still_caught(good_bytes):
    # a writer bug (bad stream sizes) with a correct CRC: the decoder's own checks catch it
    magic, version, reserved, meta_len, total = cf._HEAD.unpack_from(good_bytes)
    start = cf._HEAD.size
    meta = json.loads(zlib.decompress(good_bytes[start:start + meta_len]))
    body = good_bytes[start + meta_len:-4]
    for field, delta in (("nnz", 1), ("n_gaps", -1), ("w_bytes", 1), ("k", 1)):
        bad = copy.deepcopy(meta)
        bad["layers"][0][filelayers.META_FIELDS.index(field)] += delta
        raw = zlib.compress(json.dumps(bad).encode())
        content = cf._HEAD.pack(magic, version, reserved, len(raw), total + len(raw) - meta_len) + raw + body
        content += struct.pack("<I", zlib.crc32(content))
        with pytest.raises(ValueError):
            compressedfile.decode_bytes(content)


@pytest.mark.parametrize("kw, msg", [
    ({"prune": PruneConfig(scope="layer", layer_sparsity={"fc1": 0.9}), "threshold_std": 1.0}, "not both"),
    ({"prune": PruneConfig(scope="global"), "threshold_std": 1.0}, "scope"),
    ({"threshold_std": -1}, "threshold_std"),
    ({"prune": ShareConfig()}, "prune"),
    ({"encode": dc.EncodeConfig(fc_index_bits=5), "share": PruneConfig()}, "share"),
    ({"distill_temperature": 0.0}, "distill_temperature"),
    ({"distill_temperature": float("nan")}, "distill_temperature"),
    ({"distill_alpha": 1.5}, "distill_alpha"),
])
def test_bad_configs(kw, msg):
    with pytest.raises((ValueError, TypeError), match=msg):
        dc.DeepCompressionConfig(**kw)


@pytest.mark.parametrize("kw, msg", [({"fc_index_bits": 0}, "fc_index_bits"), ({"conv_index_bits": 20}, "conv_index_bits")])
def test_bad_encode_configs(kw, msg):
    with pytest.raises(ValueError, match=msg):
        dc.EncodeConfig(**kw)


def test_std_threshold_sparsity():
    model = nn.Sequential(nn.Linear(1000, 10))
    with torch.no_grad():
        model[0].weight.copy_(torch.randn(10, 1000, generator=torch.Generator().manual_seed(0)))
    s = dc.std_threshold_sparsity(model, 1.0)["0"]
    assert s == pytest.approx(0.6827, abs=0.01)  # |z| < 1 sigma for a normal
    assert dc.std_threshold_sparsity(model, {"0": 0.0})["0"] == 0.0


def test_retrain_loss_distills_from_a_frozen_copy_of_the_dense_model():
    from compresslab.techniques.distillation import kd_loss

    torch.manual_seed(0)
    dense = models.create("mlp", hidden=(16,))
    assert dc.DeepCompressionConfig().retrain_loss(dense) is None  # labels only by default
    loss_fn = dc.DeepCompressionConfig(distill_temperature=2.0, distill_alpha=0.7).retrain_loss(dense)
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    logits = torch.randn(8, 10)
    with torch.no_grad():
        expected = kd_loss(logits, dense(x), y, 2.0, 0.7)
    torch.testing.assert_close(loss_fn(logits, y, x), expected)
    assert all(p.requires_grad for p in dense.parameters())  # the caller's model is not frozen


@pytest.mark.parametrize("distill_temperature", [None, 2.0])
def test_pipeline_on_tiny_data(tmp_path, tiny_data, distill_temperature):
    data = tiny_data
    torch.manual_seed(0)
    model = models.create("mlp", hidden=(64, 32))
    cfg = dc.DeepCompressionConfig(
        prune=PruneConfig(scope="layer", layer_sparsity={"fc1": 0.95, "fc2": 0.9, "fc3": 0.7}, schedule="iterative",
                          iterations=2, finetune=TrainConfig(epochs=1, batch_size=64, lr=0.01)),
        share=ShareConfig(fc_bits=4, finetune=TrainConfig(epochs=1, batch_size=64, lr=0.001)),
        distill_temperature=distill_temperature)
    loaded, report = dc.apply_deep_compression(model, cfg, data, path=tmp_path / "toy.cldc")
    assert report.bit_exact
    assert report.file_bytes == (tmp_path / "toy.cldc").stat().st_size
    assert report.compression == pytest.approx(report.dense_bytes / report.file_bytes)
    assert report.accuracy_after == report.accuracy_shared
    assert [s["stage"] for s in report.stages] == ["dense", "pruned", "shared", "huffman (file)"]
    sizes = [s["bytes"] for s in report.stages]
    assert sizes[0] > sizes[1] > sizes[2]
    kept = {r["layer"]: r["weights kept %"] for r in report.layers}
    assert kept["fc1"] == pytest.approx(5.0, abs=0.01) and kept["fc3"] == pytest.approx(30.0, abs=0.01)
    assert report.compression > 10 and report.size_after.stored_bytes == report.file_bytes
    assert [s["accuracy"] for s in report.stages] == [report.accuracy_before, report.accuracy_pruned,
                                                      report.accuracy_shared, report.accuracy_after]


def test_staged_verbs_chain_to_the_same_file(tmp_path, tiny_data):
    """The stages a notebook calls one by one give the file apply_deep_compression writes."""
    torch.manual_seed(0)
    model = models.create("mlp", hidden=(64, 32))
    cfg = dc.DeepCompressionConfig(
        prune=PruneConfig(scope="layer", layer_sparsity={"fc1": 0.9, "fc2": 0.8, "fc3": 0.5}, schedule="iterative",
                          iterations=1),
        share=ShareConfig(fc_bits=3), encode=dc.EncodeConfig(fc_index_bits=4))
    pruned, prune_report = dc.prune_stage(model, cfg, tiny_data)
    shared, share_report = dc.share_stage(pruned, cfg, tiny_data)
    encoded = dc.encode_stage(shared, cfg, tmp_path / "staged.cldc")
    loaded, bit_exact = dc.load_stage(encoded, shared)
    assert bit_exact and encoded.file_bytes == (tmp_path / "staged.cldc").stat().st_size
    assert all(r.index_bits == 4 and r.bits == 3 for r in encoded.records)
    chained, report = dc.apply_deep_compression(model, cfg, tiny_data)
    assert report.file_bytes == encoded.file_bytes and report.accuracy_pruned == prune_report.accuracy_after
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in chained.state_dict().items())


def test_views_for_the_notebook(shared_model):
    import matplotlib.pyplot as plt

    from compresslab.core.data import Dataset, Split

    content, records = compressedfile.encode_model(shared_model, index_bits=5, bits=5)
    parts = dc.byte_parts(records, len(content))
    assert sum(sum(v for k, v in row.items() if k != "layer") for row in parts) == len(content)
    stats = dc.stream_statistics(records[0])
    counts, lengths = stats["fc1: cluster indices"]
    assert counts.sum() == records[0].nnz and len(lengths) == len(counts)
    assert stats["fc1: index gaps"][0].sum() == records[0].n_gaps
    gen = torch.Generator().manual_seed(0)
    split = Split(torch.randint(0, 256, (64, 28, 28), dtype=torch.uint8, generator=gen),
                  torch.randint(0, 10, (64,), generator=gen), 0.5, 0.3)
    view = deepcompression.sharing_view(shared_model, Dataset("toy", split, split, None, tuple("0123456789")),
                           conv_bits=8, fc_bits=3, init="density", layer="fc2")
    assert view.metrics["file bytes"] < len(content)  # 3 bits instead of 5
    assert view.metrics["compression x"] == pytest.approx(4 * sum(p.numel() for p in shared_model.parameters())
                                                         / view.metrics["file bytes"], abs=0.05)
    for fig in (view.figure, deepcompression.byte_breakdown(parts), deepcompression.code_lengths(stats)):
        assert fig.axes
        plt.close(fig)
    with pytest.raises(ValueError, match="layer="):
        deepcompression.sharing_view(shared_model, Dataset("toy", split, split, None, tuple("0123456789")), 8, 3, "linear", "fc9")


def test_degenerate_layers_round_trip():
    model = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2, bias=False))
    with torch.no_grad():
        model[0].weight.zero_()  # nothing survived
        model[2].weight.fill_(0.25)  # one shared value, every position kept
        model[4].weight.zero_()
        model[4].weight[1, 2] = -1.5  # a single weight, far from the start
    content, records = compressedfile.encode_model(model, index_bits=1, bits=2)
    assert [r.nnz for r in records] == [0, 12, 1]
    assert records[1].weight_code.single == 0 and records[1].weight_stream == b""  # one value costs no bits
    _, state, _ = compressedfile.decode_bytes(content)
    for k, v in model.state_dict().items():
        assert torch.equal(state[k], v), k


@pytest.mark.parametrize("lengths", [[3, 3, 2, 1, 0, 0], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 15],
                                     [1] + list(range(2, 21)) + [20], [0, 0, 0], [2, 2, 0, 2, 2, 0, 0]])
def test_code_tables_pack_and_unpack(lengths):
    lengths = np.array(lengths, dtype=np.uint8)
    size = filelayers.table_size(lengths)
    raw = filelayers.pack_lengths(lengths)
    assert len(raw) == filelayers.table_bytes(size)
    used = np.flatnonzero(lengths)
    assert abs(size) == (used[-1] + 1 if len(used) else 0)  # trailing unused symbols cost nothing
    assert (size < 0) == (bool(len(used)) and lengths.max() <= 15)  # 4 bits per length when they fit
    assert np.array_equal(filelayers.unpack_lengths(raw, size, len(lengths)), lengths)


def test_paper_summary_by_hand():
    from compresslab.techniques.deepcompression import PAPER, paper_summary, stage_accuracies

    stages = [{"stage": "dense", "bytes": 1000, "compression x": 1.0, "gzip bytes": 900},
              {"stage": "pruned", "bytes": 250, "compression x": 4.0, "gzip bytes": 300},
              {"stage": "shared", "bytes": 50, "compression x": 20.0, "gzip bytes": 40},
              {"stage": "huffman (file)", "bytes": 25, "compression x": 40.0, "gzip bytes": None}]
    s = paper_summary("lenet300", 98.0, 97.9, 1000, 25, stages)
    assert s["compression_x"] == 40.0 and s["compression_target_met"]  # exactly the paper's 40x
    assert s["error_increase_points"] == pytest.approx(0.1) and s["accuracy_target_met"]  # exactly +0.1
    assert s["dense_error_pct"] == pytest.approx(2.0) and s["compressed_error_pct"] == pytest.approx(2.1)
    assert (s["pruned_compression_x"], s["shared_compression_x"]) == (4.0, 20.0)
    assert s["gzip_dense_compression_x"] == 1000 / 900 and s["gzip_shared_compression_x"] == 1000 / 40
    missed = paper_summary("lenet5", 98.0, 97.8, 1000, 26, stages)
    assert not missed["compression_target_met"] and not missed["accuracy_target_met"]  # 38.5x < 39x; +0.2
    assert PAPER["lenet5"].compression_x == 39.0 and PAPER["lenet300"].layer_sparsity["fc1"] == 0.92
    with pytest.raises(ValueError, match="model_name"):
        paper_summary("alexnet", 98.0, 97.9, 1000, 25, stages)
    rows = stage_accuracies(stages, [98.0, 97.951, 97.9, 97.9])
    assert [r["accuracy %"] for r in rows] == [98.0, 97.95, 97.9, 97.9] and "accuracy %" not in stages[0]
    with pytest.raises(ValueError, match="3 accuracies for 4 stages"):
        stage_accuracies(stages, [98.0, 97.9, 97.9])
