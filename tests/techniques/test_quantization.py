"""Affine quantization from scratch, checked against torch's reference fake-quant ops and hand math."""

import copy
import math

import pytest
import torch
from torch import nn

from compresslab.core.training import TrainConfig
from compresslab.techniques import masks, quantops
from compresslab.techniques import quantization as Q
from compresslab.techniques.quantlayers import FakeQuantize, quant_layers
from compresslab.views import quantization


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------- qparams and the grid

def test_qrange():
    assert quantops.qrange(8, "symmetric") == (-127, 127)
    assert quantops.qrange(8, "asymmetric") == (0, 255)
    assert quantops.qrange(2, "symmetric") == (-1, 1)  # ternary
    assert quantops.qrange(4, "asymmetric") == (0, 15)


def test_choose_qparams_by_hand():
    # asymmetric 8 bits on [-1, 3]: s = 4/255, z = round(1 / s) = round(63.75) = 64
    s, z = quantops.choose_qparams(-1.0, 3.0, 8, "asymmetric")
    assert torch.isclose(s, torch.tensor(4 / 255))
    assert int(z) == 64
    # symmetric 4 bits on [-1, 3]: s = 3 / 7, z = 0
    s, z = quantops.choose_qparams(-1.0, 3.0, 4, "symmetric")
    assert torch.isclose(s, torch.tensor(3 / 7)) and int(z) == 0
    # a range that excludes zero is widened to include it: [2, 6] -> [0, 6], z = 0
    s, z = quantops.choose_qparams(2.0, 6.0, 8, "asymmetric")
    assert torch.isclose(s, torch.tensor(6 / 255)) and int(z) == 0
    # a degenerate range keeps a positive scale
    s, _ = quantops.choose_qparams(0.0, 0.0, 8, "asymmetric")
    assert float(s) > 0


def test_zero_is_exact_and_ends_are_on_grid():
    for scheme in quantops.SCHEMES:
        s, z = quantops.choose_qparams(-0.7, 2.3, 5, scheme)
        qmin, qmax = quantops.qrange(5, scheme)
        x = torch.tensor([0.0, -0.7, 2.3])
        x_hat = quantops.dequantize_affine(quantops.quantize_affine(x, s, z, qmin, qmax), s, z)
        assert x_hat[0] == 0.0
        assert torch.all((x - x_hat).abs() <= s / 2 + 1e-6)  # the ends are inside the range: error <= s/2


def test_per_channel_qparams():
    lo, hi = torch.tensor([-1.0, -2.0, 0.0]), torch.tensor([1.0, 0.5, 4.0])
    s, z = quantops.choose_qparams(lo, hi, 8, "symmetric")
    assert torch.allclose(s, torch.tensor([1.0, 2.0, 4.0]) / 127)
    assert torch.equal(z, torch.zeros(3, dtype=torch.int32))


# ----------------------------------------------------------------- bit-identical against torch

@pytest.mark.parametrize("bits,scheme", [(8, "asymmetric"), (8, "symmetric"), (4, "asymmetric"), (3, "symmetric"),
                                         (2, "symmetric"), (16, "asymmetric")])
def test_fake_quant_per_tensor_matches_torch(bits, scheme):
    x = torch.randn(4000, generator=_gen(bits)) * 2
    lo, hi = float(x.min()) * 0.8, float(x.max()) * 0.8  # some values are clipped
    s, z = quantops.choose_qparams(lo, hi, bits, scheme)
    x = torch.cat([x, (torch.arange(-40, 40) + 0.5) * s])  # exact ties for round-half-to-even
    qmin, qmax = quantops.qrange(bits, scheme)
    ref = torch.fake_quantize_per_tensor_affine(x, float(s), int(z), qmin, qmax)
    ours = quantops.dequantize_affine(quantops.quantize_affine(x, s, z, qmin, qmax), s, z)
    assert torch.equal(ours, ref)
    assert torch.equal(quantops.fake_quantize(x, s, z, qmin, qmax), ref)


