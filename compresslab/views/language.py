"""Figures, render function and widget panel of the language-model notebook (09)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from compresslab.views.figures import PALETTE, new_figure
from compresslab.views.panel import View, choice, panel

__all__ = [
    "training_curve",
    "group_size_sweep",
    "channel_maxima",
    "awq_alpha_curve",
    "frontier_plot",
    "sample_table",
    "render_language",
    "language_panel",
]


def training_curve(epochs: Sequence[float], val_bpb: Sequence[float], test_bpb: float) -> Figure:
    """Validation bits per byte after each epoch, and the final test value."""
    fig, axes = new_figure(width=5.0, height=3.2)
    ax = axes[0, 0]
    ax.plot(epochs, val_bpb, marker="o", color=PALETTE[0], label="validation")
    ax.axhline(test_bpb, color="black", ls="--", lw=1, label=f"test: {test_bpb:.3f}")
    ax.set(xlabel="epoch", ylabel="bits per byte", title="Baseline training (lower is better)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def group_size_sweep(rows: Sequence[Mapping], baseline_bpb: float) -> Figure:
    """Bits-per-byte increase over FP32 against group size, one line per (method, bits); rows hold
    method, bits, group_size (0: one group per row, drawn at the row length) and bpb."""
    fig, axes = new_figure(width=6.0, height=3.8)
    ax = axes[0, 0]
    series: dict[tuple[str, int], list[tuple[int, float]]] = {}
    for r in rows:
        series.setdefault((r["method"], r["bits"]), []).append((r["group_size"] or r["row_length"], r["bpb"] - baseline_bpb))
    for i, ((method, bits), pts) in enumerate(sorted(series.items(), key=lambda kv: (-kv[0][1], kv[0][0]))):
        pts.sort()
        ax.plot([p[0] for p in pts], [max(p[1], 1e-4) for p in pts], marker="o" if method == "gptq" else "s",
                ls="-" if method == "gptq" else "--", color=PALETTE[[8, 4, 3, 2].index(bits) if bits in (8, 4, 3, 2) else i],
                label=f"{method.upper()} INT{bits}")
    ax.set(xscale="log", yscale="log", xlabel="group size (columns per scale; rightmost: one per row)",
           ylabel="bits per byte above FP32", title="Smaller groups, fewer errors; GPTQ vs round-to-nearest")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    return fig


def channel_maxima(maxima: Mapping[str, np.ndarray]) -> Figure:
    """max |x_j| of every input channel j for each named layer (bars, log scale): outliers stand out."""
    fig, axes = new_figure(ncols=len(maxima), width=3.6, height=3.0)
    for ax, (name, m) in zip(axes[0], maxima.items()):
        m = np.asarray(m, dtype=float)
        floor = max(float(m.min()) / 2, 1e-6)  # log axis: each channel a line from below the smallest maximum
        ax.vlines(np.arange(len(m)), floor, m, color=PALETTE[0], lw=1.0)
        ax.set_ylim(bottom=floor)
        ax.axhline(np.median(m), color="black", ls="--", lw=1, label="median")
        ax.set(yscale="log", xlabel="input channel", title=f"{name}\nmax/median {m.max() / np.median(m):.1f}")
        ax.legend(fontsize=7)
    axes[0, 0].set_ylabel("max |x_j| over tokens")
    fig.tight_layout()
    return fig


def awq_alpha_curve(alphas: Sequence[float], errors: Mapping[str, Sequence[float]]) -> Figure:
    """Relative output error of the scaled, quantized layer against AWQ's exponent alpha, one line per
    layer (log scale); the chosen (smallest) point of each marked. alpha = 0 is plain RTN."""
    fig, axes = new_figure(width=6.0, height=3.6)
    ax = axes[0, 0]
    for i, (name, errs) in enumerate(errors.items()):
        errs = np.asarray(errs, dtype=float)
        ax.plot(alphas, errs, marker=".", color=PALETTE[i % 10], label=name)
        k = int(np.argmin(errs))
        ax.scatter([alphas[k]], [errs[k]], s=70, facecolors="none", edgecolors=PALETTE[i % 10], lw=1.5)
    ax.set(yscale="log", xlabel="alpha (s_j = mean|x_j|^alpha; 0 = plain RTN)",
           ylabel="relative output error", title="AWQ's scale search: the circled alpha is kept")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def frontier_plot(points: Sequence[Mapping], front: Sequence[int], highlight: int | None = None) -> Figure:
    """Bits per byte against stored bytes (log) for every variant; the Pareto frontier joined by a line."""
    fig, axes = new_figure(width=6.5, height=4.2)
    ax = axes[0, 0]
    families = sorted({p["family"] for p in points})
    for i, fam in enumerate(families):
        pts = [p for p in points if p["family"] == fam]
        ax.scatter([p["bytes"] for p in pts], [p["bpb"] for p in pts], s=22, color=PALETTE[i % 10], label=fam, alpha=0.8)
    fr = sorted((points[i] for i in front), key=lambda p: p["bytes"])
    ax.plot([p["bytes"] for p in fr], [p["bpb"] for p in fr], color="black", lw=1, ls="-", label="Pareto frontier")
    if highlight is not None:
        p = points[highlight]
        ax.scatter([p["bytes"]], [p["bpb"]], s=160, facecolors="none", edgecolors="red", lw=2, label=p["label"])
    ax.set(xscale="log", xlabel="stored bytes (log)", ylabel="bits per byte (test)",
           title="Compression frontier: smaller and better-predicting is down-left")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def sample_table(samples: Mapping[str, str]):
    """A DataFrame: one row per model, its generated text (newlines shown as the symbol ⏎)."""
    import pandas as pd

    return pd.DataFrame([{"model": k, "generated text": v.replace("\n", " ⏎ ")} for k, v in samples.items()])


def render_language(grid: Mapping[tuple[str, int, int], Mapping], points: Sequence[Mapping], front: Sequence[int],
                    method: str, bits: int, group_size: int, baseline_bpb: float) -> View:
    """The precomputed variant (method, bits, group_size) on the frontier, with its numbers and sample.
    grid[(method, bits, group_size)] holds bpb, file_bytes, sample and `point` (its index in points)."""
    key = (method, bits, group_size)
    if key not in grid:
        raise ValueError(f"(method, bits, group_size)={key} was not computed; choose from {sorted(grid)}")
    row = grid[key]
    return View(frontier_plot(points, front, highlight=row["point"]), {
        "bits per byte": round(row["bpb"], 4), "increase over FP32": round(row["bpb"] - baseline_bpb, 4),
        "file bytes": row["file_bytes"], "on the frontier": row["point"] in front, "generated text": row["sample"],
    })


def language_panel(grid: Mapping[tuple[str, int, int], Mapping], points: Sequence[Mapping], front: Sequence[int],
                   method: str, bits: int, group_size: int, baseline_bpb: float) -> None:
    """Method, bits and group-size controls over `render_language` (every combination precomputed)."""
    methods = sorted({k[0] for k in grid})
    bit_opts = sorted({k[1] for k in grid}, reverse=True)
    groups = sorted({k[2] for k in grid})
    return panel(
        lambda method, bits, group_size: render_language(grid, points, front, method, bits, group_size, baseline_bpb),
        {"method": choice(methods, label="method"), "bits": choice(bit_opts, label="bits"),
         "group_size": choice(groups, label="group size (0: per row)")},
        {"method": method, "bits": bits, "group_size": group_size},
        title="Weight-only quantization: bits per byte, file size and a generated sample",
    )
