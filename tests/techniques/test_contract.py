"""The one technique contract: every `apply_<technique>` has the same shape and returns the same Report.

    apply_<technique>(model, config, data=None, *, inplace=False, progress=None, loss_fn=None, ...)
        -> (model, Report)

Each technique runs once on a tiny MLP and tiny synthetic data; the tests then check the verb's
signature, that the input model is untouched, the report's fields and units (accuracy in percent),
its sizes from the ledger, its plot point, its JSON round trip and its recording.
"""

from __future__ import annotations

import copy
import inspect
import json
import warnings

import pytest
import torch
from torch import nn

from compresslab.core import results
from compresslab.core.metrics import Size
from compresslab.core.report import Report
from compresslab.techniques import registry

TINY = registry.TINY_TRAIN


def _cases() -> dict:
    """name -> (verb, model factory, config, technique keywords), from each registered technique's
    example (the example is built once, so the config object is the same in every test)."""
    cases = {}
    for name, technique in registry.techniques().items():
        model, config, extra = technique.example()
        state = {k: v.clone() for k, v in model.state_dict().items()}

        def make(model=model, state=state):
            fresh = copy.deepcopy(model)
            fresh.load_state_dict(state)
            return fresh

        cases[name] = (technique.apply, make, config, extra)
    return cases


CASES = _cases()


@pytest.fixture(scope="module")
def tiny():
    from conftest import make_tiny_dataset

    return make_tiny_dataset()


@pytest.fixture(scope="module")
def outcomes(tiny):
    """Each technique applied once: name -> (input model, its state before, output model, report)."""
    out = {}
    for name, (verb, make, config, extra) in CASES.items():
        model = make()
        before = {k: v.clone() for k, v in model.state_dict().items()}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.export chatter, uncompiled INT8 warning
            new, report = verb(model, config, tiny, progress=False, **extra)
        out[name] = (model, before, new, report)
    return out


def test_every_apply_verb_in_the_package_is_covered():
    import pkgutil

    import compresslab.deploy
    import compresslab.techniques

    found = set()
    for package in (compresslab.techniques, compresslab.deploy):
        for info in pkgutil.iter_modules(package.__path__):
            module = __import__(f"{package.__name__}.{info.name}", fromlist=["_"])
            found |= {n for n, f in vars(module).items()
                      if n.startswith("apply_") and callable(f) and f.__module__ == module.__name__}
    assert found - {"apply_structured_masks"} == {case[0].__name__ for case in CASES.values()}


def test_registry_refuses_clashes_and_bad_entries():
    pruning = registry.techniques()["pruning"]
    with pytest.raises(ValueError, match="clashes with 'pruning': same verb"):
        registry.register(registry.Technique(name="other", apply=pruning.apply, config=pruning.config,
                                             example=pruning.example, verb="prune"))
    with pytest.raises(ValueError, match="notebook and params go together"):
        registry.Technique(name="x", apply=pruning.apply, config=pruning.config, example=pruning.example,
                           notebook="10_x")
    with pytest.raises(ValueError, match="apply_<technique>"):
        registry.Technique(name="x", apply=len, config=pruning.config, example=pruning.example)
    assert "other" not in registry.techniques()


def test_derived_lists_come_from_the_registry():
    """Verbs, notebook parameters and exercise references are the registered ones, nothing else."""
    from compresslab.combine import recipes
    from compresslab.exercises import checks
    from compresslab.running import params

    known = registry.techniques()
    assert set(registry.verbs()) == {t.verb for t in known.values() if t.verb}
    with pytest.raises(ValueError, match="verb"):
        recipes.Step("no_such_verb", None)
    declared: dict[str, dict] = {}  # a notebook's parameters: those of every technique that declares it
    for t in known.values():
        if t.notebook:
            declared.setdefault(t.notebook, {}).update(t.params)
    for notebook, spec in declared.items():
        assert params.spec_for(notebook) == spec
    for t in known.values():
        for name, fn in t.references.items():
            assert checks.REFERENCES[name] is fn


@pytest.mark.parametrize("name", list(CASES))
def test_signature_has_the_one_shape(name):
    verb = CASES[name][0]
    params = list(inspect.signature(verb).parameters.values())
    assert [p.name for p in params[:3]] == ["model", "config", "data"]
    assert all(p.kind is p.POSITIONAL_OR_KEYWORD for p in params[:3])
    keyword = {p.name: p for p in params if p.kind is p.KEYWORD_ONLY}
    assert {"inplace", "progress", "loss_fn"} <= set(keyword)
    assert keyword["inplace"].default is False and keyword["progress"].default is None
    assert keyword["loss_fn"].default is None