@pytest.mark.parametrize("bits,scheme", [(8, "symmetric"), (4, "asymmetric"), (2, "symmetric")])
def test_fake_quant_per_channel_matches_torch(bits, scheme):
    w = torch.randn(6, 3, 5, 5, generator=_gen(1)) * torch.linspace(0.1, 3, 6).reshape(6, 1, 1, 1)
    obs = quantops.Observer(bits, scheme, axis=0)
    obs.update(w)
    s, z = obs.qparams()
    qmin, qmax = quantops.qrange(bits, scheme)
    ref = torch.fake_quantize_per_channel_affine(w, s, z, 0, qmin, qmax)
    assert torch.equal(quantops.fake_quantize(w, s, z, qmin, qmax, axis=0), ref)
    assert torch.equal(quantops.dequantize_affine(quantops.quantize_affine(w, s, z, qmin, qmax, 0), s, z, 0), ref)
    # along another axis (Linear weights quantized per input column, say)
    m = torch.randn(5, 7, generator=_gen(2))
    obs = quantops.Observer(bits, scheme, axis=1)
    obs.update(m)
    s, z = obs.qparams()
    assert torch.equal(quantops.fake_quantize(m, s, z, qmin, qmax, axis=1),
                       torch.fake_quantize_per_channel_affine(m, s, z, 1, qmin, qmax))


def test_quantize_affine_integers_in_range():
    x = torch.randn(1000, generator=_gen(3)) * 10
    q = quantops.quantize_affine(x, 0.05, 3, -8, 7)
    assert q.dtype == torch.int32 and int(q.min()) == -8 and int(q.max()) == 7


# ----------------------------------------------------------------- STE

def test_ste_gradient_identity_inside_zero_outside():
    s, z, qmin, qmax = torch.tensor(0.1), torch.tensor(0, dtype=torch.int32), -8, 7
    x = torch.linspace(-1.5, 1.5, 301, requires_grad=True)
    upstream = torch.randn(301, generator=_gen(4))
    quantops.fake_quantize(x, s, z, qmin, qmax).backward(upstream)
    inside = (torch.round(x.detach() / 0.1) >= qmin) & (torch.round(x.detach() / 0.1) <= qmax)
    assert inside.any() and (~inside).any()
    assert torch.equal(x.grad[inside], upstream[inside])
    assert torch.all(x.grad[~inside] == 0)
    # the same gradient as torch's fake quant
    x2 = x.detach().clone().requires_grad_(True)
    torch.fake_quantize_per_tensor_affine(x2, 0.1, 0, qmin, qmax).backward(upstream)
    assert torch.equal(x.grad, x2.grad)


# ----------------------------------------------------------------- observers

def test_minmax_observer_accumulates_batches():
    obs = quantops.Observer(8, "asymmetric")
    obs.update(torch.tensor([-1.0, 0.5]))
    obs.update(torch.tensor([3.0, 0.0]))
    lo, hi = obs.range()
    assert float(lo) == -1.0 and float(hi) == 3.0
    with pytest.raises(RuntimeError, match="no data"):
        quantops.Observer(8, "asymmetric").range()


def test_percentile_observer_nearest_rank():
    x = torch.arange(1, 1001, dtype=torch.float32)  # 1..1000
    obs = quantops.PercentileObserver(8, "asymmetric", percentile=99.0)
    obs.update(x[torch.randperm(1000, generator=_gen(5))])
    lo, hi = obs.range()
    assert float(hi) == 990.0 and float(lo) == 11.0  # rank ceil(0.99 n): ten values clipped on each side
    sym = quantops.PercentileObserver(8, "symmetric", percentile=99.0)
    sym.update(torch.cat([-x, x]))  # |x| has each value twice: rank ceil(0.99 * 2000) = 1980 -> 990
    lo, hi = sym.range()
    assert float(hi) == 990.0 and float(lo) == -990.0
    full = quantops.PercentileObserver(8, "asymmetric", percentile=100)
    full.update(x)
    assert float(full.range()[1]) == 1000.0


def test_percentile_observer_per_channel():
    w = torch.stack([torch.arange(100.0), 10 * torch.arange(100.0)])
    obs = quantops.PercentileObserver(8, "symmetric", axis=0, percentile=50)
    obs.update(w)
    lo, hi = obs.range()
    assert torch.equal(hi, torch.tensor([49.0, 490.0]))


