"""The size ledger, MAC counts and latency timing."""

from __future__ import annotations

import gzip
import io

import pytest
import torch
from torch import nn

from compresslab.core import latency, metrics, models
from compresslab.techniques import masks


def _tiny():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))


def test_ledger_arithmetic_by_hand():
    model = _tiny()
    with torch.no_grad():
        model[1].weight[0].zero_()  # 4 of 12 weights zero
    report = metrics.size_report(model, bits_per_weight=5, serialized=True)
    assert [layer.params for layer in report.layers] == [15, 8]
    assert [layer.nonzeros for layer in report.layers] == [11, 8]
    assert report.params == 23 and report.dense_bytes == 92
    # encoded: 5 bits per non-zero weight + 32 bits per bias
    assert report.layers[0].encoded_bits == 5 * 8 + 32 * 3
    assert report.layers[1].encoded_bits == 5 * 6 + 32 * 2
    assert report.encoded_bytes == (136 + 94) / 8
    assert report.compression() == pytest.approx(92 / ((136 + 94) / 8))
    buffer = io.BytesIO()
    torch.save({k: v.contiguous() for k, v in model.state_dict().items()}, buffer)
    assert report.torch_save_bytes == len(buffer.getvalue())
    assert report.gzip_bytes == len(gzip.compress(buffer.getvalue(), compresslevel=9, mtime=0))
    table = report.table()
    assert list(table["layer"]) == ["1", "3", "total"] and table.iloc[-1]["params"] == 23


def test_ledger_counts_pruned_models_once_and_uses_file_bytes():
    model = models.create("lenet300")
    masks.prune_magnitude(model, 0.9, "global")
    report = metrics.size_report(model, file_bytes=1000)
    assert report.params == 266_610  # weight_orig is not counted twice
    weights = 266_200
    assert report.nonzeros == weights - round(0.9 * weights) + 410
    assert report.compression() == pytest.approx(4 * 266_610 / 1000)
    assert report.to_dict()["file_bytes"] == 1000
    assert report.torch_save_bytes is None and report.gzip_bytes is None  # only measured when asked


def test_parameter_count_and_model_size_agree_with_the_ledger():
    model = models.create("lenet300")
    masks.prune_magnitude(model, 0.9, "global")  # adds weight_orig parameters and weight_mask buffers
    ledger = metrics.size_report(model, bits_per_weight=64)
    size = metrics.model_size(model, bits_per_weight=64)
    assert metrics.parameter_count(model) == size.params == ledger.params == 266_610
    assert size.nonzeros == ledger.nonzeros and size.fp32_bytes == 4 * 266_610
    assert size.stored_bytes == ledger.encoded_bytes  # 64 bits per non-zero weight + 32 per bias
    assert metrics.model_size(model).stored_bytes == size.fp32_bytes  # no encoding: stored as FP32
    assert metrics.model_size(model, stored_bytes=1000).compression == pytest.approx(4 * 266_610 / 1000)
    shared = nn.Linear(3, 3)
    tied = nn.Sequential(shared, nn.ReLU(), shared)  # one tensor used twice counts once
    assert metrics.parameter_count(tied) == 12 == metrics.model_size(tied).params


def test_macs_by_hand():
    counts = metrics.macs(models.create("lenet5"))
    assert counts["conv1"] == 20 * 24 * 24 * 1 * 25
    assert counts["conv2"] == 50 * 8 * 8 * 20 * 25
    assert counts["fc1"] == 800 * 500 and counts["fc2"] == 5000
    assert counts["total"] == sum(v for k, v in counts.items() if k != "total")
    assert metrics.macs(models.create("lenet300"))["total"] == 784 * 300 + 300 * 100 + 100 * 10


def test_sparsity_table_and_weight_sparsity():
    model = masks.prune_magnitude(models.create("lenet300"), 0.5, "layer")
    table = metrics.sparsity_table(model)
    assert list(table["sparsity %"])[:3] == [50.0, 50.0, 50.0]
    assert metrics.weight_sparsity(model) == pytest.approx(0.5)


def test_latency_reports_medians_and_restores_threads():
    threads = torch.get_num_threads()
    rows = latency.latency(models.create("lenet300"), batch_sizes=(1, 8), repeats=5, warmup=1, label="dense", threads=1)
    assert [r.batch_size for r in rows] == [1, 8]
    assert all(r.threads == 1 and r.repeats >= 5 and r.p10_ms <= r.median_ms <= r.p90_ms for r in rows)
    assert torch.get_num_threads() == threads
    table = latency.SpeedTable(baseline="dense")
    table.add(rows)
    table.add([latency.Latency("half", 1, rows[0].median_ms / 2, 0, 0, 5, 1)])
    assert table.speedup("half", 1) == pytest.approx(2.0)
    with pytest.raises(KeyError, match="half"):
        table.speedup("half", 8)
    with pytest.raises(ValueError, match="repeats"):
        latency.latency(models.create("lenet300"), repeats=0)
