"""KV-cache quantization: per head per token against torch's fake quantization, the cached forward
against the full one, an 8-bit cache close to FP32, memory bytes by hand, the verb."""

from __future__ import annotations

import pytest
import torch

from compresslab.core import gpt, textdata
from compresslab.core.training import evaluate
from compresslab.techniques import kvcache


@pytest.mark.parametrize("bits", [8, 4])
def test_quantize_per_head_per_token_matches_torch_fake_quantize(bits):
    gen = torch.Generator().manual_seed(bits)
    x = torch.randn(2, 3, 5, 8, generator=gen) * torch.rand(2, 3, 5, 1, generator=gen) * 4 + 0.3  # (B, H, T, d_head)
    q = kvcache.quantize_kv(x, bits)
    rows = x.reshape(-1, 8)
    # torch's reference: one channel per (batch, head, token) vector, with the same (FP16) scale and zero point
    ref = torch.fake_quantize_per_channel_affine(rows, q.scale.float().reshape(-1), q.zero.to(torch.int32).reshape(-1),
                                                 0, 0, 2**bits - 1)
    assert torch.equal(kvcache.dequantize_kv(q), ref.reshape(x.shape))
    assert torch.equal(kvcache.fake_quant_kv(x, bits), ref.reshape(x.shape))
    # the range of each vector (widened to include 0) maps onto the grid: error at most half a step, plus
    # what rounding the scale to FP16 (relative error <= 2^-11) can clip at the ends: q_max s 2^-11
    step = q.scale.float()[..., None]
    assert ((kvcache.dequantize_kv(q) - x).abs() <= step * (0.5 + (2**bits - 1) * 2.0**-11) + 1e-6).all()
    assert q.codes.dtype == torch.uint8 and q.codes.shape == (2, 3, 5, 8 * bits // 8)


def test_memory_bytes_by_hand():
    x = torch.randn(1, 2, 10, 16)  # 2 heads x 10 tokens of 16 values
    assert kvcache.quantize_kv(x, 8).nbytes == 2 * 10 * (16 + 2 + 1)  # codes, FP16 scale, 1-byte zero
    assert kvcache.quantize_kv(x, 4).nbytes == 2 * 10 * (8 + 2 + 1)  # two 4-bit codes per byte
    model = small()
    fp32, int8, int4 = (kvcache.KVCache(2, bits) for bits in (None, 8, 4))
    idx = torch.randint(0, 256, (1, 12))
    for cache in (fp32, int8, int4):
        kvcache.cached_logits(model, idx, cache)
        assert cache.length == 12
    # d_model 32, 2 heads, 2 layers, keys and values: per token 2 x 2 x 32 x 4 bytes in FP32;
    # INT8: 2 x 2 x (32 codes + 2 heads x 3 bytes); INT4: 2 x 2 x (16 + 6)
    assert fp32.nbytes / 12 == 512 and int8.nbytes / 12 == 152 and int4.nbytes / 12 == 88


def small():
    torch.manual_seed(0)
    return gpt.gpt(block_size=24, d_model=32, n_layer=2, n_head=2).eval()


def test_cached_forward_equals_the_full_forward():
    model = small()
    idx = torch.randint(0, 256, (3, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = model(idx)
    cache = kvcache.KVCache(2)
    steps = [kvcache.cached_logits(model, idx[:, :7], cache)]  # a prompt of 7, then one byte at a time
    steps += [kvcache.cached_logits(model, idx[:, t:t + 1], cache) for t in range(7, 20)]
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5)
    # greedy generation with the FP32 cache is gpt.generate's
    text, _, _ = kvcache.generate_cached(model, b"def f(", 12)
    assert text == gpt.generate(model, b"def f(", 12)


@pytest.mark.parametrize("bits", [8, 4])
def test_quantized_cache_step_by_step_equals_the_hooked_full_pass(bits):
    """A position's key and value are quantized alone, so reading the quantized cache step by step gives
    the logits of one full pass with every key and value fake-quantized (apply_kvcache's hook)."""
    model = small()
    idx = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(2))
    cache = kvcache.KVCache(2, bits)
    steps = [kvcache.cached_logits(model, idx[:, :5], cache)]
    steps += [kvcache.cached_logits(model, idx[:, t:t + 1], cache) for t in range(5, 16)]
    hooked, _ = kvcache.apply_kvcache(model, kvcache.KVCacheConfig(bits))
    with torch.no_grad():
        assert torch.allclose(torch.cat(steps, dim=1), hooked(idx), atol=1e-5)
        assert not torch.allclose(hooked(idx), model(idx), atol=1e-5)  # the hook changes something


def test_an_eight_bit_cache_stays_close_to_fp32():
    model = small()
    _, _, ref = kvcache.generate_cached(model, b"import os\n", 12)
    _, _, int8 = kvcache.generate_cached(model, b"import os\n", 12, bits=8)
    _, _, int4 = kvcache.generate_cached(model, b"import os\n", 12, bits=4)
    err8, err4 = float((int8 - ref).abs().max()), float((int4 - ref).abs().max())
    assert err8 < 0.02 * float(ref.abs().max()) and err8 < err4  # the bound; INT4 is coarser


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="KVCacheConfig.bits=6"):
        kvcache.KVCacheConfig(bits=6)
    with pytest.raises(ValueError, match="bits"):
        kvcache.quantize_kv(torch.randn(2, 4), 3)
    with pytest.raises(ValueError, match="non-finite"):
        kvcache.quantize_kv(torch.tensor([[float("nan"), 1.0]]), 8)
    with pytest.raises(ValueError, match="even"):
        kvcache.quantize_kv(torch.randn(2, 5), 4)
    with pytest.raises(ValueError, match="block_size"):
        kvcache.generate_cached(small(), b"x" * 20, 10)
    with pytest.raises(ValueError, match="loss_fn"):
        kvcache.apply_kvcache(small(), kvcache.KVCacheConfig(), loss_fn=lambda *a: 0)


def test_apply_kvcache():
    split = textdata.TextSplit(torch.randint(0, 256, (3000,), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)), 24)
    ds = textdata.TextDataset("t", split, split, None, (), {})
    model = small()
    out8, rep8 = kvcache.apply_kvcache(model, kvcache.KVCacheConfig(8), ds)
    out4, rep4 = kvcache.apply_kvcache(model, kvcache.KVCacheConfig(4), ds)
    assert rep8.loss_bits_before == pytest.approx(evaluate(model, ds.test).loss_bits)  # the input is untouched
    assert rep8.loss_bits_after == pytest.approx(evaluate(out8, ds.test).loss_bits)
    assert abs(rep8.loss_bits_after - rep8.loss_bits_before) < abs(rep4.loss_bits_after - rep4.loss_bits_before) + 1e-4
    assert (rep8.cache_bytes_fp32, rep8.cache_bytes, rep4.cache_bytes) == (512, 152, 88)
    assert all(torch.equal(a, b) for a, b in zip(out8.state_dict().values(), model.state_dict().values()))
