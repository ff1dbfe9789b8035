"""AdaRound: the learned hard rounding reaches the brute-force optimum of a tiny layer where
round-to-nearest does not; h(V) and the regulariser by hand; the Gram-matrix loss equals the direct
one; im2col rows reproduce a convolution; every weight of the result lies on its grid; the RTN
baseline is apply_ptq at the same bits; bad configs name the field; the same seed gives the same model."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from compresslab.core.params import Param
from compresslab.techniques import adaround as ar
from compresslab.techniques.layerwise import input_rows
from compresslab.techniques.quantization import apply_ptq
from compresslab.techniques.quantlayers import quant_layers
from compresslab.techniques.registry import notebook_specs, register, tiny_mlp


def _brute_force(w, x, scale, qmin, qmax):
    """The least reconstruction loss over every up/down choice of every weight (2^n), and RTN's."""
    s = scale.reshape(-1, 1)
    base = torch.floor(w / s)
    best = float("inf")
    for ups in itertools.product((0.0, 1.0), repeat=w.numel()):
        q = torch.clamp(base + torch.tensor(ups).reshape(w.shape), qmin, qmax)
        best = min(best, float(ar.reconstruction_loss(w, s * q, x)))
    rtn = float(ar.reconstruction_loss(w, s * torch.clamp(torch.round(w / s), qmin, qmax), x))
    return best, rtn


# correlated inputs: what matters is the sum of the rounding errors along a row, not each error alone
X = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.9, 1.1], [0.8, 1.0, 1.2], [1.1, 1.2, 0.9], [1.0, 1.1, 1.0]])
W = torch.tensor([[0.40, 0.40, 0.30], [0.35, -0.70, 0.20]])
SCALE = torch.tensor([1.0, 0.5])


def test_adaround_reaches_the_brute_force_minimum_where_rtn_does_not():
    qmin, qmax = -7, 7
    best, rtn = _brute_force(W, X, SCALE, qmin, qmax)
    assert rtn > best + 0.5  # round-to-nearest is far from optimal here (1.2 vs under 0.1)
    w_hat, v = ar.adaround_layer(W, SCALE, torch.zeros(2, dtype=torch.int32), qmin, qmax, ar.gram_terms(W, X),
                                 iterations=2000, reg_weight=0.01, lr=0.05)
    assert float(ar.reconstruction_loss(W, w_hat, X)) == pytest.approx(best, abs=1e-6)
    # and the result is a hard rounding: every weight is its floor or its ceiling on the grid
    u = W / SCALE.reshape(-1, 1)
    q = w_hat / SCALE.reshape(-1, 1)
    assert torch.all((q == torch.floor(u)) | (q == torch.floor(u) + 1))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_adaround_is_never_worse_than_rtn_and_near_the_optimum_on_random_layers(seed):
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(2, 5, generator=gen)
    base = torch.randn(8, 1, generator=gen)
    x = base + 0.3 * torch.randn(8, 5, generator=gen)  # strongly correlated features
    scale = w.abs().amax(1) / 3  # a 3-bit symmetric grid per row
    best, rtn = _brute_force(w, x, scale, -3, 3)
    w_hat, _ = ar.adaround_layer(w, scale, torch.zeros(2, dtype=torch.int32), -3, 3, ar.gram_terms(w, x),
                                 iterations=2000, lr=0.05)
    got = float(ar.reconstruction_loss(w, w_hat, x))
    assert got <= rtn + 1e-6
    assert got <= best + 0.1 * (rtn - best) + 1e-6  # within a tenth of RTN's excess over the optimum


def test_rectified_sigmoid_range_and_its_start_at_the_fractional_part():
    v = torch.linspace(-50, 50, 1001)
    h = ar.rectified_sigmoid(v)
    assert float(h.min()) == 0.0 and float(h.max()) == 1.0 and torch.all(h[1:] >= h[:-1])
    w = torch.randn(4, 9, generator=torch.Generator().manual_seed(0))
    scale = w.abs().amax(1) / 7
    u = w * (1.0 / scale.reshape(-1, 1))  # the same float ops as quantize_affine: x * (1/s)
    assert torch.allclose(ar.rectified_sigmoid(ar.init_rounding(w, scale)), u - torch.floor(u), atol=1e-5)
    # so the soft weight starts at the float weight (no clipping inside the min-max grid)
    zero = torch.zeros(4, dtype=torch.int32)
    assert torch.allclose(ar.soft_weight(w, ar.init_rounding(w, scale), scale, zero, -7, 7), w, atol=1e-5)


