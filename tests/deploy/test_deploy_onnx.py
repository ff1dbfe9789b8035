"""ONNX Runtime adapter: FP32 = PyTorch's logits, INT8 (static QDQ and dynamic) keeps accuracy, FP16
halves the file (the QDQ arithmetic by hand: test_deploy_onnx_qdq)."""

from __future__ import annotations

import pytest
import torch
from deploy_support import (
    calibration,
    check_file,
    check_fp32,
    check_int8,
    check_missing,
    held_out,
    trained,
)

pytest.importorskip("onnxruntime")
from compresslab.deploy import base, runtime_onnx  # noqa: E402

ADAPTER = runtime_onnx.OnnxRuntimeAdapter()


@pytest.mark.parametrize("name", ["lenet300", "lenet5"])
def test_fp32_matches_pytorch_and_reloads(name, tmp_path):
    model = trained(name)
    deployed = ADAPTER.export(model, held_out(2)[0], base.DeployOptions(), workdir=tmp_path)
    check_fp32(deployed, model)
    check_file(deployed)
    assert deployed(held_out(300)[0]).shape == (300, 10)  # dynamic batch


def test_int8_static_and_dynamic_keep_accuracy(tmp_path):
    model = trained("lenet300")
    example = held_out(2)[0]
    fp32 = ADAPTER.export(model, example, base.DeployOptions(), workdir=tmp_path)
    for precision in ("int8", "int8_dynamic"):
        q = ADAPTER.export(model, example, base.DeployOptions(precision=precision), calibration(), tmp_path)
        check_int8(q, model)
        assert q.file_bytes < 0.3 * fp32.file_bytes  # int8 weights: about a quarter of float32
    half = ADAPTER.export(model, example, base.DeployOptions(precision="fp16"), workdir=tmp_path)
    assert 0.45 < half.file_bytes / fp32.file_bytes < 0.55
    check_fp32(half, model, tol=1e-2)


def test_missing_runtime_is_one_sentence(monkeypatch):
    check_missing(monkeypatch, "onnxruntime", "onnxruntime")


def test_unsupported_precision_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="bf16"):
        ADAPTER.export(torch.nn.Linear(2, 2), torch.zeros(1, 2), base.DeployOptions(precision="bf16"), workdir=tmp_path)