def test_mse_observer_clips_an_outlier_and_beats_minmax():
    # clipping the outlier to ~1 costs (8 - 1)^2 / 5001 ~ 0.01 of MSE; keeping it costs ~ (8/7)^2 / 12 ~ 0.1
    x = torch.cat([torch.rand(5000, generator=_gen(6)) * 2 - 1, torch.tensor([8.0])])
    mse = quantops.MSEObserver(4, "symmetric", grid=200)
    mse.update(x)
    minmax = quantops.Observer(4, "symmetric")
    minmax.update(x)
    qmin, qmax = quantops.qrange(4, "symmetric")

    def err(obs):
        s, z = obs.qparams()
        return float(((x - quantops.fake_quantize(x, s, z, qmin, qmax)) ** 2).mean())

    assert float(mse.range()[1]) < 2  # the outlier is clipped
    assert err(mse) <= err(minmax)  # t = 1 (min-max) is among the candidates


def test_mse_observer_per_channel_never_worse_than_minmax():
    w = torch.randn(8, 64, generator=_gen(7))
    w[3, 5] = 12.0
    mse, mm = quantops.MSEObserver(3, "symmetric", axis=0, grid=50), quantops.Observer(3, "symmetric", axis=0)
    mse.update(w)
    mm.update(w)
    qmin, qmax = quantops.qrange(3, "symmetric")

    def err(obs):
        s, z = obs.qparams()
        return ((w - quantops.fake_quantize(w, s, z, qmin, qmax, axis=0)) ** 2).mean(1)

    assert torch.all(err(mse) <= err(mm) + 1e-7)


def test_observer_subsampling_keeps_the_cap():
    obs = quantops.PercentileObserver(8, "asymmetric", percentile=99)
    for i in range(3):
        obs.update(torch.rand(quantops.MAX_SAMPLES, generator=_gen(10 + i)))
    assert obs.samples.shape[1] == quantops.MAX_SAMPLES and obs.seen == 3 * quantops.MAX_SAMPLES
    assert abs(float(obs.range()[1]) - 0.99) < 0.01  # uniform [0, 1): the 99th percentile is 0.99


def test_per_channel_beats_per_tensor_on_uneven_channels():
    w = torch.randn(16, 50, generator=_gen(8)) * torch.logspace(-2, 0, 16).reshape(16, 1)
    pt = quantops.quantize_tensor(w, 4, "symmetric", "per_tensor")
    pc = quantops.quantize_tensor(w, 4, "symmetric", "per_channel")
    assert pc.sqnr_db > pt.sqnr_db
    assert len(pt.grid()) == 15 and pt.grid()[7] == 0


def test_sqnr():
    x = torch.ones(10)
    assert math.isinf(quantops.sqnr_db(x, x))
    assert quantops.sqnr_db(x, x * 1.1) == pytest.approx(20.0)  # noise 0.01 per element -> 10 log10(100)


# ----------------------------------------------------------------- configs

@pytest.mark.parametrize("kwargs,field", [
    ({"weight_bits": 1}, "weight_bits"), ({"weight_bits": 17}, "weight_bits"), ({"act_bits": 0}, "act_bits"),
    ({"weight_bits": 4.0}, "weight_bits"), ({"weight_observer": "kl"}, "weight_observer"),
    ({"act_observer": "max"}, "act_observer"), ({"weight_granularity": "per_row"}, "weight_granularity"),
    ({"act_granularity": "per_channel"}, "act_granularity"), ({"weight_scheme": "affine"}, "weight_scheme"),
    ({"percentile": 0}, "percentile"), ({"percentile": 100.5}, "percentile"), ({"mse_grid": 1}, "mse_grid"),
    ({"calibration_size": 0}, "calibration_size"),
])
def test_bad_quant_config(kwargs, field):
    with pytest.raises((ValueError, TypeError), match=field):
        Q.QuantConfig(**kwargs)


