"""Figures, render functions and widget panels of the pruning notebook."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from compresslab.techniques import masks
from compresslab.techniques import structured as structured_ops
from compresslab.views.figures import (
    PALETTE,
    lines,
    new_figure,
)
from compresslab.views.panel import View, choice, panel, slider, toggle

__all__ = [
    "sensitivity",
    "pruning_view",
    "render_pruning",
    "pruning_panel",
]


# ---- figures ----

def sensitivity(rows: Sequence[Mapping], baseline: float | None = None) -> Figure:
    """Accuracy vs sparsity when pruning one layer at a time (rows: layer, sparsity, accuracy in percent,
    as pruning.sensitivity_scan gives it; baseline in percent)."""
    curves: dict[str, tuple[list, list]] = {}
    for row in rows:
        xs, ys = curves.setdefault(row["layer"], ([], []))
        xs.append(100 * row["sparsity"])
        ys.append(row["accuracy"])
    return lines(curves, "sparsity of that layer (%)", "test accuracy (%)", "Per-layer sensitivity (no fine-tuning)",
                 reference=baseline)


def pruning_view(
    dense: Mapping[str, torch.Tensor], pruned: Mapping[str, torch.Tensor], density: Mapping[str, float],
) -> Figure:
    """Left: histograms of dense vs surviving weights per layer; right: per-layer density."""
    names = list(dense)
    fig, axes = new_figure(ncols=len(names) + 1, width=3.3, height=3.0)
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



# ---- panels ----

def render_pruning(model, split, sparsity: float, scope: str, structured: bool) -> View:
    """Prune a copy of `model` (no fine-tuning) and show histograms, density and test accuracy on `split`."""
    from compresslab.core import metrics
    from compresslab.core.models import prunable_layers
    from compresslab.core.training import evaluate

    if structured:
        pruned = structured_ops.structured_prune(model, sparsity, input_shape=(1, *split.images.shape[1:]))
        dense_weights = {n: m.weight.detach() for n, m in prunable_layers(model).items()}
        pruned_weights = {n: m.weight.detach() for n, m in prunable_layers(pruned).items()}
        kept = {n: pruned_weights[n].numel() / dense_weights[n].numel() for n in dense_weights}
    else:
        pruned = masks.prune_magnitude(masks.copy_model(model), sparsity, scope)
        dense_weights = {n: metrics.effective_weight(m) for n, m in prunable_layers(model).items()}
        pruned_weights = {n: metrics.effective_weight(m) for n, m in prunable_layers(pruned).items()}
        kept = {n: float((w != 0).float().mean()) for n, w in pruned_weights.items()}
    size = metrics.size_report(pruned)
    reference = metrics.size_report(model).dense_bytes
    figure = pruning_view(dense_weights, pruned_weights, kept)
    return View(figure, {
        "test accuracy %": round(evaluate(pruned, split).accuracy, 2),
        "non-zero parameters": size.nonzeros,
        "dense FP32 KiB": round(size.dense_bytes / 1024, 1),
        # structured pruning shrinks the layers, which stay dense; unstructured needs a sparse format
        "stored as": "smaller dense layers (FP32)" if structured else "CSR (32-bit value + 32-bit index)",
        "stored KiB": round((size.dense_bytes if structured else 8 * size.nonzeros) / 1024, 1),
        "compression vs dense FP32": round(reference / (size.dense_bytes if structured else 8 * size.nonzeros), 2),
    })


def pruning_panel(model, split, sparsity: float, scope: str, structured: bool):
    """Sparsity slider, scope and structured toggles over `render_pruning`."""
    return panel(
        lambda sparsity, scope, structured: render_pruning(model, split, sparsity, scope, structured),
        {"sparsity": slider(0.0, 0.99, 0.01), "scope": choice(["global", "layer"]), "structured": toggle()},
        {"sparsity": sparsity, "scope": scope, "structured": structured},
        title="Prune the trained model (no fine-tuning)",
    )


