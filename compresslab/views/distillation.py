"""Figures, render functions and widget panels of the distillation notebook."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from compresslab.views.figures import (
    PALETTE,
    new_figure,
)
from compresslab.views.panel import View, int_slider, panel, slider

__all__ = [
    "soft_target_grid",
    "entropy_vs_temperature",
    "t_squared_gradients",
    "distillation_sweep",
    "kd_view",
    "render_distillation",
    "distillation_panel",
]


# ---- figures ----

def soft_target_grid(
    images: torch.Tensor, labels: Sequence[int], probs: Mapping[float, torch.Tensor], classes: Sequence[str],
) -> Figure:
    """One row per image: the image, then the teacher's softmax(z / T) as bars for each T in `probs`
    (probs[T] has shape (n_images, n_classes)); a log scale shows the small 'dark knowledge' probabilities."""
    temps = list(probs)
    n = len(images)
    fig, axes = new_figure(ncols=len(temps) + 1, nrows=n, width=2.6, height=1.9)
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
    fig, axes = new_figure(width=5.5, height=3.6)
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
    fig, axes = new_figure(width=5.5, height=3.6)
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
    fig, axes = new_figure(width=6.0, height=4.0)
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
    fig, axes = new_figure(ncols=2, width=4.2, height=3.2, gridspec_kw={"width_ratios": [1, 2.4]})
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

# ---- panels ----

def render_distillation(teacher, student, split, temperature: float, image_index: int, alpha: float) -> View:
    """Teacher's and student's softmax(z / T) for one image of `split`, and the KD loss terms for it."""
    import torch

    from compresslab.techniques import distillation

    x, y = split.tensors(limit=image_index + 1)
    x, y = x[image_index:image_index + 1], y[image_index:image_index + 1]
    teacher.eval()
    student.eval()
    with torch.no_grad():
        zt = teacher(x.to(next(teacher.parameters()).device)).cpu().double()
        zs = student(x.to(next(student.parameters()).device)).cpu().double()
    pt, ps = distillation.soft_targets(zt, temperature)[0], distillation.soft_targets(zs, temperature)[0]
    terms = distillation.kd_terms(zs, zt, y, temperature, alpha)
    figure = kd_view(split.images[image_index], pt.tolist(), ps.tolist(), int(y[0]), temperature,
                           [str(c) for c in range(len(pt))])
    return View(figure, {
        "label": int(y[0]),
        "teacher p(label) at T": round(float(pt[int(y[0])]), 4),
        "student p(label) at T": round(float(ps[int(y[0])]), 4),
        "teacher entropy (bits)": round(float(distillation.entropy(pt)), 3),
        "student entropy (bits)": round(float(distillation.entropy(ps)), 3),
        "soft term T^2 KL": round(float(temperature**2 * terms["soft"]), 5),
        "hard term CE": round(float(terms["hard"]), 5),
        "KD loss": round(float(terms["total"]), 5),
    })


def distillation_panel(teacher, student, split, temperature: float, image_index: int, alpha: float):
    """Temperature, image and alpha controls over `render_distillation`."""
    return panel(
        lambda temperature, image_index, alpha: render_distillation(teacher, student, split, temperature,
                                                                    image_index, alpha),
        {"temperature": slider(0.5, 30.0, 0.5, label="temperature T"),
         "image_index": int_slider(0, min(len(split), 500) - 1, label="test image"),
         "alpha": slider(0.0, 1.0, 0.05, label="alpha")},
        {"temperature": temperature, "image_index": image_index, "alpha": alpha},
        title="Soft targets of teacher and student, and the KD loss for one image",
    )
