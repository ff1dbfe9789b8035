"""k-means weight sharing and centroid fine-tuning on hand-made tensors."""

import copy

import pytest
import torch
from torch import nn

from compresslab.techniques import sharing as S


def test_linear_and_density_init_hand_values():
    w = torch.tensor([-1.0, -0.5, 0.0, 2.0, 3.0])
    assert torch.allclose(S.init_centroids(w, 5, "linear"), torch.tensor([-1.0, 0.0, 1.0, 2.0, 3.0]))
    w = torch.arange(1, 101, dtype=torch.float32)  # quantiles at 1/4 and 3/4 of the CDF
    c = S.init_centroids(w, 2, "density")
    assert torch.allclose(c, torch.quantile(w, torch.tensor([0.25, 0.75])))
    r1, r2 = S.init_centroids(w, 4, "random", seed=3), S.init_centroids(w, 4, "random", seed=3)
    assert torch.equal(r1, r2) and all(float(v) in w.tolist() for v in r1)
    assert not torch.equal(r1, S.init_centroids(w, 4, "random", seed=4))


def test_assignment_is_nearest_centroid():
    c = torch.tensor([-1.0, 0.0, 2.0])
    w = torch.tensor([-3.0, -0.6, -0.4, 0.9, 1.1, 5.0, -0.5])
    idx = S.assign(w, c)
    brute = (w[:, None] - c[None, :]).abs().argmin(dim=1)  # argmin takes the first (lower) on ties
    assert torch.equal(idx, brute)
    assert idx.tolist() == [0, 0, 1, 1, 2, 2, 0]


def test_kmeans_hand_case():
    # two well-separated groups: one Lloyd step from linear init lands on the group means
    w = torch.tensor([1.0, 1.2, 1.4, 5.0, 5.5, 6.0])
    c, idx = S.kmeans_1d(w, 2, "linear", iters=10)
    assert torch.allclose(c, torch.tensor([1.2, 5.5]))
    assert idx.tolist() == [0, 0, 0, 1, 1, 1]


def test_kmeans_empty_cluster_keeps_centroid_and_sse_does_not_grow():
    w = torch.tensor([0.0, 0.1, 10.0])
    c, idx = S.kmeans_1d(w, 4, "linear", iters=5)  # init 0, 3.33, 6.67, 10: two centroids stay empty
    assert torch.allclose(c, torch.tensor([0.05, 10 / 3, 20 / 3, 10.0]))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2000, generator=gen)
    sse = []
    for iters in (0, 1, 3, 10):
        c, idx = S.kmeans_1d(x, 8, "random", iters=iters, seed=1)
        sse.append(float(((x - c[idx]) ** 2).sum()))
    assert all(a >= b - 1e-4 for a, b in zip(sse, sse[1:], strict=False))


def test_share_layer_keeps_zeros_and_uses_at_most_2b_values():
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(20, 30, generator=gen)
    w[w.abs() < 0.8] = 0
    codebook, indices, mask = S.share_layer(w, 3)
    assert torch.equal(mask, w != 0) and len(codebook) == 8
    shared = torch.where(mask, codebook[indices], torch.zeros(()))
    assert torch.equal(shared == 0, w == 0)
    assert torch.unique(shared[mask]).numel() <= 8


def test_centroid_gradient_is_sum_of_member_gradients():
    layer = nn.Linear(3, 2, bias=False)
    codebook = torch.tensor([-1.0, 0.5, 2.0])
    indices = torch.tensor([[0, 1, 2], [2, 1, 0]])
    mask = torch.tensor([[True, True, False], [True, True, True]])
    S.tie_weights(layer, codebook, indices, mask)
    expected_w = torch.tensor([[-1.0, 0.5, 0.0], [2.0, 0.5, -1.0]])
    assert torch.equal(layer.weight, expected_w)
    x = torch.tensor([[1.0, 2.0, 3.0], [0.5, -1.0, 4.0]])
    upstream = torch.tensor([[1.0, -2.0], [3.0, 0.5]])
    (layer(x) * upstream).sum().backward()
    grad_w = upstream.t() @ x  # dL/dW of a plain linear layer
    by_hand = torch.zeros(3)
    for i in range(2):
        for j in range(3):
            if mask[i, j]:
                by_hand[indices[i, j]] += grad_w[i, j]
    p = layer.parametrizations.weight[0]
    assert torch.allclose(p.codebook.grad, by_hand)
    assert not layer.parametrizations.weight.original.requires_grad
    # one SGD step moves each centroid by -lr * summed gradient; pruned weight stays zero
    with torch.no_grad():
        p.codebook -= 0.1 * p.codebook.grad
    assert layer.weight[0, 2] == 0
    assert torch.allclose(layer.weight[1, 2], torch.tensor(-1.0) - 0.1 * by_hand[0])
    assert torch.allclose(layer.weight[1, 0], torch.tensor(2.0) - 0.1 * by_hand[2])


