"""ExecuTorch adapter (XNNPACK): FP32 .pte = PyTorch's logits at any batch, INT8 keeps accuracy,
programs survive a resize of the process-wide thread pool."""

from __future__ import annotations

import pytest
from deploy_support import (
    calibration,
    check_file,
    check_fp32,
    check_int8,
    check_missing,
    held_out,
    trained,
)

pytest.importorskip("executorch.runtime")
from compresslab.deploy import base, runtime_executorch  # noqa: E402

ADAPTER = runtime_executorch.ExecuTorchAdapter()


def test_fp32_and_int8(tmp_path):
    model = trained("lenet5")
    example = held_out(2)[0]
    fp32 = ADAPTER.export(model, example, base.DeployOptions(), workdir=tmp_path)
    check_fp32(fp32, model)
    check_file(fp32)  # loads it again with 2 threads: the 1-thread program must be reloaded after
    check_fp32(fp32, model)
    assert fp32(held_out(300)[0]).shape == (300, 10)  # batches above MAX_BATCH run in chunks
    q = ADAPTER.export(model, example, base.DeployOptions(precision="int8"), calibration(), tmp_path)
    check_int8(q, model)
    assert q.file_bytes < 0.3 * fp32.file_bytes


def test_missing_runtime_is_one_sentence(monkeypatch):
    check_missing(monkeypatch, "executorch", "executorch")
