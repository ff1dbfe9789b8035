"""The capstone's targets, written once, and the points that meet them.

Among the points whose accuracy is within `within_points` of the dense model, notebook 08 names the
smallest file and the fastest at one batch size, and checks them against its two targets:

    near     = {p : accuracy(p) >= dense_accuracy - within_points}
    smallest = argmin_{p in near} bytes(p)                          (ties: the first name)
    fastest  = argmax_{p in near} reference_ms / ms_b<batch>(p)     (ties: the first name)
    met      = {compression(smallest) >= compression_x, speed-up(fastest) >= speedup}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from compresslab.core.validate import check_float, check_int

__all__ = ["CapstoneTargets", "CAPSTONE_TARGETS", "NearDense", "near_dense"]


@dataclass(frozen=True)
class CapstoneTargets:
    """within_points: how far below the dense accuracy a point may be (points); compression_x: the
    size target (FP32 file bytes / the point's bytes); speedup: the speed target against PyTorch
    eager FP32 at `batch`."""

    within_points: float = 0.5
    compression_x: float = 40.0
    speedup: float = 3.0
    batch: int = 256

    def __post_init__(self) -> None:
        owner = type(self).__name__
        check_float(owner, "within_points", self.within_points, 0, 100)
        check_float(owner, "compression_x", self.compression_x, 1, 1e6)
        check_float(owner, "speedup", self.speedup, 1, 1e6)
        check_int(owner, "batch", self.batch, 1, 1 << 20)

    @property
    def size_label(self) -> str:
        return f"{self.compression_x:g}x smaller within {self.within_points:g} points"

    @property
    def speed_label(self) -> str:
        return f"{self.speedup:g}x faster at batch {self.batch} within {self.within_points:g} points"


CAPSTONE_TARGETS = CapstoneTargets()


@dataclass(frozen=True)
class NearDense:
    """The smallest and the fastest point near the dense accuracy (each a copy of its row with
    "speedup" added), and whether each target is met ({label: bool})."""

    smallest: dict
    fastest: dict
    met: dict[str, bool]


def near_dense(points: Sequence[Mapping], dense_accuracy: float, reference_ms: float,
               targets: CapstoneTargets = CAPSTONE_TARGETS) -> NearDense:
    """The picks of the module docstring. points: rows with "name", "accuracy" (percent),
    "bytes", "compression" and f"ms_b{batch}"; reference_ms: PyTorch eager FP32's time at that batch.

    >>> pts = [{"name": "a", "accuracy": 98.0, "bytes": 900, "compression": 10.0, "ms_b256": 2.0},
    ...        {"name": "b", "accuracy": 97.9, "bytes": 200, "compression": 45.0, "ms_b256": 5.0},
    ...        {"name": "c", "accuracy": 90.0, "bytes": 100, "compression": 90.0, "ms_b256": 1.0}]
    >>> picks = near_dense(pts, 98.2, reference_ms=6.0)
    >>> picks.smallest["name"], picks.fastest["name"], picks.fastest["speedup"], picks.met
    ('b', 'a', 3.0, {'40x smaller within 0.5 points': True, '3x faster at batch 256 within 0.5 points': True})
    """
    check_float("near_dense", "dense_accuracy", dense_accuracy, 0, 100)
    check_float("near_dense", "reference_ms", reference_ms, 0, None, lo_open=True)
    key = f"ms_b{targets.batch}"
    near = [{**p, "speedup": reference_ms / p[key]} for p in points
            if p["accuracy"] >= dense_accuracy - targets.within_points]
    if not near:
        raise ValueError(f"no point is within {targets.within_points:g} points of the dense "
                         f"{dense_accuracy:.2f}% (not even the FP32 one?)")
    smallest = min(near, key=lambda p: (p["bytes"], p["name"]))
    fastest = min(near, key=lambda p: (-p["speedup"], p["name"]))
    return NearDense(smallest, fastest, {targets.size_label: bool(smallest["compression"] >= targets.compression_x),
                                         targets.speed_label: bool(fastest["speedup"] >= targets.speedup)})
