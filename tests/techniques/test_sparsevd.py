"""Sparse variational dropout: the KL fit against the paper's formula and a numerical integral, the
local reparameterisation against Monte Carlo, the mask, the quantization grid, the file round trip
and the verb on tiny data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from compresslab.core import metrics
from compresslab.core.training import TrainConfig, evaluate
from compresslab.techniques import sparsevd, variational
from compresslab.techniques.compressedfile import decode_bytes
from compresslab.techniques.filelayers import decode_layer, encode_layer

K1, K2, K3 = 0.63576, 1.87320, 1.48695  # Molchanov et al. 2017, eq. 14


def paper_neg_kl(la: float) -> float:
    """The paper's fit, written from the formula with math alone."""
    return K1 / (1 + math.exp(-(K2 + K3 * la))) - 0.5 * math.log1p(math.exp(-la)) - K1


def true_neg_kl(la: float, n: int = 2_000_001) -> float:
    """-KL up to a constant: 0.5 log alpha - E_{eps ~ N(1, alpha)} log|eps|, by the trapezoid rule on
    eps = 1 + sqrt(alpha) z, z in [-14, 14] (the grid is offset so that it misses the log singularity)."""
    s = math.exp(0.5 * la)
    z = np.linspace(-14, 14, n) + 14 / (n - 1) * 0.5 * math.pi / 3
    phi = np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    return 0.5 * la - float(np.trapezoid(phi * np.log(np.abs(1 + s * z)), z))


@pytest.mark.parametrize("la", [-8.0, -3.0, -0.5, 0.0, 1.7, 3.0, 6.0, 9.5])
def test_neg_kl_is_the_paper_s_formula(la):
    got = float(variational.neg_kl(torch.tensor([la], dtype=torch.float64)))
    assert got == pytest.approx(paper_neg_kl(la), abs=1e-12)


def test_neg_kl_clips_log_alpha_and_vanishes_for_huge_alpha():
    clipped = variational.neg_kl(torch.tensor([-50.0, 50.0], dtype=torch.float64))
    assert clipped.tolist() == pytest.approx([paper_neg_kl(-10.0), paper_neg_kl(10.0)], abs=1e-12)
    assert abs(paper_neg_kl(30.0)) < 1e-9  # the constant is fixed so that -KL -> 0 as alpha -> infinity


@pytest.mark.parametrize("la", [-6.0, -4.0, -2.0, 2.0, 4.0, 8.0])
def test_kl_fit_against_the_numerical_integral(la):
    """Differences between two log alphas cancel the unknown constant; the fit is good to ~0.01 nats."""
    fit = float(variational.neg_kl(torch.tensor([la, 0.0], dtype=torch.float64)).diff().neg())
    truth = true_neg_kl(la) - true_neg_kl(0.0)
    assert fit == pytest.approx(truth, abs=0.012)


def test_kl_divergence_is_the_summed_negative():
    la = torch.linspace(-5, 5, 11, dtype=torch.float64)
    assert float(variational.kl_divergence(la)) == pytest.approx(-sum(paper_neg_kl(float(v)) for v in la), abs=1e-9)
    assert float(variational.kl_divergence(la)) > 0


def test_log_alpha_and_mask_threshold():
    theta = torch.tensor([1.0, 0.1, 0.01, 2.0])
    log_sigma2 = torch.log(torch.tensor([1.0, 0.1 ** 2 * math.exp(3.0) * 0.99, 0.01 ** 2 * math.exp(3.0) * 1.01, 1e-4]))
    la = variational.log_alpha(theta, log_sigma2)
    expected = [float(s) - math.log(t * t + 1e-8) for s, t in zip(log_sigma2, theta.tolist())]  # eps = 1e-8
    assert la.tolist() == pytest.approx(expected, abs=1e-5)
    assert expected[1] < 3 < expected[2]
    assert variational.vd_mask(la).tolist() == [True, True, False, True]  # keep log alpha < 3
    assert variational.vd_mask(la, threshold=-1.0).tolist() == [False, False, False, True]
    with pytest.raises(ValueError, match="threshold"):
        variational.vd_mask(la, threshold=float("nan"))


def test_lrt_moments_against_monte_carlo():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, generator=gen, dtype=torch.float64)
    theta = torch.randn(4, 5, generator=gen, dtype=torch.float64)
    log_sigma2 = torch.randn(4, 5, generator=gen, dtype=torch.float64) - 1
    bias = torch.randn(4, generator=gen, dtype=torch.float64)
    mean, var = variational.lrt_moments(x, theta, log_sigma2, bias)
    n = 200_000
    w = theta + log_sigma2.mul(0.5).exp() * torch.randn(n, 4, 5, generator=gen, dtype=torch.float64)
    out = torch.einsum("bi,noi->nbo", x, w) + bias  # one weight sample per draw
    mc_mean, mc_var = out.mean(0), out.var(0)
    assert torch.allclose(mean, mc_mean, atol=5 * (var / n).sqrt().max().item())
    assert torch.allclose(var, mc_var, rtol=0.02)  # the variance's relative standard error: sqrt(2 / n) = 0.3%


