"""Mixed precision: the integer program against brute force, the byte costs against real packed files,
accuracy-aware tuning by hand, and the verb's file read back."""

from __future__ import annotations

import itertools
import random

import pytest
import torch

from compresslab.core import models
from compresslab.core.training import TrainConfig, evaluate, train
from compresslab.techniques import mixedprecision as MP
from compresslab.techniques import packedfile


def _random_tables(rng: random.Random, layers: int, options: int):
    names = [f"l{i}" for i in range(layers)]
    opts = [f"o{j}" for j in range(options)]
    scores = {n: {o: rng.choice([rng.random(), round(rng.random(), 1)]) for o in opts} for n in names}
    costs = {n: {o: rng.randint(1, 20) for o in opts} for n in names}
    return scores, costs


def test_solve_matches_brute_force_on_random_programs():
    rng = random.Random(0)
    for _ in range(60):
        scores, costs = _random_tables(rng, rng.randint(1, 5), rng.randint(1, 4))
        cheapest = sum(min(r.values()) for r in costs.values())
        priciest = sum(max(r.values()) for r in costs.values())
        budget = rng.uniform(cheapest, priciest)
        got, oracle = MP.solve(scores, costs, budget), MP.brute_force(scores, costs, budget)
        assert MP.total(costs, got) <= budget + 1e-9
        assert MP.total(scores, got) == pytest.approx(MP.total(scores, oracle), abs=1e-9)


def _random_pairs(rng: random.Random, costs):
    """Pair terms on random layer pairs (neighbours and not), integer costs of both signs, some option
    pairs left out (cost 0)."""
    names = list(costs)
    pairs = {}
    for a, b in itertools.combinations(names, 2):
        if rng.random() < 0.6:
            pairs[(a, b)] = {(o1, o2): rng.randint(-8, 8) for o1 in costs[a] for o2 in costs[b] if rng.random() < 0.7}
    return pairs


def _brute_cost(costs, pairs, config):
    """The cost by its definition, written out independently of total_cost."""
    out = sum(costs[k][v] for k, v in config.items())
    for (a, b), row in pairs.items():
        for (o1, o2), c in row.items():
            if config[a] == o1 and config[b] == o2:
                out += c
    return out


def test_solve_with_pair_costs_matches_brute_force_on_random_programs():
    """Pair terms of both signs: solve's optimum = brute force's, and its full cost meets the budget;
    every budget from the cheapest configuration's full cost to the dearest's, and one below (refused)."""
    rng = random.Random(3)
    for _ in range(80):
        scores, costs = _random_tables(rng, rng.randint(2, 5), rng.randint(1, 3))
        pairs = _random_pairs(rng, costs)
        every = [dict(zip(costs, combo)) for combo in itertools.product(*(list(r) for r in costs.values()))]
        full = [_brute_cost(costs, pairs, c) for c in every]
        for c, f in zip(every, full):
            assert MP.total_cost(costs, c, pairs) == f
        budget = rng.uniform(min(full), max(full))
        got = MP.solve(scores, costs, budget, pair_costs=pairs)
        oracle = MP.brute_force(scores, costs, budget, pair_costs=pairs)
        assert MP.total_cost(costs, got, pairs) <= budget + 1e-9
        assert MP.total(scores, got) == pytest.approx(MP.total(scores, oracle), abs=1e-9)
        assert MP.total(scores, oracle) == min(MP.total(scores, c) for c, f in zip(every, full) if f <= budget)
        with pytest.raises(ValueError):
            MP.solve(scores, costs, min(full) - 0.5, pair_costs=pairs)


def test_pair_costs_by_hand():
    """Two int8 neighbours pass int8 between them (-6): both int8 fits a budget neither alone does."""
    scores = {"a": {"fp32": 0.0, "int8": 1.0}, "b": {"fp32": 0.0, "int8": 1.0}}
    costs = {"a": {"fp32": 0.0, "int8": 2.0}, "b": {"fp32": 0.0, "int8": 2.0}}
    pairs = {("a", "b"): {("int8", "int8"): -6.0}}
    assert MP.solve(scores, costs, -1.0, pair_costs=pairs) == {"a": "int8", "b": "int8"}
    assert MP.brute_force(scores, costs, -1.0, pair_costs=pairs) == {"a": "int8", "b": "int8"}
    assert MP.solve(scores, costs, 0.0, pair_costs=pairs) == {"a": "fp32", "b": "fp32"}
    assert MP.total_cost(costs, {"a": "int8", "b": "int8"}, pairs) == -2.0
    assert MP.total_cost(costs, {"a": "int8", "b": "fp32"}, pairs) == 2.0
    with pytest.raises(ValueError, match="no configuration"):
        MP.solve(scores, costs, -2.5, pair_costs=pairs)
    rows = MP.budget_sweep(scores, costs, [-3.0, -2.0, 0.0], pair_costs=pairs)
    assert [(r["budget"], r["cost"], r["score"]) for r in rows] == [(-2.0, -2.0, 2.0), (0.0, 0.0, 0.0)]