@pytest.mark.parametrize("beta", [2.0, 7.5, 20.0])
def test_regulariser_is_zero_at_hard_choices_and_one_at_a_half(beta):
    hard = torch.tensor([-30.0, 30.0, -5.0, 5.0])  # h = 0, 1, 0, 1 (the rectified sigmoid saturates)
    assert torch.equal(ar.rectified_sigmoid(hard), torch.tensor([0.0, 1.0, 0.0, 1.0]))
    assert float(ar.rounding_regularizer(hard, beta)) == 0.0
    assert float(ar.rounding_regularizer(torch.zeros(3), beta)) == pytest.approx(3.0)  # h = 0.5: 1 per weight
    h = 0.8
    v = torch.logit(torch.tensor([(h - ar.GAMMA) / (ar.ZETA - ar.GAMMA)]))
    assert float(ar.rounding_regularizer(v, beta)) == pytest.approx(1 - abs(2 * h - 1) ** beta, rel=1e-4)


def test_beta_schedule_warms_up_then_falls_from_start_to_end():
    betas = [ar.beta_at(t, 50, 0.2, 20.0, 2.0) for t in range(51)]
    assert betas[:10] == [None] * 10 and betas[10] == 20.0 and betas[50] == 2.0
    assert all(a >= b for a, b in zip(betas[10:], betas[11:]))


def test_gram_loss_equals_the_direct_reconstruction_loss():
    gen = torch.Generator().manual_seed(3)
    w, w_q = torch.randn(6, 10, generator=gen), torch.randn(6, 10, generator=gen)
    x_f = torch.randn(200, 10, generator=gen)
    x_q = x_f + 0.05 * torch.randn(200, 10, generator=gen)
    for xq in (None, x_q):
        direct = ar.reconstruction_loss(w, w_q, x_f, xq)
        by_hand = ((x_f @ w.T - (x_f if xq is None else xq) @ w_q.T) ** 2).sum() / 200
        assert float(direct) == pytest.approx(float(by_hand), rel=1e-5)
        assert float(ar.gram_loss(w_q - w, ar.gram_terms(w, x_f, xq))) == pytest.approx(float(direct), rel=1e-4)


def test_input_rows_reproduce_a_strided_dilated_convolution():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, stride=2, padding=2, dilation=2)
    x = torch.randn(2, 3, 9, 9)
    out = conv(x)
    rows = input_rows(conv, x) @ conv.weight.reshape(4, -1).T + conv.bias
    assert torch.allclose(rows.reshape(2, out.shape[2], out.shape[3], 4).permute(0, 3, 1, 2), out, atol=1e-5)
    with pytest.raises(ValueError, match="groups=3"):
        input_rows(nn.Conv2d(3, 6, 3, groups=3), x)  # grouped, not depthwise


def test_depthwise_rows_gram_terms_and_the_convolution_agree():
    """A depthwise conv: its output from the per-channel rows equals the convolution; the Gram form of
    the loss equals the loss computed from the convolution's outputs directly."""
    gen = torch.Generator().manual_seed(4)
    dw = nn.Conv2d(3, 3, 3, stride=2, padding=1, groups=3)
    x_f = torch.randn(4, 3, 9, 9, generator=gen)
    x_q = x_f + 0.05 * torch.randn(4, 3, 9, 9, generator=gen)
    rows_f, rows_q = input_rows(dw, x_f), input_rows(dw, x_q)
    w = dw.weight.detach()
    w_q = w + 0.1 * torch.randn(w.shape, generator=gen)
    out_f = dw._conv_forward(x_f, w, None)
    out_q = dw._conv_forward(x_q, w_q, None)
    n = rows_f.shape[0]
    assert rows_f.shape == (4 * 5 * 5, 3, 9) and n == out_f.numel() // 3
    direct = float(((out_f - out_q) ** 2).sum() / n)
    assert float(ar.reconstruction_loss(w, w_q, rows_f, rows_q)) == pytest.approx(direct, rel=1e-5)
    terms = ar.gram_terms(w, rows_f, rows_q)
    assert terms[0].shape == (3, 9, 9) and terms[1].shape == (3, 9)
    assert float(ar.gram_loss((w_q - w).reshape(3, -1), terms)) == pytest.approx(direct, rel=1e-4)


@pytest.fixture(scope="module")
def rounded(tiny_data_module):
    config = ar.AdaRoundConfig(bits=3, iterations=150, calibration_size=128, seed=5)
    model = tiny_mlp(hidden=(24,))
    return model, config, *ar.apply_adaround(model, config, tiny_data_module, progress=False)


@pytest.fixture(scope="module")
def tiny_data_module():
    from conftest import make_tiny_dataset

    return make_tiny_dataset()