def test_apply_sharing_without_data_and_untie():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 26 * 26, 10))
    with torch.no_grad():
        model[3].weight[model[3].weight.abs() < 0.01] = 0
    before = copy.deepcopy(model)
    shared, report = S.apply_sharing(model, S.ShareConfig(conv_bits=2, fc_bits=3, init="density"))
    assert torch.equal(model[3].weight, before[3].weight)  # the input model is untouched
    assert S.distinct_values(shared) == {"0": 4, "3": 8}
    assert torch.equal(shared[3].weight == 0, before[3].weight == 0)
    assert [r["bits"] for r in report.layers] == [2, 3]
    assert all(0 < r["relative error"] < 1 for r in report.layers)
    assert not any(hasattr(m, "parametrizations") for m in shared.modules())
    assert report.to_dict()["config"]["init"] == "density"


@pytest.mark.parametrize("kw, msg", [
    ({"fc_bits": 0}, "fc_bits"), ({"conv_bits": 17}, "conv_bits"), ({"init": "kmeans++"}, "init"),
    ({"iters": -1}, "iters"), ({"layer_bits": {"fc1": 2.5}}, "layer_bits"), ({"value_dtype": "int8"}, "value_dtype"),
])
def test_bad_share_configs(kw, msg):
    with pytest.raises((ValueError, TypeError), match=msg):
        S.ShareConfig(**kw)


def test_bad_arguments():
    with pytest.raises(ValueError, match="init"):
        S.init_centroids(torch.ones(3), 2, "bogus")
    with pytest.raises(ValueError, match="empty"):
        S.init_centroids(torch.ones(0), 2)
    model = nn.Sequential(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="unknown layers"):
        S.apply_sharing(model, S.ShareConfig(layer_bits={"fc9": 2}))
    with pytest.raises(ValueError, match="data=None"):
        from compresslab.core.training import TrainConfig

        S.apply_sharing(model, S.ShareConfig(finetune=TrainConfig(epochs=1)))


def test_float16_values_round_centroids_and_biases_to_the_nearest_float16():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4))
    full, full_report = S.apply_sharing(model, S.ShareConfig(fc_bits=3))
    half, half_report = S.apply_sharing(model, S.ShareConfig(fc_bits=3, value_dtype="float16"))
    for p32, p16 in zip(full.parameters(), half.parameters()):
        assert torch.equal(p16, p32.half().float())  # oracle: torch's own float32 -> float16 rounding
        # round to nearest: within half a float16 ulp (2^-11 relative for normal numbers)
        assert torch.all((p16 - p32).abs() <= p32.abs() * 2.0 ** -11 + 2.0 ** -25)
    for name in ("0", "2"):
        assert torch.equal(half_report.codebooks[name], full_report.codebooks[name].half().float())
    # the size estimate: 2 bytes instead of 4 for every centroid and bias of the shared layers
    values = sum(len(c) for c in full_report.codebooks.values()) + 8 + 4
    assert full_report.size_after.stored_bytes - half_report.size_after.stored_bytes == 2 * values
    with torch.no_grad():
        model[0].bias[0] = 1e6
    with pytest.raises(ValueError, match="float16 range"):
        S.apply_sharing(model, S.ShareConfig(fc_bits=3, value_dtype="float16"))


def test_share_only_some_layers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))
    shared, report = S.apply_sharing(model, S.ShareConfig(fc_bits=2, layers=("2",)))
    assert torch.equal(shared[0].weight, model[0].weight)
    assert S.distinct_values(shared)["2"] <= 4 and [r["layer"] for r in report.layers] == ["2"]
    with pytest.raises(TypeError, match="ShareConfig.layers"):
        S.ShareConfig(layers="fc1")
    with pytest.raises(ValueError, match="unknown layers"):
        S.apply_sharing(model, S.ShareConfig(layers=("fc9",)))


def test_centroid_fine_tuning_uses_the_given_loss_fn(tiny_data):
    from compresslab.core import models
    from compresslab.core.training import TrainConfig

    torch.manual_seed(0)
    model = models.create("lenet300")
    calls = []

    def zero_loss(logits, targets, inputs):  # no gradient: the centroids stay where k-means put them
        calls.append(len(targets))
        return 0.0 * logits.sum()

    finetune = TrainConfig(epochs=1, batch_size=64, lr=0.5)
    tuned, _ = S.apply_sharing(model, S.ShareConfig(fc_bits=3, finetune=finetune), tiny_data, loss_fn=zero_loss)
    kmeans_only, _ = S.apply_sharing(model, S.ShareConfig(fc_bits=3))
    assert sum(calls) == len(tiny_data.train)
    for (k, a), b in zip(tuned.state_dict().items(), kmeans_only.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
