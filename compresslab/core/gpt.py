"""A small GPT (decoder-only transformer) over bytes: causal self-attention, pre-norm blocks.

    h_0 = E[x_t] + P[t];  h <- h + Attn(LN1(h));  h <- h + MLP(LN2(h));  logits = W_head LN_f(h)

Attention is causal (position t sees 0..t) and multi-head; the MLP is Linear(d, 4d), GELU,
Linear(4d, d). Every projection is an `nn.Linear` with a readable name (`blocks.0.attn.qkv`,
`blocks.0.mlp.fc`, ...), so the weight-only quantizers, pruning and low-rank factorization find them.
Vocabulary: the 256 byte values, so the loss in nats per position / ln 2 is bits per byte.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from compresslab.core.validate import check_float, check_int, check_tensor

__all__ = [
    "VOCAB",
    "CausalSelfAttention",
    "MLP",
    "Block",
    "GPT",
    "gpt",
    "block_linears",
    "bits_per_byte",
    "window_bits",
    "kl_bits",
    "kl_bits_per_byte",
    "generate",
]

VOCAB = 256


class CausalSelfAttention(nn.Module):
    """softmax(Q K^T / sqrt(d_head) + causal mask) V per head; Q, K, V from one Linear(d, 3d)."""

    def __init__(self, d_model: int, n_head: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=2)
        q, k, v = (z.view(b, t, self.n_head, d // self.n_head).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class MLP(nn.Module):
    """Linear(d, r d), GELU, Linear(r d, d)."""

    def __init__(self, d_model: int, ratio: int = 4) -> None:
        super().__init__()
        self.fc = nn.Linear(d_model, ratio * d_model)
        self.proj = nn.Linear(ratio * d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x)))


class Block(nn.Module):
    """Pre-norm residual block: h + Attn(LN(h)), then h + MLP(LN(h))."""

    def __init__(self, d_model: int, n_head: int, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_head)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = MLP(d_model, mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """Byte-level GPT: (B, T) int64 bytes -> (B, T, 256) logits of the next byte at every position."""

    def __init__(self, block_size: int = 128, d_model: int = 128, n_layer: int = 4, n_head: int = 4,
                 mlp_ratio: int = 4) -> None:
        super().__init__()
        owner = "GPT"
        check_int(owner, "block_size", block_size, 1, 1 << 16)
        check_int(owner, "d_model", d_model, 1, 1 << 14)
        check_int(owner, "n_layer", n_layer, 1, 256)
        check_int(owner, "n_head", n_head, 1, d_model)
        check_int(owner, "mlp_ratio", mlp_ratio, 1, 64)
        if d_model % n_head:
            raise ValueError(f"GPT.n_head={n_head} must divide GPT.d_model={d_model}")
        self.block_size = block_size
        self.tok_emb = nn.Embedding(VOCAB, d_model)
        self.pos_emb = nn.Embedding(block_size, d_model)
        self.blocks = nn.ModuleList(Block(d_model, n_head, mlp_ratio) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, VOCAB, bias=False)
        self.apply(self._init)
        for name, p in self.named_parameters():  # GPT-2: residual projections scaled by 1/sqrt(2 L)
            if name.endswith("proj.weight"):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * n_layer))

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        t = idx.shape[1]
        if t > self.block_size:
            raise ValueError(f"sequence length {t} exceeds block_size={self.block_size}")
        h = self.tok_emb(idx) + self.pos_emb(torch.arange(t, device=idx.device))
        for block in self.blocks:
            h = block(h)
        return self.head(self.ln_f(h))


def gpt(block_size: int = 128, d_model: int = 128, n_layer: int = 4, n_head: int = 4, mlp_ratio: int = 4) -> GPT:
    """A fresh GPT (weights from the global torch RNG: seed first).

    >>> sum(p.numel() for p in gpt().parameters())  # 4 blocks of 12 d^2 + 13 d, embeddings, head
    875264
    """
    return GPT(block_size, d_model, n_layer, n_head, mlp_ratio)


def block_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """The Linear layers inside the transformer blocks by qualified name, in forward order
    (qkv, attn.proj, mlp.fc, mlp.proj per block); the embeddings and the output head are left out."""
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear) and n.startswith("blocks.")}


@torch.no_grad()
def bits_per_byte(model: nn.Module, split, batch_size: int = 64) -> float:
    """Mean over every predicted byte of -log2 p(byte | context): cross-entropy in nats / ln 2."""
    from compresslab.core.training import evaluate

    return evaluate(model, split, batch_size=batch_size).loss_bits


@torch.no_grad()
def window_bits(model: nn.Module, split, batch_size: int = 64) -> torch.Tensor:
    """Bits per byte of every window of `split` on its own (a float64 tensor, one per window): the
    units a paired comparison of two models resamples. With equal windows their mean is
    `bits_per_byte`."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    for x, y in split.batches(batch_size, device=device):
        nll = F.cross_entropy(model(x).flatten(0, 1).double(), y.flatten(), reduction="none")
        out.append(nll.reshape(y.shape[0], -1).mean(1).cpu() / math.log(2))
    model.train(was_training)
    return torch.cat(out)


