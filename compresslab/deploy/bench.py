"""Measuring deployed models side by side: the CPU's features, thread settings, fidelity and speed claims.

Fidelity of a deployed model f against the PyTorch model g on the same test images:
accuracy = mean(argmax f(x) == y); agreement = mean(argmax f(x) == argmax g(x));
max |logit difference| = max over images and classes of |f(x) - g(x)|.
A speed claim "A is r times faster than B" is made only when the timing is quiet: p90 / p10 < 1.5
for both (noise from other programs on a shared CPU widens the spread first).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from compresslab.core import latency
from compresslab.core.data import Split
from compresslab.core.latency import QUIET_SPREAD, Latency, time_ratio

__all__ = ["cpu_features", "thread_settings", "logits_of", "fidelity", "spread", "is_quiet",
           "speed_claim"]



def cpu_features(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> dict[str, object]:
    """The CPU's model name and the instruction-set flags INT8 and bf16 speed depend on."""
    model, flags = "unknown", set()
    path = Path(cpuinfo)
    if path.exists():
        for line in path.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model == "unknown":
                model = value.strip()
            if key.strip() == "flags" and not flags:
                flags = set(value.split())
    return {
        "model": model, "logical_cpus": os.cpu_count(),
        "avx2": "avx2" in flags, "avx512": "avx512f" in flags,
        "vnni": bool({"avx512_vnni", "avx_vnni"} & flags),
        "bf16": bool({"avx512_bf16", "amx_bf16"} & flags),
        "amx": bool({"amx_tile", "amx_int8"} & flags),
    }


def thread_settings(threads: int) -> dict[str, object]:
    """Set torch's intra-op threads (the one setter, core.latency.set_threads) and return the thread
    settings every runtime will run with: torch's count, the OpenMP variables, the runtimes' sessions."""
    return {"torch": latency.set_threads(threads), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"), "runtimes (per session)": threads}


def logits_of(fn: Callable[[torch.Tensor], torch.Tensor], split: Split, batch_size: int = 256,
              layout: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """fn's float logits over all of `split`, batch by batch, in order."""
    out = []
    with torch.inference_mode():
        for x, _ in split.batches(batch_size):
            out.append(torch.as_tensor(fn(layout(x) if layout else x)).float())
    return torch.cat(out)


def fidelity(logits: torch.Tensor, reference: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """accuracy (%), agreement with the reference's predictions (%), max |logit difference|."""
    pred, ref = logits.argmax(1), reference.argmax(1)
    return {"accuracy": 100 * float((pred == labels).float().mean()),
            "agreement": 100 * float((pred == ref).float().mean()),
            "max_abs_diff": float((logits - reference).abs().max())}


def spread(row: Latency) -> float:
    """p90 / p10 of one timing (1 = perfectly steady)."""
    return time_ratio(row.p90_ms, row.p10_ms)


def is_quiet(rows: Sequence[Latency], limit: float = QUIET_SPREAD) -> bool:
    """True if every timing's p90/p10 is below `limit`."""
    return all(spread(r) < limit for r in rows)


def speed_claim(rows: Sequence[Latency], fast: str, slow: str, batch_size: int,
                limit: float = QUIET_SPREAD) -> dict[str, object]:
    """slow median / fast median at `batch_size`, with whether the two timings were quiet enough to claim it."""
    pick = {r.label: r for r in rows if r.batch_size == batch_size}
    a, b = pick[fast], pick[slow]
    return {"fast": fast, "slow": slow, "batch": batch_size, "ratio": time_ratio(b.median_ms, a.median_ms),
            "spread_fast": spread(a), "spread_slow": spread(b), "reliable": is_quiet([a, b], limit)}

