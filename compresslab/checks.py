"""Exercise checks: compare a student's function with the package's reference implementation.

`check_<name>(fn)` calls `fn` on small hand-checkable cases and on seeded random ones and compares
every result with the reference in `REFERENCES[name]` (a function of the package, or a thin
wrapper around one, with the exercise's signature).

- Pass: prints one line, "[ok] name: all N cases match the reference."
- Fail: raises `CheckFailed` (an AssertionError) naming the case, what was expected, what came
  back, and a hint (a specific one when the answer matches a known mistake).
- `fn` is still the stub (raises NotImplementedError): raises `ExerciseNotDone`, which Jupyter
  shows as a short message instead of a traceback.
- `fn` raises any other error: it propagates with its own traceback (your code), plus a note
  naming the case that triggered it.

Grading: each check records its outcome in `<$COMPRESSLAB_RESULTS_DIR>/exercise_checks.json`
(see `checking.py`); `compresslab check` reads that file.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import (
    deepcompression,
    distillation,
    huffman,
    lottery,
    lowrank,
    pruning,
    quantization,
    sharing,
)
from .checking import (  # noqa: F401 - re-exported: the notebooks and the grader use checks.*
    CHECKS_FILE,
    CHECKS_SCHEMA,
    CheckFailed,
    ExerciseNotDone,
    as_tensor,
    call,
    compare,
    difference,
    exercise_check,
    fail,
    read_ledger,
    require_unchanged,
    seeded_generator,
    short,
)

# ----------------------------------------------------------------- 01 pruning

def _mask_with_k(w: torch.Tensor, k: int, largest: bool = False) -> torch.Tensor:
    mask = torch.ones_like(w)
    if k > 0:
        mask.view(-1)[torch.topk(w.abs().reshape(-1), k, largest=largest).indices] = 0.0
    return mask


@exercise_check("magnitude_mask")
def check_magnitude_mask(fn: Callable) -> int:
    """magnitude_mask(w, sparsity) -> 0/1 mask zeroing the round(sparsity * n) smallest |w|."""
    name = "magnitude_mask"
    g = seeded_generator(1)
    hand = torch.tensor([[0.50, -0.10, 2.00, 0.03], [-3.00, 0.05, 0.20, -0.70]])
    cases = [
        ("the 2x4 example of the notebook, sparsity=0.5", hand, 0.5),
        ("the 2x4 example, sparsity=0.0 (nothing pruned)", hand, 0.0),
        ("the 2x4 example, sparsity=0.25", hand, 0.25),
        ("w=[3, -1, 2, -4, 0.5], sparsity=0.4", torch.tensor([3.0, -1.0, 2.0, -4.0, 0.5]), 0.4),
        ("10 values, sparsity=0.37 (k = round(3.7) = 4)", torch.randn(10, generator=g), 0.37),
        ("10 values, sparsity=0.62 (k = round(6.2) = 6)", torch.randn(10, generator=g), 0.62),
        ("random w of shape (20, 30), sparsity=0.8", torch.randn(20, 30, generator=g), 0.8),
        ("random conv weight of shape (6, 4, 3, 3), sparsity=0.9", torch.randn(6, 4, 3, 3, generator=g), 0.9),
    ]
    for case, w, s in cases:
        before = w.clone()
        got = call(name, fn, case, w, s)
        require_unchanged(name, case, before, w)
        expected = pruning.magnitude_mask(before, s)
        n = w.numel()
        k = int(round(s * n))
        mistakes = {
            "you pruned the LARGEST weights: keep the large |w|, zero the small ones (largest=False in topk)":
                _mask_with_k(before, k, largest=True) if k else None,
            "rank by magnitude |w|, not by the signed value w (a large negative weight is important)":
                _signed_mask(before, k) if k else None,
            "sparsity is the fraction REMOVED: zero k = round(sparsity * n) weights, keep the rest":
                _mask_with_k(before, n - k) if 0 < n - k < n else None,
            f"k must be round(sparsity * n) = {k}; you removed floor(sparsity * n) = {math.floor(s * n)}":
                _mask_with_k(before, math.floor(s * n)) if math.floor(s * n) != k else None,
            f"k must be round(sparsity * n) = {k}; you removed ceil(sparsity * n) = {math.ceil(s * n)}":
                _mask_with_k(before, math.ceil(s * n)) if math.ceil(s * n) != k else None,
        }
        compare(name, case, got, expected,
                 "zero the k = round(sparsity * w.numel()) entries of smallest |w| and return a mask shaped "
                 "like w: torch.topk(w.abs().flatten(), k, largest=False).indices gives their positions", mistakes)
    return len(cases)


def _signed_mask(w: torch.Tensor, k: int) -> torch.Tensor:
    mask = torch.ones_like(w)
    mask.view(-1)[torch.topk(w.reshape(-1), k, largest=False).indices] = 0.0
    return mask


@exercise_check("global_magnitude_masks")
def check_global_magnitude_masks(fn: Callable) -> int:
    """global_magnitude_masks(weights: dict, sparsity) -> dict of masks under one threshold."""
    name = "global_magnitude_masks"
    g = seeded_generator(2)
    cases = [
        ("a=[0.1, -2, 0.3], b=[[1.5, -0.05], [0.2, 4]], sparsity=0.4 (k = round(2.8) = 3 of 7)",
         {"a": torch.tensor([0.1, -2.0, 0.3]), "b": torch.tensor([[1.5, -0.05], [0.2, 4.0]])}, 0.4),
        ("three layers of very different scales (std 1, 0.1, 0.01), sparsity=0.7",
         {"fc1": torch.randn(30, 20, generator=g), "fc2": 0.1 * torch.randn(10, 30, generator=g),
          "fc3": 0.01 * torch.randn(10, generator=g)}, 0.7),
        ("two layers, sparsity=0.95", {"conv": torch.randn(4, 2, 3, 3, generator=g),
                                       "fc": 0.5 * torch.randn(8, 16, generator=g)}, 0.95),
    ]
    for case, weights, s in cases:
        before = {k: v.clone() for k, v in weights.items()}
        got = call(name, fn, case, weights, s)
        for key in before:
            require_unchanged(name, case, before[key], weights[key])
        expected = pruning.global_magnitude_masks(before, s)
        if not isinstance(got, Mapping) or set(got) != set(expected):
            raise fail(name, case, "the result must be a dict with one mask per layer name, same keys as the input",
                        expected, got, "return {name: mask for each name in weights}")
        layerwise = {k: pruning.magnitude_mask(v, s) for k, v in before.items()}
        for key in expected:
            compare(name, f"{case}; layer {key!r}", got[key], expected[key],
                     "concatenate |w| of all layers, find ONE threshold (the k-th smallest of all n values, "
                     "k = round(sparsity * n)), then cut each layer's mask back out in its own shape",
                     {"you pruned every layer to the same sparsity (layer-wise): global pruning ranks all "
                      "weights together, so small-scale layers lose more": layerwise[key]})
    return len(cases)


@exercise_check("cubic_sparsity")
def check_cubic_sparsity(fn: Callable) -> int:
    """cubic_sparsity(step, initial, final, start, n, interval) -> float (Zhu & Gupta 2017)."""
    name = "cubic_sparsity"
    cases = [
        (0, 0.0, 0.9, 0, 10, 100), (1000, 0.0, 0.9, 0, 10, 100), (500, 0.0, 0.9, 0, 10, 100),
        (250, 0.0, 0.9, 0, 10, 100), (50, 0.0, 0.8, 100, 4, 50), (5000, 0.0, 0.8, 100, 4, 50),
        (150, 0.2, 0.95, 100, 5, 20), (180, 0.2, 0.95, 100, 5, 20),
    ] + [(t, 0.1, 0.75, 10, 8, 7) for t in range(0, 80, 9)]
    for args in cases:
        case = "step={}, initial={}, final={}, start={}, n={}, interval={}".format(*args)
        got = call(name, fn, case, *args)
        expected = pruning.cubic_sparsity(*args)
        step, s_i, s_f, t0, n, dt = args
        raw = (step - t0) / (n * dt)
        p = min(max(raw, 0.0), 1.0)
        mistakes = {
            "that is a linear ramp: the cubic schedule uses (1 - progress)^3": s_f + (s_i - s_f) * (1 - p),
            "the cube goes on (1 - progress), not on progress: s_f + (s_i - s_f) (1 - progress)^3":
                s_f + (s_i - s_f) * (1 - p ** 3),
            "clamp progress = (step - start) / (n * interval) to [0, 1]: before `start` the sparsity is "
            "`initial`, after start + n * interval it stays at `final`": s_f + (s_i - s_f) * (1 - raw) ** 3,
        }
        compare(name, case, got, expected,
                 "s_t = final + (initial - final) * (1 - progress)^3 with progress = (step - start) / (n * interval) "
                 "clamped to [0, 1]", mistakes, atol=1e-9)
    return len(cases)


# ----------------------------------------------------------------- 02 lottery tickets

@exercise_check("prune_survivors")
def check_prune_survivors(fn: Callable) -> int:
    """prune_survivors(w, mask, rate) -> next mask: remove round(rate * n) of the n survivors by |w|."""
    name = "prune_survivors"
    g = seeded_generator(3)
    w_hand = torch.tensor([0.9, -0.1, 0.5, -0.7, 0.2, 0.05])
    m_hand = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0, 0.0])
    w_rand = torch.randn(30, 40, generator=g)
    m_rand = (torch.rand(30, 40, generator=g) < 0.6).float()
    cases = [
        ("w=[0.9, -0.1, 0.5, -0.7, 0.2, 0.05], mask=[1, 1, 1, 1, 0, 0], rate=0.5", w_hand, m_hand, 0.5),
        ("the same w with an all-ones mask (the first level), rate=0.5", w_hand, torch.ones(6), 0.5),
        ("random (30, 40) layer, 60% survivors, rate=0.2", w_rand, m_rand, 0.2),
        ("random (30, 40) layer, 60% survivors, rate=0.1", w_rand, m_rand, 0.1),
        ("random conv (8, 3, 5, 5), all survive, rate=0.2", torch.randn(8, 3, 5, 5, generator=g), torch.ones(8, 3, 5, 5), 0.2),
    ]
    for case, w, mask, rate in cases:
        w_before, m_before = w.clone(), mask.clone()
        got = call(name, fn, case, w, mask, rate)
        require_unchanged(name, case, w_before, w)
        require_unchanged(name, case, m_before, mask)
        expected = lottery.prune_survivors(w_before, m_before, rate)
        got_t = as_tensor(got)
        if got_t is not None and got_t.shape == mask.shape and bool(((got_t != 0) & (m_before == 0)).any()):
            raise fail(name, case, "a weight pruned at an earlier level came back (mask 0 -> 1)", expected, got,
                        "masks nest: a weight with mask 0 stays 0; rank only the survivors (mask == 1)")
        mistakes = {
            "you ranked ALL weights, including those pruned before: rank only the survivors (mask == 1) and "
            "remove round(rate * number of survivors) of them": pruning.magnitude_mask(w_before, rate),
            "the number to remove is round(rate * n) with n = the number of SURVIVORS, not of all weights":
                m_before * _mask_with_k(w_before * m_before + (1 - m_before) * 1e9, int(round(rate * w.numel()))),
        }
        compare(name, case, got, expected,
                 "keep = mask.bool(); n = keep.sum(); remove the k = round(rate * n) survivors of smallest |w| "
                 "(e.g. magnitude_mask(w[keep], k / n) gives the new values for the survivors' positions)", mistakes)
    return len(cases)


def _tiny_net(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    from collections import OrderedDict

    return nn.Sequential(OrderedDict([("fc1", nn.Linear(6, 5)), ("relu", nn.ReLU()), ("fc2", nn.Linear(5, 3))]))


@exercise_check("rewind")
def check_rewind(fn: Callable) -> int:
    """rewind(template, state, masks) -> a new model holding `state`, with `masks` attached (torch prune)."""
    name = "rewind"
    with torch.random.fork_rng(devices=[]):
        template = _tiny_net(0)
        trained = _tiny_net(1)  # stands in for the weights at step k
    g = seeded_generator(4)
    state = {k: v.detach().clone() for k, v in trained.state_dict().items()}
    masks = {"fc1": (torch.rand(5, 6, generator=g) < 0.5).float(), "fc2": (torch.rand(3, 5, generator=g) < 0.7).float()}
    template_before = {k: v.clone() for k, v in template.state_dict().items()}
    case = "a 6-5-3 MLP, `state` = another network's state_dict, masks keeping about 50% / 70%"
    got = call(name, fn, case, template, {k: v.clone() for k, v in state.items()}, {k: v.clone() for k, v in masks.items()})
    after = template.state_dict()
    if set(after) != set(template_before) or any(not torch.equal(after[k], template_before[k]) for k in template_before):
        raise fail(name, case, "the template network was modified", "template unchanged", "template changed",
                    "work on copy.deepcopy(template); the template keeps theta_0 for the next level and the controls")
    if got is template:
        raise fail(name, case, "you returned the template itself", "a new model", "the template",
                    "return a copy: model = copy.deepcopy(template)")
    if not isinstance(got, nn.Module):
        raise fail(name, case, "the result is not a model", "an nn.Module", got, "return the rewound copy of the template")
    expected = lottery.rewind(template, state, masks)
    layers = dict(got.named_children())
    for lname, mask in masks.items():
        layer = layers.get(lname)
        if layer is None:
            raise fail(name, case, f"the result has no layer {lname!r}", f"layer {lname!r}", list(layers),
                        "copy the template so the layers keep their names")
        weight = (layer.weight_orig * layer.weight_mask) if hasattr(layer, "weight_mask") else layer.weight
        mistakes = {"the surviving weights must take their values from `state` (theta_k), not keep the "
                    "template's / trained values: load_state_dict(state) first": template_before[f"{lname}.weight"] * mask}
        compare(name, f"{case}; weight of {lname}", weight.detach(), state[f"{lname}.weight"] * mask,
                 "load `state` into the copy, then attach `masks` (pruning.set_masks(model, masks)) so that "
                 "surviving weights equal state and pruned weights are zero", mistakes)
        compare(name, f"{case}; bias of {lname}", layer.bias.detach(), state[f"{lname}.bias"],
                 "biases are not pruned: they also come from `state`")
    x = torch.randn(7, 6, generator=g)
    with torch.no_grad():
        compare(name, f"{case}; outputs on a random batch", got(x), expected(x),
                 "the rewound network must compute f(x; masks * state)")
    # the mask must survive training: one SGD step must keep pruned weights at zero
    got(x).pow(2).sum().backward()
    with torch.no_grad():  # a plain gradient step (what any optimizer does to the parameters)
        for p in got.parameters():
            if p.grad is not None:
                p.sub_(0.5 * p.grad)
    for lname, mask in masks.items():
        layer = layers[lname]
        with torch.no_grad():
            _ = got(x)  # torch's prune recomputes weight = weight_orig * weight_mask in the forward pre-hook
        weight = (layer.weight_orig * layer.weight_mask) if hasattr(layer, "weight_mask") else layer.weight
        leaked = (weight.detach() != 0) & (mask == 0)
        if leaked.any():
            raise fail(name, f"{case}; after one SGD step on the result", f"{int(leaked.sum())} pruned weights of "
                        f"{lname} became non-zero during training", "pruned weights stay 0", short(weight.detach()),
                        "multiplying the weights by the mask once is not enough: attach the mask with "
                        "pruning.set_masks(model, masks) (torch.nn.utils.prune), so it applies at every step")
    return 4


@exercise_check("random_masks_like")
def check_random_masks_like(fn: Callable) -> int:
    """random_masks_like(masks, scores) -> per layer, as many survivors as `masks`, those of highest score."""
    name = "random_masks_like"
    g = seeded_generator(5)
    cases = [
        ("masks={'a': [1, 0, 1, 0]}, scores={'a': [0.1, 0.9, 0.5, 0.3]}",
         {"a": torch.tensor([1.0, 0.0, 1.0, 0.0])}, {"a": torch.tensor([0.1, 0.9, 0.5, 0.3])}),
        ("two random layers with 30% and 80% survivors",
         {"fc1": (torch.rand(20, 30, generator=g) < 0.3).float(), "fc2": (torch.rand(10, 20, generator=g) < 0.8).float()},
         {"fc1": torch.rand(20, 30, generator=g), "fc2": torch.rand(10, 20, generator=g)}),
        ("a conv layer (4, 2, 3, 3) with 10% survivors",
         {"conv": (torch.rand(4, 2, 3, 3, generator=g) < 0.1).float()}, {"conv": torch.rand(4, 2, 3, 3, generator=g)}),
    ]
    for case, masks, scores in cases:
        got = call(name, fn, case, {k: v.clone() for k, v in masks.items()}, {k: v.clone() for k, v in scores.items()})
        expected = lottery.random_masks_like(masks, scores)
        if not isinstance(got, Mapping) or set(got) != set(expected):
            raise fail(name, case, "the result must be a dict with one mask per layer (same keys as masks)",
                        expected, got, "return {name: new_mask for each layer}")
        for key in expected:
            count = int(masks[key].sum())
            low = torch.zeros(masks[key].numel())
            if count:
                low[torch.topk(scores[key].reshape(-1), count, largest=False).indices] = 1.0
            compare(name, f"{case}; layer {key!r}", got[key], expected[key],
                     "in each layer keep exactly int(masks[name].sum()) weights: those with the HIGHEST scores "
                     "(torch.topk(scores[name].flatten(), count).indices), in the layer's shape",
                     {"keep the highest scores, not the lowest": low.reshape(masks[key].shape),
                      "the random mask must not depend on the ticket's mask, only on its COUNT per layer: "
                      "rank all positions by score": (masks[key] * scores[key] > 0).float()})
    return len(cases)


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
        scale, zp = quantization.choose_qparams(lo, hi, bits, scheme)
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            raise fail(name, case, "the result must be a pair (scale, zero_point)", (scale, zp), got,
                        "return scale, zero_point")
        qmin, qmax = quantization.qrange(bits, scheme)
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
    s8, z8 = quantization.choose_qparams(x.min(), x.max(), 8, "asymmetric")
    s4, _ = quantization.choose_qparams(-1.0, 1.0, 4, "symmetric")  # values beyond +-1 get clipped
    w = torch.randn(6, 40, generator=g)
    sc, zc = quantization.choose_qparams(w.amin(1), w.amax(1), 4, "asymmetric")
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
        expected = quantization.quantize_affine(before, s, z, qmin, qmax)
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
        expected = quantization.fake_quantize(x_ref, s, z, qmin, qmax)
        s_t, z_t = torch.as_tensor(s, dtype=torch.float32), torch.as_tensor(z, dtype=torch.float32)
        q = quantization.quantize_affine(x, s, z, qmin, qmax).float()
        compare(name, case, got.detach() if isinstance(got, torch.Tensor) else got, expected.detach(),
                 "x_hat = s * (q - z) with q = clamp(round(x / s) + z, qmin, qmax): the forward pass returns "
                 "real values on the grid, not the integers",
                 {"return the dequantized value s * (q - z), not the integer q": q,
                  "subtract the zero point before scaling back: x_hat = s * (q - z)": s_t * q}, atol=1e-6)
        if not isinstance(got, torch.Tensor) or not got.requires_grad:
            raise fail(name, f"{case}; the gradient", "the result carries no gradient (it does not require grad)",
                        "a tensor connected to x", "a detached result",
                        "build x_hat from x with differentiable operations plus the straight-through trick, e.g. "
                        "x_c + (x_hat - x_c).detach() with x_c = x clamped to the grid's real range")
        upstream = torch.randn(x.shape, generator=g)
        got.backward(upstream)
        expected.backward(upstream)
        grad = x_in.grad if x_in.grad is not None else torch.zeros_like(x)
        v = x / s_t + z_t  # grid position before rounding
        clear = ~(((v >= qmin - 0.5) & (v <= qmin)) | ((v >= qmax) & (v <= qmax + 0.5)))  # ignore the half step at the edges
        mistakes = {
            "the gradient is zero everywhere: torch.round has zero gradient. Use the straight-through estimator: "
            "treat rounding as the identity in the backward pass (x + (x_hat - x).detach())": torch.zeros_like(x)[clear],
            "the STE passes the gradient only where x was NOT clipped; clipped values get gradient 0 "
            "(clamp x to the grid's real range before the detach trick)": upstream[clear],
        }
        compare(name, f"{case}; the gradient d loss / d x (for a random upstream gradient)", grad[clear],
                 x_ref.grad[clear], "inside the grid the gradient passes straight through (1), where x was clipped it is 0",
                 mistakes, atol=1e-5)
    return len(cases)


# ----------------------------------------------------------------- 04 distillation

@exercise_check("soft_targets")
def check_soft_targets(fn: Callable) -> int:
    """soft_targets(logits, temperature) -> softmax(logits / T) over the classes."""
    name = "soft_targets"
    g = seeded_generator(10)
    hand = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, 3.0]])
    cases = [("logits=[[2, 1, 0], [0, 0, 3]], T=1", hand, 1.0), ("logits=[[2, 1, 0], [0, 0, 3]], T=2", hand, 2.0),
             ("random logits (8, 10), T=4", 3 * torch.randn(8, 10, generator=g), 4.0),
             ("random logits (8, 10), T=20", 3 * torch.randn(8, 10, generator=g), 20.0),
             ("random logits (5, 10), T=0.5", torch.randn(5, 10, generator=g), 0.5)]
    for case, z, t in cases:
        before = z.clone()
        got = call(name, fn, case, z, t)
        require_unchanged(name, case, before, z)
        expected = distillation.soft_targets(before, t)
        compare(name, case, got, expected, "divide the logits by T, then softmax over the last dimension (the classes)",
                 {"divide the LOGITS by T before the softmax, not the probabilities after it": F.softmax(before, -1) / t,
                  "divide by T (a high temperature flattens the distribution), don't multiply": F.softmax(before * t, -1),
                  "the softmax runs over the classes (dim=-1), not over the batch (dim=0)": F.softmax(before / t, 0)},
                 atol=1e-6)
    return len(cases)


@exercise_check("kd_loss")
def check_kd_loss(fn: Callable) -> int:
    """kd_loss(student_logits, teacher_logits, targets, temperature, alpha) -> scalar (Hinton et al. 2015)."""
    name = "kd_loss"
    g = seeded_generator(11)
    cases = [("student=[[1, 0, -1], [0, 2, 0]], teacher=[[3, 0, 0], [0, 1, 2]], targets=[0, 2], T=2, alpha=0.5",
              torch.tensor([[1.0, 0.0, -1.0], [0.0, 2.0, 0.0]]), torch.tensor([[3.0, 0.0, 0.0], [0.0, 1.0, 2.0]]),
              torch.tensor([0, 2]), 2.0, 0.5)]
    for t, a in [(1.0, 0.3), (4.0, 0.9), (8.0, 0.7), (4.0, 1.0), (3.0, 0.0)]:
        cases.append((f"random batch of 16 x 10 logits, T={t}, alpha={a}", 2 * torch.randn(16, 10, generator=g),
                      4 * torch.randn(16, 10, generator=g), torch.randint(0, 10, (16,), generator=g), t, a))
    for case, s, te, y, t, a in cases:
        s_in = s.clone().requires_grad_(True)
        got = call(name, fn, case, s_in, te.clone(), y.clone(), t, a)
        s_ref = s.clone().requires_grad_(True)
        expected = distillation.kd_loss(s_ref, te, y, t, a)
        soft = distillation.soft_loss(s, te, t)
        hard = F.cross_entropy(s, y)
        p_t = F.softmax(te / t, -1)
        teacher_entropy = float(-(p_t * F.log_softmax(te / t, -1)).sum(-1).mean())
        kl_reversed = F.kl_div(F.log_softmax(te / t, -1), F.log_softmax(s / t, -1), reduction="batchmean", log_target=True)
        mistakes = {
            "the soft term must be multiplied by T^2 (Hinton et al.): its gradient shrinks like 1/T^2, the factor "
            "keeps the two terms balanced when T changes": a * soft + (1 - a) * hard,
            "scale the soft term by T^2, not by T": a * t * soft + (1 - a) * hard,
            "KL is not symmetric: use KL(p_teacher || p_student) = sum p_t (log p_t - log p_s); with F.kl_div the "
            "INPUT is the student's log-probabilities and the target the teacher's": a * t**2 * kl_reversed + (1 - a) * hard,
            "F.kl_div with reduction='mean' averages over batch x classes; use reduction='batchmean' (sum over "
            "classes, mean over the batch)": a * t**2 * soft / s.shape[1] + (1 - a) * hard,
            "that is the soft cross-entropy H(p_t, p_s) = KL + H(p_t): the same gradient, but the exercise asks for "
            "the KL divergence (subtract the teacher's entropy, or use F.kl_div)":
                a * t**2 * (soft + teacher_entropy) + (1 - a) * hard,
            "alpha weighs the SOFT term: alpha * T^2 * KL + (1 - alpha) * CE": (1 - a) * t**2 * soft + a * hard,
            "the hard term is the ordinary cross-entropy at T = 1 (the student's logits as they are)":
                a * t**2 * soft + (1 - a) * F.cross_entropy(s / t, y),
        }
        hint = "loss = alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T)) + (1 - alpha) * cross_entropy(student, targets)"
        compare(name, case, got.detach() if isinstance(got, torch.Tensor) else got, expected.detach(), hint,
                 mistakes, atol=1e-5, rtol=1e-4)
        if not isinstance(got, torch.Tensor) or not got.requires_grad:
            raise fail(name, case, "the loss carries no gradient to the student's logits", "a differentiable scalar",
                        "a detached value", "compute the loss with torch operations on student_logits (no .item(), no .detach())")
        got.backward()
        expected.backward()
        grad = s_in.grad if s_in.grad is not None else torch.zeros_like(s)
        compare(name, f"{case}; the gradient w.r.t. the student's logits", grad, s_ref.grad, hint, atol=1e-5, rtol=1e-4)
    return len(cases)


# ----------------------------------------------------------------- 05 low-rank

@exercise_check("svd_factorize")
def check_svd_factorize(fn: Callable) -> int:
    """svd_factorize(w, rank) -> (a, b), a: m x r, b: r x n, a @ b the best rank-r approximation."""
    name = "svd_factorize"
    g = seeded_generator(12)
    cases = [("w = diag(3, 2, 1), rank=2", torch.diag(torch.tensor([3.0, 2.0, 1.0])), 2),
             ("w = outer([1, 2], [3, 4, 5]) (rank 1), rank=1", torch.outer(torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0, 5.0])), 1),
             ("random (20, 12), rank=5", torch.randn(20, 12, generator=g), 5),
             ("random (8, 30), rank=8 (full rank: exact)", torch.randn(8, 30, generator=g), 8),
             ("random square (10, 10), rank=3", torch.randn(10, 10, generator=g), 3)]
    for case, w, r in cases:
        before = w.clone()
        got = call(name, fn, case, w, r)
        require_unchanged(name, case, before, w)
        a_ref, b_ref = lowrank.svd_factorize(before, r)
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            raise fail(name, case, "the result must be a pair (a, b)", (a_ref, b_ref), got, "return a, b")
        a, b = (as_tensor(t) for t in got)
        m, n = w.shape
        if a is None or b is None or tuple(a.shape) != (m, r) or tuple(b.shape) != (r, n):
            raise fail(name, case, f"a must be {m} x {r} and b {r} x {n}", "shapes " + str(((m, r), (r, n))),
                        "shapes " + str(tuple(tuple(t.shape) if t is not None else None for t in (a, b))),
                        "a = U[:, :r] * sqrt(S[:r]), b = sqrt(S[:r])[:, None] * Vh[:r] with U, S, Vh = torch.linalg.svd(w, full_matrices=False)")
        u, sv, vh = torch.linalg.svd(before.double(), full_matrices=False)
        scale = float(before.abs().max())
        mistakes = {
            "keep the LARGEST singular values (torch.linalg.svd returns them in descending order: take the first r)":
                (u[:, -r:] * sv[-r:]) @ vh[-r:],
            "the singular values are missing: a @ b must equal U_r diag(S_r) Vh_r": u[:, :r] @ vh[:r],
            "torch.linalg.svd returns Vh (already transposed): use its first r ROWS, don't transpose again":
                (u[:, :r] * sv[:r]) @ vh.T[:r] if m == n else None,
        }
        compare(name, f"{case}; the product a @ b", (a.double() @ b.double()), (a_ref @ b_ref).double(),
                 "the best rank-r approximation (Eckart-Young) keeps the r largest singular values: "
                 "a @ b = U[:, :r] diag(S[:r]) Vh[:r]", mistakes, atol=1e-4 * scale, rtol=1e-4)
    return len(cases)


@exercise_check("rank_for_energy")
def check_rank_for_energy(fn: Callable) -> int:
    """rank_for_energy(s, energy) -> the smallest r with sum_{i<=r} s_i^2 / sum s_i^2 >= energy."""
    name = "rank_for_energy"
    g = seeded_generator(13)
    s_hand = torch.tensor([3.0, 2.0, 1.0])
    decaying = torch.sort(torch.rand(50, generator=g) ** 3, descending=True).values
    cases = [("s=[3, 2, 1] (energies 9/14, 13/14, 1), energy=0.5", s_hand, 0.5),
             ("s=[3, 2, 1], energy=0.9", s_hand, 0.9), ("s=[3, 2, 1], energy=0.95", s_hand, 0.95),
             ("s=[3, 2, 1], energy=1.0", s_hand, 1.0),
             ("s=[1, 1, 1, 1] (energies 0.25, 0.5, 0.75, 1), energy=0.5 (reached exactly at r=2)", torch.ones(4), 0.5)]
    cases += [(f"50 decaying singular values, energy={e}", decaying, e) for e in (0.3, 0.8, 0.99)]
    for case, s, e in cases:
        before = s.clone()
        got = call(name, fn, case, s, e)
        require_unchanged(name, case, before, s)
        expected = lowrank.rank_for_energy(before, e)
        curve = torch.cumsum(before.double() ** 2, 0) / (before.double() ** 2).sum()
        curve_s = torch.cumsum(before.double(), 0) / before.double().sum()
        mistakes = {"the energy uses SQUARED singular values: E(r) = sum_{i<=r} s_i^2 / sum_i s_i^2":
                    int((curve_s < e - 1e-12).sum()) + 1,
                    "ranks count from 1: the answer is the number of values kept (index + 1)": expected - 1,
                    "the smallest r with E(r) >= energy (>=, so an energy reached exactly is enough)":
                    int((curve <= e + 1e-12).sum()) + 1}
        compare(name, case, got, expected, "E(r) = cumsum(s**2) / sum(s**2); return the smallest r (1-based) with E(r) >= energy",
                 mistakes, atol=0, rtol=0)
        if not isinstance(got, (int, np.integer)) and not (isinstance(got, torch.Tensor) and got.numel() == 1):
            raise fail(name, case, "the rank must be an integer", expected, got, "return int(...)")
    return len(cases)


@exercise_check("factorize_linear")
def check_factorize_linear(fn: Callable) -> int:
    """factorize_linear(layer, rank) -> nn.Sequential(Linear(in, r, bias=False), Linear(r, out))."""
    name = "factorize_linear"
    g = seeded_generator(14)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(14)
        cases = [("nn.Linear(12, 7), rank=3", nn.Linear(12, 7), 3), ("nn.Linear(30, 20), rank=10", nn.Linear(30, 20), 10),
                 ("nn.Linear(9, 5, bias=False), rank=2", nn.Linear(9, 5, bias=False), 2),
                 ("nn.Linear(6, 4), rank=4 (full rank: exact)", nn.Linear(6, 4), 4)]
    for case, layer, r in cases:
        before = {k: v.clone() for k, v in layer.state_dict().items()}
        got = call(name, fn, case, layer, r)
        if any(not torch.equal(layer.state_dict()[k], v) for k, v in before.items()):
            raise fail(name, case, "the original layer was modified", "layer unchanged", "layer changed",
                        "build new nn.Linear layers and copy the factors into them")
        expected = lowrank.factorize_layer(layer, r)
        if not isinstance(got, nn.Module):
            raise fail(name, case, "the result is not a module", expected, got, "return nn.Sequential(first, second)")
        n_params = sum(p.numel() for p in got.parameters())
        n_expected = sum(p.numel() for p in expected.parameters())
        if n_params != n_expected:
            raise fail(name, case, f"the factorized layer has {n_params} parameters, expected r (in + out) + out = {n_expected}",
                        n_expected, n_params, "first = nn.Linear(in, r, bias=False) (no bias: it would be counted twice), "
                        "second = nn.Linear(r, out) holding the original bias")
        x = torch.randn(16, layer.in_features, generator=g)
        with torch.no_grad():
            out, out_ref = call(name, got, f"{case}; calling the returned module", x), expected(x)
        compare(name, f"{case}; outputs on a random batch", out, out_ref,
                 "with a, b = svd_factorize(W, r): the first layer computes b x (weight b, r x in), the second a (b x) + bias "
                 "(weight a, out x r); copy them with torch.no_grad()", atol=1e-5, rtol=1e-4)
    return len(cases)


# ----------------------------------------------------------------- 06 Deep Compression

@exercise_check("init_centroids")
def check_init_centroids(fn: Callable) -> int:
    """init_centroids(w, k, method) -> k sorted centroids ('linear' or 'density')."""
    name = "init_centroids"
    g = seeded_generator(15)
    w_rand = torch.randn(500, generator=g) * 0.1
    cases = [("w=[-1, 0.2, 0.5, 3], k=5, 'linear'", torch.tensor([-1.0, 0.2, 0.5, 3.0]), 5, "linear"),
             ("w=[0, 1, ..., 9], k=2, 'density'", torch.arange(10.0), 2, "density"),
             ("w=[0, 1, ..., 9], k=4, 'density'", torch.arange(10.0), 4, "density"),
             ("500 random weights, k=16, 'linear'", w_rand, 16, "linear"),
             ("500 random weights, k=16, 'density'", w_rand, 16, "density"),
             ("a (20, 10) weight matrix, k=8, 'density'", torch.randn(20, 10, generator=g), 8, "density")]
    for case, w, k, method in cases:
        before = w.clone()
        got = call(name, fn, case, w, k, method)
        require_unchanged(name, case, before, w)
        expected = sharing.init_centroids(before, k, method)
        flat = before.reshape(-1).double()
        lin_sym = torch.linspace(-float(flat.abs().max()), float(flat.abs().max()), k)
        mistakes = {
            "linear init spaces the k centroids evenly between min(w) and max(w) (torch.linspace(w.min(), w.max(), k))":
                lin_sym if method == "linear" else None,
            "density init takes the quantiles at (i + 1/2) / k for i = 0..k-1 (the middle of k equal-probability "
            "slices), not at i / (k - 1)": torch.quantile(flat, torch.linspace(0, 1, k, dtype=torch.float64)) if method == "density" else None,
            "the centroids must be sorted ascending": expected.flip(0),
        }
        compare(name, case, got, expected,
                 "linear: torch.linspace(w.min(), w.max(), k); density: torch.quantile(w.flatten(), (torch.arange(k) + 0.5) / k)",
                 mistakes, atol=1e-6, rtol=1e-5)
    return len(cases)


def _huffman_problem(code: object, counts: np.ndarray) -> tuple[str, str] | None:
    """(problem, hint) if `code` is not an optimal prefix code for `counts`, else None."""
    used = [int(s) for s in np.flatnonzero(counts)]
    if not isinstance(code, Mapping):
        return (f"the result is a {type(code).__name__}, not a dict", "return {symbol: codeword string of '0'/'1'}")
    keys = set(code)
    if keys != set(used):
        missing, extra = sorted(set(used) - keys), sorted(keys - set(used))
        return (f"symbols with a codeword {sorted(keys)[:12]} != the used symbols {used[:12]} "
                f"(missing {missing[:8]}, unexpected {extra[:8]})",
                "give a codeword to every symbol with a count > 0, and only to those")
    for s, word in code.items():
        if not isinstance(word, str) or not word or set(word) - {"0", "1"}:
            return (f"the codeword of symbol {s} is {word!r}", "codewords are non-empty strings of '0' and '1'")
    if len(used) == 1:
        return None if len(code[used[0]]) == 1 else (f"one used symbol got {code[used[0]]!r}", "a one-symbol source gets the code '0'")
    words = sorted((w, s) for s, w in code.items())
    for (w1, s1), (w2, s2) in zip(words[:-1], words[1:]):
        if w2.startswith(w1):
            return (f"not a prefix code: {w1!r} (symbol {s1}) is a prefix of {w2!r} (symbol {s2})",
                    "read codewords off a binary tree: symbols are leaves, and the path to a leaf (0 = left, "
                    "1 = right) is its codeword; then no codeword can start another")
    bits = sum(int(counts[s]) * len(w) for s, w in code.items())
    optimal = int((huffman.huffman_lengths(counts, max_length=None).astype(np.int64) * counts).sum())
    if bits != optimal:
        return (f"the code is prefix-free but not optimal: {bits} bits in total, Huffman needs {optimal}",
                "repeatedly merge the two LIGHTEST subtrees (heapq with (count, tiebreak, node)); every merge adds "
                "one bit to all symbols below it")
    return None


@exercise_check("huffman_code")
def check_huffman_code(fn: Callable) -> int:
    """huffman_code(counts) -> {symbol: codeword '0'/'1' string}: an optimal prefix code."""
    name = "huffman_code"
    rng = np.random.default_rng(16)
    cases = [("counts=[5, 2, 1, 1]", [5, 2, 1, 1]), ("counts=[0, 10, 0, 3, 3] (symbols 0 and 2 unused)", [0, 10, 0, 3, 3]),
             ("counts=[1, 1]", [1, 1]), ("8 equally frequent symbols", [4] * 8), ("one used symbol: [0, 7, 0]", [0, 7, 0]),
             ("16 symbols with geometric counts", [int(1000 * 0.6 ** i) + 1 for i in range(16)]),
             ("256 symbols, random counts with zeros", [int(c) for c in rng.integers(0, 50, 256) * (rng.random(256) < 0.7)])]
    for case, counts in cases:
        arr = np.asarray(counts, dtype=np.int64)
        got = call(name, fn, case, list(counts))
        problem = _huffman_problem(got, arr)
        if problem is not None:
            lengths = huffman.huffman_lengths(arr, max_length=None)
            expected = {int(s): int(lengths[s]) for s in np.flatnonzero(arr)}
            raise fail(name, case, problem[0], f"an optimal prefix code, codeword lengths {expected}" if len(expected) <= 16 else
                        f"an optimal prefix code ({int((lengths.astype(np.int64) * arr).sum())} bits in total)",
                        got if not isinstance(got, Mapping) or len(got) <= 16 else f"a dict of {len(got)} codewords",
                        problem[1])
    return len(cases)


@exercise_check("relative_encode")
def check_relative_encode(fn: Callable) -> int:
    """relative_encode(positions, index_bits) -> gap symbols with filler zeros (Deep Compression)."""
    name = "relative_encode"
    rng = np.random.default_rng(17)
    cases = [("positions=[1, 4, 5, 12], index_bits=2 (gaps 2, 3, 1, 7; the largest gap is 3)", [1, 4, 5, 12], 2),
             ("positions=[0, 3, 7, 13], index_bits=2 (gaps 1, 3, 4, 6)", [0, 3, 7, 13], 2),
             ("no non-zeros: positions=[]", [], 3),
             ("200 random positions among 5000, index_bits=3", np.sort(rng.choice(5000, 200, replace=False)), 3),
             ("500 random positions among 20000, index_bits=5", np.sort(rng.choice(20000, 500, replace=False)), 5)]
    for case, positions, bits in cases:
        got = call(name, fn, case, np.asarray(positions, dtype=np.int64), bits)
        expected = deepcompression.relative_encode(positions, bits)
        pos = np.asarray(positions, dtype=np.int64)
        m = (1 << bits) - 1
        gaps = np.diff(pos, prepend=-1) if pos.size else pos
        mistakes = {
            "the first gap counts from position -1 (so position 0 has gap 1): gaps = diff(positions, prepend=-1)":
                deepcompression.relative_encode(pos - 1, bits) if pos.size and pos[0] > 0 else None,
            f"a gap larger than {m} = 2^index_bits - 1 does not fit: emit q = (gap - 1) // {m} filler zeros first, "
            f"then gap - q * {m}": gaps if pos.size else None,
            "with q = gap // M a gap of exactly M would become a filler followed by 0: use q = (gap - 1) // M":
                _relative_floor(gaps, m) if pos.size else None,
        }
        got_t = as_tensor(got)
        if got_t is None or got_t.dim() != 1:
            raise fail(name, case, "the result must be a 1-D sequence of integers", expected, got,
                        "return a list / array / tensor of symbols")
        compare(name, case, got_t, torch.from_numpy(expected),
                 "gap = diff(positions, prepend=-1); each gap g becomes (g - 1) // M zeros followed by g - M * ((g - 1) // M)",
                 mistakes, atol=0, rtol=0)
    return len(cases)


def _relative_floor(gaps: np.ndarray, m: int) -> np.ndarray:
    out: list[int] = []
    for g in gaps.tolist():
        out += [0] * (g // m) + [g - m * (g // m)]
    return np.asarray(out)


# ----------------------------------------------------------------- registry

def _huffman_reference(counts) -> dict[int, str]:
    """Reference for the huffman_code exercise: canonical Huffman codewords as strings."""
    arr = np.asarray(counts, dtype=np.int64)
    used = np.flatnonzero(arr)
    if len(used) == 1:
        return {int(used[0]): "0"}
    lengths = huffman.huffman_lengths(arr, max_length=None)
    codes = huffman.canonical_codes(lengths)
    return {int(s): format(int(codes[s]), f"0{int(lengths[s])}b") for s in used}


def _relative_reference(positions, index_bits: int) -> np.ndarray:
    return deepcompression.relative_encode(positions, index_bits)


def _init_reference(w: torch.Tensor, k: int, method: str = "linear") -> torch.Tensor:
    return sharing.init_centroids(w, k, method)


def _factorize_reference(layer: nn.Linear, rank: int) -> nn.Sequential:
    return lowrank.factorize_layer(layer, rank)


def _svd_reference(w: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    return lowrank.svd_factorize(w, rank)


def _quantize_reference(x, scale, zero_point, qmin: int, qmax: int) -> torch.Tensor:
    return quantization.quantize_affine(x, scale, zero_point, qmin, qmax)


def _fake_quantize_reference(x, scale, zero_point, qmin: int, qmax: int) -> torch.Tensor:
    return quantization.fake_quantize(x, scale, zero_point, qmin, qmax)


REFERENCES: dict[str, Callable] = {
    "magnitude_mask": pruning.magnitude_mask,
    "global_magnitude_masks": pruning.global_magnitude_masks,
    "cubic_sparsity": pruning.cubic_sparsity,
    "prune_survivors": lottery.prune_survivors,
    "rewind": lottery.rewind,
    "random_masks_like": lottery.random_masks_like,
    "choose_qparams": quantization.choose_qparams,
    "quantize_affine": _quantize_reference,
    "fake_quantize": _fake_quantize_reference,
    "soft_targets": distillation.soft_targets,
    "kd_loss": distillation.kd_loss,
    "svd_factorize": _svd_reference,
    "rank_for_energy": lowrank.rank_for_energy,
    "factorize_linear": _factorize_reference,
    "init_centroids": _init_reference,
    "huffman_code": _huffman_reference,
    "relative_encode": _relative_reference,
}

CHECKS: dict[str, Callable] = {name: globals()[f"check_{name}"] for name in REFERENCES}

