"""Group-wise RTN and GPTQ: a hand-computed round trip, GPTQ == RTN on a diagonal Hessian, GPTQ's
output error <= RTN's on correlated random inputs, packing round trips, the model-level verb."""

from __future__ import annotations

import pytest
import torch

from compresslab.core import gpt, textdata
from compresslab.techniques import groupquant as gq


def test_group_round_trip_by_hand():
    w = torch.randn(6, 16, generator=torch.Generator().manual_seed(0))
    q = gq.quantize_groups(w, bits=4, group_size=8)
    for r in range(6):
        for g in range(2):
            grp = w[r, 8 * g:8 * g + 8]
            lo, hi = min(float(grp.min()), 0.0), max(float(grp.max()), 0.0)
            s = float(torch.tensor((hi - lo) / 15).half())
            z = min(max(-round(lo / s), 0), 15)
            codes = [min(max(round(float(v) / s) + z, 0), 15) for v in grp]
            assert q.q[r, 8 * g:8 * g + 8].tolist() == codes
            assert q.scale[r, g] == pytest.approx(s) and int(q.zero[r, g]) == z
            assert torch.allclose(q.dequantize()[r, 8 * g:8 * g + 8], s * (torch.tensor(codes) - z).float())
    err = (q.dequantize() - w).abs()
    assert float(err.max()) <= float(q.scale.max()) / 2 + 1e-6  # within half a step (0 is on the grid)
    # group_size 0: one group per row
    assert gq.quantize_groups(w, 8, 0).scale.shape == (6, 1)


def test_smaller_groups_and_more_bits_give_smaller_errors():
    w = torch.randn(32, 128, generator=torch.Generator().manual_seed(1))
    err = {(b, g): float((gq.rtn(w, b, g) - w).pow(2).mean()) for b in (4, 8) for g in (0, 128, 32, 8)}
    assert err[(4, 8)] < err[(4, 32)] < err[(4, 0)] and err[(8, 32)] < err[(4, 32)] / 100
    assert err[(4, 0)] == err[(4, 128)]


@pytest.mark.parametrize("bits,group", [(4, 4), (3, 8), (2, 0)])
def test_gptq_equals_rtn_for_a_diagonal_hessian_or_a_single_column(bits, group):
    gen = torch.Generator().manual_seed(bits)
    w = torch.randn(5, 8, generator=gen)
    h = torch.diag(torch.rand(8, generator=gen) + 0.1)
    assert torch.equal(gq.gptq(w, h, bits, group).q, gq.quantize_groups(w, bits, group).q)
    col = torch.randn(7, 1, generator=gen)
    assert torch.equal(gq.gptq(col, torch.ones(1, 1), bits, 0).q, gq.quantize_groups(col, bits, 0).q)


def test_one_gptq_column_update_by_hand():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(200, 4, generator=gen) @ torch.randn(4, 4, generator=gen)
    w = torch.randn(3, 4, generator=gen)
    h = gq.hessian(x)
    h = h + 0.01 * torch.diag(h).mean() * torch.eye(4, dtype=h.dtype)
    u = torch.linalg.cholesky(torch.linalg.inv(h), upper=True)
    q0 = gq.quantize_groups(w, 3, 0)  # groups span the row: qparams from the original weights
    err = (w[:, 0].double() - q0.dequantize()[:, 0].double()) / u[0, 0]
    w1 = w.double()[:, 1] - err * u[0, 1]
    s, z = q0.scale[:, 0], q0.zero[:, 0]
    expected = torch.clamp(torch.round(w1.float() * (1.0 / s)) + z, 0, 7).int()
    assert torch.equal(gq.gptq(w, gq.hessian(x), 3, 0).q[:, 1], expected)


