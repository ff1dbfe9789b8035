"""Figure helpers shared by every view: PNG display in IPython, the style, unregistered Figures,
and the plots every notebook uses (lines, speed bars, weight histograms, per-layer bars)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

__all__ = [
    "PALETTE",
    "lines",
    "speed_bars",
    "weight_histograms",
    "layer_bars",
]

PALETTE = plt.get_cmap("tab10").colors


def _register_png_display() -> None:
    """Show returned Figures as PNG in IPython even without `%matplotlib inline` (they bypass pyplot)."""
    try:
        from IPython import get_ipython
        from IPython.core.pylabtools import select_figure_formats
    except ImportError:
        return
    shell = get_ipython()
    if shell is not None:
        select_figure_formats(shell, {"png"}, bbox_inches="tight")


_register_png_display()


def _style() -> None:
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook", font_scale=0.95)


def new_figure(ncols: int = 1, nrows: int = 1, width: float = 6.0, height: float = 4.0, **kw):
    """A Figure not registered with pyplot: it shows once, as the cell's value, and is freed with it."""
    _style()
    fig = Figure(figsize=(width * ncols, height * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes


# ---- shared ----

def lines(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    xlabel: str,
    ylabel: str,
    title: str = "",
    reference: float | None = None,
    reference_label: str = "dense baseline",
    logx: bool = False,
    percent_y: bool = False,
) -> Figure:
    """One line (with markers) per labelled (x, y) series, optional horizontal reference line."""
    fig, axes = new_figure()
    ax = axes[0, 0]
    scale = 100.0 if percent_y else 1.0
    for i, (label, (xs, ys)) in enumerate(curves.items()):
        ax.plot(xs, [scale * y for y in ys], marker="o", ms=4, label=label, color=PALETTE[i % 10])
    if reference is not None:
        ax.axhline(scale * reference, color="black", ls="--", lw=1, label=reference_label)
    if logx:
        ax.set_xscale("log")
    ax.set(xlabel=xlabel, ylabel=ylabel + (" (%)" if percent_y else ""), title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def speed_bars(table, title: str = "Measured latency (median)") -> Figure:
    """Grouped bars of median latency per variant, one panel per batch size (from SpeedTable.table()),
    with p10-p90 whiskers, the speed-up on each bar ('n/a' for a zero time), the thread count in the
    title, and a warning in the figure when any p90/p10 > 2 (a busy machine: unreliable ratios)."""
    batches = sorted(table["batch"].unique())
    fig, axes = new_figure(ncols=len(batches), width=4.8)
    busy = False
    for ax, batch in zip(axes[0], batches):
        sub = table[table["batch"] == batch]
        med = sub["median ms"].to_numpy(dtype=float)
        err = None
        if {"p10 ms", "p90 ms"} <= set(sub.columns):
            low, high = sub["p10 ms"].to_numpy(dtype=float), sub["p90 ms"].to_numpy(dtype=float)
            err = np.vstack([np.clip(med - low, 0, None), np.clip(high - med, 0, None)])
            busy |= bool(np.any(high > 2 * low))
        bars = ax.bar(range(len(sub)), med, yerr=err, capsize=3, error_kw={"lw": 1},
                      color=[PALETTE[i % 10] for i in range(len(sub))])
        ax.set_xticks(range(len(sub)), sub["variant"], rotation=30, ha="right", fontsize=8)
        speed_col = [c for c in sub.columns if c.startswith("speed-up")][0]
        top = float(np.nanmax(err[1] + med)) if err is not None else float(np.nanmax(med))
        tops = med + err[1] if err is not None else med
        for bar, ratio, y in zip(bars, sub[speed_col], tops):
            text = "n/a" if ratio != ratio else f"{ratio:.2f}x"
            ax.annotate(text, (bar.get_x() + bar.get_width() / 2, y), xytext=(0, 2),
                        textcoords="offset points", ha="center", va="bottom", fontsize=8)
        ax.set_ylim(0, 1.15 * top if top > 0 else 1)
        ax.set(title=f"batch {batch}", ylabel="ms per batch (median, p10-p90)")
    threads = sorted(set(table["threads"])) if "threads" in table.columns else []
    if threads and "thread" not in title:  # the caller may already have said it
        title += f" ({', '.join(map(str, threads))} thread(s))"
    if busy:
        title += "\nWARNING: p90/p10 > 2, the machine was busy:\ntreat these ratios as unreliable"
    fig.suptitle(title, color="darkred" if busy else "black", fontsize=10)
    fig.tight_layout()
    return fig


def weight_histograms(
    weights: Mapping[str, torch.Tensor],
    compare: Mapping[str, torch.Tensor] | None = None,
    labels: tuple[str, str] = ("before", "after"),
    bins: int = 80,
    nonzero_only: bool = True,
    grid: Mapping[str, Sequence[float]] | None = None,
) -> Figure:
    """Histogram of each layer's weights (log counts), optionally overlaid with a second set and a grid
    of values (quantization levels or centroids) as vertical lines."""
    names = list(weights)
    fig, axes = new_figure(ncols=len(names), width=3.6, height=3.0)
    for ax, name in zip(axes[0], names):
        w = weights[name].detach().flatten().float().cpu().numpy()
        edges = np.linspace(w.min(), w.max(), bins + 1) if w.size else bins
        ax.hist(w, bins=edges, alpha=0.6, label=labels[0], color=PALETTE[0])
        if compare is not None:
            v = compare[name].detach().flatten().float().cpu().numpy()
            if nonzero_only:
                v = v[v != 0]
            ax.hist(v, bins=edges, alpha=0.6, label=labels[1], color=PALETTE[1])
        if grid is not None and name in grid:
            for g in grid[name]:
                ax.axvline(float(g), color="black", lw=0.5, alpha=0.6)
        ax.set_yscale("log")
        ax.set(title=name, xlabel="weight value")
    axes[0, 0].set_ylabel("count (log)")
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def layer_bars(values: Mapping[str, float], ylabel: str, title: str = "", percent: bool = False) -> Figure:
    """One bar per layer (e.g. per-layer sparsity or density)."""
    fig, axes = new_figure(width=5.0, height=3.2)
    ax = axes[0, 0]
    scale = 100.0 if percent else 1.0
    names = list(values)
    bars = ax.bar(names, [scale * values[n] for n in names], color=PALETTE[2])
    for bar in bars:
        ax.annotate(f"{bar.get_height():.1f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=8)
    ax.set(ylabel=ylabel + (" (%)" if percent else ""), title=title)
    fig.tight_layout()
    return fig


