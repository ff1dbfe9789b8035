"""SparseGPT: the update against least squares solved by brute force, exact sparsity and 2:4, output
error against magnitude pruning, the verb."""

from __future__ import annotations

import itertools

import pytest
import torch

from compresslab.core import gpt, textdata
from compresslab.techniques import groupquant, sparsegpt, wanda
from compresslab.techniques.masks import magnitude_mask


def correlated(n: int, d: int, seed: int) -> torch.Tensor:
    """n rows of d correlated inputs (Z A, A random): a Hessian far from diagonal."""
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(n, d, generator=gen) @ torch.randn(d, d, generator=gen)).double()


def out_err(x, w, w_hat) -> float:
    """||X W^T - X W_hat^T||_F^2."""
    return float((x @ w.double().T - x @ w_hat.double().T).pow(2).sum())


def least_squares(h: torch.Tensor, w_ref: torch.Tensor, w: torch.Tensor, free: list[int]) -> torch.Tensor:
    """One row: the values of the `free` columns minimising (w_ref - w)^T H (w_ref - w) with the
    other columns held at w, by solving the normal equations H_FF w_F = H_F: w_ref - H_FR w_R."""
    if not free:
        return w.clone()
    rest = [j for j in range(len(w)) if j not in free]
    rhs = h[free] @ w_ref - h[free][:, rest] @ w[rest]
    out = w.clone()
    out[free] = torch.linalg.solve(h[free][:, free], rhs)
    return out


