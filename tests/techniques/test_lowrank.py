"""Low-rank factorization: Eckart-Young oracle, output equivalence, rank selection, validation."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from compresslab.core import latency, metrics, models
from compresslab.core import latency as latency_harness
from compresslab.core.training import TrainConfig
from compresslab.techniques import lowrank, svd
from compresslab.techniques.lowrank import LowRankConfig, apply_lowrank, factorize_layer
from compresslab.techniques.svd import svd_factorize
from compresslab.views import lowrank as lowrank_views


@pytest.fixture(autouse=True)
def _one_thread():
    """LAPACK's SVD is far faster on one thread on a small, busy CPU (the module does the same)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _randn(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _reference_truncation(w: torch.Tensor, rank: int) -> torch.Tensor:
    """U_r diag(s_r) V_r^T from a full SVD, computed independently of the module."""
    u, s, vh = torch.linalg.svd(w, full_matrices=True)
    return u[:, :rank] @ torch.diag(s[:rank]) @ vh[:rank]


# ----------------------------------------------------------------- primitives

@pytest.mark.parametrize("shape", [(7, 5), (5, 9), (12, 12)])
def test_eckart_young_error_equals_discarded_singular_values(shape):
    w = _randn(*shape, seed=1)
    s = torch.linalg.svdvals(w)
    for r in range(1, min(shape) + 1):
        a, b = svd_factorize(w, r)
        assert a.shape == (shape[0], r) and b.shape == (r, shape[1])
        err = torch.linalg.norm(w - a @ b)
        assert float(err) == pytest.approx(math.sqrt(float((s[r:] ** 2).sum())), abs=1e-10)
        assert svd.eckart_young_error(s, r) == pytest.approx(float(err), abs=1e-10)
        torch.testing.assert_close(a @ b, _reference_truncation(w, r))


def test_truncation_beats_other_rank_r_approximations():
    w = _randn(10, 8, seed=2)
    a, b = svd_factorize(w, 3)
    best = torch.linalg.norm(w - a @ b)
    for seed in range(5):  # projecting onto random 3-dim column spaces is never better
        q, _ = torch.linalg.qr(_randn(10, 3, seed=100 + seed))
        assert torch.linalg.norm(w - q @ (q.T @ w)) >= best - 1e-12


def test_factors_have_balanced_scale():
    w = _randn(6, 4, seed=3)
    a, b = svd_factorize(w, 2)
    torch.testing.assert_close(a.norm(dim=0), b.norm(dim=1))  # each holds sqrt(sigma_i)


def test_energy_rank_selection_hand_case():
    s = torch.tensor([3.0, 2.0, 1.0])  # energies 9/14, 13/14, 14/14
    torch.testing.assert_close(svd.energy_curve(s), torch.tensor([9 / 14, 13 / 14, 1.0], dtype=torch.float64))
    assert svd.rank_for_energy(s, 0.5) == 1
    assert svd.rank_for_energy(s, 9 / 14) == 1
    assert svd.rank_for_energy(s, 0.9) == 2
    assert svd.rank_for_energy(s, 0.93) == 3
    assert svd.rank_for_energy(s, 1.0) == 3


def test_energy_rank_is_smallest_rank_reaching_energy():
    s = torch.linalg.svdvals(_randn(30, 20, seed=4))
    for e in (0.1, 0.5, 0.8, 0.95, 0.999):
        r = svd.rank_for_energy(s, e)
        kept = float((s[:r] ** 2).sum() / (s ** 2).sum())
        assert kept >= e - 1e-12
        if r > 1:
            assert float((s[:r - 1] ** 2).sum() / (s ** 2).sum()) < e


def test_break_even_and_ratio_rank():
    assert svd.break_even_rank(4, 4) == 2.0
    m, n = 1200, 784
    even = svd.break_even_rank(m, n)
    r = math.floor(even)  # the largest rank that still saves
    assert r * (m + n) < m * n <= (r + 1) * (m + n)
    for ratio in (0.01, 0.2, 0.5):
        k = svd.rank_for_ratio(m, n, ratio)
        assert k * (m + n) <= ratio * m * n < (k + 1) * (m + n)
    assert svd.rank_for_ratio(10, 10, 0.001) == 1  # never below rank 1


