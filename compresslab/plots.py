"""Every figure the notebooks show. Each function takes plain data and returns a matplotlib Figure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

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
            ax.axvline(x, color=PALETTE[i % 10], lw=0.6 if len(c) <= 64 else 0.3, alpha=0.6 if len(c) <= 64 else 0.3)
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
    ax.set(ylabel="bytes in the file", title="Where the bytes go", ylim=(0, 1.12 * bottom.max()))
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


# ---- quantization ----

def number_line(x: Sequence[float], x_hat: Sequence[float], grid: Sequence[float], q: Sequence[int],
                title: str = "") -> Figure:
    """Real values (top) mapped to their grid points (bottom); grid ticks labelled with their integer q;
    clipped values (outside the grid) in red."""
    fig, axes = _figure(width=9.0, height=2.6)
    ax = axes[0, 0]
    grid = np.asarray(grid, dtype=float)
    x, x_hat = np.asarray(x, dtype=float), np.asarray(x_hat, dtype=float)
    step = grid[1] - grid[0] if len(grid) > 1 else 1.0
    ax.hlines(0, min(grid.min(), x.min()) - step / 2, max(grid.max(), x.max()) + step / 2, color="grey", lw=1)
    for g, qi in zip(grid, q):
        ax.vlines(g, -0.12, 0.12, color="black", lw=1.2)
        ax.annotate(str(qi), (g, -0.2), ha="center", va="top", fontsize=8)
    clipped = (x < grid.min() - 1e-9) | (x > grid.max() + 1e-9)
    for xi, hi, c in zip(x, x_hat, clipped):
        color = PALETTE[3] if c else PALETTE[0]
        ax.annotate("", (hi, 0.12), (xi, 0.8), arrowprops=dict(arrowstyle="->", color=color, lw=1))
        ax.plot([xi], [0.8], "o", color=color, ms=6)
        ax.annotate(f"{xi:g}", (xi, 0.95), ha="center", va="bottom", fontsize=8, color=color)
    ax.set(ylim=(-0.6, 1.35), yticks=[], xlabel="real value (ticks: grid points s(q - z), labelled with q)",
           title=title)
    ax.grid(False)
    fig.tight_layout()
    return fig


def clipping_tradeoff(ranges: Sequence[float], rounding: Sequence[float], clipping: Sequence[float],
                      marks: Mapping[str, float] | None = None, title: str = "") -> Figure:
    """Mean squared error against the clipping range: rounding error grows with the range, clipping
    error shrinks; their sum has a minimum (what the MSE observer finds). `marks`: label -> range."""
    fig, axes = _figure(width=6.0, height=3.6)
    ax = axes[0, 0]
    total = np.asarray(rounding) + np.asarray(clipping)
    ax.plot(ranges, rounding, label="rounding error (inside the range)", color=PALETTE[0])
    ax.plot(ranges, clipping, label="clipping error (outside)", color=PALETTE[3])
    ax.plot(ranges, total, label="total", color="black", lw=2)
    for i, (label, r) in enumerate((marks or {}).items()):
        ax.axvline(r, ls="--", lw=1, color=PALETTE[(i + 4) % 10], label=label)
    ax.set_yscale("log")
    ax.set(xlabel="clipping range hi (= -lo)", ylabel="mean squared error", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def channel_ranges(absmax: Mapping[str, Sequence[float]], title: str = "") -> Figure:
    """Per output channel max|w| of each layer, sorted, against the single per-tensor range (dashed)."""
    names = list(absmax)
    fig, axes = _figure(ncols=len(names), width=3.4, height=3.0)
    for ax, name in zip(axes[0], names):
        v = np.sort(np.asarray(absmax[name], dtype=float))[::-1]
        ax.bar(np.arange(len(v)), v, width=1.0, color=PALETTE[0], linewidth=0)
        ax.axhline(v.max(), ls="--", color="black", lw=1, label="per-tensor range")
        ax.set(title=f"{name}: {len(v)} channels", xlabel="output channel (sorted)")
    axes[0, 0].set_ylabel("max |w| of the channel")
    axes[0, 0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def activation_ranges(acts: Mapping[str, torch.Tensor], ranges: Mapping[str, Mapping[str, float]],
                      bins: int = 80) -> Figure:
    """Histogram of each layer's input activations (log counts) with the top of the range each observer
    chose (vertical lines)."""
    names = list(acts)
    fig, axes = _figure(ncols=len(names), width=3.4, height=3.0)
    for ax, name in zip(axes[0], names):
        a = acts[name].detach().flatten().float().cpu().numpy()
        ax.hist(a, bins=bins, color=PALETTE[7], alpha=0.8)
        for i, (obs, hi) in enumerate(ranges.get(name, {}).items()):
            ax.axvline(hi, color=PALETTE[i % 10], lw=1.5, label=obs)
        ax.set_yscale("log")
        ax.set(title=f"input of {name}", xlabel="activation value")
    axes[0, 0].set_ylabel("count (log)")
    axes[0, 0].legend(fontsize=8, title="range top")
    fig.tight_layout()
    return fig


def sqnr_vs_bits(rows: Sequence[Mapping], key: str = "weight SQNR dB", title: str = "") -> Figure:
    """SQNR per layer against bits (rows: layer, bits, key), with the 6.02 dB-per-bit rule as a guide."""
    fig, axes = _figure(width=6.0, height=3.8)
    ax = axes[0, 0]
    layers = list(dict.fromkeys(r["layer"] for r in rows))
    for i, layer in enumerate(layers):
        pts = sorted((r["bits"], r[key]) for r in rows if r["layer"] == layer)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=4, label=layer, color=PALETTE[i % 10])
    bits = sorted({r["bits"] for r in rows})
    anchor = max((r[key] for r in rows if r["bits"] == bits[-1]), default=0.0)
    ax.plot(bits, [anchor - 6.02 * (bits[-1] - b) for b in bits], ls=":", color="black", label="6.02 dB per bit")
    ax.set(xlabel="bits", ylabel=key, title=title, xticks=bits)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def quant_histogram(w: torch.Tensor, q: torch.Tensor, grid: Sequence[float], qmin: int, qmax: int,
                    title: str = "", bins: int = 100) -> Figure:
    """Left: the float weights (log counts) with a quantization grid as vertical lines. Right: how many
    weights landed on each integer level q in [qmin, qmax]."""
    from matplotlib.ticker import MaxNLocator

    fig, axes = _figure(ncols=2, width=4.6, height=3.2)
    w = w.detach().flatten().float().cpu().numpy()
    codes = q.detach().flatten().cpu().numpy()
    grid = np.asarray(grid, dtype=float)
    ax = axes[0, 0]
    ax.hist(w, bins=bins, color=PALETTE[0], alpha=0.8)
    for g in grid if len(grid) <= 64 else grid[:: max(1, len(grid) // 64)]:
        ax.axvline(g, color="black", lw=0.5, alpha=0.6)
    ax.set_yscale("log")
    ax.set(xlabel="weight value", ylabel="count (log)", title=title or "weights and the grid")
    ax = axes[0, 1]
    levels = np.arange(qmin, qmax + 1)
    counts = np.bincount(codes - qmin, minlength=len(levels))
    ax.bar(levels, np.maximum(counts, 0.5), width=0.8 if len(levels) <= 64 else 1.0, color=PALETTE[1])
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    used = int((counts > 0).sum())
    ax.set(xlabel="integer level q", ylabel="weights on this level (log)", title=f"{used} of {len(levels)} levels used")
    fig.tight_layout()
    return fig


# ---- low-rank ----

def spectra(
    singular: Mapping[str, torch.Tensor],
    reference: Mapping[str, torch.Tensor] | None = None,
    ranks: Mapping[str, int] | None = None,
    break_even: Mapping[str, float] | None = None,
    reference_label: str = "at initialisation",
) -> Figure:
    """Left: singular values s_i of each layer (log scale), solid; `reference` (e.g. the untrained
    layer) dotted. Right: kept energy E(r) = sum_{i<=r} s_i^2 / sum s_i^2 vs rank, with the chosen
    rank (dot) and the break-even rank m n / (m + n) (x) of each layer."""
    fig, axes = _figure(ncols=2, width=5.4, height=3.8)
    left, right = axes[0]
    for i, (name, s) in enumerate(singular.items()):
        color = PALETTE[i % 10]
        s = s.detach().double().cpu().numpy()
        r = np.arange(1, len(s) + 1)
        left.plot(r, s, color=color, label=name)
        if reference is not None and name in reference:
            left.plot(r, reference[name].detach().double().cpu().numpy(), color=color, ls=":", lw=1)
        energy = np.cumsum(s ** 2) / np.sum(s ** 2)
        right.plot(r, 100 * energy, color=color, label=name)
        if ranks is not None and name in ranks:
            k = ranks[name]
            right.plot([k], [100 * energy[k - 1]], "o", color=color, ms=6)
        if break_even is not None and name in break_even:
            k = min(len(s), max(1, int(break_even[name])))
            right.plot([k], [100 * energy[k - 1]], "x", color=color, ms=8, mew=2)
    left.set_xscale("log")
    left.set_yscale("log")
    left.set(xlabel="index i (log)", ylabel="singular value $s_i$ (log)", title="Singular value spectrum")
    if reference is not None:
        left.plot([], [], color="grey", ls=":", label=reference_label)
    left.legend(fontsize=8)
    right.set_xscale("log")
    right.set(xlabel="rank r (log)", ylabel="energy kept (%)", ylim=(0, 101),
              title="Energy kept: o chosen rank, x break-even")
    right.legend(fontsize=8)
    fig.tight_layout()
    return fig


def rank_latency(rows: Sequence[Mapping], dense_ms: Mapping[int, float], break_even: float,
                 title: str = "") -> Figure:
    """One panel per batch size: median latency of a factorized layer vs its rank (rows: rank, batch,
    ms), the dense layer's latency (dashed), the break-even rank (dotted), and on the right axis the
    MACs of the factorized layer relative to the dense one, r (m + n) / (m n) (rows: macs_ratio)."""
    batches = sorted(dense_ms)
    fig, axes = _figure(ncols=len(batches), width=4.8, height=3.6)
    for ax, batch in zip(axes[0], batches):
        sub = sorted((r for r in rows if r["batch"] == batch), key=lambda r: r["rank"])
        ranks = [r["rank"] for r in sub]
        ax.plot(ranks, [r["ms"] for r in sub], marker="o", ms=4, color=PALETTE[0], label="factorized")
        ax.axhline(dense_ms[batch], color="black", ls="--", lw=1, label="dense")
        ax.axvline(break_even, color=PALETTE[3], ls=":", lw=1.5, label="break-even rank")
        ax.set(xlabel="rank r", ylabel="ms per batch (median)", title=f"batch {batch}", ylim=(0, None))
        twin = ax.twinx()
        twin.plot(ranks, [100 * r["macs_ratio"] for r in sub], color="grey", lw=1, alpha=0.7)
        twin.set_ylabel("MACs vs dense (%, grey)")
        twin.set_ylim(0, None)
        twin.grid(False)
        ax.legend(fontsize=8, loc="upper left")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def error_vs_params(curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], dense_accuracy: float,
                    xlabel: str = "parameters (log)", title: str = "") -> Figure:
    """Test error (%, log) vs parameter count (log), one line per labelled (params, accuracy) series,
    with the dense model's error dashed: the log scale separates 1.5% from 2% as clearly as 20% from 50%."""
    from matplotlib.ticker import FuncFormatter

    fig, axes = _figure()
    ax = axes[0, 0]
    for i, (label, (xs, accs)) in enumerate(curves.items()):
        ax.plot(xs, [100 * (1 - a) for a in accs], marker="o", ms=4, label=label, color=PALETTE[i % 10])
    ax.axhline(100 * (1 - dense_accuracy), color="black", ls="--", lw=1, label="dense baseline")
    ax.set_xscale("log")
    ax.set_yscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)
    ax.tick_params(axis="y", which="minor", labelsize=7)
    ax.set(xlabel=xlabel, ylabel="test error (%, log)", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def truncation_view(singular: Mapping[str, torch.Tensor], ranks: Mapping[str, int]) -> Figure:
    """One panel per layer: its singular values, kept (colour) and discarded (grey) at `ranks`."""
    names = list(singular)
    fig, axes = _figure(ncols=len(names), width=3.6, height=3.0)
    for i, (ax, name) in enumerate(zip(axes[0], names)):
        s = singular[name].detach().double().cpu().numpy()
        k = ranks[name]
        idx = np.arange(1, len(s) + 1)
        ax.fill_between(idx[:k], s[:k], color=PALETTE[i % 10], alpha=0.7, step="mid", label=f"kept {k}")
        ax.fill_between(idx[k - 1:], s[k - 1:], color="grey", alpha=0.35, step="mid", label="discarded")
        kept = float(np.sum(s[:k] ** 2) / np.sum(s ** 2))
        ax.set(xlabel="index i", title=f"{name}: rank {k}, energy {100 * kept:.1f}%", ylim=(0, None))
        ax.legend(fontsize=8)
    axes[0, 0].set_ylabel("singular value")
    fig.tight_layout()
    return fig


# ---- distillation ----

def soft_target_grid(
    images: torch.Tensor, labels: Sequence[int], probs: Mapping[float, torch.Tensor], classes: Sequence[str],
) -> Figure:
    """One row per image: the image, then the teacher's softmax(z / T) as bars for each T in `probs`
    (probs[T] has shape (n_images, n_classes)); a log scale shows the small 'dark knowledge' probabilities."""
    temps = list(probs)
    n = len(images)
    fig, axes = _figure(ncols=len(temps) + 1, nrows=n, width=2.6, height=1.9)
    for r in range(n):
        ax = axes[r, 0]
        ax.imshow(images[r].squeeze().cpu().numpy(), cmap="gray_r")
        ax.set(xticks=[], yticks=[], title=f"label {classes[int(labels[r])]}")
        ax.grid(False)
        for c, temp in enumerate(temps, start=1):
            ax = axes[r, c]
            p = probs[temp][r].detach().cpu().numpy()
            colors = [PALETTE[3] if k == int(labels[r]) else PALETTE[0] for k in range(len(p))]
            ax.bar(range(len(p)), p, color=colors)
            ax.set_yscale("log")
            ax.set_ylim(1e-8, 1.5)
            ax.set_xticks(range(len(p)), [str(k) for k in range(len(p))], fontsize=7)
            if r == 0:
                ax.set_title(f"T = {temp:g}")
    fig.suptitle("Teacher's soft targets softmax(z / T) (log scale; true class in red)")
    fig.tight_layout()
    return fig


def entropy_vs_temperature(temps: Sequence[float], curves: Mapping[str, Sequence[float]], max_bits: float) -> Figure:
    """Mean entropy (bits) of softmax(z / T) against T (log axis), with the uniform limit log2(N)."""
    fig, axes = _figure(width=5.5, height=3.6)
    ax = axes[0, 0]
    for i, (label, ys) in enumerate(curves.items()):
        ax.plot(temps, ys, marker="o", ms=3, label=label, color=PALETTE[i % 10])
    ax.axhline(max_bits, color="black", ls="--", lw=1, label=f"uniform: log2 N = {max_bits:.2f} bits")
    ax.set_xscale("log")
    ax.set(xlabel="temperature T", ylabel="entropy (bits)", title="How soft are the targets?")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def t_squared_gradients(temps: Sequence[float], scaled: Sequence[float], unscaled: Sequence[float]) -> Figure:
    """|grad| of the soft term w.r.t. the student logits, with and without the T^2 factor (log-log)."""
    fig, axes = _figure(width=5.5, height=3.6)
    ax = axes[0, 0]
    ax.plot(temps, scaled, marker="o", ms=4, color=PALETTE[2], label="T^2 * KL (what we train with)")
    ax.plot(temps, unscaled, marker="s", ms=4, color=PALETTE[1], label="KL alone")
    ref = unscaled[0] * (temps[0] / np.asarray(temps, dtype=float)) ** 2
    ax.plot(temps, ref, color="gray", ls=":", lw=1, label="1 / T^2")
    ax.set(xscale="log", yscale="log", xlabel="temperature T", ylabel="gradient norm (soft term)",
           title="The T^2 factor keeps the soft gradient's size")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def distillation_sweep(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    references: Mapping[str, float],
    xlabel: str = "temperature T",
    title: str = "Test errors of distilled students",
    logx: bool = True,
) -> Figure:
    """Test errors (counts) against a swept knob, one line per student, dashed reference levels."""
    fig, axes = _figure(width=6.0, height=4.0)
    ax = axes[0, 0]
    for i, (label, (xs, ys)) in enumerate(curves.items()):
        ax.plot(xs, ys, marker="o", ms=5, label=label, color=PALETTE[i % 10])
    styles = ("--", ":", "-.")
    for i, (label, value) in enumerate(references.items()):
        ax.axhline(value, color=PALETTE[(i + len(curves)) % 10], ls=styles[i % 3], lw=1.2, label=f"{label}: {value:g}")
    if logx:
        ax.set_xscale("log")
        xs_all = sorted({x for xs, _ in curves.values() for x in xs})
        ax.set_xticks(xs_all, [f"{x:g}" for x in xs_all])
        ax.minorticks_off()
    ax.set(xlabel=xlabel, ylabel="test errors", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def kd_view(
    image: torch.Tensor, teacher_probs: Sequence[float], student_probs: Sequence[float],
    label: int, temperature: float, classes: Sequence[str],
) -> Figure:
    """One image with the teacher's and the student's softmax(z / T) side by side (log scale)."""
    fig, axes = _figure(ncols=2, width=4.2, height=3.2, gridspec_kw={"width_ratios": [1, 2.4]})
    ax = axes[0, 0]
    ax.imshow(image.squeeze().cpu().numpy(), cmap="gray_r")
    ax.set(xticks=[], yticks=[], title=f"label {classes[label]}")
    ax.grid(False)
    ax = axes[0, 1]
    k = np.arange(len(teacher_probs))
    ax.bar(k - 0.2, teacher_probs, width=0.4, color=PALETTE[0], label="teacher")
    ax.bar(k + 0.2, student_probs, width=0.4, color=PALETTE[1], label="student")
    ax.set_yscale("log")
    ax.set_ylim(1e-6, 1.5)
    ax.set_xticks(k, [str(c) for c in k], fontsize=8)
    ax.set(title=f"softmax(z / T) at T = {temperature:g}", ylabel="probability (log)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
