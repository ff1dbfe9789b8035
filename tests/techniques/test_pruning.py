"""Pruning against torch.nn.utils.prune, the cubic schedule, structured shrinking, sparse kernels."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.nn.utils import prune

from compresslab.core import metrics, models
from compresslab.core.training import TrainConfig, seed_everything
from compresslab.techniques import masks, pruning, structured
from compresslab.techniques.pruning import PruneConfig


def _model(name="lenet300", seed=0):
    seed_everything(seed)
    return models.create(name)


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.9, 0.999])
def test_magnitude_mask_matches_torch_l1_unstructured(sparsity):
    w = torch.randn(37, 23, generator=torch.Generator().manual_seed(1))
    layer = torch.nn.Linear(23, 37)
    with torch.no_grad():
        layer.weight.copy_(w)
    prune.l1_unstructured(layer, "weight", amount=sparsity)
    mask = masks.magnitude_mask(w, sparsity)
    assert torch.equal(mask, layer.weight_mask)
    assert int((mask == 0).sum()) == round(sparsity * w.numel())


def test_hand_case():
    w = torch.tensor([[0.5, -0.1, 2.0], [-3.0, 0.05, 0.2]])
    assert masks.magnitude_mask(w, 0.5).tolist() == [[1.0, 0.0, 1.0], [1.0, 0.0, 0.0]]


def test_global_masks_match_torch_global_unstructured():
    model = _model()
    ours = masks.masks_for(model, 0.8, scope="global")
    ref = copy.deepcopy(model)
    params = [(ref.fc1, "weight"), (ref.fc2, "weight"), (ref.fc3, "weight")]
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=0.8)
    for name in ("fc1", "fc2", "fc3"):
        assert torch.equal(ours[name], getattr(ref, name).weight_mask), name
    total = sum(m.numel() for m in ours.values())
    assert sum(int((m == 0).sum()) for m in ours.values()) == round(0.8 * total)


def test_layer_scope_gives_exact_per_layer_sparsity_and_masks_nest():
    model = _model()
    masks.prune_magnitude(model, 0.5, "layer")
    first = masks.current_masks(model)
    masks.prune_magnitude(model, 0.8, "layer")
    second = masks.current_masks(model)
    for name, layer in models.prunable_layers(model).items():
        w = metrics.effective_weight(layer)
        assert int((w == 0).sum()) == round(0.8 * w.numel())
        assert torch.all(second[name] <= first[name])  # a pruned weight never comes back


def test_masks_survive_training_and_permanent_removes_them(tiny_data):
    from compresslab.core.training import train

    model = masks.prune_magnitude(_model(), 0.9, "global")
    train(model, tiny_data, TrainConfig(epochs=1, batch_size=32, lr=0.05), progress=False)
    assert metrics.weight_sparsity(model) == pytest.approx(0.9, abs=1e-4)
    masks.make_permanent(model)
    assert not hasattr(model.fc1, "weight_mask")
    assert metrics.weight_sparsity(model) == pytest.approx(0.9, abs=1e-4)


def test_cubic_schedule_formula():
    s_i, s_f, t0, n, dt = 0.1, 0.9, 100, 10, 5
    for t in (100, 110, 125, 149, 150):
        expected = s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt)) ** 3
        assert masks.cubic_sparsity(t, s_i, s_f, t0, n, dt) == pytest.approx(expected)
    assert masks.cubic_sparsity(0, s_i, s_f, t0, n, dt) == pytest.approx(s_i)
    assert masks.cubic_sparsity(10_000, s_i, s_f, t0, n, dt) == pytest.approx(s_f)
    with pytest.raises(ValueError, match="interval"):
        masks.cubic_sparsity(0, 0.0, 0.5, 0, 10, 0)


@pytest.mark.parametrize("name", ["lenet300", "lenet5", "small_cnn"])
def test_structured_shrink_equals_masked_model(name):
    model = _model(name)
    keep = structured.structured_keep(model, 0.6, norm=2)
    small = structured.shrink(model, keep)
    masked = structured.apply_structured_masks(copy.deepcopy(model), keep)
    x = torch.randn(5, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(small(x), masked(x), rtol=1e-5, atol=1e-5)
    assert sum(p.numel() for p in small.parameters()) < 0.5 * sum(p.numel() for p in model.parameters())
    # the kept units are those with the largest norms
    first = list(models.prunable_layers(model))[0]
    rows = model.get_submodule(first).weight.detach().flatten(1).norm(dim=1)
    assert rows[keep[first]].min() >= rows[[i for i in range(len(rows)) if i not in keep[first].tolist()]].max()


def test_csr_model_matches_dense():
    model = masks.prune_magnitude(_model(), 0.95, "global")
    sparse = structured.to_sparse(model)
    x = torch.randn(7, 1, 28, 28)
    torch.testing.assert_close(sparse(x), model(x), rtol=1e-4, atol=1e-5)
    assert sparse.fc1.weight_csr.values().numel() == int((metrics.effective_weight(model.fc1) != 0).sum())


@pytest.mark.parametrize("schedule, iterations", [("one_shot", 1), ("iterative", 3), ("gradual", 1)])
def test_apply_pruning_reaches_target_and_fine_tunes(tiny_data, schedule, iterations):
    base = _model()
    cfg = PruneConfig(sparsity=0.8, scope="global", schedule=schedule, iterations=iterations,
                      finetune=TrainConfig(epochs=1, batch_size=32, lr=0.02))
    pruned, report = pruning.apply_pruning(base, cfg, tiny_data)
    assert report.sparsity == pytest.approx(0.8, abs=1e-3)
    assert metrics.weight_sparsity(base) == 0.0  # the input model is untouched
    assert not hasattr(pruned.fc1, "weight_mask")  # permanent by default
    assert report.params_before == 266_610 and report.params_after < 0.3 * 266_610
    assert report.accuracy_after is not None and len(report.rounds) == (iterations if schedule != "gradual" else 1)
    assert "sparsity" in report.to_dict() and 0 <= report.accuracy_after <= 100


def test_apply_structured_pruning_shrinks(tiny_data):
    pruned, report = pruning.apply_pruning(_model(), PruneConfig(sparsity=0.5, structured=True, iterations=2), tiny_data)
    assert pruned.fc1.out_features == 150 and pruned.fc2.out_features == 50
    assert report.params_after == sum(p.numel() for p in pruned.parameters())


def test_sensitivity_scan_rows(tiny_data):
    from compresslab.core.data import Split
    from compresslab.core.training import evaluate

    model = _model()
    rows = pruning.sensitivity_scan(model, tiny_data, [0.0, 0.9], limit=64)
    assert len(rows) == 6 and {r["layer"] for r in rows} == {"fc1", "fc2", "fc3"}
    test = tiny_data.test
    dense = evaluate(model, Split(test.images[:64], test.labels[:64], test.mean, test.std)).accuracy
    assert all(r["accuracy"] == dense for r in rows if r["sparsity"] == 0.0)  # percent, like every report


@pytest.mark.parametrize("kwargs, field", [
    ({"sparsity": -0.1}, "sparsity"), ({"sparsity": 1.0}, "sparsity"), ({"scope": "model"}, "scope"),
    ({"schedule": "cyclic"}, "schedule"), ({"norm": 3}, "norm"), ({"iterations": 0}, "iterations"),
    ({"schedule": "gradual"}, "finetune"), ({"layer_sparsity": {"fc1": 0.5}}, "layer_sparsity"),
    ({"scope": "layer", "layer_sparsity": {"fc1": 1.5}}, "fc1"),
])
def test_bad_prune_configs(kwargs, field):
    with pytest.raises((ValueError, TypeError), match=field):
        PruneConfig(**kwargs)


def test_bad_inputs():
    with pytest.raises(ValueError, match="sparsity"):
        masks.magnitude_mask(torch.ones(3), 1.2)
    with pytest.raises(ValueError, match="fc9"):
        masks.masks_for(_model(), {"fc9": 0.5}, "layer")
    with pytest.raises(ValueError, match="data"):
        pruning.apply_pruning(_model(), PruneConfig(finetune=TrainConfig(epochs=1)))


def test_apply_pruning_fine_tunes_with_the_given_loss_fn(tiny_data):
    calls = []

    def zero_loss(logits, targets, inputs):  # no gradient: fine-tuning must leave the weights alone
        calls.append(len(targets))
        return 0.0 * logits.sum()

    finetune = TrainConfig(epochs=1, batch_size=32, lr=0.5)
    cfg = PruneConfig(sparsity=0.5, scope="layer", schedule="iterative", iterations=2, finetune=finetune)
    tuned, _ = pruning.apply_pruning(_model(), cfg, tiny_data, loss_fn=zero_loss)
    untuned, _ = pruning.apply_pruning(_model(), PruneConfig(sparsity=0.5, scope="layer", schedule="iterative",
                                                             iterations=2), tiny_data)
    assert len(calls) == 2 * finetune.total_steps(len(tiny_data.train)) and sum(calls) == 2 * len(tiny_data.train)
    for (k, a), b in zip(tuned.state_dict().items(), untuned.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
