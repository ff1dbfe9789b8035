"""Command-line values are checked before anything runs: timeouts and declared notebook parameters."""

from __future__ import annotations

import time

import pytest

from compresslab.running import cli, params, runner


@pytest.mark.parametrize("command", [["check", "x.ipynb"], ["run", "01", "--profile", "quick"]])
@pytest.mark.parametrize("value", ["-1", "0", "2.5", "soon"])
def test_cell_timeout_must_be_a_positive_integer(command, value, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main([*command, "--cell-timeout", value])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--cell-timeout" in err and value in err


def test_cell_timeout_parses_positive_seconds():
    args = cli.build_parser().parse_args(["run", "01", "--cell-timeout", "5"])
    assert args.cell_timeout == 5
    with pytest.raises(ValueError, match="cell_timeout"):
        runner.check_cell_timeout(0)


@pytest.mark.parametrize("key, value, allowed", [
    ("sparsity", "1.5", "[0, 1)"),
    ("model_name", "nosuchmodel", "'lenet300', 'lenet5'"),
    ("iterations", "2.5", "[1, 100]"),
    ("schedule", "'cubic'", "one_shot"),
    ("seed", "-1", "seed"),
])
def test_bad_values_fail_before_running(key, value, allowed, capsys, monkeypatch):
    def no_run(*args, **kwargs):
        raise AssertionError("a notebook was executed")

    monkeypatch.setattr(runner, "execute", no_run)
    start = time.perf_counter()
    assert cli.main(["run", "01", "--profile", "quick", "-p", key, value]) == 2
    assert time.perf_counter() - start < 5
    err = capsys.readouterr().err
    assert f"01_magnitude_pruning.{key}" in err and allowed in err


def test_one_bad_value_of_a_sweep_fails_the_whole_sweep_up_front(capsys, monkeypatch):
    monkeypatch.setattr(runner, "execute", lambda *a, **k: pytest.fail("executed"))
    assert cli.main(["run", "01", "--profile", "quick", "-p", "sparsity", "0.5,0.9,1.0"]) == 2
    assert "sparsity=1.0" in capsys.readouterr().err


def test_every_notebook_parameter_is_declared_and_its_default_allowed():
    for stem, path in runner.notebooks().items():
        values = runner.defaults(path)
        spec = params.spec_for(stem)
        assert set(values) == set(spec), (stem, set(values) ^ set(spec))
        params.check_values(stem, values)


def test_declarations_reject_what_they_should():
    spec = params.spec_for("06_deep_compression")
    spec["layer_sparsity"].check("nb", "layer_sparsity", None)
    spec["layer_sparsity"].check("nb", "layer_sparsity", {"fc1": 0.9})
    with pytest.raises(ValueError, match=r"nb.layer_sparsity\['fc1'\]=1.0"):
        spec["layer_sparsity"].check("nb", "layer_sparsity", {"fc1": 1.0})
    with pytest.raises(TypeError, match="nb.conv_bits"):
        spec["conv_bits"].check("nb", "conv_bits", "8")
    ints = params.spec_for("03_ptq_vs_qat")["bit_widths"]
    with pytest.raises(ValueError, match=r"bit_widths\[1\]=1"):
        ints.check("nb", "bit_widths", [8, 1])
    with pytest.raises(ValueError, match="non-empty"):
        ints.check("nb", "bit_widths", [])
    folder = params.spec_for("08_pareto_frontier")["results_dir"]  # a text parameter: any string, "" for none
    folder.check("nb", "results_dir", "")
    folder.check("nb", "results_dir", "sweeps/08")
    with pytest.raises(TypeError, match="nb.results_dir=3 must be a str"):
        folder.check("nb", "results_dir", 3)


def test_list_shows_the_allowed_values(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "sparsity = 0.92    [float in [0, 1)]" in out
    assert "[one of ('lenet300', 'lenet5')]" in out and "[int in [1, 100]]" in out
