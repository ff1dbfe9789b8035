"""The bottom of the precision ladder as tensor primitives: ternary and binary weights with the
straight-through estimator, and evaluation in half precision (bf16 / fp16).

Ternary (Li et al., "Ternary Weight Networks", 2016): one threshold and one scale per layer,

    delta = r * mean|w|  (r = 0.7),   t_i = sign(w_i) * [|w_i| > delta],   alpha = mean_{|w_i| > delta} |w_i|,

so w is stored as alpha * t with t in {-1, 0, +1} (log2 3 = 1.58 bits; 5 trits fit in a byte).
Binary (Rastegari et al., XNOR-Net, 2016; BinaryConnect's sign): one scale per output channel,

    b_i = sign(w_i) (sign(0) = +1),   alpha_c = mean_i |w_c,i|   (1 bit per weight).

Training goes through the straight-through estimator: the forward pass uses alpha * t, the backward
pass treats the quantizer as the identity (d w_hat / d w = 1), so the float weights keep learning.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from compresslab.core.data import Split
from compresslab.core.training import EvalResult, evaluate
from compresslab.core.validate import check_choice, check_float, check_tensor

__all__ = ["LOWBIT_KINDS", "HALF_DTYPES", "ternary_threshold", "ternarize", "binarize", "fake_ternary",
           "fake_binary", "fake_lowbit", "FakeLowBit", "CastInput", "half_copy", "evaluate_in"]

LOWBIT_KINDS = ("ternary", "binary")
HALF_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def _check_ratio(ratio: float) -> None:
    check_float("", "threshold_ratio", ratio, 0, 10, lo_open=True)


def ternary_threshold(w: torch.Tensor, ratio: float = 0.7) -> torch.Tensor:
    """delta = ratio * mean|w| (a 0-d tensor): TWN's approximation of the optimal threshold.

    >>> ternary_threshold(torch.tensor([0.5, -0.1, 0.05, -0.8]))  # 0.7 * 1.45 / 4
    tensor(0.2537)
    """
    check_tensor("w", w, kind="float")
    _check_ratio(ratio)
    return ratio * w.detach().abs().mean()


def ternarize(w: torch.Tensor, ratio: float = 0.7) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes in {-1, 0, +1} as int8, alpha): w ~ alpha * codes, one alpha for the whole tensor.

    >>> codes, alpha = ternarize(torch.tensor([0.5, -0.1, 0.05, -0.8]))
    >>> codes, round(float(alpha), 4)  # |w| > 0.2537 keeps 0.5 and -0.8; alpha = (0.5 + 0.8) / 2
    (tensor([ 1,  0,  0, -1], dtype=torch.int8), 0.65)
    """
    check_tensor("w", w, kind="float")
    w = w.detach()
    delta = ternary_threshold(w, ratio)
    keep = w.abs() > delta
    codes = (torch.sign(w) * keep).to(torch.int8)
    alpha = w.abs()[keep].mean() if bool(keep.any()) else w.new_zeros(())
    return codes, alpha


def binarize(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(signs in {-1, +1} as int8, alpha per output channel = mean |w| of that channel): w ~ alpha_c * b.

    >>> signs, alpha = binarize(torch.tensor([[0.5, -0.1], [0.0, -0.6]]))
    >>> signs, alpha  # sign(0) = +1; alpha = [(0.5 + 0.1) / 2, (0 + 0.6) / 2]
    (tensor([[ 1, -1],
            [ 1, -1]], dtype=torch.int8), tensor([0.3000, 0.3000]))
    """
    check_tensor("w", w, kind="float")
    w = w.detach()
    signs = torch.where(w >= 0, 1, -1).to(torch.int8)
    alpha = w.abs().reshape(w.shape[0], -1).mean(1) if w.dim() > 1 else w.abs().mean().reshape(1)
    return signs, alpha


def _per_channel(alpha: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return alpha.reshape(-1, *([1] * (w.dim() - 1))) if w.dim() > 1 else alpha


def fake_ternary(w: torch.Tensor, ratio: float = 0.7) -> torch.Tensor:
    """alpha * ternarize(w) in the forward pass, identity gradient in the backward pass (STE).

    >>> w = torch.tensor([0.5, -0.1, 0.05, -0.8], requires_grad=True)
    >>> y = fake_ternary(w); y.detach()
    tensor([ 0.6500,  0.0000,  0.0000, -0.6500])
    >>> (y * torch.tensor([1., 2., 3., 4.])).sum().backward(); w.grad  # straight through
    tensor([1., 2., 3., 4.])
    """
    codes, alpha = ternarize(w, ratio)
    return alpha * codes.to(w.dtype) + (w - w.detach())  # value exactly alpha * codes, gradient 1


def fake_binary(w: torch.Tensor) -> torch.Tensor:
    """alpha_c * sign(w) in the forward pass, identity gradient in the backward pass (STE)."""
    signs, alpha = binarize(w)
    return _per_channel(alpha, w) * signs.to(w.dtype) + (w - w.detach())


def fake_lowbit(w: torch.Tensor, kind: str, ratio: float = 0.7) -> torch.Tensor:
    """fake_ternary or fake_binary by name."""
    check_choice("", "kind", kind, LOWBIT_KINDS)
    return fake_ternary(w, ratio) if kind == "ternary" else fake_binary(w)


class FakeLowBit(nn.Module):
    """A weight parametrization (torch.nn.utils.parametrize): the layer computes with the ternary or
    binary weight while its float weight trains through the straight-through estimator."""

    def __init__(self, kind: str, ratio: float = 0.7):
        super().__init__()
        check_choice("FakeLowBit", "kind", kind, LOWBIT_KINDS)
        _check_ratio(ratio)
        self.kind, self.ratio = kind, ratio

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return fake_lowbit(w, self.kind, self.ratio)

    def extra_repr(self) -> str:
        return f"kind={self.kind}, ratio={self.ratio}"


# ----------------------------------------------------------------- half precision

class CastInput(nn.Module):
    """Runs `model` (already in `dtype`) on inputs cast to `dtype`; returns float32 logits."""

    def __init__(self, model: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.model, self.dtype = model, dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.to(self.dtype)).float()


def half_copy(model: nn.Module, dtype: str | torch.dtype) -> CastInput:
    """A copy of `model` whose weights and arithmetic are in `dtype` ("bf16", "fp16" or a torch dtype);
    it takes and returns float32 tensors.

    >>> m = half_copy(nn.Linear(4, 2), "bf16"); m.model.weight.dtype, m(torch.ones(3, 4)).dtype
    (torch.bfloat16, torch.float32)
    """
    if isinstance(dtype, str):
        check_choice("", "dtype", dtype, tuple(HALF_DTYPES))
        dtype = HALF_DTYPES[dtype]
    return CastInput(copy.deepcopy(model).to(dtype).eval(), dtype)


def evaluate_in(model: nn.Module, data: Split, dtype: str | torch.dtype) -> EvalResult:
    """Test loss and accuracy of `model` computing in `dtype` on `data` (a Split): weights and
    activations cast, logits compared in float32 (training.evaluate on a half_copy)."""
    return evaluate(half_copy(model, dtype), data)