# ----------------------------------------------------------------- layers

def test_factorized_linear_equals_truncated_weight():
    torch.manual_seed(0)
    layer = nn.Linear(20, 16).double()
    x = _randn(7, 20, seed=5)
    for r in (1, 4, 16):
        fac = factorize_layer(layer, r)
        assert list(dict(fac.named_children())) == ["reduce", "expand"]
        assert fac.reduce.bias is None and fac.expand.bias is not None
        ref = F.linear(x, _reference_truncation(layer.weight.detach(), r), layer.bias)
        torch.testing.assert_close(fac(x), ref)
        torch.testing.assert_close(lowrank.reconstructed_weight(fac), _reference_truncation(layer.weight.detach(), r))
    torch.testing.assert_close(factorize_layer(layer, 16)(x), layer(x))  # full rank reproduces the layer


@pytest.mark.parametrize("stride,padding,dilation", [(1, 0, 1), (2, 1, 1), ((1, 2), (2, 1), (2, 1))])
def test_factorized_conv_channel_equals_truncated_kernel(stride, padding, dilation):
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 8, (3, 5), stride=stride, padding=padding, dilation=dilation).double()
    x = _randn(2, 3, 13, 14, seed=6)
    w = conv.weight.detach()
    for r in (2, 8):
        fac = factorize_layer(conv, r, "channel")
        assert fac.reduce.kernel_size == (3, 5) and fac.expand.kernel_size == (1, 1)
        w_r = _reference_truncation(w.reshape(8, -1), r).reshape(w.shape)
        ref = F.conv2d(x, w_r, conv.bias, conv.stride, conv.padding, conv.dilation)
        torch.testing.assert_close(fac(x), ref)
        torch.testing.assert_close(lowrank.reconstructed_weight(fac), w_r)
    torch.testing.assert_close(factorize_layer(conv, 8, "channel")(x), conv(x))


@pytest.mark.parametrize("stride,padding,dilation", [(1, 0, 1), (2, 1, 1), ((2, 1), (1, 2), (1, 2))])
def test_factorized_conv_spatial_equals_truncated_kernel(stride, padding, dilation):
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, (3, 5), stride=stride, padding=padding, dilation=dilation).double()
    x = _randn(2, 4, 15, 16, seed=7)
    w = conv.weight.detach()  # (N, C, kh, kw) -> (C kh) x (N kw)
    mat = w.permute(1, 2, 0, 3).reshape(4 * 3, 6 * 5)
    for r in (1, 5, 12):
        fac = factorize_layer(conv, r, "spatial")
        assert fac.vertical.kernel_size == (3, 1) and fac.horizontal.kernel_size == (1, 5)
        w_r = _reference_truncation(mat, r).reshape(4, 3, 6, 5).permute(2, 0, 1, 3)
        ref = F.conv2d(x, w_r, conv.bias, conv.stride, conv.padding, conv.dilation)
        torch.testing.assert_close(fac(x), ref)
        torch.testing.assert_close(lowrank.reconstructed_weight(fac), w_r)
    torch.testing.assert_close(factorize_layer(conv, 12, "spatial")(x), conv(x))


def test_factorized_params_count():
    conv = nn.Conv2d(20, 50, 5)
    assert lowrank.factorized_params(conv, 10, "channel") == 10 * (50 + 20 * 25)
    assert lowrank.factorized_params(conv, 10, "spatial") == 10 * (20 * 5 + 50 * 5)
    fac = factorize_layer(conv, 10, "spatial")
    assert sum(p.numel() for p in fac.parameters()) == 10 * (20 * 5 + 50 * 5) + 50


# ----------------------------------------------------------------- model level

def _mlp(seed=0):
    torch.manual_seed(seed)
    return models.mlp((40, 30), in_features=784)


