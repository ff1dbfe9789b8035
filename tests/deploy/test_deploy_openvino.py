"""OpenVINO adapter: FP32 (f32 hint) = PyTorch's logits, the bf16 hint computes in bfloat16, NNCF INT8 keeps accuracy."""

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

pytest.importorskip("openvino")
pytest.importorskip("nncf")
from compresslab.deploy import base, runtime_openvino  # noqa: E402

ADAPTER = runtime_openvino.OpenVinoAdapter()


def test_fp32_bf16_int8(tmp_path):
    model = trained("lenet5")
    example = held_out(2)[0]
    fp32 = ADAPTER.export(model, example, base.DeployOptions(), workdir=tmp_path)
    check_fp32(fp32, model)
    check_file(fp32)
    assert fp32.execution_precision() == "f32"
    bf16 = ADAPTER.export(model, example, base.DeployOptions(precision="bf16"), workdir=tmp_path)
    check_fp32(bf16, model, tol=0.1)  # bfloat16 keeps 8 mantissa bits: close, not equal
    q = ADAPTER.export(model, example, base.DeployOptions(precision="int8"), calibration(), tmp_path)
    check_int8(q, model)
    assert q.file_bytes < 0.3 * fp32.file_bytes


def test_missing_runtime_is_one_sentence(monkeypatch):
    check_missing(monkeypatch, "openvino", "nncf")
