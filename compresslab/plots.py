"""Every figure the notebooks show. Each function takes plain data and returns a matplotlib Figure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

PALETTE = plt.get_cmap("tab10").colors


def _style() -> None:
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook", font_scale=0.95)


def _figure(ncols: int = 1, nrows: int = 1, width: float = 6.0, height: float = 4.0, **kw):
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
    fig, axes = _figure()
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
    """Grouped bars of median latency per variant, one panel per batch size (from SpeedTable.table())."""
    batches = sorted(table["batch"].unique())
    fig, axes = _figure(ncols=len(batches), width=4.8)
    for ax, batch in zip(axes[0], batches):
        sub = table[table["batch"] == batch]
        bars = ax.bar(range(len(sub)), sub["median ms"], color=[PALETTE[i % 10] for i in range(len(sub))])
        ax.set_xticks(range(len(sub)), sub["variant"], rotation=30, ha="right", fontsize=8)
        speed_col = [c for c in sub.columns if c.startswith("speed-up")][0]
        for bar, ratio in zip(bars, sub[speed_col]):
            ax.annotate(f"{ratio:.2f}x", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=8)
        ax.set(title=f"batch {batch}", ylabel="ms per batch")
    fig.suptitle(title)
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
    fig, axes = _figure(ncols=len(names), width=3.6, height=3.0)
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
    fig, axes = _figure(width=5.0, height=3.2)
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


# ---- pruning ----

def sensitivity(rows: Sequence[Mapping], baseline: float | None = None) -> Figure:
    """Accuracy vs sparsity when pruning one layer at a time (rows: layer, sparsity, accuracy)."""
    curves: dict[str, tuple[list, list]] = {}
    for row in rows:
        xs, ys = curves.setdefault(row["layer"], ([], []))
        xs.append(100 * row["sparsity"])
        ys.append(row["accuracy"])
    return lines(curves, "sparsity of that layer (%)", "test accuracy", "Per-layer sensitivity (no fine-tuning)",
                 reference=baseline, percent_y=True)


def pruning_view(
    dense: Mapping[str, torch.Tensor], pruned: Mapping[str, torch.Tensor], density: Mapping[str, float],
) -> Figure:
    """Left: histograms of dense vs surviving weights per layer; right: per-layer density."""
    names = list(dense)
    fig, axes = _figure(ncols=len(names) + 1, width=3.3, height=3.0)
    for ax, name in zip(axes[0], names):
        w = dense[name].flatten().numpy()
        v = pruned[name].flatten().numpy()
        edges = np.linspace(w.min(), w.max(), 61)
        ax.hist(w, bins=edges, alpha=0.5, color=PALETTE[0], label="dense")
        ax.hist(v[v != 0], bins=edges, alpha=0.7, color=PALETTE[1], label="kept")
        ax.set_yscale("log")
        ax.set(title=name, xlabel="weight")
    axes[0, 0].legend(fontsize=8)
    ax = axes[0, -1]
    ax.bar(list(density), [100 * d for d in density.values()], color=PALETTE[2])
    ax.set(ylim=(0, 100), ylabel="weights kept (%)", title="density per layer")
    fig.tight_layout()
    return fig


# ---- lottery ----

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
    fig, axes = _figure(width=6.4, height=4.0)
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
    fig, axes = _figure(ncols=2, width=5.2, height=3.6)
    for i, (label, h) in enumerate(runs.items()):
        color = PALETTE[i % 10]
        steps = np.asarray(h["steps"])
        val = np.asarray(h["val_loss"])
        best = int(np.argmin(val))
        axes[0, 0].plot(steps, val, color=color, lw=1.3, label=label)
        axes[0, 0].plot(steps[best], val[best], "*", color=color, ms=11, mec="black", mew=0.5)
        acc = 100 * np.asarray(h["test_accuracy"])
        axes[0, 1].plot(steps, acc, color=color, lw=1.3, label=label)
        axes[0, 1].plot(steps[best], acc[best], "*", color=color, ms=11, mec="black", mew=0.5)
    axes[0, 0].set(xlabel="training step", ylabel="validation loss", title="validation loss (star = early stop)")
    top = max(100 * max(h["test_accuracy"]) for h in runs.values())
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
    fig, axes = _figure(ncols=2 if pixel_map is not None else 1, width=4.8, height=3.8)
    ax = axes[0, 0]
    for i, (name, values) in enumerate(layers.items()):
        ax.plot(remaining, values, marker="o", ms=4, label=name, color=PALETTE[(i + 4) % 10])
    ax.plot(remaining, remaining, color="black", ls=":", lw=1, label="overall")
    _remaining_axis(ax, remaining)
    ax.set_yscale("log")
    ax.set(ylabel="weights kept in the layer (%)", title="density per layer")
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
    fig, axes = _figure(ncols=3 if pixel_map is not None else 2, width=4.3, height=3.5)
    ax = axes[0, 0]
    for h, name, color in ((dense_history, "dense", "black"), (history, label, PALETTE[0])):
        steps, acc = np.asarray(h["steps"]), 100 * np.asarray(h["test_accuracy"])
        best = int(np.argmin(h["val_loss"]))
        ax.plot(steps, acc, color=color, lw=1.3, label=name)
        ax.plot(steps[best], acc[best], "*", color=color, ms=11, mec="black", mew=0.5)
    top = max(100 * max(history["test_accuracy"]), 100 * max(dense_history["test_accuracy"]))
    ax.set(xlabel="training step", ylabel="test accuracy (%)", ylim=(top - 4, top + 0.3), title="learning curve")
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


# ---- deep compression ----

def centroid_histograms(weights, centroids: Mapping[str, Sequence[float]], title: str = "", bins: int = 80) -> Figure:
    """One panel per initialisation: histogram of the surviving weights, centroids marked below it."""
    w = np.asarray(weights, dtype=float).reshape(-1)
    w = w[w != 0]
    fig, axes = _figure(ncols=len(centroids), width=4.2, height=3.2, sharey=True)
    edges = np.linspace(w.min(), w.max(), bins + 1) if w.size else bins
    for i, (ax, (name, c)) in enumerate(zip(axes[0], centroids.items(), strict=True)):
        ax.hist(w, bins=edges, color=PALETTE[7], alpha=0.6)
        c = np.asarray(c, dtype=float)
        for x in c:
            ax.axvline(x, color=PALETTE[i % 10], lw=0.6, alpha=0.6)
        ax.plot(c, np.zeros_like(c), "^", color=PALETTE[i % 10], ms=6, clip_on=False, label=f"{len(c)} centroids")
        ax.set(title=name, xlabel="weight")
        ax.legend(fontsize=8, loc="upper right")
    axes[0, 0].set_ylabel("count")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def bits_accuracy(rows: Sequence[Mapping], baseline: float | None = None) -> Figure:
    """Test accuracy vs bits per weight, one line per layer type (rows: layers, bits, accuracy)."""
    curves: dict[str, tuple[list, list]] = {}
    for row in sorted(rows, key=lambda r: r["bits"]):
        xs, ys = curves.setdefault(row["layers"], ([], []))
        xs.append(row["bits"])
        ys.append(row["accuracy"])
    return lines(curves, "bits per weight (2^bits shared values)", "test accuracy",
                 "Weight sharing: accuracy vs bits (other layers kept in FP32, no fine-tuning)",
                 reference=baseline, reference_label="before sharing", percent_y=True)


def code_lengths(streams: Mapping[str, tuple[Sequence[int], Sequence[int]]]) -> Figure:
    """Per stream: symbol frequencies (bars) and Huffman code lengths (dots), with H and L."""
    from .huffman import average_length, entropy

    fig, axes = _figure(ncols=len(streams), width=5.2, height=3.4)
    for i, (ax, (name, (counts, lengths))) in enumerate(zip(axes[0], streams.items(), strict=True)):
        counts = np.asarray(counts, dtype=float)
        lengths = np.asarray(lengths, dtype=float)
        used = counts > 0
        symbols = np.arange(len(counts))
        ax.bar(symbols, counts / max(counts.sum(), 1), color=PALETTE[i % 10], alpha=0.7, width=0.9)
        ax.set(xlabel="symbol", ylabel="frequency", title=f"{name}\nH = {entropy(counts.astype(int)):.2f} bits, "
               f"Huffman L = {average_length(lengths.astype(int), counts.astype(int)):.2f} bits")
        twin = ax.twinx()
        twin.plot(symbols[used], lengths[used], "o", color="black", ms=3)
        twin.set_ylabel("code length (bits)")
        twin.set_ylim(0, max(lengths.max(initial=1), 1) + 1)
        twin.grid(False)
    fig.tight_layout()
    return fig


def byte_breakdown(rows: Sequence[Mapping]) -> Figure:
    """Stacked bars: where the bytes of the compressed file go, per layer (rows: layer + parts)."""
    parts = [k for k in rows[0] if k != "layer"]
    fig, axes = _figure(width=6.5, height=3.6)
    ax = axes[0, 0]
    names = [r["layer"] for r in rows]
    bottom = np.zeros(len(rows))
    for i, part in enumerate(parts):
        values = np.array([r.get(part, 0) or 0 for r in rows], dtype=float)
        ax.bar(names, values, bottom=bottom, label=part, color=PALETTE[i % 10])
        bottom += values
    for x, total in enumerate(bottom):
        ax.annotate(f"{int(total):,}", (x, total), ha="center", va="bottom", fontsize=8)
    ax.set(ylabel="bytes in the file", title="Where the bytes go")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def stage_bars(stages: Sequence[Mapping]) -> Figure:
    """Bytes at each stage (log scale) with the compression factor against dense FP32."""
    fig, axes = _figure(width=6.0, height=3.4)
    ax = axes[0, 0]
    names = [s["stage"] for s in stages]
    sizes = [s["bytes"] for s in stages]
    bars = ax.bar(names, sizes, color=[PALETTE[i % 10] for i in range(len(stages))])
    for bar, s in zip(bars, stages, strict=True):
        ax.annotate(f"{s['bytes'] / 1024:,.1f} KiB\n{s['compression x']:.1f}x",
                    (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom", fontsize=8)
    ax.set_yscale("log")
    ax.set(ylabel="bytes", title="Size after each stage", ylim=(min(sizes) / 3, max(sizes) * 4))
    fig.tight_layout()
    return fig