def test_apply_full_rank_reproduces_model_outputs():
    model = _mlp()
    x = _randn(5, 1, 28, 28, seed=8, dtype=torch.float32)
    config = LowRankConfig(rank={"fc1": 40, "fc2": 30, "fc3": 10}, skip_unprofitable=False)
    new, report = apply_lowrank(model, config)
    torch.testing.assert_close(new(x), model(x), atol=1e-5, rtol=1e-4)
    assert isinstance(new, nn.Sequential) and isinstance(new.fc1, nn.Sequential)
    assert list(models.prunable_layers(new))[:2] == ["fc1.reduce", "fc1.expand"]
    assert not any(row["saves"] for row in report.layers)  # full rank never saves parameters
    assert report.params_after == metrics.size_report(new).params > report.params_before


def test_apply_lowrank_report_and_copy():
    model = _mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    new, report = apply_lowrank(model, LowRankConfig(rank=5))
    for k, v in model.state_dict().items():  # the input model is untouched
        torch.testing.assert_close(v, before[k])
    rows = {row["layer"]: row for row in report.layers}
    assert rows["fc1"]["factorized"] and rows["fc2"]["factorized"]
    assert rows["fc3"]["saves"] and rows["fc3"]["factorized"]  # 10x30: break-even 7.5 > 5
    for name, layer in models.prunable_layers(model).items():
        s = torch.linalg.svdvals(layer.weight.detach().double())
        row = rows[name]
        m, n = layer.weight.shape
        assert row["break_even"] == pytest.approx(m * n / (m + n), abs=0.05)
        if row["factorized"]:
            expected = math.sqrt(float((s[5:] ** 2).sum() / (s ** 2).sum()))
            assert row["rel_error"] == pytest.approx(expected, rel=1e-4)
            assert row["eckart_young"] == pytest.approx(expected, rel=1e-6)
    assert report.params_after == metrics.size_report(new).params
    dense = sum(r["params_before"] for r in report.layers)
    assert report.factorized_params_before == dense
    assert report.reduction == pytest.approx(1 - report.factorized_params_after / dense)
    assert set(report.to_dict()) >= {"size_before", "size_after", "factorized_params_after", "layers"}
    assert "truncation" in report._repr_html_()


def test_skip_unprofitable_keeps_layer_dense():
    model = _mlp()
    new, report = apply_lowrank(model, LowRankConfig(rank={"fc3": 9}))
    row = report.layers[0]
    assert row["rank"] == 9 and row["break_even"] == pytest.approx(7.5) and not row["saves"]
    assert not row["factorized"] and isinstance(new.fc3, nn.Linear)
    assert report.params_after == report.params_before


def test_layer_scope_energy_and_ratio():
    model = _mlp()
    new, report = apply_lowrank(model, LowRankConfig(energy=0.9, layers=("fc1", "fc2")))
    for row in report.layers:
        s = torch.linalg.svdvals(models.prunable_layers(model)[row["layer"]].weight.detach())
        assert row["rank"] == svd.rank_for_energy(s, 0.9)
        assert row["energy"] >= 0.9
    _, report = apply_lowrank(model, LowRankConfig(param_ratio=0.3, layers=("fc1",)))
    row = report.layers[0]
    assert row["rank"] * (784 + 40) <= 0.3 * 784 * 40 < (row["rank"] + 1) * (784 + 40)


def test_model_scope_ratio_respects_budget_and_energy_target():
    model = _mlp()
    config = LowRankConfig(param_ratio=0.25, scope="model", layers=("fc1", "fc2"))
    ranks = lowrank.select_ranks(model, config)
    layers = models.prunable_layers(model)
    spent = sum(r * sum(layers[n].weight.shape) for n, r in ranks.items())
    dense = sum(layers[n].weight.numel() for n in ranks)
    assert spent <= 0.25 * dense
    assert all(r >= 1 for r in ranks.values())
    # one more rank in any layer not yet at full rank would exceed the budget (greedy spends what it can)
    assert all(spent + sum(layers[n].weight.shape) > 0.25 * dense
               for n, r in ranks.items() if r < min(layers[n].weight.shape))
    config = LowRankConfig(energy=0.8, scope="model", layers=("fc1", "fc2"))
    ranks = lowrank.select_ranks(model, config)
    kept = [float(svd.energy_curve(torch.linalg.svdvals(layers[n].weight.detach()))[r - 1])
            for n, r in ranks.items()]
    assert sum(kept) / len(kept) >= 0.8 - 1e-9


