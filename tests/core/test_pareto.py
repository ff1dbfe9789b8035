"""The Pareto frontier helper against a brute-force oracle, its tie rules, and the budget pick."""

from __future__ import annotations

import itertools
import random

import pytest

from compresslab.core.pareto import best_under_budget, dominated_by, dominates, pareto_front
from compresslab.views import pareto


def brute_front(points, maximize, minimize):
    """The definition, written out: i is on the front unless some j is >= everywhere and > somewhere."""
    def better_or_equal(a, b):
        return all(a[k] >= b[k] for k in maximize) and all(a[k] <= b[k] for k in minimize)

    def strictly_somewhere(a, b):
        return any(a[k] > b[k] for k in maximize) or any(a[k] < b[k] for k in minimize)

    return [i for i, p in enumerate(points)
            if not any(better_or_equal(q, p) and strictly_somewhere(q, p) for j, q in enumerate(points) if j != i)]


@pytest.mark.parametrize("seed", range(30))
def test_front_matches_brute_force_on_random_tables_with_ties(seed):
    rng = random.Random(seed)
    n = rng.randint(1, 40)
    # few distinct values: many exact ties and duplicate points
    points = [{"acc": rng.choice([90, 95, 97, 98, 98.5]), "bytes": rng.choice([1e3, 1e4, 5e4, 1e5]),
               "ms": rng.choice([0.1, 0.2, 0.3])} for _ in range(n)]
    for maximize, minimize in ((["acc"], ["bytes"]), (["acc"], ["bytes", "ms"]), ([], ["bytes", "ms"]), (["acc"], [])):
        assert pareto_front(points, maximize, minimize) == brute_front(points, maximize, minimize)
        doms = dominated_by(points, maximize, minimize)
        assert [i for i, d in enumerate(doms) if not d] == brute_front(points, maximize, minimize)
        for i, js in enumerate(doms):
            assert all(dominates(points[j], points[i], maximize, minimize) for j in js)


def test_ties_and_duplicates_stay_on_the_front():
    pts = [{"a": 1, "b": 1}, {"a": 1, "b": 1}, {"a": 1, "b": 2}]
    assert pareto_front(pts, ["a"], ["b"]) == [0, 1]  # identical points dominate neither; (1, 2) is dominated
    assert pareto_front([{"bpb": 1.2, "bytes": 10}, {"bpb": 1.1, "bytes": 20}], [], ["bpb", "bytes"]) == [0, 1]


def test_every_permutation_gives_the_same_front():
    pts = [{"acc": 98, "kb": 100}, {"acc": 97, "kb": 10}, {"acc": 97, "kb": 50}, {"acc": 99, "kb": 900}]
    expected = {id(pts[i]) for i in brute_front(pts, ["acc"], ["kb"])}
    for perm in itertools.permutations(pts):
        got = {id(perm[i]) for i in pareto_front(list(perm), ["acc"], ["kb"])}
        assert got == expected


def test_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match="point 1 has acc=nan"):
        pareto_front([{"acc": 1.0}, {"acc": float("nan")}], ["acc"])
    with pytest.raises(ValueError, match="point 0 has no value for objective 'kb'"):
        pareto_front([{"acc": 1.0}], ["acc"], ["kb"])
    with pytest.raises(ValueError, match="both maximized and minimized"):
        pareto_front([{"acc": 1.0}], ["acc"], ["acc"])
    with pytest.raises(ValueError, match="at least one objective"):
        pareto_front([{"acc": 1.0}])
    with pytest.raises(TypeError, match="list of column names"):
        pareto_front([{"acc": 1.0}], "acc")
    assert pareto_front([], ["acc"]) == []


def brute_budget(points, upper, lower):
    ok = [i for i, p in enumerate(points) if all(p[k] <= v for k, v in upper.items())
          and all(p[k] >= v for k, v in lower.items())]
    return max(ok, key=lambda i: (points[i]["acc"], -points[i]["kb"], -i), default=None)


@pytest.mark.parametrize("seed", range(20))
def test_best_under_budget_matches_brute_force(seed):
    rng = random.Random(seed)
    pts = [{"acc": rng.choice([96.0, 97.0, 98.0]), "kb": rng.choice([10, 50, 100, 500]), "ms": rng.random()}
           for _ in range(rng.randint(1, 25))]
    upper, lower = {"kb": rng.choice([10, 60, 1000]), "ms": rng.random()}, {"acc": rng.choice([95.0, 97.5])}
    assert best_under_budget(pts, "acc", upper, lower, tie_break=["kb"]) == brute_budget(pts, upper, lower)


def test_budget_skips_points_without_a_value_and_none_limits():
    pts = [{"acc": 99.0, "kb": None}, {"acc": 98.0, "kb": 5.0}]
    assert best_under_budget(pts, "acc", upper={"kb": 10}) == 1
    assert best_under_budget(pts, "acc", upper={"kb": None}) == 0


def test_budget_view_and_frontier_table_agree_with_the_helper():
    import time


    rng = random.Random(3)
    pts = [{"name": f"p{i}", "family": rng.choice(["precision", "single", "combination"]),
            "accuracy": rng.uniform(95, 99), "bytes": rng.uniform(1e4, 1e6), "ms_b1": rng.uniform(0.01, 0.1),
            "ms_b256": rng.uniform(0.1, 2), "energy_nj": rng.uniform(50, 1e5)} for i in range(20)]
    start = time.perf_counter()
    view = pareto.render_budget(pts, max_kb=300, max_ms=0.05, min_accuracy=96, batch=1)
    assert time.perf_counter() - start < 3  # a panel update: filter a table, draw one small figure
    best = best_under_budget(pts, "accuracy", upper={"bytes": 300 * 1024, "ms_b1": 0.05}, lower={"accuracy": 96},
                             tie_break=["bytes", "ms_b1"])
    expected = "none" if best is None else pts[best]["name"]
    assert view.metrics["best recipe"] == expected and view.figure is not None
    fits = [p for p in pts if p["bytes"] <= 300 * 1024 and p["ms_b1"] <= 0.05 and p["accuracy"] >= 96]
    assert view.metrics["recipes within budget"] == len(fits)
    assert pareto.render_budget(pts, max_kb=1, max_ms=0.05, min_accuracy=96, batch=1).metrics["best recipe"] == "none"
    table = pareto.frontier_table(pts, "bytes")
    assert list(table["name"]) == [pts[i]["name"] for i in sorted(brute_front(pts, ["accuracy"], ["bytes"]),
                                                                  key=lambda i: pts[i]["bytes"])]
    assert pareto.frontier_figure(pts).axes
