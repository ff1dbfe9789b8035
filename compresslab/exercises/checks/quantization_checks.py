"""Exercise checks for notebook 03 quantization."""

from __future__ import annotations

from collections.abc import Callable

import torch

from compresslab.exercises.checking import (
    as_tensor,
    call,
    compare,
    exercise_check,
    fail,
    require_unchanged,
    seeded_generator,
    short,
)
from compresslab.techniques import quantops

__all__ = [
    "check_choose_qparams",
    "check_quantize_affine",
    "check_fake_quantize",
]

# ----------------------------------------------------------------- 03 quantization

@exercise_check("choose_qparams")
def check_choose_qparams(fn: Callable) -> int:
    """choose_qparams(lo, hi, bits, scheme) -> (scale, zero_point)."""
    name = "choose_qparams"
    g = seeded_generator(6)
    cases = [
        (-1.0, 0.5, 8, "symmetric"), (-0.3, 0.9, 4, "symmetric"), (-1.0, 3.0, 8, "asymmetric"),
        (0.5, 2.0, 4, "asymmetric"), (-2.0, -0.5, 3, "asymmetric"), (0.0, 0.0, 8, "symmetric"),
        (torch.tensor([-1.0, -0.2, 0.0]), torch.tensor([1.0, 0.6, 2.0]), 4, "asymmetric"),
        (-torch.rand(16, generator=g), torch.rand(16, generator=g), 8, "symmetric"),
        (-torch.rand(16, generator=g), 2 * torch.rand(16, generator=g), 2, "asymmetric"),
    ]
    for lo, hi, bits, scheme in cases:
        case = f"lo={short(lo)}, hi={short(hi)}, bits={bits}, scheme={scheme!r}"
        lo_arg = lo.clone() if isinstance(lo, torch.Tensor) else lo
        hi_arg = hi.clone() if isinstance(hi, torch.Tensor) else hi
        got = call(name, fn, case, lo_arg, hi_arg, bits, scheme)
        scale, zp = quantops.choose_qparams(lo, hi, bits, scheme)
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            raise fail(name, case, "the result must be a pair (scale, zero_point)", (scale, zp), got,
                        "return scale, zero_point")
        qmin, qmax = quantops.qrange(bits, scheme)
        lo_t, hi_t = torch.as_tensor(lo, dtype=torch.float32), torch.as_tensor(hi, dtype=torch.float32)
        mistakes = {
            f"the symmetric grid is [-{qmax}, {qmax}] (narrow range, from qrange): s = max(|lo|, |hi|) / {qmax}, "
            f"not / 2^(b-1)": torch.maximum(lo_t.abs(), hi_t.abs()) / (qmax + 1),
            "first widen the range to include 0: lo = min(lo, 0), hi = max(hi, 0), so that x = 0 is exactly "
            "representable": (hi_t - lo_t) / (qmax - qmin) if scheme == "asymmetric" else None,
        }
        compare(name, f"{case}; the scale", got[0], scale,
                 "symmetric: s = max(-lo, hi) / qmax; asymmetric: s = (hi - lo) / (qmax - qmin), after widening "
                 "[lo, hi] to include 0; s is at least torch.finfo(torch.float32).eps (an all-zero range)",
                 mistakes, atol=1e-9, rtol=1e-5)
        zp_float = qmin - lo_t.clamp(max=0) / scale
        compare(name, f"{case}; the zero point", got[1], zp,
                 "symmetric: z = 0; asymmetric: z = clamp(qmin - round(lo / s), qmin, qmax), an integer",
                 {"the zero point must be an integer: round it (torch.round)": zp_float,
                  "z = qmin - round(lo / s) (minus, with lo <= 0 this is >= qmin)": qmin + torch.round(lo_t.clamp(max=0) / scale)},
                 atol=0, rtol=0)
    return len(cases)


def _quant_cases(seed: int) -> list[tuple[str, torch.Tensor, object, object, int, int]]:
    g = seeded_generator(seed)
    x = torch.randn(300, generator=g)
    s8, z8 = quantops.choose_qparams(x.min(), x.max(), 8, "asymmetric")
    s4, _ = quantops.choose_qparams(-1.0, 1.0, 4, "symmetric")  # values beyond +-1 get clipped
    w = torch.randn(6, 40, generator=g)
    sc, zc = quantops.choose_qparams(w.amin(1), w.amax(1), 4, "asymmetric")
    return [
        ("x=[-1, -0.26, 0, 0.3, 0.74, 5], scale=0.25, zero_point=2, qmin=0, qmax=7",
         torch.tensor([-1.0, -0.26, 0.0, 0.3, 0.74, 5.0]), 0.25, 2, 0, 7),
        ("300 random values, 8-bit asymmetric min-max range", x, s8, z8, 0, 255),
        ("300 random values, 4-bit symmetric range [-1, 1] (some values clipped)", x, s4, torch.tensor(0), -7, 7),
        ("a (6, 40) weight, per-channel: scale and zero_point of shape (6, 1) broadcast over rows",
         w, sc[:, None], zc[:, None], 0, 15),
    ]


