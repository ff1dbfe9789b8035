"""AWQ: the alpha search against brute force over the same grid, alpha = 0 is RTN, folding keeps the
FP32 function, the clipping search against brute force and on a case worked by hand, the verb and its
recipe step."""

from __future__ import annotations

import copy

import pytest
import torch

from compresslab.core import gpt, textdata
from compresslab.techniques import awq, groupquant


def loud_channel_case(seed: int = 0):
    """Inputs whose channel 3 is 40x louder than the rest, and a weight whose column 3 is small."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(512, 32, generator=gen)
    x[:, 3] *= 40
    w = torch.randn(16, 32, generator=gen)
    w[:, 3] *= 0.05
    return x, w


def test_search_finds_the_brute_force_optimum_of_the_grid():
    x, w = loud_channel_case()
    grid = 11
    alpha, s, errors = awq.search_scales(x, w, bits=3, group_size=8, grid=grid)
    brute = []
    for k in range(grid):  # every alpha of the grid, written out: s, the scaled RTN, the error
        a = k / (grid - 1)
        mean = x.abs().mean(0).clamp_min(1e-4) ** a
        s_k = mean / (mean.max() * mean.min()).sqrt()
        w_hat = groupquant.rtn(w * s_k, 3, 8) / s_k
        ref = x.double() @ w.double().T
        brute.append(float((ref - x.double() @ w_hat.double().T).pow(2).sum() / ref.pow(2).sum()))
    best = min(range(grid), key=lambda k: brute[k])
    assert errors == pytest.approx(brute, rel=1e-9)
    assert alpha == pytest.approx(best / (grid - 1)) and torch.allclose(s, awq.activation_scales(x, alpha))
    # the loud channel makes the scaling pay: the optimum is not plain RTN
    assert alpha > 0 and min(errors) < errors[0]


def test_alpha_zero_is_plain_rtn():
    x, w = loud_channel_case(1)
    s = awq.activation_scales(x, 0.0)
    assert torch.equal(s, torch.ones(32))
    assert torch.equal(awq.awq_weight(w, s, 4, 16), groupquant.rtn(w, 4, 16))
    _, _, errors = awq.search_scales(x, w, 4, 16, grid=3)
    assert errors[0] == pytest.approx(groupquant.output_error(x, w, groupquant.rtn(w, 4, 16)), rel=1e-12)


def test_clip_weight_clamps_each_group_by_its_own_max():
    w = torch.tensor([[4.0, -1.0, 0.5, -2.0], [-3.0, 1.0, 6.0, 2.0]])
    ratio = torch.tensor([[0.5, 1.0], [0.25, 0.5]])
    # row 0: group 0 to [-2, 2], group 1 unchanged; row 1: group 0 (max 3) to [-0.75, 0.75], group 1 (max 6) to [-3, 3]
    assert torch.equal(awq.clip_weight(w, ratio, 2), torch.tensor([[2.0, -1.0, 0.5, -2.0], [-0.75, 0.75, 3.0, 2.0]]))
    assert torch.equal(awq.clip_weight(w, 1.0, 2), w)
    assert awq.clip_ratios(5, 0.6) == pytest.approx([1.0, 0.9, 0.8, 0.7, 0.6])


def test_clip_search_finds_the_brute_force_optimum_of_every_group():
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(300, 16, generator=gen) * torch.linspace(0.2, 3, 16)
    x[:, [2, 13]] *= 0.05  # two quiet inputs ...
    w = torch.randn(6, 16, generator=gen)
    w[1, 2], w[4, 13] = 5.0, -4.0  # ... that meet outlier weights, one in each group
    grid, g, bits = 9, 8, 3
    ratio, errors = awq.search_clip(x, w, bits, g, grid, 0.6)
    rs = [1 - 0.4 * k / (grid - 1) for k in range(grid)]
    for i in range(6):
        for k in range(2):
            cols = slice(k * g, (k + 1) * g)
            grp = w[i, cols]
            brute = []
            for r in rs:  # clamp the group to +-r max|w|, quantize it alone, its share of the output on x
                m = float(grp.abs().max()) * r
                w_hat = groupquant.rtn(grp.clamp(-m, m)[None, :], bits, g)[0]
                brute.append(float((x[:, cols].double() @ (grp - w_hat).double()).pow(2).sum()))
            assert errors[:, i, k].tolist() == pytest.approx(brute, rel=1e-9, abs=1e-12)
            best = min(range(grid), key=lambda j: (brute[j], j))
            assert float(ratio[i, k]) == pytest.approx(rs[best])
    # the outlier groups are clipped, and the whole layer's output error drops
    assert ratio[1, 0] < 1 and ratio[4, 1] < 1
    clipped = groupquant.rtn(awq.clip_weight(w, ratio, g), bits, g)
    assert groupquant.output_error(x, w, clipped) < groupquant.output_error(x, w, groupquant.rtn(w, bits, g))


def test_clipping_an_outlier_on_a_quiet_input_lowers_the_error_by_hand():
    """One group of 4 at 2 bits, w = [6, 1.2, 0.6, 0], whose outlier meets an input that is always 0.
    No clipping: grid [0, 6] (zero 0), step 2: 1.2 -> 2, 0.6 -> 0, 0 -> 0; errors 0.8, 0.6, 0 -> e = 1.0.
    Ratio 0.5: clamped to [3, 1.2, 0.6, 0], step 1: 3 -> 3, 1.2 -> 1, 0.6 -> 1, 0 -> 0; errors on the
    inputs that are not 0: 0.2, 0.4, 0 -> e = 0.2. The search can only do better than 0.2."""
    w = torch.tensor([[6.0, 1.2, 0.6, 0.0]])
    x = torch.tensor([[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    _, errors = awq.search_clip(x, w, 2, 4, grid=2, clip_min=0.5)  # ratios 1 and 0.5 only
    assert errors[:, 0, 0].tolist() == pytest.approx([1.0, 0.2], rel=1e-6)
    ratio, errors = awq.search_clip(x, w, 2, 4, grid=20, clip_min=0.5)
    chosen = float(errors[:, 0, 0].min())
    assert float(ratio) < 1 and chosen <= 0.2 + 1e-9 < 1.0
    w_hat = groupquant.rtn(awq.clip_weight(w, ratio, 4), 2, 4)
    assert groupquant.output_error(x, w, w_hat) < groupquant.output_error(x, w, groupquant.rtn(w, 2, 4))


def small_gpt():
    torch.manual_seed(0)
    return gpt.gpt(block_size=16, d_model=32, n_layer=2, n_head=2).eval()


def test_folding_keeps_the_fp32_function():
    model = small_gpt()
    x = torch.randint(0, 256, (3, 16))
    with torch.no_grad():
        ref = model(x)
    folded = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(3)
    where = {}
    for name, layer in gpt.block_linears(folded).items():
        where[name] = awq.fold_scales(folded, layer, torch.rand(layer.in_features, generator=gen) * 4 + 0.25)
    assert where["blocks.0.attn.qkv"] == where["blocks.1.mlp.fc"] == "layernorm"
    assert where["blocks.0.attn.proj"] == "value" and where["blocks.1.mlp.proj"] == "input"
    with torch.no_grad():
        out = folded(x)
    assert torch.allclose(out, ref, atol=1e-4, rtol=1e-4)
    assert not torch.equal(folded.blocks[0].mlp.fc.weight, model.blocks[0].mlp.fc.weight)
    # the unfoldable layer keeps its scales in the state dict, and a copy still computes the same
    assert any(k.endswith(awq.SCALE_BUFFER) for k in folded.state_dict())
    with torch.no_grad():
        assert torch.allclose(copy.deepcopy(folded)(x), ref, atol=1e-4, rtol=1e-4)


def test_bad_config_raises():
    with pytest.raises(ValueError, match="AWQConfig.bits=1"):
        awq.AWQConfig(bits=1)
    with pytest.raises(ValueError, match="AWQConfig.grid=1"):
        awq.AWQConfig(grid=1)
    with pytest.raises(ValueError, match="AWQConfig.layers"):
        awq.AWQConfig(layers=())
    with pytest.raises(TypeError, match="AWQConfig.clip=1"):
        awq.AWQConfig(clip=1)
    with pytest.raises(TypeError, match="AWQConfig.clip_qk"):
        awq.AWQConfig(clip_qk="no")
    with pytest.raises(ValueError, match="AWQConfig.clip_grid=1"):
        awq.AWQConfig(clip_grid=1)
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match=f"AWQConfig.clip_min={bad}"):
            awq.AWQConfig(clip_min=bad)
    with pytest.raises(ValueError, match="do not match in_features"):
        awq.search_clip(torch.randn(8, 3), torch.randn(2, 4), 4, 0)
    with pytest.raises(ValueError, match="AWQ.clip_min=0"):
        awq.search_clip(torch.randn(8, 4), torch.randn(2, 4), 4, 0, clip_min=0.0)
    with pytest.raises(ValueError, match="do not match"):
        awq.clip_weight(torch.randn(2, 4), torch.ones(3, 1), 0)
    with pytest.raises(ValueError, match="do not match in_features"):
        awq.search_scales(torch.randn(8, 3), torch.randn(2, 4), 4, 0)
    with pytest.raises(ValueError, match="non-finite"):
        awq.activation_scales(torch.tensor([[float("inf"), 1.0]]), 0.5)
    with pytest.raises(ValueError, match="AWQ.alpha=2"):
        awq.activation_scales(torch.ones(2, 2), 2.0)


def test_apply_awq():
    split = textdata.TextSplit(torch.randint(0, 256, (3000,), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)), 16)
    ds = textdata.TextDataset("t", split, split, None, (), {})
    model = small_gpt()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    out, rep = awq.apply_awq(model, awq.AWQConfig(bits=4, group_size=16, grid=5, calibration=8), ds)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert [r["folded_into"] for r in rep.layers[:4]] == ["layernorm", "value", "layernorm", "input"]
    for row in rep.layers:  # alpha = 0 (RTN) is on the grid, so the chosen error is never larger
        assert row["awq_error"] <= row["rtn_error"] and row["alpha"] in (0.0, 0.25, 0.5, 0.75, 1.0)
    assert 0 < rep.file_bytes < groupquant.file_bytes(model, {})
    assert rep.loss_bits_after == pytest.approx(gpt.bits_per_byte(out, ds.test), rel=1e-6)
    # every quantized group holds at most 2^4 values, on one evenly spaced grid
    for layer in gpt.block_linears(out).values():
        for grp in layer.weight.detach().reshape(-1, 16):
            v = grp.unique()
            steps = v.diff() / v.diff().min()
            assert len(v) <= 16 and torch.allclose(steps, steps.round(), atol=1e-3)
    assert any(row["clipped_groups"] > 0 for row in rep.layers)  # clipping is on by default
    for row in rep.layers:  # the clipped layer's error, measured on its own
        assert 0 <= row["clip_error"] and 0.5 <= row["mean_ratio"] <= 1
    # the query and key rows of qkv are not clipped unless clip_qk: block 0's qkv (the first layer, so its
    # inputs and scales do not depend on clipping) then keeps exactly the q and k rows of AWQ without clipping
    cfg = {"bits": 3, "group_size": 16, "grid": 5, "calibration": 8}
    plain = awq.apply_awq(model, awq.AWQConfig(clip=False, **cfg), ds)[0].blocks[0].attn.qkv.weight.detach()
    qk = awq.apply_awq(model, awq.AWQConfig(clip_qk=True, **cfg), ds)[0].blocks[0].attn.qkv.weight.detach()
    d = model.blocks[0].attn.qkv.in_features
    w = awq.apply_awq(model, awq.AWQConfig(**cfg), ds)[0].blocks[0].attn.qkv.weight.detach()
    assert torch.equal(w[:2 * d], plain[:2 * d]) and not torch.equal(w[2 * d:], plain[2 * d:])
    assert not torch.equal(qk[:2 * d], plain[:2 * d])
    with pytest.raises(ValueError, match="needs data"):
        awq.apply_awq(model, awq.AWQConfig())
    with pytest.raises(ValueError, match="group_size=24"):
        awq.apply_awq(model, awq.AWQConfig(group_size=24), ds)
