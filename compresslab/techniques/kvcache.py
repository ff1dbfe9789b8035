"""KV-cache quantization: the keys and values a GPT keeps while generating, stored in INT8 or INT4.

Generating byte t+1 reads the keys and values of every earlier position in every layer and head; a
cache keeps them so they are computed once. Its size grows with the text, and for long contexts it,
not the weights, fills the memory. Each head's key (and value) vector of each position, k in R^d_head,
is quantized on its own: asymmetric, one scale s (FP16) and zero point z (one byte) per head per token,
over the vector's [min, max] widened to include 0 (`groupquant.quantize_groups` with one group per row):

    q = clamp(round(k / s) + z, 0, 2^b - 1),    k_hat = s (q - z).

INT4 codes are packed two per byte. Per token and layer the cache holds 2 d_model codes and 2 n_head
(scale, zero) pairs: (2 d_model b / 8 + 2 n_head 3) bytes instead of 2 d_model 4 in FP32.

Quantizing each position's vector alone means that reading a quantized cache at step t gives exactly
what a full forward pass gives with every key and value quantize-dequantized before attention; so the
bits per byte of a quantized cache come from ordinary (parallel) evaluation with a hook on each
attention's qkv projection (`apply_kvcache`), and `cached_logits` / `generate_cached` run the real
cache step by step.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from compresslab.core import metrics
from compresslab.core.data import Dataset
from compresslab.core.gpt import GPT, CausalSelfAttention
from compresslab.core.params import Param
from compresslab.core.report import Report
from compresslab.core.training import EvalResult, LossFn, evaluate
from compresslab.core.validate import check_choice, check_int, check_tensor
from compresslab.techniques.groupquant import GroupQuant, dequantize_groups, quantize_groups
from compresslab.techniques.registry import Technique, register, tiny_mlp

__all__ = [
    "BITS",
    "QuantKV",
    "quantize_kv",
    "dequantize_kv",
    "fake_quant_kv",
    "KVCache",
    "cached_logits",
    "generate_cached",
    "KVCacheConfig",
    "KVCacheReport",
    "apply_kvcache",
]

BITS = (8, 4)


@dataclass
class QuantKV:
    """Quantized vectors (..., d_head): codes (uint8; INT4 two per byte, low nibble first), scale (FP16)
    and zero point (uint8), one of each per vector."""

    codes: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor
    bits: int
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        """Bytes of the stored tensors: codes, scales and zero points."""
        return sum(t.numel() * t.element_size() for t in (self.codes, self.scale, self.zero))


def quantize_kv(x: torch.Tensor, bits: int) -> QuantKV:
    """Asymmetric b-bit codes of x (..., d_head) with one (FP16 scale, zero point) per vector.

    >>> qkv = quantize_kv(torch.tensor([[0.0, 1.0, 2.0, 3.0]]), 8)  # s = 3/255, z = 0
    >>> qkv.codes.tolist(), qkv.nbytes  # 4 codes + a 2-byte scale + a 1-byte zero point
    ([[0, 85, 170, 255]], 7)
    """
    check_choice("quantize_kv", "bits", bits, BITS)
    check_tensor("keys or values", x, kind="float")
    if x.shape[-1] % 2:
        raise ValueError(f"quantize_kv: the vector length {x.shape[-1]} must be even")
    gq = quantize_groups(x.detach().reshape(-1, x.shape[-1]).float(), bits, 0)
    codes = gq.q.to(torch.uint8)
    if bits == 4:
        codes = codes[:, 0::2] | (codes[:, 1::2] << 4)
    lead = tuple(x.shape[:-1])
    return QuantKV(codes.reshape(*lead, -1), gq.scale.half().reshape(lead), gq.zero.to(torch.uint8).reshape(lead),
                   bits, tuple(x.shape))


def dequantize_kv(qkv: QuantKV) -> torch.Tensor:
    """k_hat = s (q - z) of every vector, in FP32, in the original shape."""
    d = qkv.shape[-1]
    codes = qkv.codes.reshape(-1, qkv.codes.shape[-1]).to(torch.int32)
    if qkv.bits == 4:
        codes = torch.stack([codes & 15, codes >> 4], dim=-1).reshape(-1, d)
    gq = GroupQuant(codes, qkv.scale.float().reshape(-1, 1), qkv.zero.to(torch.int32).reshape(-1, 1), qkv.bits, d)
    return dequantize_groups(gq).reshape(qkv.shape)


def fake_quant_kv(x: torch.Tensor, bits: int) -> torch.Tensor:
    """dequantize_kv(quantize_kv(x, bits)): what a quantized cache gives back."""
    return dequantize_kv(quantize_kv(x, bits)).to(x.dtype)


@dataclass
class KVCache:
    """Per layer, the keys and values of the positions seen so far, as chunks (B, n_head, t, d_head):
    FP32 tensors (bits None) or `QuantKV`."""

    n_layer: int
    bits: int | None = None
    keys: list[list] = field(default_factory=list)
    values: list[list] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.bits is not None:
            check_choice("KVCache", "bits", self.bits, BITS)
        self.keys = [[] for _ in range(self.n_layer)]
        self.values = [[] for _ in range(self.n_layer)]

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the new positions' k and v; return the layer's whole (dequantized) keys and values."""
        store = (lambda t: t.detach().clone()) if self.bits is None else (lambda t: quantize_kv(t, self.bits))
        self.keys[layer].append(store(k))
        self.values[layer].append(store(v))
        read = (lambda c: c) if self.bits is None else dequantize_kv
        return (torch.cat([read(c) for c in self.keys[layer]], dim=2),
                torch.cat([read(c) for c in self.values[layer]], dim=2))

    @property
    def length(self) -> int:
        """Positions stored (per sequence)."""
        return sum(c.shape[2] for c in self.keys[0]) if self.keys else 0

    @property
    def nbytes(self) -> int:
        """Bytes of every stored tensor (codes, scales and zero points, or FP32 values)."""
        chunks = [c for layer in (*self.keys, *self.values) for c in layer]
        return sum(c.nbytes if isinstance(c, QuantKV) else c.numel() * c.element_size() for c in chunks)


