"""The byte-level GPT: shapes, causality, bits per byte, deterministic generation, the cache."""

from __future__ import annotations

import math

import pytest
import torch

from compresslab.core import cache, gpt, models, textdata, training
from compresslab.core.training import TrainConfig


def small(**kw):
    torch.manual_seed(0)
    return gpt.gpt(**{"block_size": 16, "d_model": 32, "n_layer": 2, "n_head": 4, **kw})


def test_parameter_count_formula():
    m = small()
    d, L = 32, 2
    expected = L * (12 * d * d + 13 * d) + 256 * d + 16 * d + 2 * d + 256 * d
    assert sum(p.numel() for p in m.parameters()) == expected
    assert list(gpt.block_linears(m)) == [f"blocks.{i}.{n}" for i in range(2)
                                         for n in ("attn.qkv", "attn.proj", "mlp.fc", "mlp.proj")]
    assert isinstance(models.create("gpt", block_size=16, d_model=32, n_layer=1, n_head=4), gpt.GPT)


def test_attention_is_causal():
    m = small().eval()
    x = torch.randint(0, 256, (2, 12))
    y = x.clone()
    y[:, 7:] = torch.randint(0, 256, (2, 5))
    with torch.no_grad():
        a, b = m(x), m(y)
    assert a.shape == (2, 12, 256)
    assert torch.allclose(a[:, :7], b[:, :7], atol=1e-6)  # earlier positions never see later bytes
    assert not torch.allclose(a[:, 7:], b[:, 7:])


def test_attention_matches_a_hand_computation():
    m = small(n_layer=1).eval()
    attn = m.blocks[0].attn
    x = torch.randn(1, 5, 32)
    q, k, v = attn.qkv(x).split(32, dim=2)
    heads = []
    for h in range(4):
        sl = slice(8 * h, 8 * h + 8)
        s = q[0, :, sl] @ k[0, :, sl].T / math.sqrt(8)
        s = s.masked_fill(torch.triu(torch.ones(5, 5, dtype=torch.bool), 1), float("-inf"))
        heads.append(torch.softmax(s, -1) @ v[0, :, sl])
    assert torch.allclose(attn(x)[0], attn.proj(torch.cat(heads, -1)), atol=1e-5)


def test_bits_per_byte_of_an_untrained_model_is_near_eight():
    split = textdata.TextSplit(torch.randint(0, 256, (2000,), dtype=torch.uint8), 16)
    bpb = gpt.bits_per_byte(small(), split)
    assert 7.5 < bpb < 8.5  # near-uniform predictions over 256 bytes: log2 256 = 8


def test_window_bits_by_hand_and_their_mean_is_bits_per_byte():
    split = textdata.TextSplit(torch.randint(0, 256, (1000,), generator=torch.Generator().manual_seed(2),
                                             dtype=torch.uint8), 16)
    m = small()
    per_window = gpt.window_bits(m, split, batch_size=7)
    x, y = split.tensors()
    with torch.no_grad():  # the oracle: -log2 p(true byte) at each position, averaged within each window
        log_p = torch.log_softmax(m(x).double(), -1).gather(-1, y[..., None])[..., 0]
    assert per_window.shape == (len(split),) and per_window.dtype == torch.float64
    assert torch.allclose(per_window, -log_p.mean(1) / math.log(2), rtol=1e-9)
    assert float(per_window.mean()) == pytest.approx(gpt.bits_per_byte(m, split), rel=1e-6)