def test_bad_qat_config():
    with pytest.raises(ValueError, match="act_momentum"):
        Q.QATConfig(act_momentum=1.5)
    with pytest.raises(TypeError, match="QATConfig.finetune"):
        Q.QATConfig(finetune={"epochs": 1})
    Q.QuantConfig(act_bits=None, percentile=100)  # valid edge values


# ----------------------------------------------------------------- model level

def _mlp():
    from compresslab.core.models import mlp

    torch.manual_seed(0)
    return mlp((32,))


def _lenet():
    from compresslab.core.models import create

    torch.manual_seed(0)
    return create("lenet5")


def test_insert_fake_quant_keeps_names_and_parameters():
    model = _lenet()
    q = Q.insert_fake_quant(copy.deepcopy(model), Q.QuantConfig())
    assert list(quant_layers(q)) == ["conv1", "conv2", "fc1", "fc2"]
    assert isinstance(q.conv1, nn.Conv2d) and isinstance(q.fc1, nn.Linear)
    assert torch.equal(q.conv1.weight, model.conv1.weight)
    assert sum(p.numel() for p in q.parameters()) == sum(p.numel() for p in model.parameters())
    with pytest.raises(RuntimeError, match="calibrate"):
        q(torch.zeros(1, 1, 28, 28))


def test_ptq_8bit_close_to_float_and_report(tiny_data):
    model = _lenet()
    x = tiny_data.test.tensors(64)[0]
    q, report = Q.apply_ptq(model, Q.QuantConfig(calibration_size=128), tiny_data)
    assert report.method == "ptq" and report.calibration_size == 128
    assert [r["layer"] for r in report.layers] == ["conv1", "conv2", "fc1", "fc2"]
    assert all(r["weight SQNR dB"] > 35 for r in report.layers)  # ~6 dB per bit
    with torch.no_grad():
        ref, out = model(x), q(x)
    assert quantops.sqnr_db(ref, out) > 20
    # the size ledger: 8 bits per weight + per-channel scales, float biases
    assert report.ledger["dense_bytes"] == report.size_after.fp32_bytes == 4 * sum(p.numel() for p in model.parameters())
    assert report.size_after.stored_bytes == report.ledger["encoded_bytes"]
    assert 3.5 < report.compression < 4.0
    assert report.to_dict()["config"]["weight_bits"] == 8
    assert "conv1" in report._repr_html_()
    # the original model is untouched
    assert not quant_layers(model)


def test_ptq_sqnr_falls_with_bits(tiny_data):
    model = _lenet()
    sq = {}
    for b in (8, 4, 2):
        _, r = Q.apply_ptq(model, Q.QuantConfig(weight_bits=b, act_bits=b, calibration_size=64), tiny_data)
        sq[b] = r.layers[0]["weight SQNR dB"]
        assert r.layers[0]["weight bits"] == b
    assert sq[8] > sq[4] > sq[2]
    assert sq[8] - sq[4] == pytest.approx(6.02 * 4, abs=4)  # ~6 dB per bit for a well-spread layer


def test_ptq_with_tensor_and_weight_only():
    model = _mlp()
    x = torch.randn(100, 1, 28, 28, generator=_gen(11))
    q, report = Q.apply_ptq(model, Q.QuantConfig(act_bits=None, weight_bits=4), calibration=x)
    assert report.accuracy_after is None and isinstance(q.fc1.input_fake_quant, nn.Identity)
    with pytest.raises(ValueError, match="calibration"):
        Q.apply_ptq(model, Q.QuantConfig(), calibration=[1, 2, 3])
    with pytest.raises(ValueError, match="Dataset"):
        Q.apply_ptq(model, Q.QuantConfig(), x)
    with pytest.raises(ValueError, match="loss_fn"):
        Q.apply_ptq(model, Q.QuantConfig(), calibration=x, loss_fn=lambda *a: 0)


