"""Figures, the frontier table and the budget panel of the Pareto notebook (08).

A point is a row (a dict) with at least name, family, accuracy (percent) and bytes; the notebook's
rows also hold ms_b1 / ms_b256 (the faster engine's median ms per batch) and energy_nj (estimated).
Frontiers come from `core.pareto.pareto_front`, always accuracy (maximized) against one cost.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from compresslab.core.pareto import best_under_budget, pareto_front
from compresslab.views.figures import PALETTE, new_figure
from compresslab.views.panel import View, choice, panel, slider

__all__ = ["COSTS", "FAMILY_COLORS", "finite_points", "frontier_figure", "frontier_table", "render_budget",
           "budget_panel"]

# cost key -> axis label
COSTS = {"bytes": "file bytes (log)", "ms_b1": "ms per batch of 1 (log)", "ms_b256": "ms per batch of 256 (log)",
         "energy_nj": "estimated nJ per inference (log; a model, not measured)"}
FAMILY_COLORS = {"precision": PALETTE[0], "single": PALETTE[2], "combination": PALETTE[1], "recorded": PALETTE[4]}


def _rows(points) -> list[dict]:
    return points.to_dict("records") if hasattr(points, "to_dict") else [dict(p) for p in points]


def _finite(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def _short(value: float, _pos: object = None) -> str:
    """A tick label: 20000 -> '20k', 1.5e6 -> '1.5M', 0.02 -> '0.02'."""
    for scale, suffix in ((1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:g}{suffix}"
    return f"{value:g}"


def _log_x(ax) -> None:
    """A log x axis labelled at 1, 2 and 5 times each power of ten (a short range still gets labels)."""
    ax.set_xscale("log")
    lo, hi = ax.get_xlim()
    decades = math.log10(hi / lo) if lo > 0 and hi > lo else 1.0
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if decades < 2.5 else (1.0,)))
    ax.xaxis.set_major_formatter(FuncFormatter(_short))
    ax.xaxis.set_minor_formatter(NullFormatter())


def finite_points(points, cost: str) -> list[dict]:
    """The points with a finite accuracy and a positive finite `cost`."""
    return [p for p in _rows(points) if _finite(p.get(cost)) and isinstance(p.get("accuracy"), (int, float))
            and math.isfinite(p["accuracy"])]


def frontier_figure(points, costs: Sequence[str] = ("bytes", "ms_b1", "ms_b256", "energy_nj"),
                    title: str = "Accuracy against each cost: the frontier (line) and dominated points (grey)",
                    floor: float | None = None) -> Figure:
    """One panel per cost (log x): frontier points coloured by family and labelled, the frontier
    drawn as a staircase, dominated points grey. floor: lowest accuracy shown (None: automatic)."""
    ncols = 2 if len(costs) > 1 else 1
    nrows = math.ceil(len(costs) / ncols)
    fig, axes = new_figure(ncols=ncols, nrows=nrows, width=5.6, height=4.2)
    for ax, cost in zip(axes.ravel(), costs):
        pts = finite_points(points, cost)
        if not pts:
            ax.set_axis_off()
            ax.set_title(f"no point has {cost}")
            continue
        front = set(pareto_front(pts, maximize=["accuracy"], minimize=[cost]))
        for i, p in enumerate(pts):
            if i not in front:
                ax.scatter(p[cost], p["accuracy"], s=18, color="0.75", zorder=2)
        fr = sorted((pts[i] for i in front), key=lambda p: p[cost])
        xs, ys = [p[cost] for p in fr], [p["accuracy"] for p in fr]
        ax.step(xs, ys, where="post", color="0.2", lw=1.2, zorder=3)
        labels: dict[tuple[float, float], list[str]] = {}
        for p in fr:
            ax.scatter(p[cost], p["accuracy"], s=36, color=FAMILY_COLORS.get(p.get("family"), PALETTE[7]),
                       edgecolor="black", lw=0.5, zorder=4)
            labels.setdefault((p[cost], p["accuracy"]), []).append(p["name"])
        for (x, y), names in labels.items():  # points at the same place share one label
            ax.annotate(", ".join(names), (x, y), xytext=(4, -9), textcoords="offset points", fontsize=6.5)
        _log_x(ax)
        lo = floor if floor is not None else max(min(p["accuracy"] for p in pts), max(ys) - 8)
        ax.set_ylim(lo - 0.3, max(p["accuracy"] for p in pts) + 0.4)
        ax.set(xlabel=COSTS.get(cost, cost), ylabel="test accuracy (%)",
               title=f"{len(front)} of {len(pts)} points on the frontier")
    for ax in axes.ravel()[len(costs):]:
        ax.set_axis_off()
    handles = [ax.scatter([], [], color=c, label=f) for f, c in FAMILY_COLORS.items()
               if any(p.get("family") == f for p in _rows(points))]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.04, 1, 0.97))
    return fig


def frontier_table(points, cost: str = "bytes", columns: Sequence[str] = ("name", "family", "verbs", "accuracy",
                                                                          "bytes", "compression", "ms_b1", "ms_b256",
                                                                          "energy_nj")):
    """The frontier of accuracy against `cost` as a DataFrame, cheapest first."""
    import pandas as pd

    pts = finite_points(points, cost)
    front = sorted((pts[i] for i in pareto_front(pts, maximize=["accuracy"], minimize=[cost])), key=lambda p: p[cost])
    return pd.DataFrame([{c: p.get(c) for c in columns} for p in front])


def _budget_choice(rows: list[dict], max_kb: float, max_ms: float, min_accuracy: float, batch: int) -> tuple[int | None, list[int]]:
    key = f"ms_b{batch}"
    upper = {"bytes": 1024 * max_kb, key: max_ms}
    fits = [i for i, p in enumerate(rows) if _finite(p.get("bytes")) and p["bytes"] <= 1024 * max_kb
            and _finite(p.get(key)) and p[key] <= max_ms and p["accuracy"] >= min_accuracy]
    best = best_under_budget(rows, "accuracy", upper=upper, lower={"accuracy": min_accuracy}, tie_break=["bytes", key])
    return best, fits


def render_budget(points, max_kb: float, max_ms: float, min_accuracy: float, batch: int = 1) -> View:
    """The most accurate recipe within max_kb KiB, max_ms ms per batch of `batch` and min_accuracy %,
    and why: the figure shows every point (grey outside the budget), the budget's limits and the pick."""
    rows = [p for p in _rows(points) if _finite(p.get("bytes"))]
    key = f"ms_b{batch}"
    best, fits = _budget_choice(rows, max_kb, max_ms, min_accuracy, batch)
    fig, axes = new_figure(width=6.4, height=4.0)
    ax = axes[0, 0]
    for i, p in enumerate(rows):
        inside = i in fits
        ax.scatter(p["bytes"] / 1024, p["accuracy"], s=30 if inside else 16, zorder=3 if inside else 2,
                   color=FAMILY_COLORS.get(p.get("family"), PALETTE[7]) if inside else "0.78")
    if best is not None:
        p = rows[best]
        ax.scatter(p["bytes"] / 1024, p["accuracy"], marker="*", s=240, color="gold", edgecolor="black", zorder=5)
        ax.annotate(p["name"], (p["bytes"] / 1024, p["accuracy"]), xytext=(6, 4), textcoords="offset points", fontsize=8)
    ax.axvline(max_kb, color=PALETTE[3], ls="--", lw=1)
    ax.axhline(min_accuracy, color=PALETTE[3], ls=":", lw=1)
    _log_x(ax)
    top = max(p["accuracy"] for p in rows)
    ax.set_ylim(max(min(p["accuracy"] for p in rows), top - 8) - 0.3, top + 0.4)
    ax.set(xlabel="file KiB (log); dashed: max KiB", ylabel="test accuracy (%); dotted: min accuracy",
           title=f"Budget: <= {max_kb:.4g} KiB, <= {max_ms:.3g} ms at batch {batch}, >= {min_accuracy:.4g}%\n"
                 f"{len(fits)} of {len(rows)} recipes fit")
    fig.tight_layout()
    if best is None:
        n_kb = sum(p["bytes"] <= 1024 * max_kb for p in rows)
        n_ms = sum(_finite(p.get(key)) and p[key] <= max_ms for p in rows)
        n_acc = sum(p["accuracy"] >= min_accuracy for p in rows)
        why = (f"no recipe meets all three limits: {n_kb} fit the size, {n_ms} the latency, {n_acc} the accuracy "
               f"of {len(rows)}; relax the limit that fewest meet")
        return View(figure=fig, metrics={"best recipe": "none", "recipes within budget": 0, "why": why})
    p = rows[best]
    others = sorted((rows[i] for i in fits if i != best), key=lambda q: -q["accuracy"])
    runner = (f"; next: {others[0]['name']} at {others[0]['accuracy']:.2f}%, {others[0]['bytes'] / 1024:.1f} KiB"
              if others else "; it is the only recipe that fits")
    why = (f"most accurate of the {len(fits)} recipe(s) within the budget ({p['accuracy']:.2f}%, "
           f"{p['bytes'] / 1024:.1f} KiB, {p[key]:.3g} ms at batch {batch} in {p.get(f'engine_b{batch}') or 'n/a'})"
           f"{runner}")
    return View(figure=fig, metrics={"best recipe": p["name"], "its steps": p.get("verbs", ""),
                                     "accuracy %": p["accuracy"], "KiB": p["bytes"] / 1024, f"ms at batch {batch}": p[key],
                                     "recipes within budget": len(fits), "why": why})