def test_conv_model_spatial_and_channel():
    torch.manual_seed(0)
    model = models.lenet5()
    x = _randn(2, 1, 28, 28, seed=9, dtype=torch.float32)
    for mode in ("channel", "spatial"):
        new, report = apply_lowrank(model, LowRankConfig(rank=10, layers=("conv2",), conv_mode=mode))
        assert report.layers[0]["factorized"]
        w_r = lowrank.reconstructed_weight(new.conv2)
        ref = copy.deepcopy(model)
        with torch.no_grad():
            ref.conv2.weight.copy_(w_r)
        torch.testing.assert_close(new(x), ref(x), atol=1e-5, rtol=1e-4)


def test_precomputed_svds_give_identical_models_and_are_checked():
    model = _mlp()
    svds = lowrank.decompose(model)
    config = LowRankConfig(energy=0.7, layers=("fc1", "fc2"))
    a, rep_a = apply_lowrank(model, config)
    b, rep_b = apply_lowrank(model, config, svds=svds)
    assert [r["rank"] for r in rep_a.layers] == [r["rank"] for r in rep_b.layers]
    for k, v in a.state_dict().items():
        torch.testing.assert_close(v, b.state_dict()[k])
    other = lowrank.decompose(_mlp(seed=1))
    with pytest.raises(ValueError, match="does not reconstruct this weight"):
        apply_lowrank(model, config, svds=other)
    with pytest.raises(ValueError, match="not \\(40, 784\\)"):
        apply_lowrank(model, config, svds={"fc1": svds["fc2"]})


def test_finetune_trains_factors_through_the_loop(tiny_data):
    model = _mlp()
    data = tiny_data
    config = LowRankConfig(rank=4, layers=("fc1", "fc2"),
                           finetune=TrainConfig(epochs=10, batch_size=64, lr=0.05, seed=0))
    new, report = apply_lowrank(model, config, data=data, progress=False)
    truncated, _ = apply_lowrank(model, LowRankConfig(rank=4, layers=("fc1", "fc2")))
    assert not torch.equal(new.fc1.reduce.weight, truncated.fc1.reduce.weight)
    assert report.accuracy_before is not None and report.accuracy_truncated is not None
    assert report.accuracy_after is not None and report.accuracy_after > 50


# ----------------------------------------------------------------- validation

