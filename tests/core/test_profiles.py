"""core.profiles: the notebooks' shared set-up. Oracles: data.load and TrainConfig called the way the
notebooks called them before, and the global RNG state after seed_everything."""

import random
import time

import pytest
import torch

from compresslab.core import cache, data, profiles, training


def test_start_loads_the_profiles_subsets_and_seeds():
    quick = {"train_subset": 800, "test_subset": 300}
    before = time.perf_counter()
    run = profiles.start("quick", "mnist", 3, quick=quick)
    after_torch, after_py = torch.rand(3), random.random()
    training.seed_everything(3)
    assert torch.equal(after_torch, torch.rand(3)) and after_py == random.random()
    assert run.quick and run.profile == "quick" and run.seed == 3 and run.started >= before
    ref = data.load("mnist", train_subset=800, test_subset=300)
    assert torch.equal(run.data.train.images, ref.train.images) and torch.equal(run.data.test.labels, ref.test.labels)
    assert run.data.fingerprint == ref.fingerprint
    assert str(run) == f"mnist: 800 training and 300 test images; torch threads: {torch.get_num_threads()}"
    assert run.pick(quick=2, full=15) == 2 and run.seconds() >= 0


def test_start_with_validation_and_data_seed():
    run = profiles.start("full", "mnist", 5, quick={"train_subset": 10}, full={"val_size": 500, "test_subset": 100},
                         data_seed=5)
    ref = data.load("mnist", val_size=500, test_subset=100, seed=5)
    assert not run.quick and run.pick(quick=2, full=15) == 15
    assert torch.equal(run.data.val.labels, ref.val.labels) and len(run.data.train) == len(ref.train)
    assert "500 validation (carved from training)" in run.describe()


def test_bad_profile_and_options_raise():
    with pytest.raises(ValueError, match="profile='fast' must be 'quick' or 'full'"):
        profiles.start("fast", "mnist", 0)
    with pytest.raises(ValueError, match=r"unknown data.load option\(s\) \['train_size'\]"):
        profiles.start("quick", "mnist", 0, quick={"train_size": 10})


def test_baseline_config_is_the_notebooks_recipe():
    notebook = training.TrainConfig(epochs=15, lr=0.05, lr_schedule="cosine", weight_decay=1e-4, seed=0)
    assert profiles.baseline_config(15, 0) == notebook
    teacher = training.TrainConfig(epochs=2, lr=0.05, lr_schedule="cosine", input_jitter=1, seed=4)
    assert profiles.baseline_config(2, 4, weight_decay=0.0, input_jitter=1) == teacher


def test_baseline_for_uses_the_cache(tiny_data, tmp_path, monkeypatch):
    monkeypatch.setenv("COMPRESSLAB_CACHE", str(tmp_path))
    run = profiles.Run("quick", 0, tiny_data, time.perf_counter(), time.process_time())
    first = profiles.baseline_for("mlp", run, epochs=1, model_kwargs={"hidden": [16]}, progress=False)
    again = profiles.baseline_for("mlp", run, epochs=1, model_kwargs={"hidden": [16]}, progress=False)
    direct = cache.pretrained("mlp", tiny_data, profiles.baseline_config(1, 0), model_kwargs={"hidden": [16]},
                                 progress=False)
    assert not first.from_cache and again.from_cache and direct.from_cache and first.key == direct.key
    assert again.accuracy == first.accuracy
    line = profiles.describe_baseline("dense mlp", again)
    assert line == (f"dense mlp: test accuracy {first.accuracy:.2f}%, error {100 - first.accuracy:.2f}% "
                    "(from cache)")
