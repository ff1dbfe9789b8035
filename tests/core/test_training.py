"""The one training loop, evaluation, determinism and the baseline cache."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from compresslab.core import cache, models, training
from compresslab.core.training import Callback, TrainConfig

FAST = TrainConfig(epochs=2, batch_size=32, lr=0.05, seed=1)


def _fresh(seed=0, name="lenet300"):
    training.seed_everything(seed)
    return models.create(name)


def test_same_seed_gives_bit_identical_weights(tiny_data):
    a, b = _fresh(), _fresh()
    training.train(a, tiny_data, FAST, progress=False)
    training.train(b, tiny_data, FAST, progress=False)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    c = _fresh()
    training.train(c, tiny_data, TrainConfig(epochs=2, batch_size=32, lr=0.05, seed=2), progress=False)
    assert not torch.equal(a.fc1.weight, c.fc1.weight)


def test_training_learns_and_history_is_consistent(tiny_data):
    model = _fresh()
    before = training.evaluate(model, tiny_data.test)
    history = training.train(model, tiny_data, TrainConfig(epochs=3, batch_size=32, lr=0.05), progress=False)
    after = training.evaluate(model, tiny_data.test)
    assert after.accuracy > max(50, before.accuracy)  # percent
    assert after.errors == round((100 - after.accuracy) / 100 * after.n)
    assert after.accuracy == 100 * (after.n - after.errors) / after.n
    assert history.steps == [8, 16, 24] and len(history.val_loss) == 3 and len(history.test_accuracy) == 3
    assert history.best_val_step() in history.steps


def test_fractional_epochs_and_eval_every(tiny_data):
    history = training.train(_fresh(), tiny_data, TrainConfig(epochs=1.5, batch_size=32, eval_every=5), progress=False)
    assert history.steps == [5, 10, 12]


def test_loss_fn_and_callbacks_are_used(tiny_data):
    seen = {"start": 0, "batch": 0, "epoch": 0, "loss_calls": 0}

    class Count(Callback):
        def on_train_start(self, state):
            seen["start"] += 1

        def on_batch_end(self, state):
            seen["batch"] += 1
            if state.step == 5:
                state.stop = True

        def on_epoch_end(self, state):
            seen["epoch"] += 1

    def loss_fn(logits, y, x):
        seen["loss_calls"] += 1
        assert x.shape[0] == y.shape[0] == logits.shape[0]
        return F.cross_entropy(logits, y)

    training.train(_fresh(), tiny_data, FAST, loss_fn=loss_fn, callbacks=[Count()], progress=False)
    assert seen == {"start": 1, "batch": 5, "epoch": 1, "loss_calls": 5}


def test_convnet_trains_channels_last(tiny_data):
    model = _fresh(name="lenet5")
    training.train(model, tiny_data, TrainConfig(epochs=1, batch_size=64, lr=0.05), progress=False)
    assert model.conv1.weight.is_contiguous(memory_format=torch.channels_last)


def test_jitter_shifts_whole_batch_and_fills_background():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).reshape(2, 1, 6, 6) + 1
    for seed in range(6):
        dy, dx = (int(v) for v in torch.randint(-2, 3, (2,), generator=torch.Generator().manual_seed(seed)))
        out = training._jitter(x.clone(), 2, torch.Generator().manual_seed(seed))
        expected = torch.full_like(x, 1.0)  # background = the batch minimum
        ys, yd = slice(max(dy, 0), 6 + min(dy, 0)), slice(max(-dy, 0), 6 - max(dy, 0))
        xs, xd = slice(max(dx, 0), 6 + min(dx, 0)), slice(max(-dx, 0), 6 - max(dx, 0))
        expected[:, :, ys, xs] = x[:, :, yd, xd]
        assert torch.equal(out, expected), (dy, dx)


@pytest.mark.parametrize("field, value", [("epochs", 0), ("batch_size", 0), ("lr", -1.0), ("optimizer", "rmsprop"),
                                          ("momentum", 1.0), ("weight_decay", -0.1), ("lr_schedule", "linear"),
                                          ("eval_every", -1), ("input_jitter", 9)])
def test_bad_train_config(field, value):
    with pytest.raises((ValueError, TypeError), match=field):
        TrainConfig(**{field: value})


def test_get_device():
    assert training.get_device("cpu").type == "cpu"
    assert training.get_device("auto").type in ("cpu", "cuda")
    with pytest.raises(ValueError, match="device"):
        training.get_device("tpu")


def test_pretrained_caches_and_retrains_corrupt_entries(tiny_data, tmp_path, monkeypatch):
    monkeypatch.setenv("COMPRESSLAB_CACHE", str(tmp_path))
    first = cache.pretrained("lenet300", tiny_data, FAST)
    assert not first.from_cache
    files = list(tmp_path.glob("*.pt"))
    assert len(files) == 1
    second = cache.pretrained("lenet300", tiny_data, FAST)
    assert second.from_cache and second.key == first.key and second.accuracy == first.accuracy
    for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values()):
        assert torch.equal(a, b)
    # another config -> another key, another file
    other = cache.pretrained("lenet300", tiny_data, TrainConfig(epochs=1, batch_size=32, seed=1))
    assert other.key != first.key and len(list(tmp_path.glob("*.pt"))) == 2
    # a truncated file is detected, warned about and retrained to the same weights
    raw = files[0].read_bytes()
    files[0].write_bytes(raw[: len(raw) // 2])
    with pytest.warns(UserWarning, match="retraining"):
        third = cache.pretrained("lenet300", tiny_data, FAST)
    assert not third.from_cache
    for a, b in zip(first.model.state_dict().values(), third.model.state_dict().values()):
        assert torch.equal(a, b)
    # an entry stored under the right name but for another key is not trusted
    entry = torch.load(files[0], weights_only=True)
    entry["key"] = "0" * 20
    torch.save(entry, files[0])
    with pytest.warns(UserWarning, match="does not match"):
        assert not cache.pretrained("lenet300", tiny_data, FAST).from_cache
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cache.pretrained("lenet300", tiny_data, FAST).from_cache


def test_accuracy_fn_for_the_model_level_verbs(tiny_data):
    model = models.create("lenet300")
    assert training.accuracy_fn(None)(model) is None
    assert training.accuracy_fn(tiny_data)(model) == training.evaluate(model, tiny_data.test).accuracy
    with pytest.raises(ValueError, match="finetune is set but data=None"):
        training.accuracy_fn(None, TrainConfig(epochs=1))
