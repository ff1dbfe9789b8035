"""Core ML adapter: converts and compresses on Linux (sizes shrink as the encodings say), says plainly
that prediction needs macOS; the palettized PyTorch model has 2^bits distinct weights per layer."""

from __future__ import annotations

import pytest
import torch
from deploy_support import check_missing, held_out, trained

pytest.importorskip("coremltools")
from compresslab.deploy import base, runtime_coreml  # noqa: E402


def test_convert_compress_and_macos_only(tmp_path):
    model = trained("lenet300")
    example = held_out(1)[0]
    adapter = runtime_coreml.CoreMLAdapter()
    fp32 = adapter.export(model, example, base.DeployOptions(), workdir=tmp_path)
    w8 = adapter.export(model, example, base.DeployOptions(precision="int8_weights"), workdir=tmp_path)
    assert fp32.path.exists() and 0.2 < w8.file_bytes / fp32.file_bytes < 0.3
    ml = runtime_coreml.convert(model, example)
    pal = runtime_coreml.compress(ml, "palettize", nbits=4)
    pal.save(str(tmp_path / "p4.mlpackage"))
    p4 = sum(f.stat().st_size for f in (tmp_path / "p4.mlpackage").rglob("*") if f.is_file())
    assert p4 < 0.16 * fp32.file_bytes  # 4 of 32 bits per weight, plus tables
    with pytest.raises(RuntimeError, match="macOS"):
        fp32(example)
    assert not adapter.can_run


def test_palettized_torch_model(tmp_path):
    model = trained("lenet300")
    pal = runtime_coreml.palettize_torch(model, 4)
    assert len(torch.unique(pal.fc1.weight)) <= 16
    x, y = held_out()
    with torch.no_grad():
        acc = float((pal(x).argmax(1) == y).float().mean())
        ref = float((model(x).argmax(1) == y).float().mean())
    assert acc > ref - 0.02


def test_missing_runtime_is_one_sentence(monkeypatch):
    check_missing(monkeypatch, "coreml", "coremltools")