def test_kl_bits_matches_torch_kl_div_and_a_two_symbol_case():
    torch.manual_seed(1)
    p, q = torch.randn(3, 5, 256), torch.randn(3, 5, 256)
    ours = gpt.kl_bits(p, q)
    # torch: kl_div(input = log q, target = log p, log_target) = sum p (log p - log q), in nats
    ref = torch.nn.functional.kl_div(torch.log_softmax(q.double(), -1), torch.log_softmax(p.double(), -1),
                                     reduction="none", log_target=True).sum(-1) / math.log(2)
    assert ours.shape == (3, 5) and torch.allclose(ours, ref, atol=1e-12)
    assert (ours >= 0).all() and torch.allclose(gpt.kl_bits(p, p), torch.zeros(3, 5, dtype=torch.float64))
    # by hand: p = (0.9, 0.1), q = (0.6, 0.4): 0.9 log2(0.9/0.6) + 0.1 log2(0.1/0.4)
    hand = 0.9 * math.log2(0.9 / 0.6) + 0.1 * math.log2(0.1 / 0.4)
    two = gpt.kl_bits(torch.tensor([0.9, 0.1], dtype=torch.float64).log(), torch.tensor([0.6, 0.4], dtype=torch.float64).log())
    assert float(two) == pytest.approx(hand, abs=1e-12)
    # logits are defined up to a constant per position: shifting them changes nothing
    assert torch.allclose(gpt.kl_bits(p + 3.0, q - 1.0), ours, atol=1e-12)
    with pytest.raises(ValueError, match="shapes"):
        gpt.kl_bits(p, q[..., :10])


def test_kl_bits_per_byte_over_a_split():
    split = textdata.TextSplit(torch.randint(0, 256, (1000,), dtype=torch.uint8), 16)
    m = small()
    ref = training.split_logits(m, split, batch_size=7)
    assert ref.shape == (len(split), 16, 256)
    assert gpt.kl_bits_per_byte(m, split, ref, batch_size=5) == 0.0  # identical models: exactly 0
    other = small()
    with torch.no_grad():
        other.blocks[0].mlp.fc.weight.mul_(3.0)
    kl = gpt.kl_bits_per_byte(other, split, ref, batch_size=5)
    # the oracle: the mean of kl_bits over every position of the whole split, in one pass
    x = split.tensors()[0]
    with torch.no_grad():
        expected = float(gpt.kl_bits(m(x), other(x)).mean())
    assert kl > 0 and kl == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="windows"):
        gpt.kl_bits_per_byte(other, split, ref[:-1])


def test_generate_is_deterministic():
    m = small()
    a = gpt.generate(m, b"def ", 20)
    assert a.startswith(b"def ") and len(a) == 24 and a == gpt.generate(m, b"def ", 20)
    s1, s2 = gpt.generate(m, b"x", 30, temperature=1.0, seed=1), gpt.generate(m, b"x", 30, temperature=1.0, seed=1)
    assert s1 == s2
    # greedy = argmax of the model's next-byte logits at every step
    with torch.no_grad():
        nxt = int(m(torch.tensor([list(b"def ")]))[0, -1].argmax())
    assert a[4] == nxt


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="n_head"):
        gpt.gpt(d_model=30, n_head=4)
    with pytest.raises(ValueError, match="block_size"):
        small()(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(ValueError, match="prompt"):
        gpt.generate(small(), b"", 3)


def test_cache_key_follows_the_corpus_and_the_model(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPRESSLAB_CACHE", str(tmp_path / "cache"))  # empty: the first call trains
    split = textdata.TextSplit(torch.randint(0, 256, (4000,), dtype=torch.uint8), 16)
    ds = textdata.TextDataset("t", split, split, None, (), {"name": "t", "sha": "a"})
    other = textdata.TextDataset("t", split, split, None, (), {"name": "t", "sha": "b"})
    cfg = TrainConfig(epochs=0.05, batch_size=8, lr=1e-3, optimizer="adam")
    kw = {"block_size": 16, "d_model": 16, "n_layer": 1, "n_head": 2}
    assert cache.cache_key("gpt", kw, ds, cfg)[0] != cache.cache_key("gpt", kw, other, cfg)[0]
    assert cache.cache_key("gpt", kw, ds, cfg)[0] != cache.cache_key("gpt", {**kw, "n_layer": 2}, ds, cfg)[0]
    first = cache.pretrained("gpt", ds, cfg, model_kwargs=kw, progress=False)
    second = cache.pretrained("gpt", ds, cfg, model_kwargs=kw, progress=False)
    assert not first.from_cache and second.from_cache
    for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values()):
        assert torch.equal(a, b)
