"""Figures and the widget panel of the deployment notebook (07), drawn from precomputed measurements.

A measurement row (one per architecture x model x runtime x precision) holds: arch, model, variant,
runtime, precision, bytes, accuracy (%), agreement (%), max_abs_diff, and for each batch b and
threads t the columns `ms b{b} t{t}`, `p10 b{b} t{t}`, `p90 b{b} t{t}` (NaN where not measured).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from compresslab.views.figures import PALETTE, new_figure
from compresslab.views.panel import View, choice, panel

__all__ = ["latency_col", "runtime_latency", "size_accuracy", "zeros_and_bytes", "drift_view",
           "confidence_under_shift", "render_deployment", "deployment_panel"]


def latency_col(batch: int, threads: int, stat: str = "ms") -> str:
    """The column name of a latency statistic ("ms" median, "p10", "p90")."""
    return f"{stat} b{batch} t{threads}"


def _rows(rows: Sequence[Mapping] | object) -> list[dict]:
    return rows.to_dict("records") if hasattr(rows, "to_dict") else [dict(r) for r in rows]


def runtime_latency(rows, arch: str, threads: int, batches: Sequence[int] = (1, 256),
                    baseline: str = "PyTorch eager fp32") -> Figure:
    """Horizontal bars of median latency with p10-p90 whiskers per variant of one architecture, one
    panel per batch size, each bar labelled with its speed-up over `baseline`."""
    sub = [r for r in _rows(rows) if r["arch"] == arch and r.get("model", "dense") == "dense"]
    fig, axes = new_figure(ncols=len(batches), width=5.2, height=0.32 * len(sub) + 1.4)
    for ax, b in zip(axes[0], batches):
        med = np.array([r.get(latency_col(b, threads), np.nan) for r in sub], float)
        lo = np.array([r.get(latency_col(b, threads, "p10"), np.nan) for r in sub], float)
        hi = np.array([r.get(latency_col(b, threads, "p90"), np.nan) for r in sub], float)
        base = next((m for r, m in zip(sub, med) if r["variant"] == baseline), np.nan)
        colors = [PALETTE[1] if "int8" in r["precision"] else PALETTE[0] for r in sub]
        y = np.arange(len(sub))
        ax.barh(y, med, xerr=np.vstack([np.clip(med - lo, 0, None), np.clip(hi - med, 0, None)]),
                color=colors, capsize=2, error_kw={"lw": 0.8})
        for yi, m, h in zip(y, med, hi):
            if np.isfinite(m) and m > 0:
                ax.annotate(f"{base / m:.1f}x", (np.nanmax([h, m]), yi), xytext=(3, 0), textcoords="offset points",
                            va="center", fontsize=7)
        ax.set_yticks(y, [r["variant"] for r in sub], fontsize=7)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels of a short log axis overlap
        ax.set(title=f"{arch}, batch {b}, {threads} thread(s)", xlabel="ms per batch (median, p10-p90, log)")
    axes[0, 0].text(0.99, 0.01, "blue: float, orange: int8; labels: speed-up vs eager FP32",
                    transform=axes[0, 0].transAxes, ha="right", va="bottom", fontsize=7)
    fig.tight_layout()
    return fig


def size_accuracy(rows, title: str = "File size vs test accuracy") -> Figure:
    """Each deployed model as a point, file bytes (log) vs test accuracy: one panel per architecture,
    one colour per precision, each point labelled with its variant."""
    rows = [r for r in _rows(rows) if np.isfinite(r.get("accuracy", np.nan))]
    archs = sorted({r["arch"] for r in rows})
    precisions = sorted({r["precision"] for r in rows})
    fig, axes = new_figure(ncols=len(archs), width=5.0, height=4.0)
    for ax, arch in zip(axes[0], archs):
        for i, precision in enumerate(precisions):
            pts = [r for r in rows if r["arch"] == arch and r["precision"] == precision]
            ax.scatter([r["bytes"] for r in pts], [r["accuracy"] for r in pts], s=24, color=PALETTE[i % 10],
                       label=precision)
            for r in pts:
                ax.annotate(r["variant"].replace(f" {precision}", ""), (r["bytes"], r["accuracy"]), xytext=(3, 2),
                            textcoords="offset points", fontsize=6)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set(xlabel="file bytes (log)", ylabel="test accuracy (%)", title=f"{title}: {arch}")
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def zeros_and_bytes(rows: Sequence[Mapping], title: str = "Zeros are not bytes") -> Figure:
    """Per model: the runtime file's bytes and the same file's gzip bytes, side by side."""
    rows = _rows(rows)
    fig, axes = new_figure(width=7.0, height=3.6)
    ax = axes[0, 0]
    x = np.arange(len(rows))
    ax.bar(x - 0.2, [r["bytes"] / 1024 for r in rows], 0.4, label="file", color=PALETTE[0])
    ax.bar(x + 0.2, [r["gzip_bytes"] / 1024 for r in rows], 0.4, label="file after gzip", color=PALETTE[2])
    ax.set_xticks(x, [r["label"] for r in rows], rotation=25, ha="right", fontsize=8)
    ax.set(ylabel="KiB", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def drift_view(traces: Mapping[str, object], phases: Sequence[tuple[int, str]], title: str) -> Figure:
    """Rolling mean confidence of each model over the input stream, the reference mean (dotted),
    the phase boundaries (grey) and the first alarm of each (x)."""
    fig, axes = new_figure(width=8.5, height=3.8)
    ax = axes[0, 0]
    for i, (name, trace) in enumerate(traces.items()):
        color = PALETTE[i % 10]
        ax.plot(trace.positions, trace.rolling, color=color, label=name)
        ax.axhline(trace.reference_mean, color=color, ls=":", lw=1)
        if trace.first_alarm is not None:
            k = int(np.searchsorted(trace.positions, trace.first_alarm))
            ax.plot([trace.first_alarm], [trace.rolling[k]], "x", color=color, ms=10, mew=2)
    for start, label in phases:
        ax.axvline(start, color="grey", lw=0.8)
        ax.annotate(label, (start, 1.0), xycoords=("data", "axes fraction"), xytext=(3, -12),
                    textcoords="offset points", fontsize=8)
    ax.set(xlabel="input number (arrival order)", ylabel=f"rolling mean {next(iter(traces.values())).config.signal}",
           title=title)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    return fig


def confidence_under_shift(confidence: Mapping[str, Mapping[str, np.ndarray]], title: str) -> Figure:
    """Histograms of max-softmax per input kind (one panel each), one curve per model."""
    kinds = list(next(iter(confidence.values())))
    fig, axes = new_figure(ncols=len(kinds), width=3.0, height=2.8)
    edges = np.linspace(0, 1, 26)
    for ax, kind in zip(axes[0], kinds):
        for i, (model, per_kind) in enumerate(confidence.items()):
            ax.hist(per_kind[kind], bins=edges, histtype="step", lw=1.5, color=PALETTE[i % 10], label=model,
                    density=True)
        ax.set(title=kind, xlabel="max softmax")
    axes[0, 0].set_ylabel("density")
    axes[0, 0].legend(fontsize=7, loc="upper left")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def render_deployment(rows, arch: str, model: str, batch: int, threads: int) -> View:
    """One architecture/model: latency of every runtime at (batch, threads) next to file bytes and
    accuracy, from the precomputed rows; the metrics name the fastest variant."""
    sub = [r for r in _rows(rows) if r["arch"] == arch and r.get("model", "dense") == model
           and np.isfinite(r.get(latency_col(batch, threads), np.nan))]
    if not sub:
        raise ValueError(f"no measurement for arch={arch!r}, model={model!r}, batch {batch}, {threads} thread(s)")
    fig, axes = new_figure(ncols=2, width=4.6, height=0.3 * len(sub) + 1.5)
    y = np.arange(len(sub))
    names = [r["variant"] for r in sub]
    med = [r[latency_col(batch, threads)] for r in sub]
    axes[0, 0].barh(y, med, color=PALETTE[0])
    axes[0, 0].set_yticks(y, names, fontsize=7)
    axes[0, 0].invert_yaxis()
    axes[0, 0].set(xlabel="ms per batch (median)", title=f"batch {batch}, {threads} thread(s)")
    axes[0, 1].barh(y, [r["bytes"] / 1024 for r in sub], color=PALETTE[2])
    axes[0, 1].set_yticks(y, [f"{r['accuracy']:.2f}%" for r in sub], fontsize=7)
    axes[0, 1].invert_yaxis()
    axes[0, 1].set(xlabel="file KiB (labels: test accuracy)", title=f"{arch} {model}")
    fig.tight_layout()
    best = min(sub, key=lambda r: r[latency_col(batch, threads)])
    return View(figure=fig, metrics={"fastest": best["variant"], "fastest ms": best[latency_col(batch, threads)],
                                     "its bytes": best["bytes"], "its accuracy %": best["accuracy"]})


def deployment_panel(rows, arch: str, model: str = "dense", batch: int = 256, threads: int = 1,
                     threads_options: Sequence[int] = (1,)) -> None:
    """Pick architecture, model, batch size and threads; see latency, size and accuracy per runtime."""
    rows = _rows(rows)
    controls = {"arch": choice(sorted({r["arch"] for r in rows})),
                "model": choice(sorted({r.get("model", "dense") for r in rows})),
                "batch": choice([1, 256]), "threads": choice(sorted(set(threads_options) | {threads}))}
    panel(lambda arch, model, batch, threads: render_deployment(rows, arch, model, batch, threads), controls,
          {"arch": arch, "model": model, "batch": batch, "threads": threads},
          title="Deployment: latency, size and accuracy per runtime")
