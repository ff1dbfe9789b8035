"""Data loading and model construction."""

from __future__ import annotations

import pytest
import torch

from compresslab.core import data, models


def test_unknown_dataset_lists_known():
    with pytest.raises(ValueError, match=r"fashion_mnist.*mnist|mnist.*fashion_mnist"):
        data.load("cifar10")


def test_missing_files_give_one_clear_error(tmp_path, monkeypatch):
    import torchvision

    def offline(*args, **kwargs):  # what torchvision does with no archives and no network
        raise RuntimeError("Dataset not found. You can use download=True to download it")

    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    data._read_raw.cache_clear()
    with pytest.raises(FileNotFoundError) as info:
        data.load("mnist", root=tmp_path)
    message = str(info.value)
    assert str(tmp_path / "MNIST" / "raw") in message
    for name in data.RAW_FILES:
        assert name in message
    data._read_raw.cache_clear()


def test_root_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("COMPRESSLAB_DATA", str(tmp_path))
    assert data.resolve_root() == tmp_path
    assert data.resolve_root("/x") == data.Path("/x")
    monkeypatch.delenv("COMPRESSLAB_DATA")
    from compresslab.core import locations

    assert data.resolve_root() == locations.checkout_root() / "data"  # the tests run in a checkout


def test_mnist_loads_with_validation_split_and_subsets():
    d = data.load("mnist", val_size=1000, train_subset=2000, test_subset=500, seed=3)
    assert (len(d.train), len(d.val), len(d.test)) == (2000, 1000, 500)
    assert d.train.images.dtype == torch.uint8 and d.input_shape == (1, 28, 28)
    full = data.load("mnist")
    assert len(full.train) == 60000 and len(full.test) == 10000
    # the validation images are not among the training images of the same load
    train_keys = {bytes(img.numpy()) for img in d.train.images[:2000]}
    assert not any(bytes(img.numpy()) in train_keys for img in d.val.images[:200])


def test_batches_normalise_and_shuffle_deterministically(tiny_data):
    split = tiny_data.train
    x, y = next(split.batches(32))
    expected = ((split.images[:32].float() / 255 - split.mean) / split.std).unsqueeze(1)
    assert torch.equal(x, expected) and torch.equal(y, split.labels[:32])
    a = [b[1] for b in split.batches(50, shuffle=True, seed=7)]
    b = [b[1] for b in split.batches(50, shuffle=True, seed=7)]
    c = [b[1] for b in split.batches(50, shuffle=True, seed=8)]
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    assert not all(torch.equal(p, q) for p, q in zip(a, c))
    assert sum(len(t) for t in a) == len(split)
    assert sum(len(y) for _, y in split.batches(50, drop_last=True)) == 250


@pytest.mark.parametrize("kwargs, field", [({"val_size": -1}, "val_size"), ({"train_subset": 0}, "train_subset"),
                                           ({"val_size": 60000}, "val_size")])
def test_bad_load_arguments(kwargs, field):
    with pytest.raises(ValueError, match=field):
        data.load("mnist", **kwargs)


@pytest.mark.parametrize("name, params", [("lenet300", 266_610), ("lenet5", 431_080), ("mlp1200", 2_395_210),
                                          ("mlp800", 1_276_810)])
def test_model_sizes(name, params):
    model = models.create(name)
    assert sum(p.numel() for p in model.parameters()) == params
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_small_cnn_and_mlp_forward():
    assert models.create("small_cnn")(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
    assert models.create("mlp", hidden=(30,))(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


def test_unknown_model_and_bad_arguments():
    with pytest.raises(ValueError, match="lenet300"):
        models.create("resnet50")
    with pytest.raises(ValueError, match="dropout"):
        models.create("mlp800", dropout=1.5)
    with pytest.raises(ValueError, match="does not take"):
        models.create("lenet5", width=3)