def kl_bits(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """KL(p || q) in bits at every position: sum_v p(v) (log2 p(v) - log2 q(v)), p = softmax(p_logits)
    and q = softmax(q_logits) over the last dimension (the vocabulary); >= 0, and 0 when p = q.

    >>> p = torch.log(torch.tensor([0.5, 0.5]))  # two symbols: KL([1/2, 1/2] || [3/4, 1/4])
    >>> round(float(kl_bits(p, torch.log(torch.tensor([0.75, 0.25])))), 6)  # 1/2 log2(2/3) + 1/2 log2(2)
    0.207519
    """
    check_tensor("p_logits", p_logits, kind="float")
    check_tensor("q_logits", q_logits, kind="float")
    if p_logits.shape != q_logits.shape:
        raise ValueError(f"kl_bits: logits of shapes {tuple(p_logits.shape)} and {tuple(q_logits.shape)} differ")
    log_p = torch.log_softmax(p_logits.double(), -1)
    log_q = torch.log_softmax(q_logits.double(), -1)
    return (log_p.exp() * (log_p - log_q)).sum(-1) / math.log(2)


@torch.no_grad()
def kl_bits_per_byte(model: nn.Module, split, reference: torch.Tensor, batch_size: int = 64) -> float:
    """KL(p_ref || p_model) in bits, averaged over every position of `split`: how far `model`'s whole
    next-byte distribution moved from the reference's (`training.split_logits` of, e.g., the FP32
    model). Unlike bits per byte, which reads only the probability of the true next byte, it sees
    every changed probability, including changes that cancel in the loss."""
    n_windows = len(split)
    if reference.shape[0] != n_windows:
        raise ValueError(f"kl_bits_per_byte: reference holds {reference.shape[0]} windows, the split {n_windows}")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, n, start = 0.0, 0, 0
    for x, _ in split.batches(batch_size, device=device):
        ref = reference[start:start + len(x)]
        start += len(x)
        kl = kl_bits(ref, model(x).float().cpu())
        total, n = total + float(kl.sum()), n + kl.numel()
    model.train(was_training)
    return total / n


@torch.no_grad()
def generate(model: nn.Module, prompt: bytes, n_new: int, temperature: float = 0.0, seed: int = 0) -> bytes:
    """`prompt` followed by `n_new` bytes: greedy (argmax) when temperature = 0, else sampled from
    softmax(logits / temperature) with a generator seeded by `seed` (the same seed, the same text).
    The context is the last block_size bytes."""
    check_int("generate", "n_new", n_new, 0, None)
    check_float("generate", "temperature", temperature, 0, 100)
    if not prompt:
        raise ValueError("generate: prompt must hold at least one byte")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    idx = torch.tensor(list(prompt), dtype=torch.long, device=device)[None]
    block = getattr(model, "block_size", idx.shape[1] + n_new)
    for _ in range(n_new):
        logits = model(idx[:, -block:])[0, -1].float().cpu()
        if temperature == 0:
            nxt = int(logits.argmax())
        else:
            nxt = int(torch.multinomial(torch.softmax(logits / temperature, -1), 1, generator=gen))
        idx = torch.cat([idx, torch.tensor([[nxt]], device=device)], dim=1)
    model.train(was_training)
    return bytes(idx[0].tolist())
