"""SpeedTable's presentation of spread: p90/p10, the busy warning, the quiet rule, no ratio of a zero time."""

from __future__ import annotations

import math

import pytest

from compresslab.core.latency import Latency, SpeedTable, set_threads


def _table() -> SpeedTable:
    t = SpeedTable(baseline="dense")
    t.add([Latency("dense", 1, 1.0, 0.9, 1.1, 10, 1), Latency("zero", 1, 0.0, 0.0, 0.0, 10, 1),
           Latency("busy", 1, 2.0, 1.0, 3.0, 10, 1)])
    return t


def test_spread_and_the_quiet_rule():
    t = _table()
    assert t.spread("dense", 1) == pytest.approx(1.1 / 0.9)
    assert t.spread("busy", 1) == pytest.approx(3.0)
    assert t.reliable(["dense"]) and not t.reliable(["dense", "busy"]) and not t.reliable()
    assert not t.reliable(["missing"])  # nothing compared: nothing to trust


def test_busy_warning_in_table_and_caption():
    t = _table()
    df = t.table()
    assert list(df["busy (p90/p10 > 2)"]) == [False, False, True]
    assert "the machine was busy: treat these ratios as unreliable" in t.warning()
    assert "thread" in t.caption() and "WARNING" in t.caption()
    assert "unreliable" in t._repr_html_()
    quiet = SpeedTable(baseline="dense", rows=t.rows[:1])
    assert quiet.warning() == "" and "WARNING" not in quiet.caption()


def test_no_ratio_of_a_zero_time():
    t = _table()
    assert math.isnan(t.speedup("zero", 1))
    assert math.isnan(t.table()["speed-up vs dense"][1])
    assert "n/a" in t._repr_html_()


def test_set_threads_sets_and_reports():
    before = set_threads()
    try:
        assert set_threads(1) == 1
    finally:
        set_threads(before)
    with pytest.raises(ValueError, match="threads"):
        set_threads(0)


def test_p10_and_p90_stay_within_the_measured_times(monkeypatch):
    """Three calls of 1, 1 and 10 ms: the percentiles lie in [1, 10] (statistics' default 'exclusive'
    method puts p90 at 15.4 ms, above every call), p10 = 1 and p90 = 1 + 0.8 * 9 by interpolation."""
    from compresslab.core import latency as lat

    clock = {"now": 0.0}
    durations = iter([0.001, 0.001, 0.010])  # seconds each timed call takes

    def call(x):
        clock["now"] += next(durations)

    monkeypatch.setattr(lat.time, "perf_counter", lambda: clock["now"])
    row = lat.latency(call, batch_sizes=(1,), input_shape=(1,), repeats=3, warmup=0, min_seconds=0.0)[0]
    assert 1.0 - 1e-9 <= row.p10_ms <= row.median_ms <= row.p90_ms <= 10.0 + 1e-9
    assert row.p10_ms == pytest.approx(1.0) and row.p90_ms == pytest.approx(1.0 + 0.8 * 9.0)
