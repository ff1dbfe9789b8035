"""The adapter registry, options validation and the measuring helpers."""

from __future__ import annotations

import math

import pytest
import torch

from compresslab.core.latency import Latency
from compresslab.deploy import base, bench


def test_every_runtime_is_known_and_reported():
    status = base.available()
    assert {"onnxruntime", "openvino", "executorch", "litert", "coreml", "tensorrt"} <= set(status)
    for name, why in status.items():
        assert why is None or ("\n" not in why and why.endswith(".")), (name, why)
    with pytest.raises(ValueError, match="not known"):
        base.adapter("tflite-micro")


def test_options_are_validated():
    with pytest.raises(ValueError, match="DeployOptions.precision"):
        base.DeployOptions(precision="int4")
    with pytest.raises(ValueError, match="DeployOptions.threads"):
        base.DeployOptions(threads=0)


def test_plain_copy_is_contiguous_and_separate():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3)).to(memory_format=torch.channels_last)
    copy = base.plain_copy(model)
    assert copy[0].weight.is_contiguous() and copy[0].weight is not model[0].weight
    assert torch.equal(copy[0].weight, model[0].weight)


def test_fidelity_and_claims():
    ref = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    out = torch.tensor([[0.9, 0.0], [0.0, 1.0], [0.0, 1.0]])
    f = bench.fidelity(out, ref, torch.tensor([0, 1, 1]))
    assert f["accuracy"] == 100 and f["agreement"] == pytest.approx(200 / 3) and f["max_abs_diff"] == 1.0
    rows = [Latency("a", 256, 1.0, 0.9, 1.0, 10, 1), Latency("b", 256, 4.0, 3.0, 6.0, 10, 1)]
    claim = bench.speed_claim(rows, "a", "b", 256)
    assert claim["ratio"] == 4.0 and not claim["reliable"]  # b's p90/p10 = 2: too noisy to claim
    assert bench.is_quiet(rows[:1]) and math.isclose(bench.spread(rows[1]), 2.0)


def test_cpu_features_reads_flags(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("model name\t: Test CPU\nflags\t\t: fpu avx2 avx512f avx512_vnni avx512_bf16\n")
    f = bench.cpu_features(info)
    assert f["model"] == "Test CPU" and f["vnni"] and f["bf16"] and f["avx512"] and not f["amx"]


def test_native_stderr_is_held_back_and_shown_on_failure(capfd):
    import os
    import sys

    from compresslab.deploy.base import native_stderr_captured

    with native_stderr_captured():
        os.write(2, b"threadpool.cpp: Resetting threadpool to 2 threads.\n")  # what C++ code does
        sys.stderr.write("cpuinfo_utils.cpp: Reading file\n")  # what bindings that print through Python do
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "after\n"  # held back, and descriptor 2 restored afterwards
    with pytest.raises(RuntimeError, match="load failed"):
        with native_stderr_captured():
            os.write(2, b"runtime: program header is invalid\n")
            sys.stderr.write("bindings: method forward not found\n")
            raise RuntimeError("load failed")
    err = capfd.readouterr().err
    assert "program header is invalid" in err and "forward not found" in err  # a failure keeps the reason


def test_plain_rich_console_keeps_progress_displays_out_of_a_notebook():
    rich = pytest.importorskip("rich")
    from compresslab.deploy.base import plain_rich_console

    console = rich.get_console()
    before = dict(console.__dict__)
    console.is_jupyter = True  # as in a Jupyter kernel, where a live display becomes an ipywidgets Output
    try:
        with plain_rich_console():
            assert rich.get_console().is_jupyter is False
            rich.get_console().print("hidden")  # goes to the discarded buffer
        assert rich.get_console().is_jupyter is True
    finally:
        console.__dict__ = before
