"""Every recorded accuracy is in percent (results schema 2); records written before (schema 1) kept
some as fractions and are read back in percent, with one warning."""

from __future__ import annotations

import json
import warnings

import pytest

from compresslab.combine import points as points_combine
from compresslab.core import results


def _v1(path, notebook, metrics):
    payload = {"schema": "compresslab.results/1", "notebook": notebook, "recorded_at": "2026-11-01T00:00:00+00:00",
               "parameters": {"profile": "quick"}, "metrics": metrics}
    path.mkdir(parents=True, exist_ok=True)
    (path / f"{notebook}{results.SUFFIX}").write_text(json.dumps(payload))
    return path / f"{notebook}{results.SUFFIX}"


@pytest.fixture(autouse=True)
def fresh_warning(monkeypatch):
    monkeypatch.setattr(results, "_WARNED", [])


def test_a_v1_record_reads_in_percent(tmp_path):
    """Hand-made schema-1 records (the fractions notebooks 01, 02, 03, 05 and 06 wrote) come back
    times 100, nested lists and dicts included; points and other metrics are untouched."""
    path = _v1(tmp_path / "a", "06_deep_compression",
               {"dense_accuracy": 0.9851, "loaded_accuracy": 0.9843, "compression_x": 42.5, "error_increase_points": 0.08})
    with pytest.warns(UserWarning, match="compresslab.results/1.*read as percent"):
        m = results.read(path)["metrics"]
    assert m == {"dense_accuracy": pytest.approx(98.51), "loaded_accuracy": pytest.approx(98.43),
                 "compression_x": 42.5, "error_increase_points": 0.08}
    lottery = _v1(tmp_path / "b", "02_lottery_ticket_rewinding",
                  {"ticket_accuracy_by_level": [0.98, 0.975], "sparsest_ticket_accuracy": 0.97, "train_steps": 100})
    svd = _v1(tmp_path / "c", "05_svd_factorization",
              {"tensor_decomposition": {"lenet5/cp": {"finetuned_accuracy": 0.9, "rel_error": 0.5}}})
    ptq = _v1(tmp_path / "d", "03_ptq_vs_qat", {"ptq_accuracy": {"mse_8bit": 0.9, "mse_2bit": 0.1}})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once per process: no second warning
        assert results.read(lottery)["metrics"] == {"ticket_accuracy_by_level": [98.0, 97.5],
                                                    "sparsest_ticket_accuracy": 97.0, "train_steps": 100}
        assert results.read(svd)["metrics"]["tensor_decomposition"]["lenet5/cp"] == {"finetuned_accuracy": 90.0,
                                                                                     "rel_error": 0.5}
        assert results.read(ptq)["metrics"]["ptq_accuracy"] == {"mse_8bit": 90.0, "mse_2bit": 10.0}


def test_current_records_are_left_as_written(tmp_path):
    results.record("06_deep_compression", {"dense_accuracy": 98.51}, directory=tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        payload = results.read(tmp_path / f"06_deep_compression{results.SUFFIX}")
    assert payload["schema"] == results.SCHEMA and payload["metrics"] == {"dense_accuracy": 98.51}


def test_load_runs_and_points_see_percent_for_old_and_new(tmp_path):

    _v1(tmp_path / "old", "06_deep_compression", {"loaded_accuracy": 0.981, "file_bytes": 26_000})
    results.record("06_deep_compression", {"loaded_accuracy": 98.3, "file_bytes": 25_000}, directory=tmp_path / "new")
    with pytest.warns(UserWarning, match="read as percent"):
        table = results.load_runs(tmp_path)
    assert sorted(table["loaded_accuracy"]) == [pytest.approx(98.1), 98.3]
    points = points_combine.points_from_runs(tmp_path)
    assert sorted(p["accuracy"] for p in points) == [pytest.approx(98.1), 98.3]


def test_every_v1_fraction_key_is_an_accuracy():
    """The conversion list names accuracies only (never bytes, points or counts)."""
    for notebook, keys in results.V1_FRACTIONS.items():
        for key in keys:
            last = key.split(".")[-1]
            assert "accuracy" in last or last.endswith("bit"), (notebook, key)


V1_DIR = __import__("pathlib").Path(__file__).parents[1] / "data" / "results_v1"
NOT_LEVELS = ("change", "points", "drop", "gain", "ci_", "agreement", "_p", "target")


def _accuracy_values(metrics: dict, prefix: str = ""):
    """(name, value) of every accuracy level (not a change in points) in a metrics tree."""
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _accuracy_values(value, f"{name}.")
        elif ("accuracy" in key or key.startswith("ptq_per_")) and not any(w in key for w in NOT_LEVELS):
            for v in value if isinstance(value, list) else [value]:
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    yield name, v


@pytest.mark.parametrize("path", sorted(V1_DIR.glob("*.results.json")), ids=lambda p: p.name.split(".")[0])
def test_records_written_before_the_change_read_in_percent(path):
    """Real schema-1 records (quick-profile runs of the notebooks and exercises before the change):
    every accuracy level reads back as exactly 100 times what was written, and lies in percent."""
    raw = json.loads(path.read_text())
    assert raw["schema"] == "compresslab.results/1"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        now = results.read(path)["metrics"]
    before = dict(_accuracy_values(raw["metrics"]))
    after = dict(_accuracy_values(now))
    assert before and set(before) == set(after)
    for name, value in before.items():
        assert after[name] == pytest.approx(100 * value, abs=1e-9), name
        assert 1 < after[name] <= 100 or value == 0, (name, after[name])  # trained models: far above 1%