@pytest.mark.parametrize("kwargs,match", [
    ({}, "exactly one of rank, energy, param_ratio"),
    ({"rank": 4, "energy": 0.9}, "exactly one"),
    ({"rank": 0}, r"rank=0 must be an integer >= 1"),
    ({"rank": 2.5}, "rank=2.5"),
    ({"rank": {"fc1": -1}}, r"rank\['fc1'\]=-1"),
    ({"energy": 0.0}, r"energy=0.0 must be in \(0, 1\]"),
    ({"energy": 1.5}, r"energy=1.5 must be in \(0, 1\]"),
    ({"param_ratio": 0}, r"param_ratio=0 must be in \(0, 1\]"),
    ({"energy": 0.9, "scope": "net"}, "scope='net' must be one of"),
    ({"rank": 3, "scope": "model"}, "use scope='layer'"),
    ({"energy": 0.9, "conv_mode": "depthwise"}, "conv_mode='depthwise' must be one of"),
    ({"energy": 0.9, "layers": "fc1"}, "layers='fc1' must be a tuple of layer names"),
    ({"energy": 0.9, "finetune": {"epochs": 1}}, "finetune=.* must be a TrainConfig"),
])
def test_bad_configs_raise(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        LowRankConfig(**kwargs)


def test_bad_ranks_and_inputs_raise():
    w = _randn(6, 4)
    with pytest.raises(ValueError, match=r"rank=5 must be in \[1, 4\]"):
        svd_factorize(w, 5)
    with pytest.raises(ValueError, match=r"rank=0 must be in \[1, 4\]"):
        svd_factorize(w, 0)
    with pytest.raises(ValueError, match="2-D matrix"):
        svd_factorize(_randn(2, 3, 4), 1)
    with pytest.raises(ValueError, match=r"must be in \(0, 1\]"):
        svd.rank_for_energy(torch.ones(3), 0.0)
    model = _mlp()
    with pytest.raises(ValueError, match=r"rank for layer 'fc3' \(\(10, 30\)\)=11 must be in \[1, 10\]"):
        apply_lowrank(model, LowRankConfig(rank={"fc3": 11}))
    with pytest.raises(ValueError, match="unknown layers"):
        apply_lowrank(model, LowRankConfig(rank=2, layers=("fc9",)))
    with pytest.raises(ValueError, match="unknown layers"):
        apply_lowrank(model, LowRankConfig(rank={"conv1": 2}))
    with pytest.raises(ValueError, match="no entry for layer 'fc2'"):
        apply_lowrank(model, LowRankConfig(rank={"fc1": 2}, layers=("fc1", "fc2")))
    with pytest.raises(ValueError, match="data=None"):
        apply_lowrank(model, LowRankConfig(rank=2, finetune=TrainConfig(epochs=1)))
    with pytest.raises(ValueError, match="groups must be 1"):
        factorize_layer(nn.Conv2d(4, 4, 3, groups=2), 2)
    with pytest.raises(ValueError, match="only nn.Linear and nn.Conv2d"):
        factorize_layer(nn.Conv1d(4, 4, 3), 2)


def test_factorizable_layers_skip_classifier_and_tiny_layers():
    assert lowrank.factorizable_layers(models.create("mlp1200")) == ("fc1", "fc2")
    assert lowrank.factorizable_layers(models.lenet5()) == ("conv2", "fc1")  # conv1: 20x25, break-even 11
    assert lowrank.factorizable_layers(models.lenet5(), min_break_even=1) == ("conv1", "conv2", "fc1")


def test_render_lowrank_matches_apply(tiny_data):
    from compresslab.core.training import evaluate

    model = _mlp()
    svds = lowrank.decompose(model, layers=("fc1", "fc2"))
    view = lowrank_views.render_lowrank(model, tiny_data.test, svds, fc1=3, fc2=30)
    new, report = apply_lowrank(model, LowRankConfig(rank={"fc1": 3, "fc2": 30}, layers=("fc1", "fc2"),
                                                     skip_unprofitable=False))
    assert view.figure is not None
    assert view.metrics["test accuracy %"] == round(evaluate(new, tiny_data.test).accuracy, 2)
    assert view.metrics["fc1 relative error"] == round(report.layers[0]["rel_error"], 4)
    assert "no saving" in view.metrics["fc2 params"]  # 30 >= break-even 30*40/70
    with pytest.raises(ValueError, match=r"must be in \[1, 30\]"):
        lowrank_views.render_lowrank(model, tiny_data.test, svds, fc1=3, fc2=31)


def test_latency_rounds_interleaves_and_takes_median_of_rounds(monkeypatch):
    calls = []
    fake = {"a": [3.0, 1.0, 2.0], "b": [10.0, 30.0, 20.0]}  # round medians per label

    def fake_latency(fn, label="", batch_sizes=(1,), **kwargs):
        calls.append(label)
        value = fake[label][sum(1 for c in calls if c == label) - 1]
        return [latency.Latency(label, b, value, value - 0.5, value + 0.5, 7, 1) for b in batch_sizes]

    monkeypatch.setattr(latency_harness, "latency", fake_latency)
    rows = latency.latency_rounds({"a": None, "b": None}, rounds=3, batch_sizes=(1, 256))
    assert calls == ["a", "b", "b", "a", "a", "b"]  # the order rotates every round
    got = {(r.label, r.batch_size): r for r in rows}
    assert set(got) == {("a", 1), ("a", 256), ("b", 1), ("b", 256)}
    assert got[("a", 1)].median_ms == 2.0 and got[("b", 256)].median_ms == 20.0
    assert got[("a", 1)].p10_ms == 1.5 and got[("b", 1)].p90_ms == 20.5 and got[("a", 1)].repeats == 21
    with pytest.raises(ValueError, match="rounds=0 must be >= 1"):
        latency.latency_rounds({"a": None}, rounds=0)
