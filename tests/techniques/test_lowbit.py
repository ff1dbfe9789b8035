"""Ternary and binary weights against hand-computed cases, the straight-through gradient, half
precision evaluation, the packed file's round trips, and apply_lowbit on a tiny problem."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from compresslab.core.models import mlp
from compresslab.core.training import TrainConfig, evaluate
from compresslab.techniques import packedfile
from compresslab.techniques.lowbit import LowBitConfig, apply_lowbit, bits_per_weight
from compresslab.techniques.lowbitops import (
    binarize,
    evaluate_in,
    fake_binary,
    fake_ternary,
    half_copy,
    ternarize,
    ternary_threshold,
)


def test_ternarize_by_hand():
    w = torch.tensor([[0.9, -0.05, 0.3], [-0.6, 0.1, -0.2]])
    # mean|w| = 2.15 / 6; delta = 0.7 * that = 0.250833; kept: 0.9, 0.3, -0.6 -> alpha = 1.8 / 3 = 0.6
    assert float(ternary_threshold(w)) == pytest.approx(0.7 * 2.15 / 6)
    codes, alpha = ternarize(w)
    assert codes.tolist() == [[1, 0, 1], [-1, 0, 0]] and codes.dtype == torch.int8
    assert float(alpha) == pytest.approx(0.6)
    codes, alpha = ternarize(w, ratio=0.1)  # delta = 0.0358: everything but nothing is small enough
    assert codes.tolist() == [[1, -1, 1], [-1, 1, -1]] and float(alpha) == pytest.approx(2.15 / 6)
    codes, alpha = ternarize(torch.zeros(3))
    assert codes.tolist() == [0, 0, 0] and float(alpha) == 0.0


def test_binarize_by_hand_per_channel():
    w = torch.tensor([[0.9, -0.1, 0.0, -0.2], [-0.4, 0.4, 0.4, -0.8]])
    signs, alpha = binarize(w)
    assert signs.tolist() == [[1, -1, 1, -1], [-1, 1, 1, -1]]  # sign(0) = +1
    assert alpha.tolist() == pytest.approx([0.3, 0.5])  # mean |w| per output channel
    conv = torch.randn(4, 3, 2, 2)
    _, a = binarize(conv)
    assert a.shape == (4,) and torch.allclose(a, conv.abs().mean((1, 2, 3)))
    assert torch.allclose(fake_binary(conv), a.reshape(4, 1, 1, 1) * torch.where(conv >= 0, 1.0, -1.0))


def test_ste_gradient_is_the_identity():
    for fake in (fake_ternary, fake_binary):
        w = torch.randn(5, 7, requires_grad=True)
        upstream = torch.randn(5, 7)
        (fake(w) * upstream).sum().backward()
        assert torch.equal(w.grad, upstream)  # d w_hat / d w = 1: the upstream gradient passes unchanged
    w = torch.tensor([0.5, -0.1, 0.05, -0.8], requires_grad=True)
    assert fake_ternary(w).detach().tolist() == pytest.approx([0.65, 0.0, 0.0, -0.65])


def test_half_precision_evaluation_on_a_tiny_model(tiny_data):
    torch.manual_seed(0)
    model = mlp([16])
    for dtype, torch_dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
        half = half_copy(model, dtype)
        assert half.model.fc1.weight.dtype == torch_dtype and model.fc1.weight.dtype == torch.float32
        x = tiny_data.test.tensors(limit=32)[0]
        # the oracle: the same arithmetic written out, weights and inputs rounded to the dtype
        w1, b1 = model.fc1.weight.to(torch_dtype), model.fc1.bias.to(torch_dtype)
        w2, b2 = model.fc2.weight.to(torch_dtype), model.fc2.bias.to(torch_dtype)
        h = torch.relu(torch.nn.functional.linear(x.flatten(1).to(torch_dtype), w1, b1))
        by_hand = torch.nn.functional.linear(h, w2, b2).float()
        assert torch.equal(half(x), by_hand)
        assert torch.allclose(half(x), model(x), atol=0.05)  # and close to float32 (8 / 11 mantissa bits)
        got = evaluate_in(model, tiny_data.test, dtype)
        assert abs(got.accuracy - evaluate(model, tiny_data.test).accuracy) <= 5  # points
    with pytest.raises(ValueError, match="dtype='int3'"):
        half_copy(model, "int3")


@pytest.mark.parametrize("kind", packedfile.KINDS)
@pytest.mark.parametrize("sparse", [False, True])
def test_packed_file_round_trip(tmp_path, kind, sparse):
    torch.manual_seed(1)
    model = mlp([13])
    with torch.no_grad():
        model.fc1.weight[:, ::3] = 0  # some zeros for the sparse layout
    nbytes = packedfile.save_model(model, tmp_path / "m.clpk", kind, sparse=sparse)
    assert nbytes == (tmp_path / "m.clpk").stat().st_size
    loaded = packedfile.unpack_into(mlp([13]), packedfile.read(tmp_path / "m.clpk"))
    for name in ("fc1", "fc2"):
        w = getattr(model, name).weight.detach()
        got = getattr(loaded, name).weight.detach()
        if kind == "fp32":
            expect = w
        elif kind in ("fp16", "bf16"):
            expect = w.to({"fp16": torch.float16, "bf16": torch.bfloat16}[kind]).float()
        elif kind in ("int8", "int4", "int3", "int2"):
            qmax = {"int8": 127, "int4": 7, "int3": 3, "int2": 1}[kind]
            s = w.abs().amax(1, keepdim=True) / qmax
            expect = torch.round(w / s).clamp(-qmax, qmax) * s
        elif kind == "ternary":
            codes, alpha = ternarize(w)
            expect = alpha * codes.float()
        else:
            signs, alpha = binarize(w)
            expect = alpha[:, None] * signs.float()
            if sparse:
                expect = expect * (w != 0)
        assert torch.allclose(got, expect, atol=1e-6), (kind, name)
        assert torch.equal(getattr(loaded, name).bias, getattr(model, name).bias)


def test_packed_sizes_by_hand(tmp_path):
    model = nn.Sequential(nn.Linear(100, 10))  # 1000 weights, 10 biases
    layers = {k: packedfile.pack_model(model, k)["0"] for k in packedfile.KINDS}
    assert len(layers["fp32"].codes) == 4000 and len(layers["bf16"].codes) == 2000
    assert len(layers["int8"].codes) == 1000 and len(layers["int4"].codes) == 500
    assert len(layers["int3"].codes) == 375 and len(layers["int2"].codes) == 250  # 3000 / 8, 2000 / 8 bits
    assert len(layers["ternary"].codes) == 200 and len(layers["binary"].codes) == 125  # 1000 / 5, 1000 / 8
    assert layers["ternary"].scale.size == 1 and layers["binary"].scale.size == 10
    assert bits_per_weight(model[0], "ternary") == pytest.approx(1.6 + 32 / 1000)
    assert bits_per_weight(model[0], "binary") == pytest.approx(1 + 320 / 1000)


def test_bit_packing_by_hand_and_round_trip():
    assert list(packedfile.pack_bits(np.array([1, 2, 3, 0]), 2)) == [1 + 2 * 4 + 3 * 16]  # 2 bits each, low first
    assert list(packedfile.pack_bits(np.array([9, 15, 1]), 4)) == [9 + 15 * 16, 1]  # int4's old nibble layout
    rng = np.random.default_rng(0)
    for bits in range(1, 9):
        values = rng.integers(0, 2 ** bits, 101)
        blob = packedfile.pack_bits(values, bits)
        assert len(blob) == (101 * bits + 7) // 8
        assert np.array_equal(packedfile.unpack_bits(blob, bits, 101), values)
    with pytest.raises(ValueError, match=r"values must lie in \[0, 7\]"):
        packedfile.pack_bits(np.array([8]), 3)
    with pytest.raises(ValueError, match="holds 2 codes, 3 needed"):
        packedfile.unpack_bits(b"\x00", 3, 3)


def test_mse_clip_is_the_best_ratio_on_its_grid_by_brute_force():
    torch.manual_seed(7)
    w = torch.randn(5, 40) * torch.tensor([1.0, 0.1, 3.0, 1.0, 0.5])[:, None]
    w[3, 0] = 12.0  # an outlier row: clipping pays
    for kind, bits in packedfile.CHANNEL_BITS.items():
        qmax = 2 ** (bits - 1) - 1
        q, s = packedfile.channel_codes(w, kind, clip="mse")
        for c in range(5):
            errors = []
            for r in torch.linspace(1.0, 0.2, packedfile.MSE_RATIOS):
                sc = max(float(r * w[c].abs().max() / qmax), float(torch.finfo(torch.float32).eps))
                errors.append(float(((torch.round(w[c] / sc).clamp(-qmax, qmax) * sc - w[c]) ** 2).sum()))
            assert float(((q[c] * s[c] - w[c]) ** 2).sum()) == pytest.approx(min(errors), rel=1e-5), (kind, c)
        if bits == 3:  # few levels: the outlier is clipped (at 2 bits, keeping it and zeroing the rest wins)
            assert float(s[3]) < float(w[3].abs().max() / qmax)


def test_channel_codes_against_torch_fake_quantize():
    w = torch.randn(6, 4, 3, 3)
    for kind, bits in packedfile.CHANNEL_BITS.items():
        q, s = packedfile.channel_codes(w, kind)
        qmax = 2 ** (bits - 1) - 1
        oracle = torch.fake_quantize_per_channel_affine(w, s, torch.zeros(6, dtype=torch.int32), 0, -qmax, qmax)
        assert torch.allclose(q * s.reshape(-1, 1, 1, 1), oracle, atol=1e-6)
        assert q.abs().max() == qmax


def test_damaged_packed_files_raise(tmp_path):
    path = tmp_path / "m.clpk"
    packedfile.save_model(mlp([4]), path, "ternary")
    raw = path.read_bytes()
    (tmp_path / "short").write_bytes(raw[:-3])
    with pytest.raises(ValueError, match="runs past the end"):
        packedfile.read(tmp_path / "short")
    (tmp_path / "long").write_bytes(raw + b"xx")
    with pytest.raises(ValueError, match="trailing bytes"):
        packedfile.read(tmp_path / "long")
    (tmp_path / "other").write_bytes(b"PK\x03\x04")
    with pytest.raises(ValueError, match="not a packed weight file"):
        packedfile.read(tmp_path / "other")
    with pytest.raises(ValueError, match="the file holds layers"):
        packedfile.unpack_into(mlp([4, 4]), packedfile.read(path))
    with pytest.raises(ValueError, match="greater|larger than 242"):
        packedfile.unpack_trits(bytes([250]), 5)


@pytest.mark.parametrize("kind", ["ternary", "binary"])
def test_apply_lowbit_trains_through_the_ste(tiny_data, kind):
    torch.manual_seed(0)
    model = mlp([32])
    config = LowBitConfig(kind=kind, finetune=TrainConfig(epochs=3, lr=0.05, batch_size=32))
    out, report = apply_lowbit(model, config, tiny_data)
    assert out is not model and model.fc1.weight.dtype == torch.float32
    for name in ("fc1", "fc2"):
        w = getattr(out, name).weight.detach()
        values = w.abs().unique()
        if kind == "ternary":
            assert len(values[values > 0]) == 1  # one scale per layer: |w| in {0, alpha}
        else:
            assert (w != 0).all() and torch.allclose(w.abs().amax(1), w.abs().amin(1))  # +-alpha_c per row
    assert report.accuracy_after > 50  # learnable: trained through the quantizer
    expected = sum(bits_per_weight(getattr(out, n), kind) * getattr(out, n).weight.numel() / 8 for n in ("fc1", "fc2"))
    assert report.size_after.stored_bytes == pytest.approx(expected + 4 * (32 + 10))
    assert report.compression > 10 and len(report.layers) == 2 and report.history is not None
    assert type(report).from_dict(report.to_dict()).accuracy_after == report.accuracy_after


def test_apply_lowbit_without_training_matches_the_primitive():
    torch.manual_seed(0)
    model = mlp([8])
    out, report = apply_lowbit(model, LowBitConfig(kind="ternary", layers=("fc1",), finetune=None))
    codes, alpha = ternarize(model.fc1.weight)
    assert torch.equal(out.fc1.weight, alpha * codes.float())
    assert torch.equal(out.fc2.weight, model.fc2.weight) and report.accuracy_after is None


def test_lowbit_config_errors():
    with pytest.raises(ValueError, match=r"LowBitConfig.kind='int2' must be one of \('ternary', 'binary'\)"):
        LowBitConfig(kind="int2")
    with pytest.raises(ValueError, match=r"LowBitConfig.threshold_ratio=0 must be in \(0, 10\]"):
        LowBitConfig(threshold_ratio=0)
    with pytest.raises(ValueError, match="LowBitConfig.finetune.epochs=0"):
        LowBitConfig(finetune=_bad_train())
    with pytest.raises(ValueError, match=r"LowBitConfig.layers names unknown layers \[.fc9.\]"):
        apply_lowbit(mlp([4]), LowBitConfig(layers=("fc9",), finetune=None))
    assert np.isclose(bits_per_weight(nn.Linear(5, 1), "ternary"), 8 / 5 + 32 / 5)


def _bad_train() -> TrainConfig:
    config = TrainConfig(epochs=1)
    object.__setattr__(config, "epochs", 0)  # changed after construction: the nested check catches it
    return config
