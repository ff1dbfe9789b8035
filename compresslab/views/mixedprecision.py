"""Figures, the render function and the budget panel of the mixed-precision notebook (11)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from matplotlib.figure import Figure

from compresslab.techniques.mixedprecision import PairTable, Table, solve, total, total_cost
from compresslab.views.figures import PALETTE, new_figure
from compresslab.views.panel import View, choice, panel, slider

__all__ = ["heatmap", "proxy_ranks", "frontier", "prediction_scatter", "BudgetProblem", "budget_range",
           "render_budget", "budget_panel"]

OPTION_COLORS = {"fp32": "0.55", "int8": PALETTE[0], "int4": PALETTE[2], "int3": PALETTE[1], "int2": PALETTE[3]}


def heatmap(rows: Sequence[Mapping], value: str, title: str, unit: str, fmt: str = "{:+.2f}",
            layers: Sequence[str] | None = None, options: Sequence[str] | None = None, cmap: str = "RdYlGn",
            center: bool = True, ax=None) -> Figure | None:
    """A layer x option grid of rows[value] with each cell's number written in it; `center` puts 0 at
    the colour map's middle. Draws into `ax` (returning None) or a new figure."""
    layers = list(layers or dict.fromkeys(r["layer"] for r in rows))
    options = list(options or dict.fromkeys(r["option"] for r in rows))
    grid = np.full((len(layers), len(options)), np.nan)
    for r in rows:
        if r["layer"] in layers and r["option"] in options:
            grid[layers.index(r["layer"]), options.index(r["option"])] = r[value]
    fig = None
    if ax is None:
        fig, axes = new_figure(width=1.0 + 0.85 * len(options), height=1.2 + 0.55 * len(layers))
        ax = axes[0, 0]
    finite = grid[np.isfinite(grid)]
    bound = float(np.abs(finite).max()) if finite.size else 1.0
    lo, hi = (-bound, bound) if center else (float(finite.min()), float(finite.max()))
    image = ax.imshow(grid, cmap=cmap, vmin=lo, vmax=hi if hi > lo else lo + 1, aspect="auto")
    ax.set_xticks(range(len(options)), options, rotation=30)
    ax.set_yticks(range(len(layers)), layers)
    for i in range(len(layers)):
        for j in range(len(options)):
            if np.isfinite(grid[i, j]):
                r, g, b, _ = image.cmap(image.norm(grid[i, j]))
                dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5  # light text on a dark cell
                ax.text(j, i, fmt.format(grid[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if dark else "black")
    ax.set_title(title, fontsize=9)
    ax.figure.colorbar(image, ax=ax, label=unit, shrink=0.8)
    if fig is not None:
        fig.tight_layout()
    return fig


def proxy_ranks(rows: Sequence[Mapping], measured: str, proxies: Mapping[str, str],
                correlations: Mapping[str, tuple[float, float, float]]) -> Figure:
    """One panel per proxy: its rank against the measured effect's rank over the (layer, option)
    cells, Spearman's rho and its 95% interval in the title."""
    from compresslab.core.stats import average_ranks

    fig, axes = new_figure(ncols=len(proxies), width=3.4, height=3.2)
    y = average_ranks(np.array([r[measured] for r in rows]))
    for ax, (key, label) in zip(axes[0], proxies.items()):
        x = average_ranks(np.array([r[key] for r in rows]))
        ax.scatter(x, y, s=14, color=PALETTE[0])
        ax.plot([1, len(x)], [1, len(x)], color="0.6", ls=":", lw=1)
        rho, low, high = correlations[key]
        ax.set(xlabel=f"rank of {label}", title=f"{label}\nrho {rho:.2f} [{low:.2f}, {high:.2f}]")
    axes[0, 0].set_ylabel(f"rank of the measured {measured}")
    fig.tight_layout()
    return fig


def frontier(points: Sequence[Mapping], unit: str, title: str, chosen: Mapping | None = None,
             ax=None) -> Figure | None:
    """Accuracy (%) against cost: points {"label", "cost", "accuracy", "kind"}; kind "uniform" as
    labelled squares, "mixed" as a line of dots, "config" as small grey dots; `chosen` ringed."""
    fig = None
    if ax is None:
        fig, axes = new_figure(width=6.4, height=4.2)
        ax = axes[0, 0]
    for kind, style in (("config", dict(s=10, color="0.75", zorder=1)),):
        pts = [p for p in points if p["kind"] == kind]
        if pts:
            ax.scatter([p["cost"] for p in pts], [p["accuracy"] for p in pts], label="every configuration", **style)
    mixed = sorted((p for p in points if p["kind"] == "mixed"), key=lambda p: p["cost"])
    if mixed:
        ax.plot([p["cost"] for p in mixed], [p["accuracy"] for p in mixed], "o-", ms=4, color=PALETTE[0],
                label="integer program, budget swept", zorder=3)
    for i, p in enumerate(p for p in points if p["kind"] == "uniform"):
        ax.scatter([p["cost"]], [p["accuracy"]], marker="s", s=60, color=PALETTE[(i + 1) % 10], zorder=4,
                   label=p["label"])
    if chosen is not None:
        ax.scatter([chosen["cost"]], [chosen["accuracy"]], s=220, facecolors="none", edgecolors="black",
                   linewidths=2, zorder=5, label=chosen.get("label", "chosen"))
    ax.set(xlabel=unit, ylabel="test accuracy (%)", title=title)
    if unit == "bytes" or "bytes" in unit:
        from matplotlib.ticker import FuncFormatter

        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / 1000:,.0f}k"))
    ax.legend(fontsize=7, loc="lower right")
    if fig is not None:
        fig.tight_layout()
    return fig


def prediction_scatter(series: Mapping[str, tuple[Sequence[float], Sequence[float]]], band: float = 0.15) -> Figure:
    """Predicted against measured latency (ms) per series, the +-band lines around y = x."""
    fig, axes = new_figure(ncols=len(series), width=3.8, height=3.6)
    for ax, (label, (predicted, measured)) in zip(axes[0], series.items()):
        ax.scatter(measured, predicted, s=16, color=PALETTE[0])
        top = max(max(measured), max(predicted)) * 1.05
        low = min(min(measured), min(predicted)) * 0.95
        xs = np.array([low, top])
        ax.plot(xs, xs, color="0.3", lw=1)
        for f in (1 - band, 1 + band):
            ax.plot(xs, f * xs, color="0.6", ls=":", lw=1)
        inside = np.mean([abs(p - m) <= band * m for p, m in zip(predicted, measured)])
        ax.set(xlabel="measured (ms)", ylabel="predicted from the table (ms)",
               title=f"{label}: {100 * inside:.0f}% within {100 * band:.0f}%")
    fig.tight_layout()
    return fig


@dataclass
class BudgetProblem:
    """One budget's program: scores and costs per layer and option, a constant cost on top (the file
    header's bytes, the all-FP32 latency), how to measure a configuration ((cost, accuracy %) or None
    when it cannot be measured live), the background points of the frontier, the adjacent layers'
    extra costs (`mixedprecision.solve`'s pair_costs) and the predicted (cheapest, dearest) costs
    when pair costs make them more than sums of per-layer extremes."""

    unit: str
    scores: Table
    costs: Table
    base: float
    measure: Callable[[dict], tuple[float, float] | None]
    points: list = field(default_factory=list)
    pair_costs: PairTable | None = None
    span: tuple[float, float] | None = None


def budget_range(problem: BudgetProblem) -> tuple[float, float]:
    """The cheapest and the dearest configuration's predicted cost (`span` when given)."""
    if problem.span is not None:
        return problem.span
    return (problem.base + sum(min(r.values()) for r in problem.costs.values()),
            problem.base + sum(max(r.values()) for r in problem.costs.values()))


def render_budget(problems: Mapping[str, BudgetProblem], target: str, budget_share: float) -> View:
    """Solve the target's program at budget = cheapest + share x (dearest - cheapest), then draw the
    chosen option per layer and its measured point on the frontier."""
    if target not in problems:
        raise ValueError(f"target={target!r} is not one of {sorted(problems)}")
    if not 0 <= budget_share <= 1:
        raise ValueError(f"budget_share={budget_share!r} must lie in [0, 1]")
    p = problems[target]
    low, high = budget_range(p)
    budget = low + budget_share * (high - low)
    config = solve(p.scores, p.costs, budget - p.base + 1e-9 * max(1.0, abs(high)), pair_costs=p.pair_costs)
    predicted = p.base + total_cost(p.costs, config, p.pair_costs)
    measured = p.measure(config)
    fig, axes = new_figure(ncols=2, width=5.0, height=3.8)
    layers = list(config)
    ax = axes[0, 0]
    shares = [p.costs[name][config[name]] for name in layers]
    ax.bar(layers, shares, color=[OPTION_COLORS.get(config[n], PALETTE[5]) for n in layers])
    for i, name in enumerate(layers):
        ax.text(i, shares[i], config[name], ha="center", va="bottom", fontsize=8)
    extra = "change from FP32 " if p.base > 0 and target == "latency" else ""
    ax.set(ylabel=f"{extra}{p.unit}", title=f"chosen per layer (budget {budget:,.4g} {p.unit})")
    chosen = None if measured is None else {"cost": measured[0], "accuracy": measured[1], "label": "chosen, measured"}
    frontier(p.points, p.unit, f"{target} budget", chosen, ax=axes[0, 1])
    axes[0, 1].axvline(budget, color="black", ls="--", lw=1)
    fig.tight_layout()
    metrics = {"target": target, f"budget ({p.unit})": budget, f"predicted ({p.unit})": predicted,
               "predicted loss change": total(p.scores, config), **{f"layer {k}": v for k, v in config.items()}}
    if measured is not None:
        metrics |= {f"measured ({p.unit})": measured[0], "test accuracy %": measured[1]}
    return View(fig, metrics)


def budget_panel(problems: Mapping[str, BudgetProblem], target: str, budget_share: float) -> None:
    """The budget slider (a share of the range between the cheapest and the dearest configuration) and
    the size / latency toggle; each move re-solves the program (`render_budget`)."""

    def render(target: str, budget_share: float) -> View:
        return render_budget(problems, target, budget_share)

    panel(render, {"target": choice(tuple(problems), label="budget on"),
                   "budget_share": slider(0.0, 1.0, 0.05, label="budget (cheapest .. dearest)")},
          {"target": target, "budget_share": budget_share}, title="Re-solve the integer program at another budget")
