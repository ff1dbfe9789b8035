"""The baseline cache: a damaged entry is retrained from the clean initialisation, never trusted."""

from __future__ import annotations

import warnings

import pytest
import torch

from compresslab.core import cache
from compresslab.core.training import TrainConfig

FAST = TrainConfig(epochs=1, batch_size=32, lr=0.05, seed=3)


@pytest.fixture
def clean(tiny_data, tmp_path, monkeypatch):
    """A fresh cache folder with one entry; returns (baseline, path of its file)."""
    monkeypatch.setenv("COMPRESSLAB_CACHE", str(tmp_path))
    first = cache.pretrained("lenet300", tiny_data, FAST)
    (path,) = tmp_path.glob("*.pt")
    return first, path


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _retrains_to_clean(tiny_data, first, path, match="retraining"):
    """pretrained warns, returns the clean run's weights, and stores an entry that loads silently."""
    with pytest.warns(UserWarning, match=match):
        again = cache.pretrained("lenet300", tiny_data, FAST)
    assert not again.from_cache and _same_weights(again.model, first.model)
    assert again.accuracy == first.accuracy
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reused = cache.pretrained("lenet300", tiny_data, FAST)
    assert reused.from_cache and _same_weights(reused.model, first.model)


def test_nan_weight_entry_is_retrained_from_the_fresh_initialisation(tiny_data, clean):
    first, path = clean
    entry = torch.load(path, weights_only=True)
    entry["state_dict"]["fc2.weight"][0, 0] = float("nan")
    torch.save(entry, path)
    _retrains_to_clean(tiny_data, first, path)


def test_entry_missing_one_parameter_is_retrained(tiny_data, clean):
    first, path = clean
    entry = torch.load(path, weights_only=True)
    del entry["state_dict"]["fc3.bias"]
    torch.save(entry, path)
    _retrains_to_clean(tiny_data, first, path, match="missing")


def test_entry_missing_accuracy_is_retrained_not_a_key_error(tiny_data, clean):
    first, path = clean
    entry = torch.load(path, weights_only=True)
    del entry["accuracy"]
    torch.save(entry, path)
    _retrains_to_clean(tiny_data, first, path, match="accuracy")


def test_one_flipped_byte_inside_a_tensor_is_detected(tiny_data, clean):
    first, path = clean
    raw = bytearray(path.read_bytes())
    weight = first.model.state_dict()["fc1.weight"].cpu().numpy().tobytes()
    at = raw.find(weight[:256])
    assert at >= 0, "the tensor's bytes are stored as they are"
    raw[at + 1001] ^= 0x01  # the lowest bit of a mantissa byte: a finite, plausible weight
    path.write_bytes(bytes(raw))
    _retrains_to_clean(tiny_data, first, path)


def test_cache_path_that_is_a_file_fails_before_training(tiny_data, tmp_path, monkeypatch):
    target = tmp_path / "a-file"
    target.write_text("not a folder")
    monkeypatch.setenv("COMPRESSLAB_CACHE", str(target))

    def no_training(*args, **kwargs):
        raise AssertionError("trained before checking the cache folder")

    monkeypatch.setattr(cache, "train", no_training)
    with pytest.raises(NotADirectoryError, match="COMPRESSLAB_CACHE"):
        cache.pretrained("lenet300", tiny_data, FAST)


def test_thread_count_and_device_are_in_the_key(tiny_data):
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one, spec = cache.cache_key("lenet300", {}, tiny_data, FAST)
        torch.set_num_threads(2)
        two, _ = cache.cache_key("lenet300", {}, tiny_data, FAST)
    finally:
        torch.set_num_threads(old)
    assert one != two and spec["threads"] == 1
    assert cache.cache_key("lenet300", {}, tiny_data, FAST, "cuda")[0] != cache.cache_key("lenet300", {}, tiny_data, FAST)[0]


def test_weights_digest_sees_one_bit():
    state = {"w": torch.randn(5, 5, generator=torch.Generator().manual_seed(0))}
    flipped = {"w": state["w"].clone()}
    flipped["w"].view(torch.int32)[2, 3] ^= 1
    assert cache.weights_digest(state) == cache.weights_digest({"w": state["w"].clone()})
    assert cache.weights_digest(state) != cache.weights_digest(flipped)


def test_a_run_that_ends_non_finite_is_not_cached(tiny_data, tmp_path, monkeypatch):
    monkeypatch.setenv("COMPRESSLAB_CACHE", str(tmp_path))
    diverging = TrainConfig(epochs=1, batch_size=32, lr=1e6, seed=0)
    with pytest.warns(UserWarning, match="non-finite weights"):
        baseline = cache.pretrained("lenet300", tiny_data, diverging)
    assert not all(torch.isfinite(v).all() for v in baseline.model.state_dict().values())
    assert not list(tmp_path.glob("*.pt"))


def _layouts(model: torch.nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(name, tuple(p.stride())) for name, p in model.named_parameters() if p.dim() == 4]


def test_a_cached_convnet_comes_back_in_the_layout_training_left(tiny_data, tmp_path, monkeypatch):
    """`train` moves a convnet's 4-D weights to channels_last; the cache must give back the same
    strides, or the same baseline computes 2.3x slower in eager PyTorch after a cache hit."""
    monkeypatch.setenv("COMPRESSLAB_CACHE", str(tmp_path))
    fresh = cache.pretrained("lenet5", tiny_data, FAST)
    reused = cache.pretrained("lenet5", tiny_data, FAST)
    assert not fresh.from_cache and reused.from_cache and _same_weights(fresh.model, reused.model)
    assert _layouts(reused.model) == _layouts(fresh.model)
    assert all(p.is_contiguous(memory_format=torch.channels_last) and p.stride(1) == 1
               for p in reused.model.parameters() if p.dim() == 4 and p.shape[1] > 1)
