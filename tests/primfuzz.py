"""Fuzzing the public primitives: each gets NaN, inf, empty, wrong-shape, wrong-dtype and wrong-type
inputs in one argument at a time (the others valid) and junk in its scalar arguments.

The oracle: a call either raises ValueError/TypeError from an explicit `raise` in the package (not from
inside torch or numpy, not Python's own complaint about an operand), or returns a result whose every
floating-point number is finite (no silent NaN or inf).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
import torch
from fuzzing import clean_error, non_finite
from hypothesis import strategies as st

from compresslab.core import energy, pareto
from compresslab.deploy import monitor
from compresslab.techniques import (
    groupquant,
    lowbitops,
    packedfile,
    smoothquant,
    sparsevd,
    svd,
    tensordecomp,
    variational,
    wanda,
)


def _t(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _points() -> list[dict]:
    return [{"accuracy": 98.0 - i, "bytes": 1000.0 * (i + 1), "ms": 1.0 + i} for i in range(5)]


X = _t(16, 8)  # layer inputs: 16 tokens of 8 channels
W = _t(4, 8, seed=1)  # a Linear weight (out 4, in 8)


@dataclasses.dataclass(frozen=True)
class Primitive:
    """A public primitive and one valid call: `fn(**args)`."""

    name: str
    fn: Callable
    args: dict


PRIMITIVES = [
    Primitive("groupquant.quantize_groups", groupquant.quantize_groups, {"w": W, "bits": 4, "group_size": 4}),
    Primitive("groupquant.rtn", groupquant.rtn, {"w": W, "bits": 4, "group_size": 0}),
    Primitive("groupquant.hessian", groupquant.hessian, {"x": X}),
    Primitive("groupquant.gptq", groupquant.gptq,
              {"w": W, "h": groupquant.hessian(X), "bits": 4, "group_size": 4, "damp": 0.01}),
    Primitive("groupquant.inverse_cholesky", groupquant.inverse_cholesky, {"h": groupquant.hessian(X), "damp": 0.0}),
    Primitive("groupquant.output_error", groupquant.output_error, {"x": X, "w": W, "w_hat": W + 0.01}),
    Primitive("groupquant.pack_codes", groupquant.pack_codes, {"q": torch.tensor([1, 2, 3, 0]), "bits": 2}),
    Primitive("smoothquant.channel_absmax", smoothquant.channel_absmax, {"x": X}),
    Primitive("smoothquant.outlier_ratio", smoothquant.outlier_ratio, {"absmax": X.abs().amax(0)}),
    Primitive("smoothquant.smooth_scales", smoothquant.smooth_scales, {"act_absmax": X.abs().amax(0), "w": W, "alpha": 0.5}),
    Primitive("smoothquant.smooth_linear", smoothquant.smooth_linear, {"x": X, "w": W, "s": torch.ones(8) * 2}),
    Primitive("smoothquant.fake_quant_activations", smoothquant.fake_quant_activations,
              {"x": X, "bits": 8, "granularity": "per_token"}),
    Primitive("smoothquant.fake_quant_weights", smoothquant.fake_quant_weights, {"w": W, "bits": 8}),
    Primitive("wanda.input_norms", wanda.input_norms, {"x": X}),
    Primitive("wanda.wanda_scores", wanda.wanda_scores, {"w": W, "norms": X.norm(dim=0)}),
    Primitive("wanda.row_mask", wanda.row_mask, {"scores": W.abs(), "sparsity": 0.5}),
    Primitive("wanda.nm_mask", wanda.nm_mask, {"scores": W.abs(), "n": 2, "m": 4}),
    Primitive("lowbitops.ternarize", lowbitops.ternarize, {"w": W, "ratio": 0.7}),
    Primitive("lowbitops.binarize", lowbitops.binarize, {"w": W}),
    Primitive("lowbitops.fake_ternary", lowbitops.fake_ternary, {"w": W, "ratio": 0.7}),
    Primitive("lowbitops.fake_binary", lowbitops.fake_binary, {"w": W}),
    Primitive("packedfile.pack_layer", packedfile.pack_layer,
              {"w": W, "bias": torch.zeros(4), "kind": "int4", "sparse": False, "ratio": 0.7}),
    Primitive("packedfile.pack_layer int8", packedfile.pack_layer,
              {"w": W, "bias": None, "kind": "int8", "sparse": True, "ratio": 0.7}),
    Primitive("packedfile.pack_layer ternary", packedfile.pack_layer,
              {"w": W, "bias": None, "kind": "ternary", "sparse": False, "ratio": 0.7}),
    Primitive("packedfile.pack_trits", packedfile.pack_trits, {"codes": np.array([1, 0, -1, 0, 1, -1])}),
    Primitive("packedfile.unpack_trits", packedfile.unpack_trits, {"blob": bytes([194, 120]), "n": 6}),
    Primitive("tensordecomp.tucker2", tensordecomp.tucker2, {"w": _t(6, 4, 3, 3), "ranks": (2, 2)}),
    Primitive("tensordecomp.cp_als", tensordecomp.cp_als, {"w": _t(4, 3, 3, 3), "rank": 2, "iters": 3, "seed": 0}),
    Primitive("svd.svd_factorize", svd.svd_factorize, {"w": W, "rank": 2}),
    Primitive("svd.energy_curve", svd.energy_curve, {"s": torch.linalg.svdvals(W)}),
    Primitive("svd.rank_for_energy", svd.rank_for_energy, {"s": torch.linalg.svdvals(W), "energy": 0.9}),
    Primitive("svd.eckart_young_error", svd.eckart_young_error, {"s": torch.linalg.svdvals(W), "rank": 2}),
    Primitive("energy.estimate_energy", energy.estimate_energy,
              {"macs": 1e5, "weight_bytes": 4e4, "compute": "int8", "sram_bytes": 65536.0}),
    Primitive("energy.mac_energy_pj", energy.mac_energy_pj, {"compute": "fp32"}),
    Primitive("pareto.pareto_front", pareto.pareto_front,
              {"points": _points(), "maximize": ["accuracy"], "minimize": ["bytes"]}),
    Primitive("pareto.dominated_by", pareto.dominated_by,
              {"points": _points(), "maximize": ["accuracy"], "minimize": ["bytes", "ms"]}),
    Primitive("pareto.dominates", pareto.dominates,
              {"a": _points()[0], "b": _points()[1], "maximize": ["accuracy"], "minimize": ["bytes"]}),
    Primitive("pareto.best_under_budget", pareto.best_under_budget,
              {"points": _points(), "objective": "accuracy", "upper": {"bytes": 3000.0}, "lower": {"accuracy": 90.0},
               "tie_break": ["bytes"]}),
    Primitive("monitor.drift_trace", monitor.drift_trace,
              {"stream": np.linspace(0.5, 1.0, 60), "reference": np.linspace(0.6, 1.0, 30),
               "config": monitor.DriftConfig(window=20, stride=10)}),
    Primitive("variational.log_alpha", variational.log_alpha, {"theta": W, "log_sigma2": W - 3}),
    Primitive("variational.neg_kl", variational.neg_kl, {"log_alpha_": W * 4}),
    Primitive("variational.kl_divergence", variational.kl_divergence, {"log_alpha_": W * 4}),
    Primitive("variational.vd_mask", variational.vd_mask, {"log_alpha_": W * 4, "threshold": 3.0}),
    Primitive("variational.lrt_moments", variational.lrt_moments,
              {"x": X, "theta": W, "log_sigma2": W - 3, "bias": torch.zeros(4)}),
    Primitive("variational.lrt_conv_moments", variational.lrt_conv_moments,
              {"x": _t(2, 2, 5, 5), "theta": _t(3, 2, 3, 3, seed=2), "log_sigma2": _t(3, 2, 3, 3, seed=3) - 3,
               "bias": torch.zeros(3), "padding": 1}),
    Primitive("variational.posterior_step", variational.posterior_step,
              {"log_sigma2": W - 3, "keep": W > 0, "scale": 1.0}),
    Primitive("variational.snap_to_grid", variational.snap_to_grid, {"w": W, "step": 0.25, "max_levels": 1024}),
    Primitive("sparsevd.mask_overlap", sparsevd.mask_overlap, {"a": W > 0, "b": W > 0.5}),
    Primitive("monitor.ks_2samp", monitor.ks_2samp, {"a": np.arange(10.0), "b": np.arange(5.0)}),
]


def _tensor_junk(valid: torch.Tensor) -> st.SearchStrategy:
    """NaN, inf, empty, wrong shape, wrong dtype or wrong type in place of the tensor `valid`."""
    def poisoned(bad: float):
        @st.composite
        def make(draw):
            t = valid.clone().float()
            if t.numel():
                t.view(-1)[draw(st.integers(0, t.numel() - 1))] = bad
            return t
        return make()

    empty = valid.new_empty((0, *valid.shape[1:])) if valid.dim() else valid.new_empty(0)
    return st.one_of(
        poisoned(math.nan), poisoned(math.inf), poisoned(-math.inf), poisoned(1e38),
        st.sampled_from([
            empty, torch.empty(0), valid.reshape(-1), valid[None], valid.reshape(-1)[:3], valid.long(),
            valid.double(), valid.half(), valid.to(torch.bool), torch.zeros_like(valid), valid.tolist(),
            valid.numpy(), None, "abc", 3.0, object(), torch.tensor(float("nan")),
        ]),
    )


def _array_junk(valid: np.ndarray) -> st.SearchStrategy:
    with_nan = valid.astype(float).copy()
    with_nan[len(with_nan) // 2] = math.nan
    return st.sampled_from([with_nan, np.array([]), valid.reshape(1, -1), np.array(["a", "b"]), None, "abc",
                            valid.astype(float) * math.inf, [1.0, math.inf]])


def _points_junk(valid: list[dict]) -> st.SearchStrategy:
    return st.sampled_from([
        [], [{}], [{"accuracy": math.nan, "bytes": 1.0}], [{"accuracy": "98", "bytes": 1.0}],
        [{"accuracy": True, "bytes": 1.0}], [*valid, {"accuracy": 99.0, "bytes": math.inf}], None, "abc",
        [1, 2, 3], valid[0], [{"accuracy": 10**400, "bytes": 1.0}],
    ])


SCALAR_JUNK = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**66), 2**66),
    st.sampled_from([0, 1, -1, 2, 3, 7, 8, 17, 2**31, 10**400]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, 1e308, 5e-324, -0.0, 0.5, 1.0, 1.5]),
    st.text(max_size=4), st.sampled_from(["int8", "fp32", "ternary", "per_tensor", "accuracy", "bytes"]),
    st.sampled_from([(), (1,), (2, 2), (0, 1), [1, 2], {}, {"bytes": math.nan}, {"nope": 1.0}, ["nope"],
                     b"\xff\x00", object(), 1j]),
)


def junk_for(valid: object) -> st.SearchStrategy:
    """The junk that fits where `valid` goes."""
    if isinstance(valid, torch.Tensor):
        return _tensor_junk(valid)
    if isinstance(valid, np.ndarray):
        return _array_junk(valid)
    if isinstance(valid, list) and valid and isinstance(valid[0], dict):
        return _points_junk(valid)
    return SCALAR_JUNK


def try_primitive(prim: Primitive, arg: str, value: object) -> tuple[str, str]:
    """("clean error" | "finite result" | "crash" | "silent non-finite", detail) of prim with args[arg] = value."""
    args = dict(prim.args)
    args[arg] = value
    try:
        result = prim.fn(**args)
    except Exception as err:  # noqa: BLE001 - classified below
        if clean_error(err):
            return "clean error", ""
        return "crash", f"{prim.name}({arg}={_show(value)}): {type(err).__name__}: {str(err)[:160]}"
    if non_finite(result):
        return "silent non-finite", f"{prim.name}({arg}={_show(value)}) returned NaN or inf"
    return "finite result", ""


def _show(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"tensor{tuple(value.shape)} {value.dtype}"
    if isinstance(value, np.ndarray):
        return f"array{value.shape} {value.dtype}"
    text = repr(value)
    return text if len(text) < 60 else text[:57] + "..."


@st.composite
def primitive_case(draw) -> tuple[Primitive, str, object]:
    """A primitive, one of its arguments and the junk put there."""
    prim = draw(st.sampled_from(PRIMITIVES))
    arg = draw(st.sampled_from(sorted(prim.args)))
    return prim, arg, draw(junk_for(prim.args[arg]))
