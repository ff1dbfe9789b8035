"""Sensitivity analysis: every option against a torch oracle, Hutchinson's estimator against the exact
Hessian trace, the output KL against torch's kl_div, and the measured table against evaluate."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from compresslab.core import models, training
from compresslab.core.training import evaluate
from compresslab.techniques import sensitivity as S


def _tiny_net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(6, 3), nn.Tanh(), nn.Linear(3, 4))


def test_quant_options_are_torch_fake_quantize_per_channel():
    torch.manual_seed(0)
    layer = nn.Conv2d(3, 5, 3)
    w = layer.weight.detach()
    for option, bits in (("int8", 8), ("int4", 4), ("int3", 3), ("int2", 2)):
        qmax = 2 ** (bits - 1) - 1
        scale = w.abs().flatten(1).amax(1) / qmax
        oracle = torch.fake_quantize_per_channel_affine(w, scale, torch.zeros(5, dtype=torch.int32), 0, -qmax, qmax)
        assert torch.allclose(S.changed_weight(layer, option, clip="max"), oracle, atol=1e-6), option
        mse = S.changed_weight(layer, option)  # the default: each channel's scale minimises the squared error
        assert float(((mse - w) ** 2).sum()) <= float(((oracle - w) ** 2).sum()) + 1e-9


def test_sparsity_options_are_torch_prune_l1_unstructured():
    torch.manual_seed(1)
    for option, amount in (("sparse50", 0.5), ("sparse75", 0.75), ("sparse90", 0.9)):
        layer = nn.Linear(40, 30)
        got = S.changed_weight(layer, option)
        torch.nn.utils.prune.l1_unstructured(layer, "weight", amount=amount)
        assert torch.equal(got, layer.weight.detach()), option
        assert float((got == 0).float().mean()) == pytest.approx(amount, abs=1 / 1200)


def test_rank_options_are_the_truncated_svd_with_eckart_young_error():
    torch.manual_seed(2)
    layer = nn.Linear(60, 40)
    w = layer.weight.detach().double()
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    for option, share in (("rank1/2", 0.5), ("rank1/4", 0.25)):
        r = math.floor(share * 60 * 40 / 100)  # r (m + n) <= share m n
        got = S.changed_weight(layer, option).double()
        assert torch.allclose(got, (u[:, :r] * s[:r]) @ vh[:r], atol=1e-5)
        assert float(torch.linalg.matrix_norm(got - w)) == pytest.approx(float(s[r:].norm()), rel=1e-4)
    conv = nn.Conv2d(4, 6, 3)  # channel mode: the (N, C k k) matrix
    mat = conv.weight.detach().reshape(6, -1).double()
    u, s, vh = torch.linalg.svd(mat, full_matrices=False)
    r = max(1, math.floor(0.5 * 6 * 36 / 42))
    assert torch.allclose(S.changed_weight(conv, "rank1/2").double().reshape(6, -1), (u[:, :r] * s[:r]) @ vh[:r],
                          atol=1e-5)


def test_with_options_changes_only_the_named_layers_and_checks_names():
    model = models.create("lenet5")
    out = S.with_options(model, {"fc1": "int2"})
    assert torch.equal(out.conv1.weight, model.conv1.weight) and torch.equal(out.fc2.weight, model.fc2.weight)
    assert out.fc1.weight.unique(dim=None).numel() > 3 and not torch.equal(out.fc1.weight, model.fc1.weight)
    cached = S.option_weights(model, ("int2", "int8"))
    assert len(cached) == 4 * 2
    again = S.with_options(model, {"fc1": "int2", "conv1": "int8"}, weights=cached)
    assert torch.equal(again.fc1.weight, out.fc1.weight)
    assert torch.equal(again.conv1.weight, S.with_options(model, {"conv1": "int8"}).conv1.weight)
    with pytest.raises(ValueError, match="fc_1"):
        S.with_options(model, {"fc_1": "int8"})
    with pytest.raises(ValueError, match="int5"):
        S.with_options(model, {"fc1": "int5"})


def test_hutchinson_over_every_sign_vector_is_the_exact_trace():
    torch.manual_seed(3)
    net = _tiny_net()
    x, y = torch.randn(16, 1, 2, 3), torch.randint(0, 4, (16,))
    layer = net[1]
    w0 = layer.weight.detach().clone()

    def loss_of(w):
        h = torch.tanh(F.linear(x.flatten(1), w, layer.bias))
        return F.cross_entropy(net[3](h), y)

    exact = torch.autograd.functional.hessian(loss_of, w0).reshape(18, 18)
    w = w0.clone().requires_grad_(True)
    g = torch.autograd.grad(loss_of(w), w, create_graph=True)[0]
    signs = S.rademacher(50, 18, seed=1)
    small = exact[:6, :6]  # the mean over all 2^6 sign vectors of a 6 x 6 block is its trace, exactly
    full = torch.tensor([[1.0 if (i >> k) & 1 else -1.0 for k in range(6)] for i in range(64)])
    assert float(S.hutchinson(lambda v: small @ v, full).mean()) == pytest.approx(float(small.trace()), abs=1e-5)
    values = S.hutchinson(lambda v: torch.autograd.grad(g, w, v.reshape(w.shape), retain_graph=True)[0], signs)
    # each v^T H v = Tr(H) + sum_{i != j} v_i v_j H_ij: check it against the exact Hessian vector by vector
    oracle = torch.stack([v @ exact @ v for v in signs])
    assert torch.allclose(values, oracle, rtol=1e-4, atol=1e-6)


def test_layer_traces_estimate_the_exact_trace_within_their_standard_error():
    torch.manual_seed(4)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 10))
    x, y = torch.randn(64, 1, 3, 4), torch.randint(0, 10, (64,))
    traces = S.layer_traces(net, x, y, samples=400, seed=1)
    for index, name in ((1, "1"), (3, "3")):
        layer = net[index]

        def loss_of(w, index=index):
            parts = list(net)
            h = x.flatten(1)
            for i, part in enumerate(parts[1:], start=1):
                h = F.linear(h, w, part.bias) if i == index else part(h)
            return F.cross_entropy(h, y)

        exact = float(torch.autograd.functional.hessian(loss_of, layer.weight.detach()).reshape(
            layer.weight.numel(), -1).trace())
        est = traces[name]
        assert est["n"] == layer.weight.numel()
        assert abs(est["trace"] - exact) < 4 * est["stderr"] + 1e-6, (name, est, exact)
        assert est["trace_per_weight"] == pytest.approx(est["trace"] / est["n"])


def test_output_kl_is_torch_kl_div():
    torch.manual_seed(5)
    a, b = torch.randn(32, 10), torch.randn(32, 10)
    oracle = F.kl_div(F.log_softmax(b, 1), F.log_softmax(a, 1), reduction="batchmean", log_target=True)
    assert S.output_kl(a, b) == pytest.approx(float(oracle), rel=1e-5)
    assert S.output_kl(a, a) == pytest.approx(0.0, abs=1e-7)


def test_measure_rows_are_evaluate_of_the_changed_model(tiny_data):
    from compresslab.core.training import TrainConfig, train

    torch.manual_seed(6)
    model = models.create("mlp", hidden=(16,))
    train(model, tiny_data, TrainConfig(epochs=2, batch_size=32, lr=0.1))
    rows = S.measure(model, tiny_data.val, ("int8", "int2", "sparse90"))
    assert len(rows) == 2 * 3
    ref = evaluate(model, tiny_data.val)
    for row in rows:
        got = evaluate(S.with_options(model, {row["layer"]: row["option"]}), tiny_data.val)
        assert row["loss"] == pytest.approx(got.loss) and row["accuracy"] == got.accuracy
        assert row["d_loss"] == pytest.approx(got.loss - ref.loss)
        changed = training.split_logits(S.with_options(model, {row["layer"]: row["option"]}), tiny_data.val)
        assert row["kl"] == pytest.approx(S.output_kl(training.split_logits(model, tiny_data.val), changed), abs=1e-7)
    int8 = [r for r in rows if r["option"] == "int8"]
    assert all(abs(r["d_loss"]) < 0.05 for r in int8)  # 8 bits barely move a trained layer
    rows_p, traces = S.proxies(model, *tiny_data.train.tensors(64), ("int8", "int2"), samples=8)
    assert set(traces) == {"fc1", "fc2"} and len(rows_p) == 4
    for layer in ("fc1", "fc2"):
        by = {r["option"]: r for r in rows_p if r["layer"] == layer}
        assert by["int2"]["hawq"] > by["int8"]["hawq"] and by["int2"]["sqnr_db"] < by["int8"]["sqnr_db"]


def test_selection_split_never_uses_the_test_set(tiny_data):
    assert S.selection_split(tiny_data, 10) is tiny_data.val
    from dataclasses import replace

    no_val = replace(tiny_data, val=None)
    split = S.selection_split(no_val, 10)
    assert torch.equal(split.images, tiny_data.train.images[-10:])


@pytest.mark.parametrize("call, match", [
    (lambda: S.option_kind("int5"), "option='int5'"),
    (lambda: S.rademacher(0, 3), "samples"),
    (lambda: S.layer_traces(models.create("lenet300"), torch.randn(2, 1, 28, 28), torch.tensor([0, 1]), 1),
     "samples"),
    (lambda: S.measure(models.create("lenet300"), None, ("int8",), ("fc9",)), "fc9"),
])
def test_bad_inputs_raise_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