@pytest.mark.parametrize("pairs, match", [
    ({("a", "c"): {("x", "x"): 1.0}}, r"key \('a', 'c'\) must be a tuple of two different layers"),
    ({("a", "a"): {("x", "x"): 1.0}}, "two different layers"),
    ({"a|b": {("x", "x"): 1.0}}, "two different layers"),
    ({("a", "b"): {("x", "z"): 1.0}}, r"key \('x', 'z'\) must be \(option of 'a', option of 'b'\)"),
    ({("a", "b"): {("x", "y"): float("inf")}}, r"pair_costs\[\('a', 'b'\)\]\[\('x', 'y'\)\]=inf must be a finite"),
    ({("a", "b"): {("x", "y"): "1"}}, "finite number"),
    ({("a", "b"): {("x", "y"): True}}, "finite number"),
])
def test_bad_pair_costs_are_refused(pairs, match):
    scores = {"a": {"x": 0.0, "y": 1.0}, "b": {"x": 0.0, "y": 1.0}}
    costs = {"a": {"x": 1.0, "y": 0.0}, "b": {"x": 1.0, "y": 0.0}}
    for call in (lambda: MP.solve(scores, costs, 5.0, pair_costs=pairs),
                 lambda: MP.brute_force(scores, costs, 5.0, pair_costs=pairs),
                 lambda: MP.budget_sweep(scores, costs, [5.0], pair_costs=pairs)):
        with pytest.raises(ValueError, match=match):
            call()
    with pytest.raises(TypeError, match="pair_costs"):
        MP.solve(scores, costs, 5.0, pair_costs=[1.0])


def test_solve_by_hand_and_infeasible_budgets():
    scores = {"a": {"int8": 0.0, "int2": 5.0}, "b": {"int8": 0.0, "int2": 1.0}}
    costs = {"a": {"int8": 8, "int2": 2}, "b": {"int8": 8, "int2": 2}}
    assert MP.solve(scores, costs, 16) == {"a": "int8", "b": "int8"}
    assert MP.solve(scores, costs, 10) == {"a": "int8", "b": "int2"}  # drop the tolerant layer first
    assert MP.solve(scores, costs, 4) == {"a": "int2", "b": "int2"}
    with pytest.raises(ValueError, match="below the cheapest configuration's cost 4"):
        MP.solve(scores, costs, 3)
    with pytest.raises(ValueError, match="same layers"):
        MP.solve(scores, {"a": costs["a"]}, 10)
    with pytest.raises(ValueError, match="non-finite"):
        MP.solve({"a": {"int8": float("nan")}}, {"a": {"int8": 1}}, 10)


def test_budget_sweep_scores_fall_as_budgets_grow():
    scores, costs = _random_tables(random.Random(1), 4, 4)
    rows = MP.budget_sweep(scores, costs, range(0, 90, 3))
    assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)
    assert all(r["cost"] <= r["budget"] for r in rows)


def test_layer_bytes_add_up_to_the_packed_file(tmp_path):
    model = models.create("lenet5")
    costs = MP.layer_bytes(model)
    for combo in itertools.product(("int8", "int2"), repeat=2):
        kinds = {"conv1": "int4", "conv2": "int3", "fc1": combo[0], "fc2": combo[1]}
        size = packedfile.save_model(model, tmp_path / "m.clpk", kinds)
        raw = (tmp_path / "m.clpk").read_bytes()
        header = len(packedfile.MAGIC) + 4 + int.from_bytes(raw[len(packedfile.MAGIC):len(packedfile.MAGIC) + 4],
                                                            "little")
        assert size - header == MP.total(costs, kinds)
    w = model.fc1.weight.numel()
    assert costs["fc1"]["int2"] == w * 2 // 8 + 4 * 500 + 4 * 500  # codes, one scale and one bias per row


def test_accuracy_aware_restores_in_order_and_counts_evaluations():
    weights = {"a": 0.5, "b": 0.3, "c": 0.1}  # points each aggressive layer costs

    def acc(config):
        return 90.0 - sum(w for k, w in weights.items() if config[k] == "int2")

    start = dict.fromkeys(weights, "int2")
    tuning = MP.accuracy_aware(acc, start, ["a", "b", "c"], "int8", 90.0, 0.15)
    assert tuning.met and tuning.config == {"a": "int8", "b": "int8", "c": "int2"}
    assert tuning.evaluations == 3 <= len(weights) + 1
    assert [t["restored"] for t in tuning.trace] == [None, "a", "b"]
    never = MP.accuracy_aware(acc, start, ["c"], "int8", 90.0, 0.05)
    assert not never.met and never.evaluations == 2


def test_apply_mixed_precision_meets_its_budget_and_reads_its_file_back(tiny_data, tmp_path):
    torch.manual_seed(0)
    model = models.create("mlp", hidden=(32,))
    train(model, tiny_data, TrainConfig(epochs=2, batch_size=32, lr=0.1))
    config = MP.MixedPrecisionConfig(budget_kind="int3", select_images=64)
    out, report = MP.apply_mixed_precision(model, config, tiny_data, path=tmp_path / "m.clpk")
    costs = MP.layer_bytes(model)
    assert report.layer_bytes == MP.total(costs, report.kinds) <= report.budget_bytes
    assert report.budget_bytes == sum(costs[n]["int3"] for n in costs)
    assert report.file_bytes == (tmp_path / "m.clpk").stat().st_size
    reread = packedfile.unpack_into(models.create("mlp", hidden=(32,)), packedfile.read(tmp_path / "m.clpk"))
    for a, b in zip(out.parameters(), reread.parameters()):
        assert torch.equal(a, b)
    assert report.accuracy_after == evaluate(reread, tiny_data.test).accuracy
    assert not any(p is q for p, q in zip(out.parameters(), model.parameters()))


@pytest.mark.parametrize("kwargs, match", [
    ({"options": ()}, "options"), ({"options": ("int8", "int5")}, "options"), ({"options": ("int8", "int8")}, "twice"),
    ({"budget_kind": "fp32"}, "budget_kind"), ({"budget_scale": 0.0}, "budget_scale"), ({"select_images": 0}, "select"),
])
def test_config_errors_name_the_field(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MP.MixedPrecisionConfig(**kwargs)