@torch.no_grad()
def cached_logits(model: GPT, idx: torch.Tensor, cache: KVCache) -> torch.Tensor:
    """Logits (B, t, 256) of the new bytes idx (B, t) at positions cache.length, ...: the GPT's forward
    pass written step-wise, each layer's new keys and values appended to `cache` and attention reading
    the cache (every earlier position, and the new ones causally)."""
    b, t = idx.shape
    start = cache.length
    if start + t > model.block_size:
        raise ValueError(f"cached_logits: {start + t} positions exceed block_size={model.block_size}")
    h = model.tok_emb(idx) + model.pos_emb(torch.arange(start, start + t, device=idx.device))
    causal = torch.arange(start + t, device=idx.device)[None, :] <= torch.arange(start, start + t, device=idx.device)[:, None]
    for layer, block in enumerate(model.blocks):
        attn, d = block.attn, h.shape[-1]
        q, k, v = attn.qkv(block.ln1(h)).split(d, dim=2)
        q, k, v = (z.view(b, t, attn.n_head, d // attn.n_head).transpose(1, 2) for z in (q, k, v))
        keys, values = cache.append(layer, k, v)
        y = F.scaled_dot_product_attention(q, keys, values, attn_mask=causal)
        h = h + attn.proj(y.transpose(1, 2).reshape(b, t, d))
        h = h + block.mlp(block.ln2(h))
    return model.head(model.ln_f(h))


@torch.no_grad()
def generate_cached(model: GPT, prompt: bytes, n_new: int, bits: int | None = None) -> tuple[bytes, KVCache, torch.Tensor]:
    """Greedy generation with a KV cache (FP32 for bits None, else INT`bits`): (prompt + n_new bytes, the
    cache, the logits of every step (n_new, 256)). The prompt fills the cache in one pass, then one byte
    per step; the whole text must fit in block_size (a cache does not slide)."""
    check_int("generate_cached", "n_new", n_new, 1, None)
    if not prompt or len(prompt) + n_new > model.block_size:
        raise ValueError(f"generate_cached: the prompt ({len(prompt)} bytes, at least 1) and n_new={n_new} "
                         f"must fit in block_size={model.block_size}")
    was_training = model.training
    model.eval()
    cache = KVCache(len(model.blocks), bits)
    logits = cached_logits(model, torch.tensor([list(prompt)]), cache)[:, -1]
    out, steps = list(prompt), []
    for _ in range(n_new):
        steps.append(logits[0])
        out.append(int(logits[0].argmax()))
        logits = cached_logits(model, torch.tensor([[out[-1]]]), cache)[:, -1]
    model.train(was_training)
    return bytes(out), cache, torch.stack(steps)


def _quantize_kv_output(bits: int, n_head: int):
    """A forward hook on an attention's qkv projection: its key and value thirds fake-quantized per
    head per token (what attention reads from a quantized cache)."""

    def hook(module: nn.Module, inputs: tuple, out: torch.Tensor) -> torch.Tensor:
        q, k, v = out.split(out.shape[-1] // 3, dim=-1)
        heads = (*k.shape[:-1], n_head, k.shape[-1] // n_head)
        k, v = (fake_quant_kv(z.reshape(heads), bits).reshape(z.shape) for z in (k, v))
        return torch.cat([q, k, v], dim=-1)

    return hook


@dataclass(frozen=True)
class KVCacheConfig:
    """bits: 8 or 4, the keys' and values' codes (asymmetric, per head per token, FP16 scales)."""

    bits: int = 8

    def __post_init__(self) -> None:
        check_choice("KVCacheConfig", "bits", self.bits, BITS)


@dataclass(kw_only=True, repr=False)
class KVCacheReport(Report):
    """Report of apply_kvcache: next-symbol accuracy (percent) and bits per symbol with the FP32 and the
    quantized cache; cache bytes per token (all layers, keys and values) in FP32 and quantized,
    measured on a real cache filled with one window."""

    loss_bits_before: float | None = None
    loss_bits_after: float | None = None
    cache_bytes_fp32: float = 0.0
    cache_bytes: float = 0.0

    technique = "kv-cache quantization"

    def headline_extra(self) -> list[str]:
        parts = [f"INT{self.config.bits} KV cache: {self.cache_bytes:g} bytes per token (FP32 {self.cache_bytes_fp32:g})"]
        if self.loss_bits_after is not None:
            parts.append(f"{self.loss_bits_before:.4f} &rarr; {self.loss_bits_after:.4f} bits per symbol")
        return parts


def apply_kvcache(
    model: nn.Module, config: KVCacheConfig, data: Dataset | None = None, *, inplace: bool = False,
    progress: bool | None = None, loss_fn: LossFn | None = None, before: EvalResult | None = None,
) -> tuple[nn.Module, KVCacheReport]:
    """(A copy of) `model` whose attention layers read INT`bits` keys and values (a forward hook on each
    qkv projection); the weights are unchanged. A model without attention is returned as it is. The
    cache bytes per token come from a real `KVCache` filled with one window of data.test (or of zeros)."""
    if loss_fn is not None:
        raise ValueError("loss_fn must be None: apply_kvcache trains nothing")
    start = time.perf_counter()
    model = model if inplace else copy.deepcopy(model)
    model.eval()
    if before is None and data is not None:
        before = evaluate(model, data.test)
    attns = [m for m in model.modules() if isinstance(m, CausalSelfAttention)]
    per_token = {None: 0.0, config.bits: 0.0}
    if isinstance(model, GPT) and attns:
        window = torch.zeros(1, model.block_size, dtype=torch.long) if data is None else data.test.tensors(1)[0][:1]
        for bits in per_token:
            cache = KVCache(len(model.blocks), bits)
            cached_logits(model, window, cache)
            per_token[bits] = cache.nbytes / cache.length
    for attn in attns:
        attn.qkv.register_forward_hook(_quantize_kv_output(config.bits, attn.n_head))
    after = evaluate(model, data.test) if data is not None else None
    size = metrics.model_size(model)
    report = KVCacheReport(
        config=config, size_before=size, size_after=size,
        accuracy_before=None if before is None else before.accuracy,
        accuracy_after=None if after is None else after.accuracy,
        loss_bits_before=None if before is None else before.loss_bits,
        loss_bits_after=None if after is None else after.loss_bits,
        cache_bytes_fp32=per_token[None], cache_bytes=per_token[config.bits],
        seconds=time.perf_counter() - start, layers=[{"attention": i, "n_head": a.n_head} for i, a in enumerate(attns)])
    return model, report


# ----------------------------------------------------------------- registration

register(Technique(
    name="kvcache", apply=apply_kvcache, config=KVCacheConfig,
    example=lambda: (tiny_mlp(), KVCacheConfig(bits=8), {}),
    notebook="09_language_model", params={"kv_bits": Param("choices", choices=BITS)}))