@pytest.mark.parametrize("seed", range(5))
def test_gptq_output_error_is_at_most_rtn(seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(512, 64, generator=gen) @ torch.randn(64, 64, generator=gen)  # correlated inputs
    w = torch.randn(32, 64, generator=gen)
    for bits, group in ((4, 16), (3, 0)):
        rtn_err = gq.output_error(x, w, gq.rtn(w, bits, group))
        gptq_err = gq.output_error(x, w, gq.gptq(w, gq.hessian(x), bits, group).dequantize())
        assert gptq_err <= rtn_err


def test_dead_inputs_get_zero_weights():
    x = torch.randn(50, 4)
    x[:, 2] = 0
    out = gq.gptq(torch.randn(3, 4), gq.hessian(x), 4, 0).dequantize()
    assert torch.all(out[:, 2] == 0)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_pack_round_trip(bits):
    codes = torch.randint(0, 2**bits, (37,), generator=torch.Generator().manual_seed(bits), dtype=torch.int32)
    raw = gq.pack_codes(codes, bits)
    assert len(raw) == -(-37 * bits // 8)
    assert torch.equal(gq.unpack_codes(raw, bits, 37), codes)
    with pytest.raises(ValueError, match="codes must be in"):
        gq.pack_codes(torch.tensor([2**bits]), bits)


def test_bad_configs_raise():
    with pytest.raises(ValueError, match="GroupQuantConfig.bits=9"):
        gq.GroupQuantConfig(bits=9)
    with pytest.raises(ValueError, match="GroupQuantConfig.method='awq'"):
        gq.GroupQuantConfig(method="awq")
    with pytest.raises(ValueError, match="group_size=3 must divide"):
        gq.quantize_groups(torch.randn(2, 8), 4, 3)
    with pytest.raises(ValueError, match="needs data"):
        gq.apply_groupquant(gpt.gpt(block_size=8, d_model=16, n_layer=1, n_head=2), gq.GroupQuantConfig(method="gptq"))


def test_apply_groupquant_on_a_small_gpt():
    torch.manual_seed(0)
    data = torch.randint(0, 256, (3000,), dtype=torch.uint8)
    split = textdata.TextSplit(data, 16)
    ds = textdata.TextDataset("t", split, split, None, (), {})
    model = gpt.gpt(block_size=16, d_model=32, n_layer=1, n_head=2)
    reports = {}
    for method in ("rtn", "gptq"):
        out, rep = gq.apply_groupquant(model, gq.GroupQuantConfig(bits=4, group_size=8, method=method, calibration=16), ds)
        reports[method] = rep
        assert out is not model and rep.loss_bits_after is not None
        names = [r["layer"] for r in rep.layers]
        assert names == list(gpt.block_linears(model))  # the head stays FP32
        for name in names:
            w = dict(out.named_modules())[name].weight
            assert all(len(torch.unique(row[i:i + 8])) <= 16 for row in w for i in range(0, w.shape[1], 8))
    # packed file: 4-bit codes + FP16 scales + 4-bit zeros per group, the rest FP32 (+ pickle overhead)
    quantized = sum(m.weight.numel() for m in gpt.block_linears(model).values())
    rest = sum(p.numel() for p in model.parameters()) - quantized
    analytic = quantized / 2 + quantized / 8 * (2 + 0.5) + 4 * rest
    assert analytic < reports["rtn"].file_bytes < analytic + 20_000
    assert reports["rtn"].file_bytes < reports["rtn"].size_before.fp32_bytes
    assert sum(r["output_error"] for r in reports["gptq"].layers) <= sum(r["output_error"] for r in reports["rtn"].layers)


def test_a_known_evaluation_gives_the_same_report():
    from compresslab.core.training import evaluate

    torch.manual_seed(0)
    split = textdata.TextSplit(torch.randint(0, 256, (2000,), dtype=torch.uint8), 16)
    ds = textdata.TextDataset("t", split, split, None, (), {})
    model = gpt.gpt(block_size=16, d_model=32, n_layer=1, n_head=2)
    cfg = gq.GroupQuantConfig(bits=4, group_size=8, method="gptq", calibration=8)
    _, a = gq.apply_groupquant(model, cfg, ds)
    _, b = gq.apply_groupquant(model, cfg, ds, before=evaluate(model, ds.test))
    assert (a.loss_bits_before, a.loss_bits_after, a.accuracy_before) == (b.loss_bits_before, b.loss_bits_after, b.accuracy_before)
