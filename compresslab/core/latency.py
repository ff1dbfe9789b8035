"""The one latency harness: wall-clock time per call, its spread, and speed-ups between variants.

Rules: warm up first, then time `repeats` calls (and at least `min_seconds`); report the median with
p10 and p90 (the spread), and the intra-op thread count the calls ran with (set it with `threads`);
variants are timed in interleaved rounds so that a slow spell of a shared CPU hits all of them; a
ratio involving a zero time is NaN, never a division by zero. Inputs get the layout the model
computes with (`models.to_model_layout`), and a timed module's weights get the same layout (`in_layout`).
"""

from __future__ import annotations

import copy
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from compresslab.core.models import is_convnet, to_model_layout

__all__ = ["Latency", "latency", "SpeedTable", "time_ratio", "latency_rounds", "QUIET_SPREAD", "BUSY_SPREAD",
           "set_threads", "in_layout"]

QUIET_SPREAD = 1.5  # p90/p10 below this on every compared variant: a speed claim may be asserted
BUSY_SPREAD = 2.0  # p90/p10 above this: the machine was busy, ratios are unreliable


def set_threads(threads: int | None = None) -> int:
    """Set torch's intra-op thread count (None: leave it) and return the count now in force."""
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads={threads!r} must be a positive integer")
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def in_layout(module: nn.Module, channels_last: bool) -> nn.Module:
    """`module` itself if every 4-D parameter and buffer is stored channels_last (when asked) or
    NCHW-contiguous (when not), else a copy moved to that memory format; `module` is never changed.

    >>> from compresslab.core.models import lenet5
    >>> m = lenet5()
    >>> in_layout(m, True).conv1.weight.is_contiguous(memory_format=torch.channels_last), in_layout(m, False) is m
    (True, True)
    """
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    tensors = [t for t in (*module.parameters(), *module.buffers()) if t.dim() == 4]
    if all(t.is_contiguous(memory_format=fmt) for t in tensors):
        return module
    return copy.deepcopy(module).to(memory_format=fmt)


def _table(rows: list[dict]):
    import pandas as pd

    return pd.DataFrame(rows)


@dataclass
class Latency:
    """Median (and spread) of wall-clock time per call, in milliseconds."""

    label: str
    batch_size: int
    median_ms: float
    p10_ms: float
    p90_ms: float
    repeats: int
    threads: int

    def to_dict(self) -> dict:
        return asdict(self)


