"""Figures, the render function and the panel of the learned-sparsity notebook (10)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from compresslab.core.data import Split
from compresslab.core.training import evaluate
from compresslab.techniques.sparsevd import encode_sparse, quantize_posterior
from compresslab.techniques.variational import layer_log_alphas
from compresslab.views.figures import PALETTE, new_figure
from compresslab.views.panel import View, panel, slider

__all__ = ["log_alpha_histograms", "sparsity_history", "error_vs_compression", "render_threshold",
           "threshold_panel"]


def log_alpha_histograms(log_alphas: Mapping[str, torch.Tensor], threshold: float) -> Figure:
    """One histogram of log alpha per layer, the threshold as a dashed line, the share below it in the title."""
    names = list(log_alphas)
    fig, axes = new_figure(ncols=len(names), width=3.2, height=2.8)
    for ax, name in zip(axes[0], names):
        la = log_alphas[name].flatten().clamp(-12, 12).numpy()
        ax.hist(la, bins=np.linspace(-12, 12, 73), color=PALETTE[0])
        ax.axvline(threshold, color=PALETTE[3], ls="--", lw=1.2)
        ax.set_yscale("log")
        ax.set(title=f"{name}: {100 * float((la < threshold).mean()):.2f}% below", xlabel="log alpha")
    axes[0, 0].set_ylabel("weights")
    fig.tight_layout()
    return fig


def sparsity_history(history: Sequence[Mapping]) -> Figure:
    """Weights kept (percent, log scale) and the KL weight beta after each epoch of the training."""
    fig, axes = new_figure(ncols=2, width=4.2, height=3.0)
    epochs = [row["epoch"] for row in history]
    axes[0, 0].plot(epochs, [row["weights kept %"] for row in history], "o-", color=PALETTE[0])
    axes[0, 0].set(yscale="log", xlabel="epoch", ylabel="weights kept (%)", title="learned sparsity")
    axes[0, 1].plot(epochs, [row["kl weight"] for row in history], "o-", color=PALETTE[1])
    axes[0, 1].set(xlabel="epoch", ylabel="KL weight beta", title="warm-up of the KL term")
    fig.tight_layout()
    return fig


def error_vs_compression(points: Sequence[Mapping], dense_error: float | None = None,
                         title: str = "Test error vs compression") -> Figure:
    """points: {"label", "compression_x", "error_pct", "kind": "measured" | "reported"}; reported points
    are hollow, measured ones filled; compression on a log axis."""
    fig, axes = new_figure(width=6.5, height=4.2)
    ax = axes[0, 0]
    for i, p in enumerate(points):
        color = PALETTE[i % len(PALETTE)]
        filled = p["kind"] == "measured"
        ax.scatter([p["compression_x"]], [p["error_pct"]], s=70, marker="o" if filled else "s",
                   facecolors=color if filled else "none", edgecolors=color, linewidths=1.6,
                   label=f"{p['label']} ({p['kind']})")
    if dense_error is not None:
        ax.axhline(dense_error, color="0.5", ls=":", lw=1, label="dense (this run)")
    ax.set_xscale("log")
    ax.set(xlabel="compression (x, dense FP32 bytes / stored)", ylabel="test error (%)", title=title)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def render_threshold(variational: nn.Module, split: Split, threshold: float, step_scale: float,
                     dense_bytes: int, max_index_bits: int = 12) -> View:
    """Re-mask the trained variational model at `threshold`, quantize, and report the accuracy on
    `split` (percent), the weights kept in the file (below the threshold and not rounded to 0) and the
    bytes of the file it would write."""
    plain, rows = quantize_posterior(variational, threshold, step_scale)
    content, *_ = encode_sparse(plain, max_index_bits)
    kept = sum(r["kept"] - r["lost to rounding"] for r in rows)
    weights = sum(r["weights"] for r in rows)
    metrics = {"threshold": threshold, "accuracy %": evaluate(plain, split).accuracy,
               "weights kept (file) %": 100 * kept / weights, "file bytes": len(content),
               "compression x": dense_bytes / len(content)}
    return View(figure=log_alpha_histograms(layer_log_alphas(variational), threshold), metrics=metrics)


def threshold_panel(variational: nn.Module, split: Split, threshold: float, step_scale: float, dense_bytes: int) -> None:
    """The log-alpha threshold as a slider that re-masks the model (see render_threshold)."""
    def render(threshold: float) -> View:
        return render_threshold(variational, split, threshold, step_scale, dense_bytes)

    panel(render, {"threshold": slider(-4.0, 8.0, 0.25, label="log alpha threshold")}, {"threshold": threshold},
          title="Re-mask at another log alpha threshold")
