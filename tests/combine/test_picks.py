"""The capstone's picks against brute force: the smallest and the fastest point near dense accuracy."""

from __future__ import annotations

import itertools
import random

import pytest

from compresslab.combine.picks import CAPSTONE_TARGETS, CapstoneTargets, near_dense


def _table(rng: random.Random, n: int) -> list[dict]:
    rows = []
    for i in range(n):
        size = rng.choice([100, 200, 400, 800, 3200])  # repeated sizes and times: ties happen
        rows.append({"name": f"p{rng.randrange(1000):03d}-{i}", "accuracy": rng.choice([97.0, 97.6, 97.9, 98.0, 98.3]),
                     "bytes": size, "compression": 4000 / size, "ms_b256": rng.choice([1.0, 2.0, 4.0]),
                     "ms_b1": 1.0})
    return rows


@pytest.mark.parametrize("seed", range(40))
def test_picks_equal_brute_force(seed):
    rng = random.Random(seed)
    rows = _table(rng, rng.randrange(1, 12))
    dense, reference = 98.2, 6.0
    near = [r for r in rows if r["accuracy"] >= dense - 0.5]
    if not near:
        with pytest.raises(ValueError, match="within 0.5 points"):
            near_dense(rows, dense, reference)
        return
    got = near_dense(rows, dense, reference)
    # brute force: every near point compared with every other, ties broken by name
    smallest = [p for p in near if all((p["bytes"], p["name"]) <= (q["bytes"], q["name"]) for q in near)]
    fastest = [p for p in near if all((-reference / p["ms_b256"], p["name"]) <= (-reference / q["ms_b256"], q["name"])
                                      for q in near)]
    assert got.smallest["name"] == smallest[0]["name"] and got.fastest["name"] == fastest[0]["name"]
    assert got.fastest["speedup"] == reference / fastest[0]["ms_b256"]
    assert got.met == {"40x smaller within 0.5 points": smallest[0]["compression"] >= 40,
                       "3x faster at batch 256 within 0.5 points": reference / fastest[0]["ms_b256"] >= 3}
    assert all("speedup" not in r for r in rows)  # the caller's rows are not changed


def test_targets_sit_on_their_boundaries():
    row = {"name": "a", "accuracy": 97.5, "bytes": 100, "compression": 40.0, "ms_b256": 2.0}
    assert all(near_dense([row], 98.0, 6.0).met.values())  # exactly 0.5 points, 40x and 3x: met
    below = {**row, "compression": 39.999, "ms_b256": 2.001}
    assert not any(near_dense([below], 98.0, 6.0).met.values())
    with pytest.raises(ValueError):
        near_dense([row], 98.01, 6.0)  # 0.51 points below dense: nothing near


def test_targets_are_written_once_and_validated():
    goals = CapstoneTargets(within_points=1, compression_x=10, speedup=2, batch=1)
    assert goals.size_label == "10x smaller within 1 points" and goals.speed_label.startswith("2x faster at batch 1")
    assert CAPSTONE_TARGETS.size_label == "40x smaller within 0.5 points"
    for field, bad in itertools.product(["within_points", "compression_x", "speedup"], [-1, float("nan")]):
        with pytest.raises(ValueError, match=f"CapstoneTargets.{field}"):
            CapstoneTargets(**{field: bad})
    with pytest.raises(ValueError, match="reference_ms"):
        near_dense([{"name": "a", "accuracy": 98.0, "bytes": 1, "compression": 1.0, "ms_b256": 1.0}], 98.0, 0.0)
