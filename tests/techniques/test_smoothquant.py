"""SmoothQuant: the migration is exact, it flattens outlier channels, folding keeps the function."""

from __future__ import annotations

import pytest
import torch

from compresslab.core import gpt, textdata
from compresslab.techniques import smoothquant as sq


def test_migration_is_exact():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(20, 8, generator=gen, dtype=torch.float64)
    x[:, 3] *= 50
    w = torch.randn(5, 8, generator=gen, dtype=torch.float64)
    s = sq.smooth_scales(sq.channel_absmax(x), w, 0.5).double()
    xs, ws = sq.smooth_linear(x, w, s)
    assert torch.allclose(xs @ ws.T, x @ w.T, atol=1e-10)  # X diag(s)^-1 diag(s) W = X W
    # s_j by hand, and alpha = 0.5 equalises the two maxima of every channel
    j = 3
    assert float(s[j]) == pytest.approx(float(x[:, j].abs().max()) ** 0.5 / float(w[:, j].abs().max()) ** 0.5, rel=1e-5)
    assert torch.allclose(sq.channel_absmax(xs), ws.abs().amax(0), rtol=1e-5)
    assert sq.outlier_ratio(sq.channel_absmax(xs)) < sq.outlier_ratio(sq.channel_absmax(x))


def test_outliers_hurt_per_tensor_int8_and_smoothing_helps():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(256, 64, generator=gen)
    x[:, :2] *= 100  # two outlier channels
    w = torch.randn(32, 64, generator=gen) * 0.1
    ref = x @ w.T

    def err(xq, wq):
        return float((xq @ wq.T - ref).pow(2).mean() / ref.pow(2).mean())

    plain = err(sq.fake_quant_activations(x), sq.fake_quant_weights(w))
    s = sq.smooth_scales(sq.channel_absmax(x), w, 0.5)
    xs, ws = sq.smooth_linear(x, w, s)
    smoothed = err(sq.fake_quant_activations(xs), sq.fake_quant_weights(ws))
    assert smoothed < plain / 2
    # per-token scales: each row quantized on its own grid
    q = sq.fake_quant_activations(x, 8, "per_token")
    assert torch.all((q - x).abs() <= x.abs().amax(1, keepdim=True) / 127 / 2 + 1e-5)


def test_fake_quant_activations_by_hand():
    x = torch.tensor([[0.5, -1.27, 0.004]])
    s = 1.27 / 127
    assert torch.allclose(sq.fake_quant_activations(x), torch.round(x / s) * s)


def test_apply_smoothquant_folds_into_layernorm():
    torch.manual_seed(0)
    split = textdata.TextSplit(torch.randint(0, 256, (3000,), dtype=torch.uint8), 16)
    ds = textdata.TextDataset("t", split, split, None, (), {})
    model = gpt.gpt(block_size=16, d_model=32, n_layer=2, n_head=2)
    with torch.no_grad():
        model.blocks[0].ln1.weight[:2] *= 30  # outlier channels
    # 16-bit weights and activations: a near-exact quantization, so the folded model is the same function
    out, rep = sq.apply_smoothquant(model, sq.SmoothQuantConfig(act_bits=16, weight_bits=16, calibration=8), ds)
    x = split.tensors(4)[0]
    with torch.no_grad():
        assert torch.allclose(out(x), model(x), atol=1e-2)
    assert rep.layers[0]["outlier_ratio_after"] < rep.layers[0]["outlier_ratio_before"]
    assert rep.loss_bits_after == pytest.approx(rep.loss_bits_before, abs=1e-2)
    with pytest.raises(ValueError, match="SmoothQuantConfig.alpha=1.5"):
        sq.SmoothQuantConfig(alpha=1.5)
    with pytest.raises(ValueError, match="needs data"):
        sq.apply_smoothquant(model, sq.SmoothQuantConfig(), None)
