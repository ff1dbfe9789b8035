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

from compresslab.core.validate import check_choice

__all__ = [
    "View",
    "Control",
    "slider",
    "int_slider",
    "choice",
    "toggle",
    "headless",
    "show",
    "format_value",
    "panel",
    "build_panel",
]


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
        check_choice("Control", "kind", self.kind, ("float", "int", "choice", "toggle"))
        if self.kind in ("float", "int") and not (self.low is not None and self.high is not None and self.low < self.high):
            raise ValueError(f"a {self.kind} control needs low < high, got low={self.low}, high={self.high}")
        if self.kind == "choice" and not self.options:
            raise ValueError("a choice control needs options")

    def check(self, name: str, value: object) -> None:
        """Raise ValueError if `value` is outside what this control allows."""
        if self.kind in ("float", "int"):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not self.low <= value <= self.high:
                raise ValueError(f"{name}={value!r} must be a number in [{self.low}, {self.high}]")
        elif self.kind == "choice":
            check_choice("", name, value, tuple(self.options))
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
        from compresslab.core.results import summary_table

        display(summary_table(view.metrics).style.hide(axis="index").format(format_value, subset=["value"]))


def format_value(value: object) -> str:
    """A metric as a reader writes it: whole numbers without decimals (21706), other floats with
    4 significant digits (0.1235, 97.53, 1.234e-05), NaN as 'n/a'.

    >>> [format_value(v) for v in (21706.0, 3, 0.123456, 97.5312, float("nan"), True, "x")]
    ['21706', '3', '0.1235', '97.53', 'n/a', 'True', 'x']
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if value != value:
        return "n/a"
    if isinstance(value, int) or (float(value).is_integer() and abs(value) < 1e15):
        return str(int(value))
    return f"{value:.4g}"


def _check_values(controls: Mapping[str, Control], values: Mapping[str, object]) -> None:
    missing = set(controls) - set(values)
    extra = set(values) - set(controls)
    if missing or extra:
        raise ValueError(f"values must name exactly the controls {sorted(controls)}; "
                         f"missing {sorted(missing)}, unexpected {sorted(extra)}")
    for name, control in controls.items():
        control.check(name, values[name])


def build_panel(
    render: Callable[..., View],
    controls: Mapping[str, Control],
    values: Mapping[str, object],
    title: str | None = None,
):
    """The widget box (title, controls, output) wired to re-render on every change, rendered once at
    `values`; not displayed. Each box carries the CSS classes `compresslab-panel` and a unique
    `compresslab-panel-<id>`, so a browser test can tell one panel shown twice from two panels."""
    _check_values(controls, values)
    import uuid

    import ipywidgets as w

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
    box.add_class("compresslab-panel")
    box.add_class(f"compresslab-panel-{uuid.uuid4().hex[:12]}")
    refresh()
    return box


def panel(
    render: Callable[..., View],
    controls: Mapping[str, Control],
    values: Mapping[str, object],
    title: str | None = None,
) -> None:
    """Show render(**values) now; with controls that re-render on change unless headless.

    `values` are the parameter-cell values, one per control. Displays the panel once and returns
    None, so a panel call as a cell's last line does not display the panel a second time."""
    _check_values(controls, values)
    if headless():
        if title:
            from IPython.display import Markdown, display

            display(Markdown(f"**{title}** (static view at the parameter values; controls appear in Jupyter)"))
        show(render(**values))
        return None
    from IPython.display import display

    display(build_panel(render, controls, values, title))
    return None
