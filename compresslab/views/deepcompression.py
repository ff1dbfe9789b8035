"""Figures, render functions and widget panels of the deep compression notebook."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from compresslab.core import metrics
from compresslab.core.data import Dataset
from compresslab.core.models import prunable_layers
from compresslab.core.training import evaluate
from compresslab.techniques.compressedfile import encode_model
from compresslab.techniques.deepcompression import DeepCompressionConfig, EncodeConfig
from compresslab.techniques.sharing import ShareConfig, apply_sharing
from compresslab.views.figures import (
    PALETTE,
    lines,
    new_figure,
)
from compresslab.views.panel import View

__all__ = [
    "centroid_histograms",
    "bits_accuracy",
    "code_lengths",
    "byte_breakdown",
    "stage_bars",
    "sharing_view",
]


# ---- figures ----

def centroid_histograms(weights, centroids: Mapping[str, Sequence[float]], title: str = "", bins: int = 80) -> Figure:
    """One panel per initialisation: histogram of the surviving weights, centroids marked below it."""
    w = np.asarray(weights, dtype=float).reshape(-1)
    w = w[w != 0]
    fig, axes = new_figure(ncols=len(centroids), width=4.2, height=3.2, sharey=True)
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
    """Test accuracy (%) vs bits per weight, one line per layer type (rows: layers, bits, accuracy in
    percent, as the reports give it); baseline in percent."""
    curves: dict[str, tuple[list, list]] = {}
    for row in sorted(rows, key=lambda r: r["bits"]):
        xs, ys = curves.setdefault(row["layers"], ([], []))
        xs.append(row["bits"])
        ys.append(row["accuracy"])
    return lines(curves, "bits per weight (2^bits shared values)", "test accuracy (%)",
                 "Weight sharing: accuracy vs bits (other layers kept in FP32, no fine-tuning)",
                 reference=baseline, reference_label="before sharing")


def code_lengths(streams: Mapping[str, tuple[Sequence[int], Sequence[int]]]) -> Figure:
    """Per stream: symbol frequencies (bars) and Huffman code lengths (dots), with H and L."""
    from compresslab.techniques.huffman import average_length, entropy

    fig, axes = new_figure(ncols=len(streams), width=5.2, height=3.4)
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
    fig, axes = new_figure(width=6.5, height=3.6)
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
    fig, axes = new_figure(width=6.0, height=3.4)
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


# ---- panels ----

def sharing_view(pruned: nn.Module, data: Dataset, conv_bits: int, fc_bits: int, init: str,
                 layer: str | None = None, conv_index_bits: int = 8, fc_index_bits: int = 5,
                 value_dtype: str = "float32"):
    """The widget callback: share `pruned` with these bits and init (k-means only, no fine-tuning;
    centroids and biases stored at `value_dtype`); the histogram of one layer with its centroids,
    and the file size and accuracy it gives."""

    config = DeepCompressionConfig(share=ShareConfig(conv_bits=conv_bits, fc_bits=fc_bits, init=init, iters=20,
                                                     value_dtype=value_dtype),
                                   encode=EncodeConfig(conv_index_bits=conv_index_bits, fc_index_bits=fc_index_bits))
    shared, _ = apply_sharing(pruned, config.share)
    layers = prunable_layers(shared)
    name = layer or next(iter(layers))
    if name not in layers:
        raise ValueError(f"layer={name!r} is not a Linear/Conv2d layer; choose from {list(layers)}")
    index_bits, bits = config.layer_bits(shared)
    content, _ = encode_model(shared, index_bits, bits)
    weights = metrics.effective_weight(prunable_layers(pruned)[name]).cpu().numpy()
    w_shared = metrics.effective_weight(layers[name])
    used = torch.unique(w_shared[w_shared != 0]).cpu().numpy()  # empty clusters are not stored
    fig = centroid_histograms(weights, {f"{init} init, after k-means ({name})": used})
    dense_bytes = 4 * metrics.parameter_count(shared)
    accuracy = evaluate(shared, data.test).accuracy
    has_conv = any(isinstance(m, nn.Conv2d) for m in layers.values())
    knobs = {"conv bits": conv_bits} if has_conv else {}  # conv_bits means nothing without a conv layer
    return View(fig, {**knobs, "fc bits": fc_bits, "init": init, "file bytes": len(content),
                      "compression x": round(dense_bytes / len(content), 1),
                      "test accuracy % (no fine-tuning)": round(accuracy, 2)})