def sequential_oracle(w: torch.Tensor, h: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """SparseGPT's update with a fixed mask, written as least squares: for every row, at each column i
    in order the weight is kept or zeroed and the columns after i are re-solved exactly."""
    out = w.double().clone()
    for r in range(w.shape[0]):
        row = out[r]
        for i in range(w.shape[1]):
            if not keep[r, i]:
                row[i] = 0.0
                row = least_squares(h, w[r].double(), row, list(range(i + 1, w.shape[1])))
        out[r] = row
    return out


@pytest.mark.parametrize("seed", range(4))
def test_fixed_mask_update_is_least_squares_by_brute_force(seed):
    """2 rows x 4 inputs, every 2:4 mask and many 50% masks: the update equals the oracle."""
    x = correlated(64, 4, seed)
    h = groupquant.hessian(x)
    w = torch.randn(2, 4, generator=torch.Generator().manual_seed(10 + seed), dtype=torch.float64)
    pairs = [torch.tensor([1.0 if j in keep else 0.0 for j in range(4)]) for keep in itertools.combinations(range(4), 2)]
    for a, b in itertools.product(pairs, repeat=2):
        keep = torch.stack([a, b])
        new, mask = sparsegpt.sparsegpt(w, h, mask=keep, damp=0.0)
        assert torch.equal(mask, keep) and torch.all(new[keep == 0] == 0)
        assert torch.allclose(new, sequential_oracle(w, h, keep), atol=1e-9)
        # the global optimum for this mask (every kept weight free) bounds it from below: a kept weight
        # left of a pruned one is not moved again (a greedy order, which the saliency-chosen mask suits)
        best = torch.stack([least_squares(h, w[r], w[r] * keep[r], [j for j in range(4) if keep[r, j]]) for r in range(2)])
        assert out_err(x, w, best) <= out_err(x, w, new) + 1e-9
        # and when every row's pruned inputs come before its kept ones, SparseGPT *is* that optimum
        if all(keep[r].tolist() in ([0, 0, 1, 1],) for r in range(2)):
            assert torch.allclose(new, best, atol=1e-9)


def test_blocks_change_nothing_for_a_fixed_mask():
    """Lazy updates between blocks are exact: block sizes 1, 3, 8 and 128 give the same weights."""
    x = correlated(200, 12, 5)
    w = torch.randn(6, 12, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    keep = magnitude_mask(torch.rand(6, 12, generator=torch.Generator().manual_seed(2)), 0.5)
    ref, _ = sparsegpt.sparsegpt(w, groupquant.hessian(x), mask=keep, block_size=128, damp=0.0)
    for bs in (1, 3, 8):
        new, _ = sparsegpt.sparsegpt(w, groupquant.hessian(x), mask=keep, block_size=bs, damp=0.0)
        assert torch.allclose(new, ref, atol=1e-9)
    assert torch.allclose(ref, sequential_oracle(w, groupquant.hessian(x), keep), atol=1e-8)


@pytest.mark.parametrize("sparsity", [0.25, 0.5, 0.75])
def test_exact_sparsity_and_two_of_every_four(sparsity):
    x = correlated(300, 64, 3)
    w = torch.randn(16, 64, generator=torch.Generator().manual_seed(4))
    new, keep = sparsegpt.sparsegpt(w, groupquant.hessian(x), sparsity, block_size=32)
    assert int((keep == 0).sum()) == int(sparsity * w.numel()) and torch.equal(new == 0, keep == 0)
    new24, keep24 = sparsegpt.sparsegpt(w, groupquant.hessian(x), pattern="2:4", block_size=32)
    assert torch.all(keep24.reshape(16, 16, 4).sum(2) == 2) and torch.equal(new24 == 0, keep24 == 0)
    assert new.dtype == w.dtype


@pytest.mark.parametrize("seed", range(6))
def test_output_error_at_most_magnitude_pruning(seed):
    """On random layers with correlated inputs, SparseGPT (default 1% damping) has an output error <=
    magnitude pruning's (same pattern, no update), and <= Wanda's."""
    x = correlated(256, 32, 100 + seed)
    w = torch.randn(24, 32, generator=torch.Generator().manual_seed(200 + seed))
    h = groupquant.hessian(x)
    norms = wanda.input_norms(x)
    for pattern in ("unstructured", "2:4"):
        new, _ = sparsegpt.sparsegpt(w, h, 0.5, pattern, block_size=16)
        mag = wanda.nm_mask(w.abs(), 2, 4) if pattern == "2:4" else magnitude_mask(w, 0.5)
        act = wanda.nm_mask(wanda.wanda_scores(w, norms), 2, 4) if pattern == "2:4" else wanda.row_mask(
            wanda.wanda_scores(w, norms), 0.5)
        assert out_err(x, w, new) <= out_err(x, w, w * mag), pattern
        assert out_err(x, w, new) <= out_err(x, w, w * act), pattern


def test_diagonal_hessian_is_saliency_pruning_without_update_and_dead_inputs():
    w = torch.tensor([[0.3, -0.8, 0.1, 0.55], [1.0, 0.2, -0.3, 0.05]])
    h = torch.diag(torch.tensor([1.0, 2.0, 3.0, 0.0]))  # input 3 is always 0
    new, keep = sparsegpt.sparsegpt(w, h, 0.5, damp=0.0)
    # U = diag(1, 1/sqrt 2, 1/sqrt 3, 1) (the dead input's diagonal set to 1): saliency w^2 h_jj
    expected_scores = torch.tensor([[0.09, 1.28, 0.03, 0.3025], [1.0, 0.08, 0.27, 0.0025]])
    u_diag = torch.tensor([1.0, 2.0, 3.0, 1.0]).rsqrt()
    w_live = w.clone()
    w_live[:, 3] = 0.0
    assert torch.allclose(sparsegpt.saliency(w_live, u_diag), expected_scores * torch.tensor([1, 1, 1, 0.0]), atol=1e-6)
    assert torch.equal(new[:, 3], torch.zeros(2))  # the dead input's weights are 0
    assert torch.equal(new[keep == 1], w_live[keep == 1])  # diagonal H: nothing moves


def test_bad_inputs_raise():
    w, h = torch.randn(2, 6), torch.eye(6)
    with pytest.raises(ValueError, match="multiples of 4"):
        sparsegpt.sparsegpt(w, h, pattern="2:4")
    with pytest.raises(ValueError, match="hessian shape"):
        sparsegpt.sparsegpt(w, torch.eye(5))
    with pytest.raises(ValueError, match="mask shape"):
        sparsegpt.sparsegpt(w, h, mask=torch.ones(3, 6))
    with pytest.raises(ValueError, match="weight has 1 non-finite"):
        sparsegpt.sparsegpt(torch.tensor([[float("nan"), 1.0]]), torch.eye(2))
    with pytest.raises(ValueError, match="SparseGPTConfig.sparsity=1.5"):
        sparsegpt.SparseGPTConfig(sparsity=1.5)
    with pytest.raises(ValueError, match="SparseGPTConfig.pattern"):
        sparsegpt.SparseGPTConfig(pattern="3:4")
    with pytest.raises(ValueError, match="SparseGPTConfig.block_size=6"):
        sparsegpt.SparseGPTConfig(pattern="2:4", block_size=6)
    with pytest.raises(ValueError, match="SparseGPTConfig.layers"):
        sparsegpt.SparseGPTConfig(layers=[])


@pytest.mark.parametrize("pattern", ["unstructured", "2:4"])
def test_apply_sparsegpt(pattern):
    torch.manual_seed(0)
    split = textdata.TextSplit(torch.randint(0, 256, (3000,), dtype=torch.uint8), 16)
    ds = textdata.TextDataset("t", split, split, None, (), {})
    model = gpt.gpt(block_size=16, d_model=32, n_layer=1, n_head=2)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    out, rep = sparsegpt.apply_sparsegpt(model, sparsegpt.SparseGPTConfig(0.5, pattern, calibration=8), ds)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())  # the input is untouched
    assert rep.sparsity == pytest.approx(0.5) and (rep.nm_bytes is not None) == (pattern == "2:4")
    for name, layer in gpt.block_linears(out).items():
        assert not hasattr(layer, "weight_mask")
        zeros = (layer.weight == 0).float()
        assert float(zeros.mean()) == pytest.approx(0.5), name
        if pattern == "2:4":
            assert torch.all(zeros.reshape(layer.weight.shape[0], -1, 4).sum(2) == 2), name
    for row in rep.layers:  # the calibration inputs' output error, SparseGPT vs magnitude (same pattern)
        assert row["output_error"] <= row["magnitude_error"], row
    assert rep.loss_bits_after is not None and rep.size_after.nonzeros < rep.size_before.nonzeros
    with pytest.raises(ValueError, match="needs data"):
        sparsegpt.apply_sparsegpt(model, sparsegpt.SparseGPTConfig())
    with pytest.raises(ValueError, match="loss_fn"):
        sparsegpt.apply_sparsegpt(model, sparsegpt.SparseGPTConfig(), ds, loss_fn=lambda *a: 0)
