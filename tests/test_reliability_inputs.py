"""Round two of reliability: bad values inside documented ranges, composed configs, per-layer names,
damaged files and archives, non-finite or empty inputs to every primitive."""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_dataset

from compresslab.core import models, training
from compresslab.techniques import groupquant as gq


def _lenet300(seed: int = 0) -> torch.nn.Module:
    training.seed_everything(seed)
    return models.create("lenet300")


# ----------------------------------------------------------------- 1. GPTQ on a singular Hessian

def test_gptq_with_no_damping_on_lenet300_calibration_does_not_crash():
    data = make_tiny_dataset()  # 64 calibration windows < 784 inputs: the Hessian is singular
    x = data.train.tensors(64)[0].reshape(64, -1).float()
    assert torch.linalg.matrix_rank(gq.hessian(x)) < 784
    model, report = gq.apply_groupquant(_lenet300(), gq.GroupQuantConfig(method="gptq", damp=0.0, group_size=4), data)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert all(row["output_error"] < 1 for row in report.layers)


def test_inverse_cholesky_raises_damping_only_as_far_as_needed():
    x = torch.randn(3, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    h = gq.hessian(x)  # rank 3 of 6
    u, d = gq.inverse_cholesky(h, damp=0.0)
    assert d > 0
    damped = h + d * torch.diag(h).mean() * torch.eye(6, dtype=torch.float64)
    assert torch.allclose(u.T @ u, torch.linalg.inv(damped), rtol=1e-6, atol=1e-6 * float(torch.linalg.inv(damped).abs().max()))
    assert torch.linalg.cholesky_ex(h + d / 10 * torch.diag(h).mean() * torch.eye(6, dtype=torch.float64)).info != 0 \
        or d == 1e-8  # a tenth of it would not have done (or it is the smallest step)
    full = gq.hessian(torch.randn(50, 6, dtype=torch.float64))  # positive definite: damp kept as given
    assert gq.inverse_cholesky(full, damp=0.0)[1] == 0.0


def test_gptq_rejects_a_non_finite_hessian_with_a_clear_error():
    h = torch.eye(4)
    h[1, 2] = float("nan")
    with pytest.raises(ValueError, match="hessian has 1 non-finite"):
        gq.gptq(torch.randn(2, 4), h, 4, 0)


# ----------------------------------------------------------------- 2. composed configs check what they forward

@pytest.mark.parametrize("temperature", [1e5, 1e-300, 0.0, float("nan")])
def test_deep_compression_rejects_the_temperatures_distillation_rejects(temperature):
    from compresslab.techniques.deepcompression import DeepCompressionConfig
    from compresslab.techniques.distillation import DistillConfig

    with pytest.raises(ValueError, match=r"DistillConfig\.temperature"):
        DistillConfig(temperature=temperature)  # the oracle: what distillation itself allows
    with pytest.raises(ValueError, match=r"DeepCompressionConfig\.distill_temperature=.* \[0\.001, 10000"):
        DeepCompressionConfig(distill_temperature=temperature)


def test_a_recipe_step_rejects_the_temperatures_distillation_rejects():
    from compresslab.combine.recipes import Step
    from compresslab.techniques.lowbit import LowBitConfig

    with pytest.raises(ValueError, match=r"teacher_temperature=1e-300"):
        Step("lowbit", LowBitConfig(), teacher_temperature=1e-300)
    assert Step("lowbit", LowBitConfig(), teacher_temperature=1e-3).teacher_temperature == 1e-3
