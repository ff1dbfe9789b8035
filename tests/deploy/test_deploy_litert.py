"""LiteRT adapter (in its own environment, see the README): FP32 = PyTorch's logits, full INT8 with
int8 input/output keeps accuracy; everywhere else it is reported missing in one sentence."""

from __future__ import annotations

import os

import numpy as np
from deploy_support import (
    calibration,
    check_file,
    check_fp32,
    check_int8,
    check_missing,
    held_out,
    trained,
)

from compresslab.deploy import base, runtime_litert


def test_quantize_input_matches_the_affine_formula():
    x = np.array([-1.0, 0.0, 0.26, 3.0], np.float32)
    q = runtime_litert.quantize_input(x, 0.02, -5)
    assert q.dtype == np.int8 and q.tolist() == [-55, -5, 8, 127]
    assert np.allclose(runtime_litert.dequantize_output(q, 0.02, -5)[:3], x[:3], atol=0.01)


def test_fp32_and_int8(tmp_path):
    import pytest

    missing = base.available(["litert"])["litert"]
    if missing is not None:
        if os.environ.get("COMPRESSLAB_EXPECT_LITERT"):  # the LiteRT environment of .ci/run: a skip is a failure
            pytest.fail(missing)
        pytest.skip(missing)
    adapter = runtime_litert.LiteRTAdapter()
    model = trained("lenet5")
    example = held_out(2)[0]
    fp32 = adapter.export(model, example, base.DeployOptions(batch_size=100), workdir=tmp_path)
    check_fp32(fp32, model)
    check_file(fp32)
    q = adapter.export(model, example, base.DeployOptions(precision="int8", batch_size=100), calibration(), tmp_path)
    assert q.interpreter.get_input_details()[0]["dtype"] == np.int8
    check_int8(q, model)


def test_missing_runtime_is_one_sentence(monkeypatch):
    check_missing(monkeypatch, "litert", "litert_torch")