def latency(
    fn: Callable[[torch.Tensor], object] | nn.Module,
    batch_sizes: Sequence[int] = (1, 256),
    input_shape: Sequence[int] = (1, 28, 28),
    repeats: int = 50,
    warmup: int = 5,
    label: str = "",
    threads: int | None = None,
    channels_last: bool | None = None,
    min_seconds: float = 0.0,
) -> list[Latency]:
    """Time `fn(x)` for x of shape (batch, *input_shape): warm-up, then `repeats` calls; median.

    Runs under torch.inference_mode with `threads` intra-op threads (default: current setting).
    Keeps repeating until `min_seconds` have passed, so tiny kernels get enough samples.
    A module is timed with its 4-D weights in the batches' layout (`in_layout`): oneDNN's
    convolution speed follows the weights' layout (LeNet-5 at batch 256 ran 2 to 2.3x slower with
    NCHW weights than with channels_last ones, whatever the input's layout).
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats={repeats} must be >= 1 and warmup={warmup} >= 0")
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    if isinstance(fn, nn.Module):
        fn.eval()
        if channels_last is None:
            channels_last = is_convnet(fn)
        fn = in_layout(fn, bool(channels_last))
    results = []
    try:
        with torch.inference_mode():
            for batch in batch_sizes:
                x = torch.randn(batch, *input_shape, generator=torch.Generator().manual_seed(0))
                x = to_model_layout(x, bool(channels_last))
                for _ in range(warmup):
                    fn(x)
                times = []
                begin = time.perf_counter()
                while len(times) < repeats or time.perf_counter() - begin < min_seconds:
                    t0 = time.perf_counter()
                    fn(x)
                    times.append(time.perf_counter() - t0)
                times_ms = sorted(1000 * t for t in times)
                # 'inclusive': p10 and p90 stay within the measured times (the default 'exclusive' method extrapolates
                # beyond them for few calls, down to a negative p10)
                q = (statistics.quantiles(times_ms, n=10, method="inclusive") if len(times_ms) > 1
                     else [times_ms[0]] * 9)
                results.append(Latency(label, batch, statistics.median(times_ms), q[0], q[-1],
                                       len(times_ms), torch.get_num_threads()))
    finally:
        torch.set_num_threads(old_threads)
    return results


@dataclass
class SpeedTable:
    """Latencies of several variants, side by side, with ratios to a baseline label."""

    rows: list[Latency] = field(default_factory=list)
    baseline: str = ""

    def add(self, rows: list[Latency]) -> None:
        self.rows.extend(rows)

    def speedup(self, label: str, batch_size: int) -> float:
        """baseline median / `label` median at `batch_size` (> 1 means faster than baseline); NaN
        when either median is zero (below the timer's resolution: no ratio to report)."""
        base = self._get(self.baseline or self.rows[0].label, batch_size)
        return time_ratio(base.median_ms, self._get(label, batch_size).median_ms)

    def _get(self, label: str, batch_size: int) -> Latency:
        for row in self.rows:
            if row.label == label and row.batch_size == batch_size:
                return row
        raise KeyError(f"no timing for label={label!r} at batch_size={batch_size}")

    def spread(self, label: str, batch_size: int) -> float:
        """p90 / p10 of one variant's timings (1 = perfectly steady; NaN if p10 is zero)."""
        row = self._get(label, batch_size)
        return time_ratio(row.p90_ms, row.p10_ms)

    def reliable(self, labels: Sequence[str] | None = None, batch_sizes: Sequence[int] | None = None,
                 limit: float = QUIET_SPREAD) -> bool:
        """True when every compared timing is quiet: p90 / p10 < `limit` (default 1.5) for each
        (label, batch) in the table (or in `labels` x `batch_sizes`). A notebook asserts a speed
        claim only when this holds; otherwise it records the ratio as unreliable."""
        rows = [r for r in self.rows if (labels is None or r.label in labels)
                and (batch_sizes is None or r.batch_size in batch_sizes)]
        return bool(rows) and all(time_ratio(r.p90_ms, r.p10_ms) < limit for r in rows)

    def warning(self) -> str:
        """The busy-machine warning when any timing has p90 / p10 > 2, else ''."""
        worst = max((time_ratio(r.p90_ms, r.p10_ms) for r in self.rows), default=math.nan, key=_nan_low)
        if not worst > BUSY_SPREAD:
            return ""
        return (f"p90/p10 reaches {worst:.1f} (> {BUSY_SPREAD:g}): the machine was busy: treat these ratios as "
                "unreliable")

    def caption(self) -> str:
        """One line for under the table: threads, the steadiness rule, and the warning if any."""
        threads = sorted({r.threads for r in self.rows})
        text = (f"timed with {', '.join(map(str, threads))} intra-op thread(s) (torch.get_num_threads); "
                f"whiskers and p10/p90: the spread; a ratio is trusted when p90/p10 < {QUIET_SPREAD:g}")
        return text + (f". WARNING: {self.warning()}" if self.warning() else "")

    def table(self):
        """One row per (variant, batch): median, p10, p90, their ratio, the speed-up (NaN, shown as
        missing, when a time is zero), threads, and a 'busy' flag where p90/p10 > 2."""
        base = self.baseline or (self.rows[0].label if self.rows else "")
        out = []
        for r in self.rows:
            spread = time_ratio(r.p90_ms, r.p10_ms)
            out.append({"variant": r.label, "batch": r.batch_size, "median ms": round(r.median_ms, 4),
                        "p10 ms": round(r.p10_ms, 4), "p90 ms": round(r.p90_ms, 4),
                        "p90/p10": round(spread, 2), f"busy (p90/p10 > {BUSY_SPREAD:g})": bool(spread > BUSY_SPREAD),
                        f"speed-up vs {base}": round(self.speedup(r.label, r.batch_size), 2),
                        "threads": r.threads})
        return _table(out)

    def _repr_html_(self) -> str:
        warning = self.warning()
        note = f"<p><b>{warning}</b></p>" if warning else ""
        return self.table().to_html(index=False, na_rep="n/a") + f"<p><small>{self.caption()}</small></p>" + note


def _nan_low(x: float) -> float:
    return -math.inf if x != x else x


def time_ratio(numerator_ms: float, denominator_ms: float) -> float:
    """numerator / denominator of two timings, or NaN if either is not a positive time.

    >>> time_ratio(4.0, 2.0)
    2.0
    >>> time_ratio(4.0, 0.0)
    nan
    """
    if not numerator_ms > 0 or not denominator_ms > 0:
        return math.nan
    return numerator_ms / denominator_ms


def latency_rounds(
    variants: dict[str, Callable[[torch.Tensor], object] | nn.Module],
    rounds: int = 5,
    channels_last: bool | Mapping[str, bool] | None = None,
    **kwargs,
) -> list[Latency]:
    """Time several variants in interleaved rounds: each round runs `latency(...)` once per variant
    (in a rotated order), so a slow spell of a shared or throttled CPU hits every variant alike.

    Per (label, batch): median_ms / p10_ms / p90_ms are the medians over rounds of each round's
    median / p10 / p90; repeats counts all timed calls; threads is the intra-op thread count the
    calls ran with. channels_last: one layout for all, or per label (a compiled function fixed to a
    layout); None lets `latency` decide per variant. `kwargs` go to `latency` (not `label`).
    """
    if rounds < 1:
        raise ValueError(f"rounds={rounds} must be >= 1")
    if not variants:
        raise ValueError("variants is empty: give {label: model or function}")
    labels = list(variants)
    per: dict[tuple[str, int], list[Latency]] = {}
    for r in range(rounds):
        for label in labels[r % len(labels):] + labels[:r % len(labels)]:
            layout = channels_last.get(label) if isinstance(channels_last, Mapping) else channels_last
            for row in latency(variants[label], label=label, channels_last=layout, **kwargs):
                per.setdefault((label, row.batch_size), []).append(row)
    out = []
    for label in labels:
        for (lab, batch), rows in per.items():
            if lab == label:
                out.append(Latency(label, batch, statistics.median(x.median_ms for x in rows),
                                   statistics.median(x.p10_ms for x in rows),
                                   statistics.median(x.p90_ms for x in rows),
                                   sum(x.repeats for x in rows), rows[-1].threads))
    return out
