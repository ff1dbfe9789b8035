"""Tucker-2 and CP decompositions of conv kernels, against brute-force reconstructions."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from compresslab.core import models
from compresslab.techniques import lowrank
from compresslab.techniques import tensordecomp as td


def _kernel(shape=(6, 4, 3, 3), seed=0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _brute_tucker(dec: td.Tucker2) -> torch.Tensor:
    core, u_out, u_in = dec
    n, c = u_out.shape[0], u_in.shape[0]
    out = torch.zeros(n, c, *core.shape[2:], dtype=core.dtype)
    for i in range(n):
        for j in range(c):
            for a in range(core.shape[0]):
                for b in range(core.shape[1]):
                    out[i, j] += u_out[i, a] * core[a, b] * u_in[j, b]
    return out


def _brute_cp(factors) -> torch.Tensor:
    a, b, y, x = factors
    out = torch.zeros(a.shape[0], b.shape[0], y.shape[0], x.shape[0], dtype=a.dtype)
    for r in range(a.shape[1]):
        out += a[:, r, None, None, None] * b[None, :, r, None, None] * y[None, None, :, r, None] * x[None, None, None, :, r]
    return out


def test_tucker2_reconstruction_matches_the_brute_force_sum_of_its_factors():
    w = _kernel()
    dec = td.tucker2(w, (3, 2))
    assert dec.core.shape == (3, 2, 3, 3) and dec.u_out.shape == (6, 3) and dec.u_in.shape == (4, 2)
    assert torch.allclose(td.tucker2_reconstruct(dec), _brute_tucker(dec))
    # the factors are orthonormal and the core is the projection of the kernel onto them
    assert torch.allclose(dec.u_out.T @ dec.u_out, torch.eye(3, dtype=w.dtype), atol=1e-10)
    err = float((w - td.tucker2_reconstruct(dec)).norm() / w.norm())
    assert 0 < err < 1


def test_tucker2_with_full_ranks_is_exact():
    w = _kernel()
    dec = td.tucker2(w, (6, 4))
    assert torch.allclose(td.tucker2_reconstruct(dec), w, atol=1e-10)


def test_tucker2_error_shrinks_as_ranks_grow():
    w = _kernel((8, 6, 3, 3))
    errs = [float((w - td.tucker2_reconstruct(td.tucker2(w, (r, r)))).norm()) for r in range(1, 7)]
    assert all(b <= a + 1e-9 for a, b in zip(errs, errs[1:]))


def test_cp_als_error_is_non_increasing_and_matches_its_factors():
    w = _kernel()
    factors, errors = td.cp_als(w, 5, iters=40)
    assert all(b <= a + 1e-9 for a, b in zip(errors, errors[1:])), errors
    recon = td.cp_reconstruct(factors)
    assert torch.allclose(recon, _brute_cp(factors))
    assert float((w - recon).norm() / w.norm()) == pytest.approx(errors[-1], rel=1e-9)


def test_cp_als_recovers_an_exact_low_rank_kernel():
    gen = torch.Generator().manual_seed(3)
    truth = [torch.randn(d, 2, generator=gen, dtype=torch.float64) for d in (5, 4, 3, 3)]
    _, errors = td.cp_als(td.cp_reconstruct(truth), 2, iters=200)
    assert errors[-1] < 1e-6


@pytest.mark.parametrize("mode", td.TENSOR_MODES)
@pytest.mark.parametrize("stride,padding", [(1, 0), (2, 1)])
def test_decomposed_conv_forward_equals_conv_with_the_reconstructed_kernel(mode, stride, padding):
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, stride=stride, padding=padding).double()
    seq = td.decompose_conv(conv, 3, mode)
    x = torch.randn(2, 4, 9, 9, dtype=torch.float64)
    expected = nn.functional.conv2d(x, td.decomposed_weight(seq), conv.bias, stride, padding)
    assert torch.allclose(seq(x), expected, atol=1e-10)
    params = sum(p.numel() for n, p in seq.named_parameters() if n.endswith("weight"))
    assert params == (td.tucker2_params((6, 4, 3, 3), (3, 3)) if mode == "tucker2" else td.cp_params((6, 4, 3, 3), 3))


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match=r"conv kernel \(N, C, k_h, k_w\) must have 4 dimension"):
        td.tucker2(torch.zeros(3, 3), (1, 1))
    with pytest.raises(ValueError, match="r_out"):
        td.tucker2(_kernel(), (7, 1))
    with pytest.raises(ValueError, match="mode"):
        td.decompose_conv(nn.Conv2d(2, 2, 3), 1, "svd")
    with pytest.raises(ValueError, match="needs rank"):
        lowrank.LowRankConfig(param_ratio=0.5, conv_mode="cp")


@pytest.mark.parametrize("mode,rank", [("tucker2", 8), ("cp", 8), ("cp", 78)])  # a CP rank may exceed min(N, C k k)
def test_apply_lowrank_hooks_tucker2_and_cp_on_conv_layers(mode, rank):
    torch.manual_seed(0)
    net = models.create("lenet5")
    cfg = lowrank.LowRankConfig(rank={"conv2": rank}, layers=("conv2",), conv_mode=mode, skip_unprofitable=False)
    new, report = lowrank.apply_lowrank(net, cfg)
    row = report.layers[0]
    expected = td.conv_params((50, 20, 5, 5), mode, rank)
    assert row["factorized"] and row["params_after"] == expected + 50
    rebuilt = td.decomposed_weight(new.get_submodule("conv2"))
    assert row["rel_error"] == pytest.approx(float((rebuilt - net.conv2.weight.detach()).norm() / net.conv2.weight.detach().norm()))
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        assert new(x).shape == (3, 10)


@pytest.mark.parametrize("mode", ["channel", "spatial", "tucker2", "cp"])
def test_rank_for_budget_is_the_largest_rank_within_the_budget(mode):
    shape = (50, 20, 5, 5)
    budget = 0.25 * 25_000
    r = td.rank_for_budget(shape, mode, budget)
    assert td.conv_params(shape, mode, r) <= budget < td.conv_params(shape, mode, r + 1)
    if mode in ("tucker2", "cp"):
        torch.manual_seed(0)
        seq = td.decompose_conv(nn.Conv2d(20, 50, 5), r, mode)
        assert sum(p.numel() for n, p in seq.named_parameters() if n.endswith("weight")) == td.conv_params(shape, mode, r)