def test_lrt_conv_moments_against_monte_carlo():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 2, 5, 5, generator=gen, dtype=torch.float64)
    theta = torch.randn(3, 2, 3, 3, generator=gen, dtype=torch.float64)
    log_sigma2 = torch.randn(3, 2, 3, 3, generator=gen, dtype=torch.float64) - 2
    mean, var = variational.lrt_conv_moments(x, theta, log_sigma2, None, padding=1)
    n = 4000
    w = theta + log_sigma2.mul(0.5).exp() * torch.randn(n, 3, 2, 3, 3, generator=gen, dtype=torch.float64)
    out = torch.stack([torch.nn.functional.conv2d(x, wi, padding=1) for wi in w])
    assert torch.allclose(mean, out.mean(0), atol=5 * (var.max() / n) ** 0.5)
    assert torch.allclose(var, out.var(0), rtol=0.15, atol=1e-9)  # sqrt(2 / 4000) = 2.2% per entry, 5 s.e.


def test_vd_linear_samples_follow_the_local_reparameterisation():
    torch.manual_seed(0)
    layer = variational.VDLinear(6, 3, init_log_sigma2=-2.0)
    x = torch.randn(2, 6)
    mean, var = variational.lrt_moments(x, layer.weight.detach(), layer.log_sigma2.detach(), layer.bias.detach())
    layer.train()
    with torch.no_grad():
        out = torch.stack([layer(x) for _ in range(20_000)])
    assert torch.allclose(out.mean(0), mean, atol=5 * (var.max() / 20_000) ** 0.5)
    assert torch.allclose(out.var(0), var + 1e-8, rtol=0.06)


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_eval_mode_and_to_plain_compute_with_the_masked_mean(kind):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 4 * 4, 5)) if kind == "conv" \
        else nn.Sequential(nn.Flatten(), nn.Linear(36, 5))
    x = torch.randn(7, 1, 6, 6)
    vd = variational.to_variational(model)
    layers = variational.variational_layers(vd)
    assert len(layers) == (2 if kind == "conv" else 1)
    with torch.no_grad():
        for layer in layers.values():
            layer.log_sigma2.copy_(torch.randn_like(layer.weight) * 4 + torch.log(layer.weight ** 2))
    vd.eval()
    expected = x
    for module in vd:
        if isinstance(module, variational.VDLinear):
            expected = torch.nn.functional.linear(expected, module.weight * (module.log_alpha() < 3), module.bias)
        elif isinstance(module, variational.VDConv2d):
            expected = torch.nn.functional.conv2d(expected, module.weight * (module.log_alpha() < 3), module.bias)
        else:
            expected = module(expected)
    with torch.no_grad():
        assert torch.allclose(vd(x), expected)
        kept = sum(int(m.mask().sum()) for m in layers.values())
        plain = variational.to_plain(vd)
        assert not variational.variational_layers(plain)
        assert torch.allclose(plain(x), expected, atol=1e-6)
    assert metrics.model_size(plain).nonzeros - sum(m.bias.numel() for m in plain.modules()
                                                     if isinstance(m, (nn.Linear, nn.Conv2d))) == kept


def test_posterior_step_and_grid_by_hand():
    log_sigma2 = torch.log(torch.tensor([0.01, 0.04, 0.09, 1.0]))
    keep = torch.tensor([True, True, True, False])
    assert variational.posterior_step(log_sigma2, keep, 1.0) == pytest.approx(0.2)  # median sigma of 0.1, 0.2, 0.3
    assert variational.posterior_step(log_sigma2, torch.zeros(4, dtype=torch.bool)) == 0.0
    w = torch.tensor([0.0, 0.31, -0.49, 0.09, 1.0])
    snapped, step = variational.snap_to_grid(w, 0.2)
    assert step == 0.2 and snapped.tolist() == pytest.approx([0.0, 0.4, -0.4, 0.0, 1.0], abs=1e-3)
    assert torch.equal(snapped, snapped.half().float())  # FP16 values: the file stores them in 2 bytes
    wide, step = variational.snap_to_grid(torch.tensor([1.0, -1.0, 0.5]), 1e-9, max_levels=6)
    assert step == pytest.approx(0.5) and len(torch.unique(wide)) <= 6


def test_kl_warmup_ramps_linearly():
    warm = sparsevd.KLWarmup(2.0, 0.25)
    warm.total = 100
    assert [warm.beta(s) for s in (0, 5, 25, 50, 100)] == pytest.approx([0.0, 0.4, 2.0, 2.0, 2.0])
    assert sparsevd.KLWarmup(1.5, 0.0).beta(0) == 1.5


