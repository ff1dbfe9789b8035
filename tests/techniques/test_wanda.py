"""Wanda and 2:4: scores by hand, exactly 2 of every 4, brute force on a small matrix, the verb."""

from __future__ import annotations

import itertools

import pytest
import torch

from compresslab.core import gpt, textdata
from compresslab.techniques import wanda


def test_scores_and_row_mask_by_hand():
    w = torch.tensor([[1.0, -2.0, 0.5, 4.0], [3.0, 0.1, -1.0, 0.2]])
    x = torch.tensor([[1.0, 0.0, 6.0, 0.1], [0.0, 1.0, 8.0, 0.0]])
    norms = wanda.input_norms(x)
    assert torch.allclose(norms, torch.tensor([1.0, 1.0, 10.0, 0.1]))
    s = wanda.wanda_scores(w, norms)
    assert torch.allclose(s, torch.tensor([[1.0, 2.0, 5.0, 0.4], [3.0, 0.1, 10.0, 0.02]]))
    mask = wanda.row_mask(s, 0.5)
    assert mask.tolist() == [[0, 1, 1, 0], [1, 0, 1, 0]]
    assert (mask.sum(1) == 2).all()  # every output keeps the same number of inputs


def test_two_four_pattern_is_exact_and_optimal_by_brute_force():
    gen = torch.Generator().manual_seed(0)
    scores = torch.rand(2, 8, generator=gen)
    mask = wanda.nm_mask(scores, 2, 4)
    assert torch.all(mask.reshape(2, 2, 4).sum(2) == 2)  # exactly 2 of every 4
    choices = list(itertools.combinations(range(4), 2))
    best = 0.0
    for picks in itertools.product(choices, repeat=4):  # every 2:4 mask of the 2 x 8 matrix
        m = torch.zeros(2, 8)
        for g, pick in enumerate(picks):
            r, c = divmod(g, 2)
            for p in pick:
                m[r, 4 * c + p] = 1
        best = max(best, float((m * scores).sum()))
    assert float((mask * scores).sum()) == pytest.approx(best)


def test_brute_force_row_mask():
    gen = torch.Generator().manual_seed(1)
    scores = torch.rand(3, 6, generator=gen)
    mask = wanda.row_mask(scores, 0.5)
    for r in range(3):
        best = max(sum(float(scores[r, j]) for j in keep) for keep in itertools.combinations(range(6), 3))
        assert float((mask[r] * scores[r]).sum()) == pytest.approx(best)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="multiple of m=4"):
        wanda.nm_mask(torch.rand(2, 6))
    with pytest.raises(ValueError, match="WandaConfig.criterion='snip'"):
        wanda.WandaConfig(criterion="snip")
    with pytest.raises(ValueError, match="WandaConfig.sparsity=1"):
        wanda.WandaConfig(sparsity=1)
    with pytest.raises(ValueError, match="do not match"):
        wanda.wanda_scores(torch.rand(2, 3), torch.rand(4))


def test_activation_aware_pruning_keeps_outputs_closer():
    """One layer with an input channel 30x louder: Wanda keeps the output closer than magnitude."""
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(400, 32, generator=gen)
    x[:, :4] *= 30
    w = torch.randn(16, 32, generator=gen)
    ref = x @ w.T
    by_mag = w * wanda.row_mask(w.abs(), 0.5)
    by_act = w * wanda.row_mask(wanda.wanda_scores(w, wanda.input_norms(x)), 0.5)
    assert float((x @ by_act.T - ref).norm()) < float((x @ by_mag.T - ref).norm())


@pytest.mark.parametrize("criterion,pattern", [("wanda", "unstructured"), ("magnitude", "unstructured"), ("wanda", "2:4")])
def test_apply_wanda(criterion, pattern):
    torch.manual_seed(0)
    split = textdata.TextSplit(torch.randint(0, 256, (3000,), dtype=torch.uint8), 16)
    ds = textdata.TextDataset("t", split, split, None, (), {})
    model = gpt.gpt(block_size=16, d_model=32, n_layer=1, n_head=2)
    out, rep = wanda.apply_wanda(model, wanda.WandaConfig(0.5, criterion, pattern, calibration=8), ds)
    assert rep.sparsity == pytest.approx(0.5)
    for name, layer in gpt.block_linears(out).items():
        assert not hasattr(layer, "weight_mask")  # made permanent
        zeros = (layer.weight == 0).float()
        if pattern == "2:4":
            assert torch.all(zeros.reshape(layer.weight.shape[0], -1, 4).sum(2) == 2), name
        assert float(zeros.mean()) == pytest.approx(0.5)
    assert (rep.nm_bytes is not None) == (pattern == "2:4")
    assert rep.size_after.nonzeros < rep.size_before.nonzeros