def budget_panel(points, max_kb: float, max_ms: float, min_accuracy: float, batch: int = 1) -> None:
    """Sliders for the budget (max KiB, max ms, min accuracy) and the batch size; shows render_budget.
    Every update only filters the precomputed table and draws one small figure."""
    rows = [p for p in _rows(points) if _finite(p.get("bytes"))]
    kb = [p["bytes"] / 1024 for p in rows]
    ms = [p[k] for p in rows for k in ("ms_b1", "ms_b256") if _finite(p.get(k))]
    acc = [p["accuracy"] for p in rows]
    hi_kb = float(np.ceil(max(kb) * 1.1))
    hi_ms = float(max(ms) * 1.2) if ms else 10.0
    lo_acc, hi_acc = float(np.floor(min(acc))), float(np.ceil(max(acc)))
    controls = {"max_kb": slider(1.0, max(hi_kb, 2.0), 1.0, label="max KiB"),
                "max_ms": slider(0.001, max(hi_ms, 0.002), 0.001, label="max ms"),
                "min_accuracy": slider(lo_acc, max(hi_acc, lo_acc + 1), 0.05, label="min accuracy %"),
                "batch": choice([1, 256], label="batch")}
    values = {"max_kb": float(min(max(max_kb, 1.0), controls["max_kb"].high)),
              "max_ms": float(min(max(max_ms, 0.001), controls["max_ms"].high)),
              "min_accuracy": float(min(max(min_accuracy, lo_acc), controls["min_accuracy"].high)), "batch": batch}
    panel(lambda max_kb, max_ms, min_accuracy, batch: render_budget(rows, max_kb, max_ms, min_accuracy, batch),
          controls, values, title="Pick a budget: the best recipe within it, and why")