@exercise_check("quantize_affine")
def check_quantize_affine(fn: Callable) -> int:
    """quantize_affine(x, scale, zero_point, qmin, qmax) -> integer q (tensor)."""
    name = "quantize_affine"
    cases = _quant_cases(7)
    for case, x, s, z, qmin, qmax in cases:
        before = x.clone()
        got = call(name, fn, case, x, s, z, qmin, qmax)
        require_unchanged(name, case, before, x)
        expected = quantops.quantize_affine(before, s, z, qmin, qmax)
        s_t, z_t = torch.as_tensor(s, dtype=torch.float32), torch.as_tensor(z, dtype=torch.float32)
        got_t = as_tensor(got)
        if got_t is not None and got_t.is_floating_point() and not torch.equal(got_t, got_t.round()):
            raise fail(name, case, "q must hold integers", expected, got, "round x / s to the nearest integer (torch.round)")
        mistakes = {
            "round to the NEAREST integer (torch.round), not down (floor) or toward zero (int conversion)":
                torch.clamp(torch.floor(before / s_t) + z_t, qmin, qmax),
            "clamp q to [qmin, qmax]: values outside the range saturate": torch.round(before / s_t) + z_t,
            "the zero point is ADDED: q = round(x / s) + z": torch.clamp(torch.round(before / s_t) - z_t, qmin, qmax),
            "divide by the scale: q = round(x / s) + z (s is the step size of the grid)":
                torch.clamp(torch.round(before * s_t) + z_t, qmin, qmax),
        }
        compare(name, case, got, expected, "q = clamp(round(x / s) + z, qmin, qmax)", mistakes, atol=0, rtol=0)
    return len(cases)


@exercise_check("fake_quantize")
def check_fake_quantize(fn: Callable) -> int:
    """fake_quantize(x, scale, zero_point, qmin, qmax) -> s (q - z), with the straight-through gradient."""
    name = "fake_quantize"
    cases = _quant_cases(8)
    g = seeded_generator(9)
    for case, x, s, z, qmin, qmax in cases:
        x_in = x.clone().requires_grad_(True)
        got = call(name, fn, case, x_in, s, z, qmin, qmax)
        x_ref = x.clone().requires_grad_(True)
        expected = quantops.fake_quantize(x_ref, s, z, qmin, qmax)
        s_t, z_t = torch.as_tensor(s, dtype=torch.float32), torch.as_tensor(z, dtype=torch.float32)
        q = quantops.quantize_affine(x, s, z, qmin, qmax).float()
        compare(name, case, got.detach() if isinstance(got, torch.Tensor) else got, expected.detach(),
                 "x_hat = s * (q - z) with q = clamp(round(x / s) + z, qmin, qmax): the forward pass returns "
                 "real values on the grid, not the integers",
                 {"return the dequantized value s * (q - z), not the integer q": q,
                  "subtract the zero point before scaling back: x_hat = s * (q - z)": s_t * q}, atol=1e-6)
        if not isinstance(got, torch.Tensor) or not got.requires_grad:
            raise fail(name, f"{case}; the gradient", "the result carries no gradient (it does not require grad)",
                        "a tensor connected to x", "a detached result",
                        "build the result from x with differentiable operations plus the straight-through (detach) "
                        "trick of the text, so that the value is x_hat and the gradient that of x clamped to the grid")
        upstream = torch.randn(x.shape, generator=g)
        got.backward(upstream)
        expected.backward(upstream)
        grad = x_in.grad if x_in.grad is not None else torch.zeros_like(x)
        v = x / s_t + z_t  # grid position before rounding
        clear = ~(((v >= qmin - 0.5) & (v <= qmin)) | ((v >= qmax) & (v <= qmax + 0.5)))  # ignore the half step at the edges
        mistakes = {
            "the gradient is zero everywhere: torch.round has zero gradient. Use the straight-through estimator: "
            "treat rounding as the identity in the backward pass (the detach trick of the text)": torch.zeros_like(x)[clear],
            "the STE passes the gradient only where x was NOT clipped; clipped values get gradient 0 "
            "(clamp x to the grid's real range before the detach trick)": upstream[clear],
        }
        compare(name, f"{case}; the gradient d loss / d x (for a random upstream gradient)", grad[clear],
                 x_ref.grad[clear], "inside the grid the gradient passes straight through (1), where x was clipped it is 0",
                 mistakes, atol=1e-5)
    return len(cases)
