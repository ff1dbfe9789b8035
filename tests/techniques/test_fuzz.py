"""Property-based fuzzing (bounded, about a minute): configs, primitives, compressed and packed files.

Every junk config value (of every registered technique's config, unknown layer names among them) is
accepted or raises ValueError/TypeError naming Class.field (nested fields with their path); an
accepted config runs its verb with a clean error or finite weights. Every primitive given NaN, inf,
empty, wrong-shape or wrong-type input raises a clean error or returns finite numbers. Every mutated
Deep Compression file (CRC recomputed) raises ValueError or loads the identical model, in bounded
time and memory; every mutated packed file raises ValueError or gives finite weights.
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
from conftest import make_tiny_dataset
from filefuzz import file_bytes, packed_bytes, shared_model, sparse_vd_bytes
from fuzzing import (
    CONFIGS,
    JUNK,
    TECHNIQUES,
    bad_train_value,
    clean_error,
    corrupted,
    fields,
    mutation,
    packed_mutation,
    try_config,
    use,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from primfuzz import PRIMITIVES, primitive_case, try_primitive

from compresslab.core import models, training
from compresslab.core.training import TrainConfig
from compresslab.techniques import compressedfile as cf
from compresslab.techniques import packedfile as pf
from compresslab.techniques import registry
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
SPARSE_MODEL = shared_model(seed=1, k=5, density=0.01)  # 99% sparse, as sparse VD leaves a model
FILES = {"deep compression": (MODEL, CONTENT), "sparse vd (99% sparse, per-layer gap widths)": (SPARSE_MODEL, sparse_vd_bytes(SPARSE_MODEL))}


@FUZZ
@given(data=st.data())
@pytest.mark.parametrize("source", list(FILES))
def test_mutated_files_are_rejected_or_load_the_identical_model(source, data):
    model, valid = FILES[source]
    kind, content = data.draw(mutation(valid))
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
        expected = model.state_dict()
        got = loaded.state_dict()
        assert got.keys() == expected.keys(), kind
        assert all(torch.equal(got[k], expected[k]) for k in expected), f"{kind}: a different model loaded"
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024
    assert grown_mb < 200, f"{kind}: peak memory grew by {grown_mb:.0f} MB"


def test_the_fuzzed_configs_are_every_registered_technique_s():
    registered = {t.config for t in registry.techniques().values()}
    assert registered <= set(CONFIGS) and registered == set(TECHNIQUES)
    assert len(registered) >= 12  # pruning ... int8: a new technique joins without being listed


DATA = make_tiny_dataset(64, 32, 0)


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(target=st.sampled_from([(c, f) for c in TECHNIQUES for f in fields(c)]), value=JUNK)
def test_accepted_configs_run_their_verb_to_a_clean_error_or_finite_weights(target, value):
    cls, field = target
    outcome, config = try_config(cls, field, value)
    assert outcome.kind != "crash", outcome.detail
    if config is not None:
        result = use(config, DATA)
        assert not result.startswith(("crash", "silent")), result


@FUZZ
@given(case=primitive_case())
def test_every_primitive_gives_a_clean_error_or_finite_numbers(case):
    prim, arg, value = case
    kind, detail = try_primitive(prim, arg, value)
    assert kind in ("clean error", "finite result"), detail


@pytest.mark.parametrize("prim", PRIMITIVES, ids=[p.name for p in PRIMITIVES])
def test_every_primitive_s_valid_call_gives_finite_numbers(prim):
    assert try_primitive(prim, next(iter(prim.args)), prim.args[next(iter(prim.args))]) == ("finite result", "")


def test_clean_error_tells_the_package_s_raise_from_torch_s():
    with pytest.raises(ValueError) as ours:
        pf.pack_layer(torch.full((2, 2), float("nan")), None, "int8")
    assert clean_error(ours.value)
    with pytest.raises(RuntimeError) as theirs:
        torch.ones(2, 3) @ torch.ones(2, 3)
    assert not clean_error(theirs.value)


PACKED_MODEL = models.create("mlp", hidden=[6])
PACKED = {kind: packed_bytes(PACKED_MODEL, kind, sparse=kind == "int8") for kind in ("int4", "int8", "ternary", "fp16")}


@FUZZ
@given(kind=st.sampled_from(sorted(PACKED)), data=st.data())
def test_mutated_packed_files_are_rejected_or_give_finite_weights(kind, data, tmp_path_factory):
    how, content = data.draw(packed_mutation(PACKED[kind]))
    path = tmp_path_factory.mktemp("packed") / "m.pk"
    path.write_bytes(content)
    try:
        model = pf.unpack_into(models.create("mlp", hidden=[6]), pf.read(path))
    except ValueError as err:
        assert clean_error(err), f"{how}: {err!r}"
        return
    assert all(torch.isfinite(p).all() for p in model.parameters()), how
