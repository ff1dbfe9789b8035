"""Every ipywidgets panel of the workbook, built one way: `panel(render, controls, values)`.

`render(**values)` is a plain function (tests call it directly) that returns a `View`: a figure
and a dict of metrics. The panel renders it at once with the parameter-cell `values`, so the
notebook shows its figure without any click, and a papermill sweep over those parameters gets
the same figure.

Headless runs create no widgets at all. Executing a cell that opens widget comms under
nbclient/papermill can wait forever for the cell's reply on a loaded machine (a known nbclient
issue with widget comm traffic during execution). A headless run needs no controls, so the panel
displays only `render(**values)`: no comm is opened and nothing can hang. Headless means
$COMPRESSLAB_HEADLESS is set (the runner and the tests set it), or the kernel was started by
papermill/nbclient, or there is no IPython kernel at all.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.figure import Figure


@dataclass
class View:
    """What a panel shows: an optional figure and a dict of headline numbers."""

    figure: Figure | None = None
    metrics: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Control:
    """One knob: kind is 'float', 'int', 'choice' or 'toggle'."""

    kind: str
    low: float | None = None
    high: float | None = None
    step: float | None = None
    options: tuple = ()
    label: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("float", "int", "choice", "toggle"):
            raise ValueError(f"kind={self.kind!r} must be one of 'float', 'int', 'choice', 'toggle'")
        if self.kind in ("float", "int") and not (self.low is not None and self.high is not None and self.low < self.high):
            raise ValueError(f"a {self.kind} control needs low < high, got low={self.low}, high={self.high}")
        if self.kind == "choice" and not self.options:
            raise ValueError("a choice control needs options")

    def check(self, name: str, value: object) -> None:
        """Raise ValueError if `value` is outside what this control allows."""
        if self.kind in ("float", "int"):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not self.low <= value <= self.high:
                raise ValueError(f"{name}={value!r} must be a number in [{self.low}, {self.high}]")
        elif self.kind == "choice" and value not in self.options:
            raise ValueError(f"{name}={value!r} must be one of {list(self.options)}")
        elif self.kind == "toggle" and not isinstance(value, bool):
            raise ValueError(f"{name}={value!r} must be True or False")

    def build(self, name: str, value: object):
        import ipywidgets as w

        desc = self.label or name
        style = {"description_width": "initial"}
        if self.kind == "float":
            return w.FloatSlider(value=value, min=self.low, max=self.high, step=self.step or 0.01,
                                 description=desc, continuous_update=False, style=style)
        if self.kind == "int":
            return w.IntSlider(value=value, min=int(self.low), max=int(self.high), step=int(self.step or 1),
                               description=desc, continuous_update=False, style=style)
        if self.kind == "choice":
            return w.Dropdown(options=list(self.options), value=value, description=desc, style=style)
        return w.Checkbox(value=value, description=desc, style=style)


def slider(low: float, high: float, step: float = 0.01, label: str | None = None) -> Control:
    return Control("float", low, high, step, label=label)


def int_slider(low: int, high: int, step: int = 1, label: str | None = None) -> Control:
    return Control("int", low, high, step, label=label)


def choice(options: Sequence, label: str | None = None) -> Control:
    return Control("choice", options=tuple(options), label=label)


def toggle(label: str | None = None) -> Control:
    return Control("toggle", label=label)


def _parent_is_notebook_runner() -> bool:
    """True when the kernel's parent process is papermill / nbclient / nbconvert (Linux /proc)."""
    try:
        cmdline = Path(f"/proc/{os.getppid()}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="ignore")
    except OSError:
        return False
    return any(tool in cmdline for tool in ("papermill", "nbclient", "nbconvert", "pytest"))


def headless() -> bool:
    """Whether to skip interactive controls (see the module docstring)."""
    flag = os.environ.get("COMPRESSLAB_HEADLESS")
    if flag is not None:
        return flag.strip().lower() not in ("", "0", "false", "no")
    try:
        from IPython import get_ipython
    except ImportError:
        return True
    shell = get_ipython()
    if shell is None or not hasattr(shell, "kernel"):
        return True
    return _parent_is_notebook_runner()


def show(view: View | Figure | Mapping) -> None:
    """Display a View (figure, then a metrics table) in the notebook."""
    from IPython.display import display

    if isinstance(view, Figure):
        view = View(figure=view)
    elif isinstance(view, Mapping):
        view = View(metrics=dict(view))
    if view.figure is not None:
        display(view.figure)
    if view.metrics:
        from .results import summary_table

        display(summary_table(view.metrics).style.hide(axis="index").format(precision=4))


def panel(
    render: Callable[..., View],
    controls: Mapping[str, Control],
    values: Mapping[str, object],
    title: str | None = None,
):
    """Show render(**values) now; add controls that re-render on change unless headless.

    `values` are the parameter-cell values, one per control. Returns the widget box, or None headless.
    """
    missing = set(controls) - set(values)
    extra = set(values) - set(controls)
    if missing or extra:
        raise ValueError(f"values must name exactly the controls {sorted(controls)}; "
                         f"missing {sorted(missing)}, unexpected {sorted(extra)}")
    for name, control in controls.items():
        control.check(name, values[name])
    if headless():
        if title:
            from IPython.display import Markdown, display

            display(Markdown(f"**{title}** (static view at the parameter values; controls appear in Jupyter)"))
        show(render(**values))
        return None

    import ipywidgets as w
    from IPython.display import display

    inputs = {name: control.build(name, values[name]) for name, control in controls.items()}
    output = w.Output()

    def refresh(_change=None) -> None:
        current = {name: widget.value for name, widget in inputs.items()}
        with output:
            output.clear_output(wait=True)
            try:
                show(render(**current))
            except ValueError as err:  # a knob combination the technique rejects: say so, keep going
                print(f"Not possible: {err}")

    for widget in inputs.values():
        widget.observe(refresh, names="value")
    header = [w.HTML(f"<b>{title}</b>")] if title else []
    box = w.VBox([*header, w.HBox(list(inputs.values()), layout=w.Layout(flex_flow="row wrap")), output])
    display(box)
    refresh()
    return box


# ---- pruning ----

def render_pruning(model, split, sparsity: float, scope: str, structured: bool) -> View:
    """Prune a copy of `model` (no fine-tuning) and show histograms, density and test accuracy on `split`."""
    from . import metrics, plots, pruning
    from .models import prunable_layers
    from .training import evaluate

    if structured:
        pruned = pruning.structured_prune(model, sparsity, input_shape=(1, *split.images.shape[1:]))
        dense_weights = {n: m.weight.detach() for n, m in prunable_layers(model).items()}
        pruned_weights = {n: m.weight.detach() for n, m in prunable_layers(pruned).items()}
        kept = {n: pruned_weights[n].numel() / dense_weights[n].numel() for n in dense_weights}
    else:
        pruned = pruning.prune_magnitude(pruning.copy_model(model), sparsity, scope)
        dense_weights = {n: metrics.effective_weight(m) for n, m in prunable_layers(model).items()}
        pruned_weights = {n: metrics.effective_weight(m) for n, m in prunable_layers(pruned).items()}
        kept = {n: float((w != 0).float().mean()) for n, w in pruned_weights.items()}
    size = metrics.size_report(pruned)
    reference = metrics.size_report(model).dense_bytes
    figure = plots.pruning_view(dense_weights, pruned_weights, kept)
    return View(figure, {
        "test accuracy %": round(100 * evaluate(pruned, split).accuracy, 2),
        "non-zero parameters": size.nonzeros,
        "dense FP32 KiB": round(size.dense_bytes / 1024, 1),
        "CSR KiB (32-bit value + 32-bit index)": round((8 * size.nonzeros) / 1024, 1) if not structured else None,
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


# ---- quantization ----

def render_quantization(model, split, calibration, layer: str, weight_bits: int, act_bits: int,
                        granularity: str, observer: str) -> View:
    """PTQ of a copy of `model` (calibrated on `calibration` inputs): the chosen layer's weight histogram
    with its grid and level counts, its SQNR, and the test accuracy on `split`."""
    import torch

    from . import plots
    from . import quantization as Q
    from .training import evaluate

    config = Q.QuantConfig(weight_bits=weight_bits, act_bits=act_bits, weight_granularity=granularity,
                           weight_observer=observer, act_observer=observer, calibration_size=len(calibration))
    quantized, report = Q.apply_ptq(model, config, calibration)
    layers = Q.quant_layers(quantized)
    if layer not in layers:
        raise ValueError(f"layer={layer!r} must be one of {list(layers)}")
    fq = layers[layer].weight_fake_quant
    scale, zero_point = fq.qparams()
    w = layers[layer].weight.detach()
    codes = Q.quantize_affine(w, scale, zero_point, fq.qmin, fq.qmax, fq.axis)
    channel = int(torch.argmax(scale)) if scale.dim() else 0
    s = scale[channel] if scale.dim() else scale
    z = zero_point[channel] if zero_point.dim() else zero_point
    grid = ((torch.arange(fq.qmin, fq.qmax + 1) - z) * s).tolist()
    note = f" (grid of channel {channel}, the widest)" if scale.dim() else ""
    figure = plots.quant_histogram(w, codes, grid, fq.qmin, fq.qmax,
                                   title=f"{layer}: {weight_bits}-bit {granularity}, {observer}{note}")
    row = next(r for r in report.layers if r["layer"] == layer)
    return View(figure, {
        "test accuracy %": round(100 * evaluate(quantized, split).accuracy, 2),
        f"{layer} weight SQNR dB": row["weight SQNR dB"],
        f"{layer} output SQNR dB": row["output SQNR dB"],
        f"{layer} weights that became 0 %": row["zero weights %"],
        "model KiB (weights + scales, float biases)": round(report.size["encoded_bytes"] / 1024, 1),
        "compression vs FP32": round(report.compression, 2),
    })


def quantization_panel(model, split, calibration, layer: str, weight_bits: int, act_bits: int,
                       granularity: str, observer: str):
    """Bits (weights, activations), granularity and observer over `render_quantization`."""
    from . import quantization as Q
    from .models import prunable_layers

    return panel(
        lambda layer, weight_bits, act_bits, granularity, observer: render_quantization(
            model, split, calibration, layer, weight_bits, act_bits, granularity, observer),
        {"layer": choice(list(prunable_layers(model))), "weight_bits": int_slider(2, 8, label="weight bits"),
         "act_bits": int_slider(2, 8, label="activation bits"), "granularity": choice(Q.GRANULARITIES),
         "observer": choice(Q.OBSERVERS)},
        {"layer": layer, "weight_bits": weight_bits, "act_bits": act_bits, "granularity": granularity,
         "observer": observer},
        title="Quantize the trained model (post-training, no fine-tuning)",
    )


# ---- low-rank ----

def render_lowrank(model, split, svds, **ranks: int) -> View:
    """Truncate each named layer of a copy of `model` to its rank (no fine-tuning): the kept and
    discarded singular values, and per layer the relative error ||W - W_r||_F / ||W||_F, energy kept
    and parameters; test accuracy on `split`. `svds`: lowrank.decompose(model), reused every call."""
    from . import lowrank, plots
    from .training import evaluate

    config = lowrank.LowRankConfig(rank=dict(ranks), layers=tuple(ranks), skip_unprofitable=False)
    truncated, report = lowrank.apply_lowrank(model, config, svds=svds)
    figure = plots.truncation_view({n: svds[n].s for n in ranks}, ranks)
    shown = {"test accuracy %": round(100 * evaluate(truncated, split).accuracy, 2)}
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
    from . import lowrank

    svds = svds if svds is not None else lowrank.decompose(model, layers=tuple(ranks))
    return panel(
        lambda **values: render_lowrank(model, split, svds, **values),
        {name: int_slider(1, len(svds[name].s), label=f"rank {name}") for name in ranks},
        dict(ranks),
        title="Truncate the trained model's layers (no fine-tuning)",
    )


# ---- distillation ----

def render_distillation(teacher, student, split, temperature: float, image_index: int, alpha: float) -> View:
    """Teacher's and student's softmax(z / T) for one image of `split`, and the KD loss terms for it."""
    import torch

    from . import distillation, plots

    x, y = split.tensors(limit=image_index + 1)
    x, y = x[image_index:image_index + 1], y[image_index:image_index + 1]
    teacher.eval()
    student.eval()
    with torch.no_grad():
        zt = teacher(x.to(next(teacher.parameters()).device)).cpu().double()
        zs = student(x.to(next(student.parameters()).device)).cpu().double()
    pt, ps = distillation.soft_targets(zt, temperature)[0], distillation.soft_targets(zs, temperature)[0]
    terms = distillation.kd_terms(zs, zt, y, temperature, alpha)
    figure = plots.kd_view(split.images[image_index], pt.tolist(), ps.tolist(), int(y[0]), temperature,
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
