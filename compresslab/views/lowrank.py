"""Figures, render functions and widget panels of the low-rank notebook."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from compresslab.views.figures import (
    PALETTE,
    new_figure,
)
from compresslab.views.panel import View, int_slider, panel

__all__ = [
    "spectra",
    "rank_latency",
    "error_vs_params",
    "truncation_view",
    "render_lowrank",
    "lowrank_panel",
]


# ---- figures ----

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
    fig, axes = new_figure(ncols=2, width=5.4, height=3.8)
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
    MACs of the factorized layer relative to the dense one, r (m + n) / (m n) (rows: macs_ratio);
    a p10-p90 band when the rows carry p10 and p90 (ms)."""
    batches = sorted(dense_ms)
    fig, axes = new_figure(ncols=len(batches), width=4.8, height=3.6)
    for ax, batch in zip(axes[0], batches):
        sub = sorted((r for r in rows if r["batch"] == batch), key=lambda r: r["rank"])
        ranks = [r["rank"] for r in sub]
        ax.plot(ranks, [r["ms"] for r in sub], marker="o", ms=4, color=PALETTE[0], label="factorized")
        if sub and all("p10" in r and "p90" in r for r in sub):  # the spread of each timing, p10 to p90
            ax.fill_between(ranks, [r["p10"] for r in sub], [r["p90"] for r in sub], color=PALETTE[0], alpha=0.2,
                            lw=0, label="p10-p90")
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
    """Test error (%, log) vs parameter count (log), one line per labelled (params, accuracy %) series,
    with the dense model's error dashed (dense_accuracy in percent, as the reports give it): the log
    scale separates 1.5% from 2% as clearly as 20% from 50%."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    fig, axes = new_figure()
    ax = axes[0, 0]
    for i, (label, (xs, accs)) in enumerate(curves.items()):
        ax.plot(xs, [100 - a for a in accs], marker="o", ms=4, label=label, color=PALETTE[i % 10])
    ax.axhline(100 - dense_accuracy, color="black", ls="--", lw=1, label="dense baseline")
    ax.set_xscale("log")
    ax.set_yscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))  # 1, 2, 5, 10, 20, 50: no crowding
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set(xlabel=xlabel, ylabel="test error (%, log)", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def truncation_view(singular: Mapping[str, torch.Tensor], ranks: Mapping[str, int]) -> Figure:
    """One panel per layer: its singular values, kept (colour) and discarded (grey) at `ranks`."""
    names = list(singular)
    fig, axes = new_figure(ncols=len(names), width=3.6, height=3.0)
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



# ---- panels ----

def render_lowrank(model, split, svds, **ranks: int) -> View:
    """Truncate each named layer of a copy of `model` to its rank (no fine-tuning): the kept and
    discarded singular values, and per layer the relative error ||W - W_r||_F / ||W||_F, energy kept
    and parameters; test accuracy on `split`. `svds`: lowrank.decompose(model), reused every call."""
    from compresslab.core.training import evaluate
    from compresslab.techniques import lowrank

    config = lowrank.LowRankConfig(rank=dict(ranks), layers=tuple(ranks), skip_unprofitable=False)
    truncated, report = lowrank.apply_lowrank(model, config, svds=svds)
    figure = truncation_view({n: svds[n].s for n in ranks}, ranks)
    shown = {"test accuracy %": round(evaluate(truncated, split).accuracy, 2)}
    for row in report.layers:
        name = row["layer"]
        shown[f"{name} relative error"] = round(row["rel_error"], 4)
        shown[f"{name} params"] = f"{row['params_before']:,} -> {row['params_after']:,}" + (
            "" if row["saves"] else f" (rank >= break-even {row['break_even']}: no saving)")
    shown["model params"] = f"{report.params_before:,} -> {report.params_after:,}"
    shown["params removed in these layers %"] = round(100 * report.reduction, 1)
    return View(figure, shown)


def lowrank_panel(model, split, ranks: dict, svds=None):
    """One rank slider per layer (1 .. min(m, n)) over `render_lowrank`."""
    from compresslab.techniques import lowrank

    svds = svds if svds is not None else lowrank.decompose(model, layers=tuple(ranks))
    return panel(
        lambda **values: render_lowrank(model, split, svds, **values),
        {name: int_slider(1, len(svds[name].s), label=f"rank {name}") for name in ranks},
        dict(ranks),
        title="Truncate the trained model's layers (no fine-tuning)",
    )