def test_every_weight_lies_on_its_grid_and_the_report_holds_up(rounded, tiny_data_module):
    model, config, out, report = rounded
    for name, layer in quant_layers(out).items():
        fq = layer.weight_fake_quant
        scale, zp = fq.qparams()
        u = layer.weight.detach() / scale.reshape(-1, 1) + zp.reshape(-1, 1)
        assert float((u - torch.round(u)).abs().max()) < 1e-4, name
        assert float(u.min()) >= fq.qmin - 1e-4 and float(u.max()) <= fq.qmax + 1e-4, name
        # the layer's fake quantizer leaves the rounded weight unchanged: it computes with exactly these
        assert torch.allclose(fq(layer.weight.detach()), layer.weight.detach(), atol=1e-6)
    for row in report.layers:  # the learned rounding reconstructs each layer's output at least as well as RTN
        assert row["recon loss AdaRound"] <= row["recon loss RTN"] * 1.001 + 1e-9, row
    # the RTN baseline is apply_ptq at the same bits on the same calibration images
    _, rtn = apply_ptq(model, ar.rtn_config(config), tiny_data_module)
    assert report.accuracy_rtn == rtn.accuracy_after
    assert 0 <= report.accuracy_after <= 100 and report.technique == "adaround"
    assert type(report).from_dict(report.to_dict()).accuracy_rtn == report.accuracy_rtn


def test_the_same_seed_gives_the_same_model(rounded, tiny_data_module):
    model, config, out, report = rounded
    again, report2 = ar.apply_adaround(model, config, tiny_data_module, progress=False)
    for a, b in zip(out.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    assert report2.accuracy_after == report.accuracy_after


def test_float_inputs_and_weight_only_variant_runs():
    torch.manual_seed(0)
    model = tiny_mlp()
    calib = torch.randn(64, 1, 28, 28)
    out, report = ar.apply_adaround(model, ar.AdaRoundConfig(bits=2, act_bits=None, inputs="float", iterations=30),
                                    calibration=calib, progress=False)
    assert report.accuracy_after is None and all(isinstance(layer.input_fake_quant, nn.Identity)
                                                 for layer in quant_layers(out).values())
    with pytest.raises(ValueError, match="loss_fn must be None"):
        ar.apply_adaround(model, ar.AdaRoundConfig(), calibration=calib, loss_fn=lambda *a: 0)
    with pytest.raises(ValueError, match="needs data"):
        ar.apply_adaround(model, ar.AdaRoundConfig())


@pytest.mark.parametrize("field,value", [
    ("bits", 1), ("bits", 9), ("act_bits", 1), ("iterations", 0), ("reg_weight", -0.1), ("beta_end", 0.0),
    ("beta_start", 1.0), ("warmup", 1.0), ("lr", 0.0), ("calibration_size", 0), ("inputs", "noisy"),
    ("weight_scheme", "odd"), ("weight_observer", "max"), ("seed", -1),
])
def test_bad_configs_name_the_field(field, value):
    with pytest.raises(ValueError, match=rf"AdaRoundConfig\.{field}={value!r}"):
        ar.AdaRoundConfig(**{field: value})


def test_adaround_declares_its_knobs_in_notebook_03_beside_ptq(monkeypatch):
    from compresslab.techniques import registry

    spec = notebook_specs()["03_ptq_vs_qat"]
    assert {"observer", "qat_epochs", "adaround_bit_widths", "adaround_iterations"} <= set(spec)
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry.techniques()))
    clash = registry.Technique(name="other", apply=ar.apply_adaround, config=ar.AdaRoundConfig,
                               example=lambda: None, notebook="03_ptq_vs_qat",
                               params={"adaround_iterations": Param("int", 1, 5)})
    with pytest.raises(ValueError, match="adaround_iterations"):
        register(clash)


def test_the_figure_plots_the_given_accuracies_and_layer_errors():
    from compresslab.views.quantization import adaround_vs_rtn

    rows = [{"layer": "fc1", "recon loss RTN": 2.0, "recon loss AdaRound": 0.5},
            {"layer": "fc2", "recon loss RTN": 1.0, "recon loss AdaRound": 0.25}]
    fig = adaround_vs_rtn([4, 3, 2], [80.0, 70.0, 40.0], [81.0, 76.0, 60.0], 82.0, rows, 2)
    left, right = fig.axes
    assert [list(line.get_ydata()) for line in left.lines[:2]] == [[80.0, 70.0, 40.0], [81.0, 76.0, 60.0]]
    assert [p.get_height() for p in right.patches] == [2.0, 1.0, 0.5, 0.25]


def test_a_recipe_step_leaves_plain_layers_with_weights_on_the_int4_grid(tiny_data_module):
    from compresslab.combine import recipes

    model = tiny_mlp()
    config = ar.AdaRoundConfig(bits=4, act_bits=None, iterations=30, calibration_size=64)
    out, reports, _ = recipes.run_recipe(recipes.Recipe("adaround int4", (recipes.Step("adaround", config),), "int4"),
                                         model, tiny_data_module)
    assert not quant_layers(out) and isinstance(reports[0], ar.AdaRoundReport)
    for name in ("fc1", "fc2"):
        w0, w = getattr(model, name).weight.detach(), getattr(out, name).weight.detach()
        u = w / (w0.abs().amax(1, keepdim=True) / 7)  # the symmetric min-max grid of the float weight
        assert float((u - torch.round(u)).abs().max()) < 1e-4 and float(u.abs().max()) <= 7 + 1e-4