@pytest.mark.parametrize("name", list(CASES))
def test_input_model_is_untouched_and_output_is_a_module(name, outcomes, tiny):
    model, before, new, _ = outcomes[name]
    assert new is not model
    after = model.state_dict()
    assert set(after) == set(before) and all(torch.equal(after[k], v) for k, v in before.items())
    assert isinstance(new, nn.Module)
    x = tiny.test.tensors(8)[0]
    with torch.no_grad():
        assert new.eval()(x).shape == (8, 10)


@pytest.mark.parametrize("name", list(CASES))
def test_report_fields_and_units(name, outcomes):
    _, _, new, report = outcomes[name]
    assert isinstance(report, Report) and report.config is CASES[name][2]
    for value in (report.accuracy_before, report.accuracy_after):
        assert isinstance(value, float) and 0.0 <= value <= 100.0
    for size in (report.size_before, report.size_after):
        assert isinstance(size, Size) and size.params > 0 and 0 < size.nonzeros <= size.params
        assert size.fp32_bytes == 4 * size.params and size.stored_bytes > 0
    assert report.size_before.params == sum(p.numel() for p in CASES[name][1]().parameters())
    assert report.seconds > 0 and isinstance(report.layers, list)
    assert report.compression == pytest.approx(report.size_before.fp32_bytes / report.size_after.stored_bytes)
    point = report.point()
    assert set(point) == {"technique", "accuracy", "bytes", "params", "nonzeros", "latency_ms"}
    assert point["accuracy"] == report.accuracy_after and point["bytes"] == report.size_after.stored_bytes
    assert report.headline() in report._repr_html_()


def test_sizes_follow_what_each_technique_stores(outcomes):
    sizes = {name: outcomes[name][3].size_after for name in CASES}
    before = outcomes["pruning"][3].size_before
    assert sizes["pruning"].nonzeros < 0.3 * before.params  # 80% of weights gone
    assert sizes["lowrank"].params < before.params  # physically smaller
    assert sizes["sharing"].stored_bytes < before.fp32_bytes / 5  # 3-bit indices instead of 32-bit floats
    assert sizes["ptq"].stored_bytes < before.fp32_bytes / 3  # 8-bit weights
    assert sizes["lowbit"].stored_bytes < before.fp32_bytes / 15  # ternary codes, 1.6 bits each
    assert sizes["deep_compression"].stored_bytes == outcomes["deep_compression"][3].file_bytes
    assert sizes["int8"].stored_bytes == outcomes["int8"][3].int8_bytes["total_bytes"]


@pytest.mark.parametrize("name", list(CASES))
def test_to_dict_round_trips_through_json(name, outcomes):
    report = outcomes[name][3]
    payload = report.to_dict()
    text = json.dumps(payload)
    assert json.loads(text) == payload
    again = Report.from_dict(json.loads(text))
    assert type(again) is type(report) and again.config == report.config
    assert again.to_dict() == payload
    assert again.point() == report.point() and again.size_after == report.size_after


@pytest.mark.parametrize("name", ["pruning", "sharing"])
def test_record_writes_the_point_and_the_config(name, outcomes, tmp_path):
    report = outcomes[name][3]
    report.record(f"contract_{name}", directory=tmp_path, note=1)
    saved = results.read(tmp_path / f"contract_{name}{results.SUFFIX}")
    assert saved["metrics"]["point_accuracy"] == report.accuracy_after
    assert saved["metrics"]["point_bytes"] == report.size_after.stored_bytes and saved["metrics"]["note"] == 1
    assert saved["parameters"]["__class__"].endswith(type(report.config).__name__)


@pytest.mark.parametrize("name", ["pruning", "lottery", "lowrank", "sharing", "ptq", "qat", "distillation"])
def test_inplace_changes_and_returns_the_given_model(name, tiny, outcomes):
    verb, make, config, extra = CASES[name]
    model = make()
    new, report = verb(model, config, tiny, inplace=True, progress=False, **extra)
    assert new is model
    assert report.accuracy_after == pytest.approx(outcomes[name][3].accuracy_after)  # same result as on a copy


@pytest.mark.parametrize("name", ["ptq", "distillation", "int8"])
def test_verbs_that_build_their_own_loss_refuse_a_loss_fn(name, tiny):
    verb, make, config, extra = CASES[name]
    with pytest.raises(ValueError, match="loss_fn"):
        verb(make(), config, tiny, loss_fn=lambda logits, y, x: logits.sum(), **extra)
