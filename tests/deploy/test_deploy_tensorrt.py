"""TensorRT: skipped with one sentence without a CUDA GPU; on a GPU machine FP32 = PyTorch's logits."""

from __future__ import annotations

import pytest
import torch
from deploy_support import check_fp32, held_out, trained

from compresslab.deploy import base


def test_reported_not_raised_without_gpu():
    message = base.available(["tensorrt"])["tensorrt"]
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: see test_engine_matches_pytorch")
    assert message is not None and "GPU" in message and "\n" not in message
    with pytest.raises(base.MissingRuntime, match="GPU"):
        base.adapter("tensorrt")


@pytest.mark.gpu
def test_engine_matches_pytorch(tmp_path):
    why = base.available(["tensorrt"])["tensorrt"]
    if why is not None:
        pytest.skip(why)
    model = trained("lenet5")
    engine = base.adapter("tensorrt").export(model, held_out(2)[0], base.DeployOptions(), workdir=tmp_path)
    check_fp32(engine, model, tol=1e-3)  # TF32 may be used for FP32 convolutions
    assert engine.path.exists() and engine.file_bytes > 1000