def test_qat_trains_through_fake_quant(tiny_data):
    model = _mlp()
    cfg = Q.QATConfig(quant=Q.QuantConfig(weight_bits=2, act_bits=2, calibration_size=100),
                      finetune=TrainConfig(epochs=2, lr=0.05, batch_size=50))
    w_before = model.fc1.weight.detach().clone()
    q, report = Q.apply_qat(model, cfg, tiny_data, progress=False)
    assert report.method == "qat" and report.history["steps"]
    assert not torch.equal(q.fc1.weight.detach(), w_before)  # STE let gradients reach the float weights
    assert torch.equal(model.fc1.weight.detach(), w_before)  # the input model is untouched
    assert report.accuracy_after >= report.accuracy_ptq
    # after QAT the weight range is frozen at the final weights: min-max of the weight itself
    fq = q.fc1.weight_fake_quant
    assert not fq.dynamic
    assert torch.allclose(fq.hi, q.fc1.weight.detach().amax(1))


def test_pruned_layer_must_be_permanent():

    model = masks.prune_magnitude(_mlp(), 0.5)
    with pytest.raises(ValueError, match="make_permanent"):
        Q.apply_ptq(model, Q.QuantConfig(), calibration=torch.randn(10, 1, 28, 28))


def test_error_split_adds_up_and_bounds_rounding():
    x = torch.randn(10000, generator=_gen(12))
    for hi in (0.5, 2.0, 5.0):
        rounding, clipping = quantops.error_split(x, -hi, hi, 4, "symmetric")
        s, z = quantops.choose_qparams(-hi, hi, 4, "symmetric")
        total = float(((x - quantops.fake_quantize(x, s, z, -7, 7)) ** 2).mean())
        assert rounding + clipping == pytest.approx(total, rel=1e-5)
        assert rounding <= float(s) ** 2 / 4  # each inside value is off by at most s/2
    assert quantops.error_split(x, -10.0, 10.0, 4, "symmetric")[1] == 0.0  # nothing beyond 10 sigma


def test_widget_render_and_plots(tiny_data):
    import matplotlib

    matplotlib.use("Agg")

    model = _mlp()
    calib = tiny_data.train.tensors(64)[0]
    view = quantization.render_quantization(model, tiny_data.test, calib, "fc1", 3, 4, "per_channel", "mse")
    assert view.figure is not None
    _, report = Q.apply_ptq(model, Q.QuantConfig(weight_bits=3, act_bits=4, weight_observer="mse",
                                                  act_observer="mse", calibration_size=64), calibration=calib)
    assert view.metrics["fc1 weight SQNR dB"] == report.layers[0]["weight SQNR dB"]
    assert 0 <= view.metrics["test accuracy %"] <= 100
    with pytest.raises(ValueError, match="layer"):
        quantization.render_quantization(model, tiny_data.test, calib, "conv9", 3, 4, "per_channel", "mse")
    x = torch.tensor([-1.2, -0.3, 0.0, 0.45, 2.5])
    qt = quantops.quantize_tensor(x, 3, "asymmetric")
    figs = [quantization.number_line(x.tolist(), qt.values.tolist(), qt.grid().tolist(), list(range(qt.qmin, qt.qmax + 1))),
            quantization.clipping_tradeoff([1, 2, 3], [0.1, 0.2, 0.3], [0.3, 0.1, 0.0], {"min-max": 3}),
            quantization.channel_ranges({"fc1": model.fc1.weight.abs().amax(1).tolist()}),
            quantization.activation_ranges({"fc1": calib}, {"fc1": {"minmax": 1.0}}),
            quantization.sqnr_vs_bits([{"layer": "fc1", "bits": b, "weight SQNR dB": 6.0 * b} for b in (2, 4, 8)])]
    assert all(f.axes for f in figs)


def test_dynamic_range_keeps_the_calibrated_clipping_ratio():
    w = torch.randn(4, 200, generator=_gen(13))
    fq = FakeQuantize(4, "symmetric", "percentile", axis=0, percentile=99.0)
    fq.observer.update(w)
    fq.set_range_from_observer()
    hi = fq.hi.clone()
    assert torch.all(hi < w.abs().amax(1))  # the 99th percentile of |w| clips below max |w|
    fq.dynamic = True
    out = fq(3 * w)  # the weights grew: the range grows with them, same clipping ratio
    assert torch.allclose(fq.hi, 3 * hi)
    s, z = fq.qparams()
    assert torch.equal(out, torch.fake_quantize_per_channel_affine(3 * w, s, z, 0, -7, 7))
