"""Recording results: a run's metrics as JSON, read back and validated, many runs as one table."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from compresslab.core import results


def test_record_round_trip_and_load_runs(tmp_path):
    table = results.record("01_demo", {"accuracy": np.float32(0.5), "n": torch.tensor(3), "curve": [1, 2]},
                           parameters={"profile": "quick"}, directory=tmp_path / "a")
    assert set(table["metric"]) == {"accuracy", "n"}
    payload = results.read(tmp_path / "a" / "01_demo.results.json")
    assert payload["metrics"] == {"accuracy": 0.5, "n": 3, "curve": [1, 2]}
    results.record("01_demo", {"accuracy": 0.7}, parameters={"profile": "full"}, directory=tmp_path / "b")
    runs = results.load_runs(tmp_path)
    assert list(runs["accuracy"]) == [0.5, 0.7] and list(runs["param.profile"]) == ["quick", "full"]
    assert not list(tmp_path.rglob("*.tmp"))


def test_record_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="metrics"):
        results.record("x", {}, directory=tmp_path)
    with pytest.raises(ValueError, match=r"metrics\.model"):
        results.record("x", {"model": object()}, directory=tmp_path)
    with pytest.raises(ValueError, match="name"):
        results.record("", {"a": 1}, directory=tmp_path)
    (tmp_path / "bad.results.json").write_text(json.dumps({"metrics": {}}))
    with pytest.raises(ValueError, match="schema"):
        results.read(tmp_path / "bad.results.json")


def test_record_uses_results_dir_env(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPRESSLAB_RESULTS_DIR", str(tmp_path))
    results.record("env_demo", {"a": 1.0})
    assert (tmp_path / "env_demo.results.json").exists()
