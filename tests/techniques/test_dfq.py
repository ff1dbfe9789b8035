"""BatchNorm folding, cross-layer equalization and bias correction, with oracles: the FP32 function
unchanged, ranges equal after equalization, E[ReLU(z)] against Monte Carlo and a numerical integral,
each layer's mean output equal to FP32's after the empirical correction, the analytic shift equal to
the empirical one on inputs that are constant per channel."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from compresslab.core import models
from compresslab.techniques import dfq, equalization
from compresslab.techniques.quantization import QuantConfig, apply_ptq, layer_outputs
from compresslab.techniques.quantlayers import quant_layers


def _trained_like_dsnet(seed: int = 0) -> nn.Sequential:
    """dsnet with random BatchNorm statistics and affine parameters (as if trained), in eval mode."""
    torch.manual_seed(seed)
    model = models.dsnet()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.01, 4)
            m.weight.data.uniform_(0.05, 3)
            m.bias.data.uniform_(-0.5, 0.5)
    return model.eval()


def test_fold_batchnorm_keeps_the_function_and_removes_every_batchnorm():
    model = _trained_like_dsnet()
    x = torch.randn(8, 1, 28, 28)
    folded, stats = equalization.fold_batchnorm(model)
    assert torch.allclose(folded(x), model(x), atol=1e-4)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert sorted(stats) == sorted(n for n, m in models.prunable_layers(model).items() if n != "fc")
    bn = model.bn2
    beta, gamma = stats["dw1"]
    assert torch.equal(beta, bn.bias.detach()) and torch.equal(gamma, bn.weight.detach().abs())
    assert all(isinstance(m, nn.BatchNorm2d) for m in model.modules() if "bn" in type(m).__name__.lower())  # input untouched


def test_pairs_of_dsnet_run_through_depthwise_and_pooling():
    folded, _ = equalization.fold_batchnorm(_trained_like_dsnet())
    assert equalization.equalization_pairs(folded) == [
        ("conv1", "dw1"), ("dw1", "pw1"), ("pw1", "dw2"), ("dw2", "pw2"), ("pw2", "dw3"), ("dw3", "pw3"), ("pw3", "fc")]
    assert equalization.equalization_pairs(_trained_like_dsnet()) == []  # unfolded BatchNorm breaks every pair


@pytest.mark.parametrize("make", [lambda: equalization.fold_batchnorm(_trained_like_dsnet(1))[0], models.lenet5,
                                  models.lenet300])
def test_equalization_keeps_the_function_and_equalizes_every_pair(make):
    torch.manual_seed(2)
    model = make().eval()
    x = torch.randn(16, 1, 28, 28)
    with torch.no_grad():
        before = model(x)
    _, scales = equalization.cross_layer_equalize(model, iterations=500, tolerance=1e-7)
    with torch.no_grad():
        after = model(x)
    assert torch.allclose(after, before, atol=1e-4 * float(before.abs().max()))
    for first, second in equalization.equalization_pairs(model):
        r1 = equalization.output_ranges(model.get_submodule(first))
        r2 = equalization.input_ranges(model.get_submodule(second), len(r1))
        assert torch.allclose(r1, r2, rtol=1e-3), (first, second)
        assert bool((scales[first] > 0).all())


def test_equalization_scales_balance_the_two_ranges():
    torch.manual_seed(0)
    r1, r2 = torch.rand(50) * 10 + 0.01, torch.rand(50) * 0.1 + 0.001
    s = equalization.equalization_scales(r1, r2)
    assert torch.allclose(r1 / s, r2 * s, rtol=1e-5)
    assert torch.allclose(r1 / s, (r1 * r2).sqrt(), rtol=1e-5)
    with pytest.raises(ValueError, match="non-negative"):
        equalization.equalization_scales(torch.tensor([-1.0]), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="shape"):
        equalization.equalization_scales(torch.ones(3), torch.ones(2))


def test_equalization_undoes_a_hidden_rescaling():
    """Scale channel 0 of fc1 by 100 and its column in fc2 by 1/100: the function is the same, one
    per-tensor range is ruined; equalization finds the balanced ranges again whatever the start."""
    torch.manual_seed(3)
    a = models.mlp((16,)).eval()
    b = models.mlp((16,)).eval()
    b.load_state_dict(a.state_dict())
    with torch.no_grad():
        b.fc1.weight[0] *= 100
        b.fc1.bias[0] *= 100
        b.fc2.weight[:, 0] /= 100
    equalization.cross_layer_equalize(a, iterations=200, tolerance=1e-7)
    equalization.cross_layer_equalize(b, iterations=200, tolerance=1e-7)
    assert torch.allclose(a.fc1.weight, b.fc1.weight, rtol=1e-4, atol=1e-6)
    assert torch.allclose(a.fc2.weight, b.fc2.weight, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("mu,sigma", [(0.0, 1.0), (1.5, 0.5), (-1.0, 2.0), (-3.0, 0.4)])
def test_relu_mean_against_monte_carlo_and_an_integral(mu, sigma):
    got = float(dfq.relu_mean(torch.tensor([mu]), torch.tensor([sigma])))
    z = torch.linspace(0, mu + 12 * sigma + 12, 200_001, dtype=torch.float64)
    density = torch.exp(-0.5 * ((z - mu) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
    integral = float(torch.trapezoid(z * density, z))
    assert got == pytest.approx(integral, abs=1e-5)
    g = torch.Generator().manual_seed(0)
    mc = float((mu + sigma * torch.randn(2_000_000, generator=g, dtype=torch.float64)).clamp_min(0).mean())
    assert got == pytest.approx(mc, abs=5 * sigma / math.sqrt(2_000_000) + 1e-6)


def test_channel_means_and_its_errors():
    y = torch.randn(4, 3, 5, 5)
    assert torch.allclose(dfq.channel_means(y), y.mean((0, 2, 3)))
    assert torch.allclose(dfq.channel_means(y[:, :, 0, 0]), y[:, :, 0, 0].mean(0))
    with pytest.raises(ValueError, match="channel dimension"):
        dfq.channel_means(torch.ones(3))


def test_empirical_correction_makes_every_mean_output_equal_fp32s():
    folded, _ = equalization.fold_batchnorm(_trained_like_dsnet(4))
    x = torch.randn(64, 1, 28, 28)
    quantized, _ = apply_ptq(folded, QuantConfig(weight_bits=4, act_bits=8, weight_granularity="per_tensor",
                                                 calibration_size=64), calibration=x)
    names = list(quant_layers(quantized))
    before = {n: dfq.channel_means(v) - dfq.channel_means(w) for (n, v), w in
              zip(layer_outputs(quantized, names, x).items(), layer_outputs(folded, names, x).values())}
    shifts = dfq.empirical_correction(quantized, folded, x)
    got, want = layer_outputs(quantized, names, x), layer_outputs(folded, names, x)
    for n in names:
        scale = float(dfq.channel_means(want[n]).abs().max()) + 1.0
        assert torch.allclose(dfq.channel_means(got[n]), dfq.channel_means(want[n]), atol=1e-4 * scale), n
    assert torch.allclose(shifts[names[0]], before[names[0]])  # the first layer's shift is its own error only


@pytest.mark.parametrize("layer", [nn.Conv2d(3, 4, 3), nn.Conv2d(3, 3, 3, groups=3), nn.Linear(12, 5)])
def test_analytic_shift_equals_the_empirical_one_on_constant_channels(layer):
    torch.manual_seed(5)
    error = torch.randn_like(layer.weight) * 0.01
    means = torch.tensor([0.5, -1.0, 2.0])
    if isinstance(layer, nn.Conv2d):
        x = means.reshape(1, 3, 1, 1).expand(2, 3, 6, 6)  # no padding: every window sees the means
        direct = layer._conv_forward(x, error, None).mean((0, 2, 3))
        got = dfq.mean_shift(layer, error, means)
    else:
        x = means.repeat_interleave(4).expand(2, 12)  # 3 channels of 4 positions, flattened
        direct = (x @ error.T).mean(0)
        got = dfq.mean_shift(layer, error, means)
    assert torch.allclose(got, direct, atol=1e-6)


def test_input_means_follow_the_folded_batchnorm_and_the_scales():
    folded, stats = equalization.fold_batchnorm(_trained_like_dsnet(6))
    _, scales = equalization.cross_layer_equalize(folded)
    means = dfq.input_means(folded, stats, scales)
    assert list(means) == ["dw1", "pw1", "dw2", "pw2", "dw3", "pw3", "fc"]
    beta, gamma = stats["pw2"]
    assert torch.allclose(means["dw3"], dfq.relu_mean(beta / scales["pw2"], gamma / scales["pw2"]))
    # the oracle: a batch whose pre-activations of pw2 are exactly N(beta/s, (gamma/s)^2) per channel
    g = torch.Generator().manual_seed(0)
    z = (beta / scales["pw2"]) + (gamma / scales["pw2"]) * torch.randn(400_000, len(beta), generator=g)
    assert torch.allclose(z.clamp_min(0).mean(0), means["dw3"], atol=0.02 * float(means["dw3"].abs().max()) + 1e-3)


def test_apply_dfq_rescues_per_tensor_weights_of_an_unbalanced_net():
    torch.manual_seed(7)
    model = models.mlp((32,)).eval()
    with torch.no_grad():  # channel ranges 1000x apart, function unchanged
        model.fc1.weight[:4] *= 1000
        model.fc1.bias[:4] *= 1000
        model.fc2.weight[:, :4] /= 1000
    x = torch.randn(256, 784)
    quant = QuantConfig(weight_bits=6, act_bits=None, weight_granularity="per_tensor", calibration_size=256)
    errors = {}
    for equalize in (False, True):
        q, report = dfq.apply_dfq(model, dfq.DFQConfig(quant=quant, equalize=equalize, bias_correction="none"),
                                  calibration=x)
        assert report.fp32_change < 1e-3 and report.accuracy_after is None
        with torch.no_grad():
            errors[equalize] = float((q(x) - model(x)).pow(2).mean())
    assert errors[True] < errors[False] / 10
    assert max(report.ranges_after["fc1"]) < max(report.ranges_before["fc1"]) / 10


def test_analytic_correction_without_batchnorm_corrects_nothing():
    torch.manual_seed(8)
    model = models.mlp((16,)).eval()
    _, report = dfq.apply_dfq(model, dfq.DFQConfig(quant=QuantConfig(weight_bits=4, calibration_size=32),
                                                   bias_correction="analytic"), calibration=torch.randn(32, 784))
    assert report.bias_shift == {} and report.folded == []


@pytest.mark.parametrize("kwargs,match", [
    ({"bias_correction": "both"}, "DFQConfig.bias_correction"),
    ({"iterations": 0}, "DFQConfig.iterations"),
    ({"equalize": "yes"}, "DFQConfig.equalize"),
    ({"quant": {"weight_bits": 4}}, "DFQConfig.quant"),
])
def test_config_errors_name_the_field(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        dfq.DFQConfig(**kwargs)


def test_apply_dfq_refuses_bad_input_before_work():
    model = models.mlp((8,))
    with pytest.raises(ValueError, match="needs data"):
        dfq.apply_dfq(model, dfq.DFQConfig())
    with pytest.raises(ValueError, match="loss_fn"):
        dfq.apply_dfq(model, dfq.DFQConfig(), calibration=torch.randn(4, 784), loss_fn=lambda *a: 0)
    with pytest.raises(ValueError, match="nn.Sequential"):
        dfq.apply_dfq(nn.ModuleList([nn.Linear(2, 2)]), dfq.DFQConfig(), calibration=torch.randn(4, 2))
