"""Shared by the deploy tests: small models trained briefly on real MNIST, and the adapter checks."""

from __future__ import annotations

import functools

import pytest
import torch

from compresslab.deploy import base

N_TEST = 1000


@functools.cache
def mnist():
    from compresslab.core import data

    return data.load("mnist", train_subset=4000, test_subset=N_TEST, seed=0)


@functools.cache
def trained(name: str) -> torch.nn.Module:
    """`name` trained for one epoch on 4,000 MNIST images (cached for the session)."""
    from compresslab.core import cache, profiles

    config = profiles.baseline_config(1, seed=0)
    return cache.pretrained(name, mnist(), config, progress=False).model.eval()


def calibration(n: int = 200) -> torch.Tensor:
    return mnist().train.tensors(n)[0]


def held_out(n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    return mnist().test.tensors(n)


def accuracy(fn, images: torch.Tensor, labels: torch.Tensor, batch: int = 250) -> float:
    """Percent of `images` that fn classifies as `labels`."""
    preds = torch.cat([torch.as_tensor(fn(images[i:i + batch])).argmax(1) for i in range(0, len(images), batch)])
    return 100 * float((preds == labels).float().mean())


def check_fp32(deployed, model: torch.nn.Module, tol: float = 1e-4) -> None:
    """The deployed FP32 model gives PyTorch's logits (max abs difference) and predictions."""
    x, _ = held_out(64)
    with torch.no_grad():
        ref = model(x)
    out = deployed(x)
    assert out.shape == ref.shape and out.dtype == torch.float32
    assert float((out - ref).abs().max()) < tol
    assert torch.equal(out.argmax(1), ref.argmax(1))


def check_int8(deployed, model: torch.nn.Module, points: float = 0.5) -> None:
    """The INT8 model's accuracy on the test subset is within `points` of the float model's."""
    x, y = held_out()
    with torch.no_grad():
        fp32 = accuracy(model, x, y)
    assert abs(accuracy(deployed, x, y) - fp32) <= points, (accuracy(deployed, x, y), fp32)


def check_file(deployed) -> None:
    """The file exists, is non-empty, and loading it again (2 threads) gives the same logits."""
    assert deployed.path.exists() and deployed.file_bytes > 1000
    x, _ = held_out(8)
    again = deployed.with_threads(2)
    assert again.threads == 2
    torch.testing.assert_close(again(x), deployed(x), rtol=1e-4, atol=1e-4)


def check_missing(monkeypatch, name: str, package: str) -> None:
    """With `package`'s import blocked, the runtime is reported missing in one sentence, never raised."""

    monkeypatch.setitem(__import__("sys").modules, package, None)
    message = base.available()[name]
    assert message is not None and "install" in message and "\n" not in message and "Traceback" not in message
    with pytest.raises(base.MissingRuntime, match="install"):
        base.adapter(name)
