"""The command line: listing, parameter parsing, sweeps and clear errors."""

from __future__ import annotations

import pytest

from compresslab.running import cli, runner


def test_parse_and_expand():
    assert runner.parse_value("0.9") == 0.9 and runner.parse_value("True") is True
    assert runner.parse_value("lenet5") == "lenet5" and runner.parse_value("(1, 2)") == (1, 2)
    assert runner.split_values("1,(2,3),'a,b'") == ["1", "(2,3)", "'a,b'"]
    grid = runner.expand_grid({"a": ["1,2"], "b": ["x", "y"]})
    assert grid == [{"a": 1, "b": "x"}, {"a": 1, "b": "y"}, {"a": 2, "b": "x"}, {"a": 2, "b": "y"}]
    assert runner.expand_grid({}) == [{}]


def test_list_shows_notebooks_and_parameters(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "01_magnitude_pruning" in out and "profile = \"full\"" in out.replace("'", '"')


def test_resolve_by_number_and_topic():
    path = runner.resolve("01_magnitude_pruning")
    assert runner.resolve("1") == path and runner.resolve("magnitude_pruning") == path


def test_unknown_notebook_lists_valid_ones(capsys):
    assert cli.main(["run", "99_nope", "--profile", "quick"]) == 2
    err = capsys.readouterr().err
    assert "99_nope" in err and "01_magnitude_pruning" in err


def test_unknown_parameter_lists_valid_ones(capsys):
    assert cli.main(["run", "01", "--profile", "quick", "-p", "sparsityy", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "sparsityy" in err and "sparsity" in err and "profile" in err


def test_profile_must_be_known():
    with pytest.raises(SystemExit):
        cli.main(["run", "01", "--profile", "medium"])
