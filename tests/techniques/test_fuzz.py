"""Property-based fuzzing (bounded, well under a minute): configs and compressed files.

Every junk config value is accepted or raises ValueError/TypeError naming Class.field (nested
fields with their path); an accepted TrainConfig trains a step without error inside torch. Every
mutated file (CRC recomputed) raises ValueError or loads the identical model, in bounded time and
memory.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import tempfile
import time
from pathlib import Path

import pytest
import torch
from filefuzz import file_bytes, shared_model
from fuzzing import CONFIGS, JUNK, bad_train_value, corrupted, fields, mutation, try_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compresslab.core import training
from compresslab.core.training import TrainConfig
from compresslab.techniques import compressedfile as cf
from compresslab.techniques.deepcompression import DeepCompressionConfig
from compresslab.techniques.pruning import PruneConfig

FUZZ = settings(max_examples=300, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
FIELDS = [(cls, name) for cls in CONFIGS for name in fields(cls)]


@FUZZ
@given(target=st.sampled_from(FIELDS), value=JUNK)
def test_junk_config_values_are_accepted_or_named(target, value):
    cls, field = target
    outcome, _ = try_config(cls, field, value)
    assert outcome.kind != "crash", outcome.detail


@settings(max_examples=40, deadline=None, derandomize=True)
@given(field=st.sampled_from(fields(TrainConfig)), value=JUNK)
def test_accepted_train_configs_train_without_error(field, value):
    from conftest import make_tiny_dataset

    outcome, config = try_config(TrainConfig, field, value)
    assert outcome.kind != "crash", outcome.detail
    if config is None:
        return
    short = dataclasses.replace(config, epochs=min(config.epochs, 0.01))  # one step
    training.seed_everything(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    training.train(model, make_tiny_dataset(32, 16, 0), short, progress=False)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(field=st.sampled_from(fields(TrainConfig)), value=JUNK)
def test_a_nested_config_reports_its_path(field, value):
    if not bad_train_value(field, value):
        return
    with pytest.raises((ValueError, TypeError), match=rf"^PruneConfig\.finetune\.{field}\b"):
        PruneConfig(finetune=corrupted(TrainConfig(), field, value))
    inner = PruneConfig(scope="layer", schedule="iterative", finetune=TrainConfig())
    object.__setattr__(inner.finetune, field, value)  # corrupt it after both were validated
    with pytest.raises((ValueError, TypeError), match=rf"^DeepCompressionConfig\.prune\.finetune\.{field}\b"):
        DeepCompressionConfig(prune=inner)


MODEL = shared_model()
CONTENT = file_bytes(MODEL)


@FUZZ
@given(data=st.data())
def test_mutated_files_are_rejected_or_load_the_identical_model(data):
    kind, content = data.draw(mutation(CONTENT))
    path = Path(tempfile.gettempdir()) / f"compresslab-fuzz-{os.getpid()}.dc"
    path.write_bytes(content)
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    try:
        loaded = cf.load(path)
    except ValueError:
        loaded = None
    finally:
        path.unlink()
    assert time.perf_counter() - start < 2.0, kind
    if loaded is not None:
        expected = MODEL.state_dict()
        got = loaded.state_dict()
        assert got.keys() == expected.keys(), kind
        assert all(torch.equal(got[k], expected[k]) for k in expected), f"{kind}: a different model loaded"
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024
    assert grown_mb < 200, f"{kind}: peak memory grew by {grown_mb:.0f} MB"
