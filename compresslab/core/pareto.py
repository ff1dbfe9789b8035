"""The Pareto frontier of a table of points, and the best point under a budget.

A point is a mapping of objective name -> number (a dict, a DataFrame row). With objectives to
maximize (accuracy) and to minimize (bytes, latency, energy), point a *dominates* point b when a is
no worse than b on every objective and strictly better on at least one:

    a >= b on every maximized key,  a <= b on every minimized key,  and a != b on some key.

The frontier is the set of points no other point dominates. Two identical points do not dominate
each other, so both stay on the frontier. This module is pure Python (no torch, no pandas), so any
table works: a notebook's own grid, `results.load_runs(...)` rows, a language model's bits per byte.

    >>> pts = [{"acc": 98.0, "bytes": 1000}, {"acc": 97.0, "bytes": 100}, {"acc": 96.0, "bytes": 500}]
    >>> pareto_front(pts, maximize=["acc"], minimize=["bytes"])
    [0, 1]
    >>> dominated_by(pts, maximize=["acc"], minimize=["bytes"])
    [[], [], [1]]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

__all__ = ["dominates", "pareto_front", "dominated_by", "best_under_budget"]


def _objectives(maximize: Sequence[str], minimize: Sequence[str]) -> list[tuple[str, float]]:
    """[(key, sign)]: sign +1 for a key to maximize, -1 for one to minimize (so larger is better)."""
    for name, keys in (("maximize", maximize), ("minimize", minimize)):
        _check_keys(name, keys)
    both = set(maximize) & set(minimize)
    if both:
        raise ValueError(f"objective(s) {sorted(both)} are both maximized and minimized")
    if not maximize and not minimize:
        raise ValueError("give at least one objective in maximize or minimize")
    return [(k, 1.0) for k in maximize] + [(k, -1.0) for k in minimize]


def _check_keys(name: str, keys: object) -> None:
    """A list or tuple of column names (strings)."""
    if not isinstance(keys, (list, tuple)) or not all(isinstance(k, str) for k in keys):
        raise TypeError(f"{name}={keys!r} must be a list of column names (strings)")


def _check_points(points: object) -> None:
    """A list or tuple of mappings (one dict per point)."""
    if not isinstance(points, (list, tuple)):
        raise TypeError(f"points must be a list of mappings (one per point), got {type(points).__name__}")
    for i, p in enumerate(points):
        if not isinstance(p, Mapping):
            raise TypeError(f"point {i} is a {type(p).__name__}, not a mapping of column -> value")


def _number(v: object) -> float | None:
    """v as a finite float, or None when it is not a finite real number (bools are not numbers)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    try:
        x = float(v)
    except OverflowError:  # an int beyond float's range
        return None
    return x if math.isfinite(x) else None


def _values(points: Sequence[Mapping], objectives: list[tuple[str, float]]) -> list[tuple[float, ...]]:
    """Each point as a tuple of signed values (larger is better); a missing or non-finite value raises."""
    _check_points(points)
    out = []
    for i, p in enumerate(points):
        row = []
        for key, sign in objectives:
            if key not in p:
                raise ValueError(f"point {i} has no value for objective {key!r}")
            v = _number(p[key])
            if v is None:
                raise ValueError(f"point {i} has {key}={p[key]!r}; objectives must be finite numbers")
            row.append(sign * v)
        out.append(tuple(row))
    return out


def _dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))


def dominates(a: Mapping, b: Mapping, maximize: Sequence[str] = (), minimize: Sequence[str] = ()) -> bool:
    """True when point `a` is no worse than `b` on every objective and strictly better on one.

    >>> dominates({"acc": 98, "kb": 10}, {"acc": 98, "kb": 20}, ["acc"], ["kb"])
    True
    >>> dominates({"acc": 98, "kb": 10}, {"acc": 98, "kb": 10}, ["acc"], ["kb"])  # a tie dominates nothing
    False
    """
    objectives = _objectives(maximize, minimize)
    va, vb = _values([a, b], objectives)
    return _dominates(va, vb)


def pareto_front(points: Sequence[Mapping], maximize: Sequence[str] = (),
                 minimize: Sequence[str] = ()) -> list[int]:
    """Indices (ascending) of the points that no other point dominates.

    Sort by the first objective (best first, then lexicographically on the rest), then keep a point
    when none of the kept points dominates it: a dominating point always sorts before the point it
    dominates, so one pass suffices (O(n f) per point, f = size of the front).
    """
    objectives = _objectives(maximize, minimize)
    values = _values(points, objectives)
    order = sorted(range(len(values)), key=lambda i: tuple(-v for v in values[i]))
    front: list[int] = []
    for i in order:
        if not any(_dominates(values[j], values[i]) for j in front):
            front.append(i)
    return sorted(front)


def dominated_by(points: Sequence[Mapping], maximize: Sequence[str] = (),
                 minimize: Sequence[str] = ()) -> list[list[int]]:
    """For each point, the indices of the points that dominate it (empty: it is on the frontier)."""
    objectives = _objectives(maximize, minimize)
    values = _values(points, objectives)
    return [[j for j, b in enumerate(values) if j != i and _dominates(b, a)] for i, a in enumerate(values)]


def best_under_budget(points: Sequence[Mapping], objective: str = "accuracy",
                      upper: Mapping[str, float | None] | None = None,
                      lower: Mapping[str, float | None] | None = None,
                      tie_break: Sequence[str] = ()) -> int | None:
    """The index of the point with the largest `objective` among those within the budget, or None.

    upper: key -> largest allowed value (bytes, milliseconds); lower: key -> smallest allowed value
    (accuracy); a limit of None is no limit. Ties on the objective go to the smaller value of each
    `tie_break` key in turn, then to the lower index. A point without a finite value for a
    constrained key is outside the budget.

    >>> pts = [{"accuracy": 98.2, "bytes": 9e5}, {"accuracy": 97.9, "bytes": 3e4}, {"accuracy": 97.9, "bytes": 2e4}]
    >>> best_under_budget(pts, upper={"bytes": 5e4}, tie_break=["bytes"])
    2
    >>> best_under_budget(pts, upper={"bytes": 5e4}, lower={"accuracy": 99}) is None
    True
    """
    _check_points(points)
    if not isinstance(objective, str):
        raise TypeError(f"objective={objective!r} must be a column name (a string)")
    _check_keys("tie_break", tie_break)
    for name, bounds in (("upper", upper), ("lower", lower)):
        if bounds is not None and not isinstance(bounds, Mapping):
            raise TypeError(f"{name}={bounds!r} must be a mapping of column -> limit, or None")
        for key, limit in (bounds or {}).items():
            if not isinstance(key, str) or (limit is not None and _number(limit) is None
                                            and not (isinstance(limit, float) and math.isinf(limit))):
                raise ValueError(f"{name}[{key!r}]={limit!r} must be a number (or None: no limit) for a column name")
    limits = [(k, v, +1) for k, v in (upper or {}).items()] + [(k, v, -1) for k, v in (lower or {}).items()]

    def finite(p: Mapping, key: str) -> float | None:
        return _number(p.get(key))

    best, best_key = None, None
    for i, p in enumerate(points):
        ok = True
        for key, limit, side in limits:
            if limit is None:
                continue
            v = finite(p, key)
            if v is None or (side > 0 and v > limit) or (side < 0 and v < limit):
                ok = False
                break
        score = finite(p, objective)
        if not ok or score is None:
            continue
        rank = (-score, *[(finite(p, k) if finite(p, k) is not None else math.inf) for k in tie_break], i)
        if best_key is None or rank < best_key:
            best, best_key = i, rank
    return best
