"""Sweeps without a cluster: thread plans, sweep options, resuming, the tidy summary and the
baseline cache under two processes at once."""

from __future__ import annotations

import csv
import multiprocessing
import os
import time
import warnings
from pathlib import Path

import nbformat
import pytest
import torch

from compresslab.core import cache, results
from compresslab.core.training import TrainConfig
from compresslab.running import cli, runner, sweep
from compresslab.running.summary import tidy_rows, write_summary


def write_notebook(path, body: str, parameters: str = 'profile = "full"\nscale = 1.0\nseed = 0'):
    """A small notebook with a papermill `parameters` cell followed by `body`."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(parameters, metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def test_threads_split_the_cores_between_concurrent_runs():
    assert [runner.threads_per_run(2, n) for n in (1, 2, 3)] == [2, 1, 1]
    assert runner.threads_per_run(16, 4) == 4 and runner.threads_per_run(1, 0) == 1
    env = runner.thread_env(3)
    assert {env[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "COMPRESSLAB_THREADS")} == {"3"}
    assert env["OMP_WAIT_POLICY"] == "PASSIVE"
    with pytest.raises(ValueError, match="threads=0"):
        runner.thread_env(0)


def test_kernel_env_leaves_this_process_alone(tmp_path, monkeypatch):
    monkeypatch.delenv("COMPRESSLAB_RESULTS_DIR", raising=False)
    env = runner.kernel_env(tmp_path, threads=2)
    assert env["COMPRESSLAB_RESULTS_DIR"] == str(tmp_path.resolve()) and env["OMP_NUM_THREADS"] == "2"
    assert "COMPRESSLAB_RESULTS_DIR" not in os.environ


def test_kernels_on_workers_do_not_inherit_what_the_nanny_set(monkeypatch):
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")  # what Dask's nanny sets for its worker process
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "3")  # not the nanny's value: someone chose it
    env = sweep.worker_environ()
    assert "MALLOC_TRIM_THRESHOLD_" not in env and env["OPENBLAS_NUM_THREADS"] == "3"
    assert runner.kernel_env(Path("."), 1, env)["OPENBLAS_NUM_THREADS"] == "1"


@pytest.mark.parametrize("kwargs, match", [
    ({"workers": 0}, r"SweepConfig.workers=0 must be an integer in \[1, 256\]"),
    ({"retries": -1}, r"SweepConfig.retries=-1 must be an integer in \[0, 100\]"),
    ({"threads": 0}, r"SweepConfig.threads=0"),
    ({"scheduler": "tcp://host:70000"}, r"port in \[1, 65535\]"),
    ({"scheduler": "two words"}, "not a scheduler address"),
    ({"workers": 2, "scheduler": "tcp://10.0.0.5:8786"}, "not both"),
])
def test_sweep_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sweep.SweepConfig(**kwargs)


def test_scheduler_addresses():
    for good in ("tcp://10.0.0.5:8786", "10.0.0.5:8786", "tls://sched.example.org:8786", "tcp://[::1]:8786", "node7"):
        assert sweep.check_address(good) == good
    assert sweep.SweepConfig(scheduler=" tcp://a:1 ").scheduler == "tcp://a:1"


@pytest.mark.parametrize("args, option, allowed", [
    (["--workers", "0"], "--workers", "[1, 256]"),
    (["--workers", "two"], "--workers", "[1, 256]"),
    (["--retries", "101", "--workers", "2"], "--retries", "[0, 100]"),
    (["--threads", "0"], "--threads", "[1, 1024]"),
    (["--scheduler", "tcp://x:0"], "--scheduler", "[1, 65535]"),
    (["--workers", "2", "--scheduler", "x:1"], "--scheduler", "not allowed with argument --workers"),
])
def test_cli_rejects_bad_sweep_options_before_running(args, option, allowed, capsys, monkeypatch):
    monkeypatch.setattr(runner, "execute", lambda *a, **k: pytest.fail("executed"))
    with pytest.raises(SystemExit) as info:
        cli.main(["run", "01", "--profile", "quick", *args])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert option in err and allowed in err


@pytest.mark.parametrize("args, message", [
    (["--resume"], "--resume needs --out"), (["--retries", "1"], "--retries applies to runs on Dask workers"),
])
def test_cli_rejects_options_that_need_another(args, message, capsys, monkeypatch):
    monkeypatch.setattr(runner, "execute", lambda *a, **k: pytest.fail("executed"))
    assert cli.main(["run", "01", "--profile", "quick", *args]) == 2
    assert message in capsys.readouterr().err


def _record(target, stem: str, params: dict, metrics: dict) -> None:
    results.record(stem, metrics, parameters=params, directory=target)


def test_resume_reuses_recorded_runs_and_runs_the_rest(tmp_path, monkeypatch):
    nb = write_notebook(tmp_path / "tiny.ipynb", "pass")
    out = tmp_path / "out"
    _record(out / "tiny" / "scale=0.5", "tiny", {"profile": "quick", "scale": 0.5, "seed": 0}, {"y": 1.5})
    _record(out / "tiny" / "scale=2.0", "tiny", {"profile": "full", "scale": 2.0, "seed": 0}, {"y": 9.0})  # other profile
    executed = []

    def fake_execute(path, target, values, profile, *args, **kwargs):
        executed.append(values)
        _record(target, "tiny", {"profile": profile, **values, "seed": 0}, {"y": 3 * values["scale"]})
        return runner.RunResult("tiny", {"profile": profile, **values}, target / path.name, 0.1, True,
                                results={"y": 3 * values["scale"]})

    monkeypatch.setattr(runner, "execute", fake_execute)
    runs, _ = runner.run_many([str(nb)], "quick", {"scale": ["0.5,2.0"]}, out, resume=True, log=lambda s: None)
    assert executed == [{"scale": 2.0}]
    assert [(r.resumed, r.results["y"]) for r in runs] == [(True, 1.5), (False, 6.0)]
    assert "| tiny | resumed |" in (out / "summary.md").read_text()
    assert runner.recorded(out / "tiny" / "scale=0.5", "tiny", {"profile": "quick", "scale": 0.5}) == {"y": 1.5}
    assert runner.recorded(out / "tiny" / "scale=0.5", "tiny", {"profile": "quick", "scale": 0.25}) is None
    assert runner.recorded(out / "tiny" / "scale=0.5", "other", {"profile": "quick"}) is None
    runs, _ = runner.run_many([str(nb)], "quick", {"scale": ["0.5,2.0"]}, out, resume=True, log=lambda s: None)
    assert executed == [{"scale": 2.0}] and all(r.resumed for r in runs)


def test_tidy_summary_is_one_row_per_metric_in_grid_order(tmp_path):
    a = runner.RunResult("nb", {"profile": "quick", "s": 0.5}, tmp_path / "nb" / "s=0.5" / "nb.ipynb", 3.0, True,
                         results={"acc": 0.9, "n": 7, "ok": True, "name": "x", "table": [1, 2]})
    b = runner.RunResult("nb", {"profile": "quick", "s": 0.9}, tmp_path / "nb" / "s=0.9" / "nb.ipynb", 1.0, False,
                         error="cell 3: ValueError: boom", attempts=2)
    rows = tidy_rows(tmp_path, [a, b])
    assert [(r["run"], r["metric"], r["value"], r["text"]) for r in rows] == [
        ("nb/s=0.5", "acc", 0.9, None), ("nb/s=0.5", "n", 7, None), ("nb/s=0.5", "ok", 1, None),
        ("nb/s=0.5", "name", None, "x"), ("nb/s=0.9", None, None, None)]
    assert rows[-1]["status"] == "failed" and rows[-1]["error"] == "cell 3: ValueError: boom"
    write_summary(tmp_path, [a, b])
    with open(tmp_path / "summary.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [row["metric"] for row in table] == ["acc", "n", "ok", "name", ""]
    assert table[0]["param.s"] == "0.5" and table[1]["value"] == "7" and "seconds" not in table[0]
    md = (tmp_path / "summary.md").read_text()
    assert "| attempts |" in md and "| nb | failed | 1 | 2 |" in md


FAST = TrainConfig(epochs=3, batch_size=16, lr=0.05, seed=5)


def _ask_for_baseline(cache_dir: str, barrier, queue) -> None:
    """In a fresh process: wait for the other one, then ask for the same uncached baseline."""
    os.environ["COMPRESSLAB_CACHE"] = cache_dir
    torch.set_num_threads(1)
    from conftest import make_tiny_dataset

    data = make_tiny_dataset(n_train=512)
    barrier.wait(timeout=60)
    baseline = cache.pretrained("lenet300", data, FAST)
    queue.put((baseline.from_cache, cache.weights_digest(baseline.model.state_dict()), baseline.accuracy))


def test_two_processes_share_one_uncached_baseline(tmp_path, monkeypatch):
    context = multiprocessing.get_context("spawn")
    barrier, queue = context.Barrier(2), context.Queue()
    procs = [context.Process(target=_ask_for_baseline, args=(str(tmp_path), barrier, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    try:
        outcomes = [queue.get(timeout=120) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    assert sorted(o[0] for o in outcomes) == [False, True]  # one trained and stored, the other loaded it
    assert outcomes[0][1:] == outcomes[1][1:]
    (entry,) = tmp_path.glob("*.pt")
    assert [p.name for p in tmp_path.glob("*.lock")] == [entry.with_suffix(".lock").name]
    monkeypatch.setenv("COMPRESSLAB_CACHE", str(tmp_path))
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # the children's thread count: part of the cache key
    try:
        from conftest import make_tiny_dataset

        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the entry is valid: it loads without a retraining warning
            again = cache.pretrained("lenet300", make_tiny_dataset(n_train=512), FAST)
    finally:
        torch.set_num_threads(old)
    assert again.from_cache and cache.weights_digest(again.model.state_dict()) == outcomes[0][1]


def test_the_lock_is_exclusive_between_processes(tmp_path):
    context = multiprocessing.get_context("spawn")
    entry = tmp_path / "m-d-key.pt"
    with cache.entry_lock(entry) as locked:
        assert locked
        child = context.Process(target=_take_lock, args=(str(entry),))
        start = time.monotonic()
        child.start()
        time.sleep(1.5)
        assert child.is_alive()  # blocked on the lock we hold
    child.join(timeout=60)
    assert child.exitcode == 0 and time.monotonic() - start >= 1.5


def _take_lock(path: str) -> None:
    with cache.entry_lock(Path(path)):
        pass
