"""Figures, render functions and widget panels of the lottery notebook."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from compresslab.techniques.lottery import LotteryReport, pixel_density
from compresslab.views.figures import (
    PALETTE,
    new_figure,
)
from compresslab.views.panel import View

__all__ = [
    "BRANCH_COLORS",
    "ticket_curves",
    "learning_curves",
    "mask_density",
    "ticket_view",
    "level_view",
]


# ---- figures ----

BRANCH_COLORS = {"dense": "black", "ticket": PALETTE[0], "random_reinit": PALETTE[3], "random_mask": PALETTE[7],
                 "lr_rewind": PALETTE[2]}


def _remaining_axis(ax, xs_all: Sequence[float]) -> None:
    """Log x axis of % weights remaining, running from 100% (dense) down to the sparsest level."""
    ax.set_xscale("log")
    ticks = [t for t in (100, 51.2, 21, 8.6, 3.6, 1.5, 0.6) if min(xs_all) * 0.8 <= t <= 100]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.set_xlim(105, min(xs_all) * 0.85)
    ax.set_xlabel("weights remaining (%, log scale)")


def ticket_curves(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    ylabel: str,
    title: str = "",
    reference: float | None = None,
    band: float | None = None,
    percent_y: bool = False,
    colors: Mapping[str, object] | None = None,
) -> Figure:
    """y against % of weights remaining (log x, dense at the left), one line per labelled series;
    an optional dense reference line with a shaded +-band around it (same units as y)."""
    fig, axes = new_figure(width=6.4, height=4.0)
    ax = axes[0, 0]
    scale = 100.0 if percent_y else 1.0
    colors = colors or {}
    for i, (label, (xs, ys)) in enumerate(series.items()):
        ax.plot(xs, [scale * y for y in ys], marker="o", ms=4, label=label, color=colors.get(label, PALETTE[i % 10]))
    if reference is not None:
        ax.axhline(scale * reference, color="black", ls="--", lw=1, label="dense")
        if band:
            ax.axhspan(scale * (reference - band), scale * (reference + band), color="black", alpha=0.08,
                       label=f"dense +- {scale * band:g}")
    _remaining_axis(ax, [x for xs, _ in series.values() for x in xs])
    ax.set(ylabel=ylabel + (" (%)" if percent_y else ""), title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def learning_curves(runs: Mapping[str, Mapping[str, Sequence[float]]], title: str = "") -> Figure:
    """Validation loss and test accuracy against training step for a few runs (histories with
    steps, val_loss, test_accuracy); the minimum of each validation curve (early stopping) is starred."""
    fig, axes = new_figure(ncols=2, width=5.2, height=3.6)
    for i, (label, h) in enumerate(runs.items()):
        color = PALETTE[i % 10]
        steps = np.asarray(h["steps"])
        val = np.asarray(h["val_loss"])
        best = int(np.argmin(val))
        axes[0, 0].plot(steps, val, color=color, lw=1.3, label=label)
        axes[0, 0].plot(steps[best], val[best], "*", color=color, ms=11, mec="black", mew=0.5)
        acc = np.asarray(h["test_accuracy"])
        axes[0, 1].plot(steps, acc, color=color, lw=1.3, label=label)
        axes[0, 1].plot(steps[best], acc[best], "*", color=color, ms=11, mec="black", mew=0.5)
    axes[0, 0].set(xlabel="training step", ylabel="validation loss", title="validation loss (star = early stop)")
    top = max(max(h["test_accuracy"]) for h in runs.values())
    axes[0, 1].set(xlabel="training step", ylabel="test accuracy (%)", title="test accuracy", ylim=(top - 4, top + 0.3))
    axes[0, 1].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def mask_density(
    remaining: Sequence[float], layers: Mapping[str, Sequence[float]], pixel_map: np.ndarray | None = None,
    title: str = "",
) -> Figure:
    """Left: % of each layer's weights kept against % kept overall, per level (log-log); right: an
    optional map of the share of first-layer weights kept per input pixel."""
    fig, axes = new_figure(ncols=2 if pixel_map is not None else 1, width=4.8, height=3.8)
    ax = axes[0, 0]
    for i, (name, values) in enumerate(layers.items()):
        ax.plot(remaining, values, marker="o", ms=4, label=name, color=PALETTE[(i + 4) % 10])
    ax.plot(remaining, remaining, color="black", ls=":", lw=1, label="overall")
    _remaining_axis(ax, remaining)
    ax.set_yscale("log")
    low = min(min(v) for v in layers.values())
    yticks = [t for t in (100, 50, 20, 10, 5, 2, 1, 0.5) if low * 0.8 <= t]
    ax.set_yticks(yticks, [f"{t:g}" for t in yticks])
    ax.minorticks_off()
    ax.set(ylabel="weights kept in the layer (%, log)", title="density per layer")
    ax.legend(fontsize=8)
    if pixel_map is not None:
        ax = axes[0, 1]
        image = ax.imshow(100 * np.asarray(pixel_map), cmap="magma", vmin=0)
        ax.set(title="first-layer weights kept per input pixel (%)", xticks=[], yticks=[])
        ax.grid(False)
        fig.colorbar(image, ax=ax, fraction=0.046)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def ticket_view(
    history: Mapping[str, Sequence[float]], dense_history: Mapping[str, Sequence[float]],
    layer_density: Mapping[str, float], pixel_map: np.ndarray | None, label: str,
) -> Figure:
    """One IMP run at a glance: its test-accuracy curve against the dense run's (stars: early
    stopping), its per-layer density, and the first layer's kept weights per input pixel."""
    fig, axes = new_figure(ncols=3 if pixel_map is not None else 2, width=4.3, height=3.5)
    ax = axes[0, 0]
    runs = [(dense_history, "dense", "black")]
    if label != "dense":  # level 0 is the dense run itself: one curve, one legend entry
        runs.append((history, label, PALETTE[0]))
    shown = []
    for h, name, color in runs:
        steps, acc = np.asarray(h["steps"]), np.asarray(h["test_accuracy"])
        best = int(np.argmin(h["val_loss"]))
        ax.plot(steps, acc, color=color, lw=1.3, label=name)
        ax.plot(steps[best], acc[best], "*", color=color, ms=11, mec="black", mew=0.5)
        shown.extend(acc.tolist())
    # every point of both curves inside the axis, with a little room
    ax.set(xlabel="training step", ylabel="test accuracy (%)", ylim=(min(shown) - 0.5, max(shown) + 0.3),
           title="learning curve")
    ax.legend(fontsize=8)
    ax = axes[0, 1]
    names = list(layer_density)
    bars = ax.bar(names, [100 * layer_density[n] for n in names], color=PALETTE[2])
    for bar in bars:
        ax.annotate(f"{bar.get_height():.1f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=8)
    ax.set(ylim=(0, 105), ylabel="weights kept (%)", title="mask density per layer")
    if pixel_map is not None:
        ax = axes[0, 2]
        image = ax.imshow(100 * np.asarray(pixel_map), cmap="magma", vmin=0)
        ax.set(title="fc1 weights kept per pixel (%)", xticks=[], yticks=[])
        ax.grid(False)
        fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


# ---- panels ----

def level_view(report: LotteryReport, level: int, branch: str = "ticket"):
    """The widget panel's render function: one run's learning curve against the dense run, its mask
    density per layer and first-layer pixel map, and its headline numbers."""

    result = report.get(branch, level)
    masks = report.masks.get(branch if branch != "random_reinit" else "ticket", {}).get(result.level)
    first = next(iter(masks.values())) if masks else None
    label = "dense" if result.branch == "dense" else f"{branch}, level {level}"
    fig = ticket_view(result.history, report.dense.history, result.layer_density,
                            pixel_density(first) if first is not None else None, label)
    metrics = {
        "branch": result.branch, "level": result.level, "weights remaining %": round(100 * result.remaining, 2),
        "test accuracy %": round(result.test_accuracy, 2),
        "vs dense (points)": round(result.test_accuracy - report.dense.test_accuracy, 2),
        "early-stop step": result.early_stop_step,
        "test accuracy at early stop %": round(result.early_stop_accuracy, 2),
    }
    return View(fig, metrics)
