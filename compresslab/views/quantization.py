"""Figures, render functions and widget panels of the quantization notebook."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from compresslab.techniques import equalization, quantops
from compresslab.views.figures import (
    PALETTE,
    new_figure,
)
from compresslab.views.panel import View, choice, int_slider, panel

__all__ = [
    "number_line",
    "clipping_tradeoff",
    "channel_ranges",
    "activation_ranges",
    "sqnr_vs_bits",
    "quant_histogram",
    "adaround_vs_rtn",
    "equalized_ranges",
    "accuracy_vs_bits",
    "render_quantization",
    "quantization_panel",
]


# ---- figures ----

def number_line(x: Sequence[float], x_hat: Sequence[float], grid: Sequence[float], q: Sequence[int],
                title: str = "") -> Figure:
    """Real values (top) mapped to their grid points (bottom); grid ticks labelled with their integer q;
    clipped values (outside the grid) in red."""
    fig, axes = new_figure(width=9.0, height=2.6)
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
    fig, axes = new_figure(width=6.0, height=3.6)
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
    fig, axes = new_figure(ncols=len(names), width=3.4, height=3.0)
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
    fig, axes = new_figure(ncols=len(names), width=3.4, height=3.0)
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
    fig, axes = new_figure(width=6.0, height=3.8)
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


def adaround_vs_rtn(bits: Sequence[int], rtn: Sequence[float], adaround: Sequence[float], fp32: float,
                    layers: Sequence[Mapping] = (), layer_bits: int | None = None, title: str = "") -> Figure:
    """Left: test accuracy (percent) against weight bits, round-to-nearest vs AdaRound, FP32 dashed.
    Right (when `layers` is given: report rows with "layer", "recon loss RTN", "recon loss AdaRound"):
    each layer's output reconstruction loss on the calibration images at `layer_bits` (log scale)."""
    fig, axes = new_figure(ncols=2 if layers else 1, width=5.2, height=3.6)
    ax = axes[0, 0]
    ax.plot(bits, rtn, marker="o", ms=5, color=PALETTE[0], label="round to nearest")
    ax.plot(bits, adaround, marker="s", ms=5, color=PALETTE[1], label="AdaRound")
    ax.axhline(fp32, color="black", ls="--", lw=1, label="FP32")
    ax.set(xlabel="weight bits (activations 8-bit)", ylabel="test accuracy (%)", xticks=sorted(bits),
           title=title or "Same grid, learned rounding")
    ax.legend(fontsize=8)
    if layers:
        ax = axes[0, 1]
        names = [r["layer"] for r in layers]
        pos = np.arange(len(names))
        ax.bar(pos - 0.2, [r["recon loss RTN"] for r in layers], 0.4, color=PALETTE[0], label="round to nearest")
        ax.bar(pos + 0.2, [r["recon loss AdaRound"] for r in layers], 0.4, color=PALETTE[1], label="AdaRound")
        ax.set_yscale("log")
        ax.set(xticks=pos, xticklabels=names, ylabel=r"$\|W x - \widetilde{W} x\|^2$ per input row (log)",
               title=f"Layer output error at {layer_bits} bits" if layer_bits else "Layer output error")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def equalized_ranges(before: Mapping[str, Sequence[float]], after: Mapping[str, Sequence[float]],
                     title: str = "") -> Figure:
    """One panel per layer: each output channel's max |w| (sorted, log scale) after BatchNorm folding
    (before) and after cross-layer equalization (after); a dashed line at each one's per-tensor range.
    The panel title gives max / median of the channel ranges, before -> after: how many grid steps
    the typical channel loses to the widest one under one scale per tensor."""
    names = list(before)
    ncols = min(4, len(names))
    nrows = -(-len(names) // ncols)
    fig, axes = new_figure(ncols=ncols, nrows=nrows, width=3.2, height=2.8)
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    for ax, name in zip(axes.flat, names):
        spread = []
        for i, (label, table) in enumerate((("folded", before), ("equalized", after))):
            v = np.sort(np.asarray(table[name], dtype=float))[::-1]
            ax.plot(np.arange(len(v)), v, color=PALETTE[i], lw=1.5, label=label)
            ax.axhline(v.max(), color=PALETTE[i], ls="--", lw=1)
            spread.append(equalization.range_spread(table[name]))
        ax.set_yscale("log")
        ax.set(title=f"{name}: {spread[0]:.1f}x -> {spread[1]:.1f}x", xlabel="output channel (sorted)")
    for row in axes:
        row[0].set_ylabel("max |w| (log)")
    axes[0, 0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def accuracy_vs_bits(curves: Mapping[str, Mapping[int, Sequence[float]]], fp32: float | None = None,
                     xlabel: str = "weight bits", title: str = "") -> Figure:
    """Test accuracy (percent) against bits, one line per method, each point with its 95% interval:
    curves[method][bits] = (accuracy, low, high). FP32 dashed."""
    fig, axes = new_figure(width=6.4, height=4.0)
    ax = axes[0, 0]
    markers = "osD^v<>"
    for i, (label, points) in enumerate(curves.items()):
        bits = sorted(points)
        acc = np.array([points[b][0] for b in bits], dtype=float)
        err = np.array([[points[b][0] - points[b][1], points[b][2] - points[b][0]] for b in bits], dtype=float).T
        ax.errorbar(np.asarray(bits) + 0.06 * (i - (len(curves) - 1) / 2), acc, yerr=err, marker=markers[i % 7],
                    ms=5, capsize=3, lw=1.3, color=PALETTE[i % 10], label=label)
    if fp32 is not None:
        ax.axhline(fp32, color="black", ls="--", lw=1, label="FP32")
    every = sorted({b for points in curves.values() for b in points})
    ax.set(xlabel=xlabel, ylabel="test accuracy (%), 95% interval", xticks=every, title=title)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def quant_histogram(w: torch.Tensor, q: torch.Tensor, grid: Sequence[float], qmin: int, qmax: int,
                    title: str = "", bins: int = 100) -> Figure:
    """Left: the float weights (log counts) with a quantization grid as vertical lines. Right: how many
    weights landed on each integer level q in [qmin, qmax]."""
    from matplotlib.ticker import MaxNLocator

    fig, axes = new_figure(ncols=2, width=4.6, height=3.2)
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
    # a linear axis: on a log axis a bar of thousands of weights looks as empty as a bar of ten
    bars = ax.bar(levels, counts, width=0.8 if len(levels) <= 64 else 1.0, color=PALETTE[1])
    if len(levels) <= 16:
        for bar, count in zip(bars, counts):
            ax.annotate(f"{count}", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                        va="bottom", fontsize=7)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    used = int((counts > 0).sum())
    ax.set(xlabel="integer level q", ylabel="weights on this level", title=f"{used} of {len(levels)} levels used")
    fig.tight_layout()
    return fig



# ---- panels ----

def render_quantization(model, split, calibration, layer: str, weight_bits: int, act_bits: int,
                        granularity: str, observer: str) -> View:
    """PTQ of a copy of `model` (calibrated on `calibration` inputs): the chosen layer's weight histogram
    with its grid and level counts, its SQNR, and the test accuracy on `split`."""
    import torch

    from compresslab.core.training import evaluate
    from compresslab.core.validate import check_choice
    from compresslab.techniques import quantization as Q
    from compresslab.techniques.quantlayers import quant_layers

    config = Q.QuantConfig(weight_bits=weight_bits, act_bits=act_bits, weight_granularity=granularity,
                           weight_observer=observer, act_observer=observer, calibration_size=len(calibration))
    quantized, report = Q.apply_ptq(model, config, calibration=calibration)
    layers = quant_layers(quantized)
    check_choice("", "layer", layer, tuple(layers))
    fq = layers[layer].weight_fake_quant
    scale, zero_point = fq.qparams()
    w = layers[layer].weight.detach()
    codes = quantops.quantize_affine(w, scale, zero_point, fq.qmin, fq.qmax, fq.axis)
    channel = int(torch.argmax(scale)) if scale.dim() else 0
    s = scale[channel] if scale.dim() else scale
    z = zero_point[channel] if zero_point.dim() else zero_point
    grid = ((torch.arange(fq.qmin, fq.qmax + 1) - z) * s).tolist()
    note = f" (grid of channel {channel}, the widest)" if scale.dim() else ""
    figure = quant_histogram(w, codes, grid, fq.qmin, fq.qmax,
                                   title=f"{layer}: {weight_bits}-bit {granularity}, {observer}{note}")
    row = next(r for r in report.layers if r["layer"] == layer)
    unclamped = quantops.quantize_affine(w, scale, zero_point, -2**30, 2**30, fq.axis)
    clipped = 100 * float((unclamped != codes).float().mean())
    per_range = w[0].numel() if scale.dim() else w.numel()
    notes = {}
    if observer == "percentile" and per_range < 10_000:
        # nearest rank ceil(0.9999 n) = n for n < 10,000: the 99.99th percentile is the maximum itself
        notes["why percentile = minmax here"] = (f"each range covers {per_range} weights (< 10,000), so its "
                                                 "99.99th percentile is its maximum: nothing is clipped")
    return View(figure, {
        f"{layer} weights clipped by the range %": round(clipped, 3),
        **notes,
        "test accuracy %": round(evaluate(quantized, split).accuracy, 2),
        f"{layer} weight SQNR dB": row["weight SQNR dB"],
        f"{layer} output SQNR dB": row["output SQNR dB"],
        f"{layer} weights that became 0 %": row["zero weights %"],
        "model KiB (weights + scales, float biases)": round(report.size_after.stored_bytes / 1024, 1),
        "compression vs FP32": round(report.compression, 2),
    })


def quantization_panel(model, split, calibration, layer: str, weight_bits: int, act_bits: int,
                       granularity: str, observer: str):
    """Bits (weights, activations), granularity and observer over `render_quantization`."""
    from compresslab.core.models import prunable_layers

    return panel(
        lambda layer, weight_bits, act_bits, granularity, observer: render_quantization(
            model, split, calibration, layer, weight_bits, act_bits, granularity, observer),
        {"layer": choice(list(prunable_layers(model))), "weight_bits": int_slider(2, 8, label="weight bits"),
         "act_bits": int_slider(2, 8, label="activation bits"), "granularity": choice(quantops.GRANULARITIES),
         "observer": choice(quantops.OBSERVERS)},
        {"layer": layer, "weight_bits": weight_bits, "act_bits": act_bits, "granularity": granularity,
         "observer": observer},
        title="Quantize the trained model (post-training, no fine-tuning)",
    )


