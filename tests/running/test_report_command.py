"""`compresslab report` and results.load_runs on junk: bad files are skipped, one warning each."""

from __future__ import annotations

import json

import pytest

from compresslab.core import results
from compresslab.running import cli


def _write(folder, name, payload):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}{results.SUFFIX}"
    path.write_bytes(payload if isinstance(payload, bytes) else json.dumps(payload).encode())
    return path


def _good(notebook="01_x", metrics=None, parameters=None):
    return {"schema": results.SCHEMA, "notebook": notebook, "parameters": parameters or {"seed": 0},
            "metrics": metrics or {"accuracy": 0.98}}


@pytest.fixture
def junk(tmp_path):
    _write(tmp_path / "a", "01_x", _good(metrics={"accuracy": 0.98, "notebook": "mine", "run": 7}))
    _write(tmp_path / "b", "02_y", {**_good("02_y"), "parameters": None})
    bad = {
        "no-notebook": _write(tmp_path / "c", "03", {k: v for k, v in _good().items() if k != "notebook"}),
        "not-utf8": _write(tmp_path / "d", "04", b'{"schema": "\xff\xfe"}'),
        "parameters-list": _write(tmp_path / "e", "05", {**_good(), "parameters": [1, 2]}),
        "not-json": _write(tmp_path / "f", "06", b"{nope"),
    }
    return tmp_path, bad


def test_bad_files_are_skipped_with_one_warning_each_naming_the_file(junk):
    folder, bad = junk
    with pytest.warns(UserWarning) as caught:
        table = results.load_runs(folder)
    messages = [str(w.message) for w in caught]
    assert len(messages) == len(bad)
    for path in bad.values():
        assert sum(str(path) in m for m in messages) == 1
    assert sorted(table["notebook"]) == ["01_x", "02_y"]


def test_a_metric_cannot_overwrite_the_notebook_or_run_columns(junk):
    folder, _ = junk
    with pytest.warns(UserWarning):
        table = results.load_runs(folder).set_index("notebook")
    assert table.loc["01_x", "metric.notebook"] == "mine" and table.loc["01_x", "metric.run"] == 7
    assert table.loc["01_x", "run"] == "a" and table.loc["01_x", "accuracy"] == 0.98


def test_read_names_the_file_for_invalid_utf8(junk):
    _, bad = junk
    with pytest.raises(ValueError, match=str(bad["not-utf8"])):
        results.read(bad["not-utf8"])
    assert results.read(junk[0] / "b" / f"02_y{results.SUFFIX}")["parameters"] == {}


def test_report_command_prints_the_good_runs_and_warns_per_bad_file(junk, capsys):
    folder, bad = junk
    assert cli.main(["report", str(folder)]) == 0
    captured = capsys.readouterr()
    assert "01_x" in captured.out and "02_y" in captured.out
    assert captured.err.count("compresslab: warning: skipping") == len(bad)