def _sparse_layer(numel: int, density: float, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    w = torch.zeros(numel)
    idx = torch.randperm(numel, generator=gen)[: int(density * numel)]
    w[idx] = torch.randint(1, 9, (len(idx),), generator=gen).float() * 0.125 * (torch.randint(0, 2, (len(idx),), generator=gen) * 2 - 1)
    return w.reshape(100, numel // 100)


def test_best_index_bits_is_the_smallest_record_and_decodes_exactly():
    w = _sparse_layer(20_000, 0.01, 0)  # 99% sparse
    r, record = sparsevd.best_index_bits("fc", w, None, 4, max_index_bits=12)
    sizes = {b: len(encode_layer("fc", w, None, 4, b).body()) for b in range(1, 13)}
    assert len(record.body()) == min(sizes.values()) and sizes[r] == min(sizes.values())
    assert sizes[r] <= sizes[5] < sizes[1]  # never worse than notebook 06's 5 bits; 1 bit drowns in fillers
    weight, _ = decode_layer(record)
    assert torch.equal(weight, w)


def test_encode_sparse_round_trips_bit_exactly_and_rejects_damage():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(200, 100), nn.ReLU(), nn.Linear(100, 10))
    with torch.no_grad():
        model[1].weight.copy_(_sparse_layer(20_000, 0.01, 1))
        model[3].weight.copy_(_sparse_layer(1000, 0.3, 2).reshape(10, 100))
        for m in (model[1], model[3]):
            m.bias.copy_(m.bias.half().float())
    content, records, bits, index_bits = sparsevd.encode_sparse(model)
    assert bits == {"1": 4, "3": 4}  # 16 distinct values: +-k/8, k = 1..8
    _, state, _ = decode_bytes(content)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert all(r.value_bytes == 2 for r in records)  # FP16 codebook and bias
    damaged = bytearray(content)
    for pos in (30, len(content) // 2, len(content) - 2):
        damaged[pos] ^= 0x04
        with pytest.raises(ValueError):
            decode_bytes(bytes(damaged))
        damaged[pos] ^= 0x04
    with pytest.raises(ValueError, match="truncated"):
        decode_bytes(content[:-1])


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="SparseVDConfig.threshold"):
        sparsevd.SparseVDConfig(threshold=11)
    with pytest.raises(ValueError, match="SparseVDConfig.step_scale"):
        sparsevd.SparseVDConfig(step_scale=0)
    with pytest.raises(ValueError, match="TrainConfig.epochs"):
        sparsevd.SparseVDConfig(train=TrainConfig(lr=1e-3, epochs=-1))
    with pytest.raises(ValueError, match="unknown layers"):
        sparsevd.SparseVDConfig(layers=("fc9",)).check_layers(nn.Sequential(nn.Linear(2, 2)))


def test_verb_sparsifies_with_the_kl_and_reloads_exactly(tmp_path):
    from conftest import make_tiny_dataset

    tiny = make_tiny_dataset()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10))
    train = TrainConfig(epochs=3, batch_size=32, lr=1e-2, optimizer="adam")
    kept = {}
    for weight in (0.0, 20.0):
        config = sparsevd.SparseVDConfig(train=train, kl_weight=weight, warmup=0.0)
        loaded, report = sparsevd.apply_sparse_vd(model, config, tiny, progress=False, path=tmp_path / f"m{weight}.dcz")
        assert report.bit_exact and report.accuracy_after == report.accuracy_shared
        assert report.accuracy_after == evaluate(loaded, tiny.test).accuracy
        assert report.file_bytes == (tmp_path / f"m{weight}.dcz").stat().st_size == report.size_after.stored_bytes
        assert len(report.history) == 3 and report.history[-1]["kl weight"] == weight
        kept[weight] = report.history[-1]["weights kept %"]
    assert kept[0.0] > 99 and kept[20.0] < kept[0.0] - 5  # the KL term is what drops the weights


def test_finetune_trains_only_the_kept_weights():
    from conftest import make_tiny_dataset, make_tiny_variational

    tiny = make_tiny_dataset()
    vd = make_tiny_variational(spread=3.0)
    before = {n: (m.weight.detach().clone(), m.log_sigma2.detach().clone(), m.mask())
              for n, m in variational.variational_layers(vd).items()}
    sparsevd.finetune_kept(vd, tiny, TrainConfig(epochs=1, batch_size=32, lr=1e-2, optimizer="adam"), 3.0, progress=False)
    for n, m in variational.variational_layers(vd).items():
        theta, log_sigma2, keep = before[n]
        assert torch.equal(m.weight[~keep], theta[~keep])  # dropped weights untouched
        assert not torch.equal(m.weight[keep], theta[keep])  # kept weights trained
        assert torch.equal(m.log_sigma2, log_sigma2)
