"""Sweeps on Dask: a local cluster matches the sequential run, a cluster started by hand sends every
file back, and a run whose worker is killed is retried or reported while the others finish."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_sweep import write_notebook

from compresslab.core.results import read
from compresslab.running import cli, runner, sweep

pytestmark = pytest.mark.notebook

TINY = """\
import os, signal, time, torch
from compresslab.core import results
marker = os.environ.get("TINY_CRASH_MARKER", "")
if scale == 2.0 and marker and not os.path.exists(marker):  # the first attempt kills its worker
    open(marker, "w").close()
    os.kill(os.getppid(), signal.SIGKILL)
    time.sleep(60)
g = torch.Generator().manual_seed(seed)
x, w = torch.randn(64, 32, generator=g, dtype=torch.float64), torch.randn(32, 8, generator=g, dtype=torch.float64)
results.record("tiny", {"mean": float((x @ (w * scale)).tanh().mean()), "threads": torch.get_num_threads(),
                        "omp": os.environ.get("OMP_NUM_THREADS"), "where": os.environ["COMPRESSLAB_RESULTS_DIR"]},
               parameters={"profile": profile, "scale": scale, "seed": seed})
"""


def expected_mean(scale: float, seed: int = 0) -> float:
    g = torch.Generator().manual_seed(seed)
    x, w = torch.randn(64, 32, generator=g, dtype=torch.float64), torch.randn(32, 8, generator=g, dtype=torch.float64)
    return float((x @ (w * scale)).tanh().mean())


PRUNE = """\
import torch
from compresslab.core import cache, results, training
from compresslab.core.data import Dataset, Split
from compresslab.techniques.masks import copy_model, prune_magnitude


def blocks(n, gen):  # a learnable 10-class problem: class c lights up block c
    labels = torch.randint(0, 10, (n,), generator=gen)
    images = torch.randint(0, 60, (n, 28, 28), generator=gen, dtype=torch.int64)
    for i, c in enumerate(labels.tolist()):
        r, col = divmod(c, 5)
        images[i, 4 + 10 * r:12 + 10 * r, 1 + 5 * col:5 + 5 * col] += 190
    return Split(images.clamp(0, 255).to(torch.uint8), labels, 0.2, 0.3)


gen = torch.Generator().manual_seed(0)
data = Dataset("blocks", blocks(768, gen), blocks(256, gen), None, tuple("0123456789"), {"name": "blocks"})
base = cache.pretrained("lenet300", data, training.TrainConfig(epochs=2, batch_size=32, lr=0.05, seed=seed))
model = prune_magnitude(copy_model(base.model), sparsity)
training.train(model, data, training.TrainConfig(epochs=1, batch_size=32, lr=0.01, seed=seed), evaluate_test=False)
test = training.evaluate(model, data.test)
results.record("prune_sweep", {"dense_accuracy": base.accuracy, "accuracy": test.accuracy, "loss": test.loss,
                               "weights": cache.weights_digest(model.state_dict()), "threads": torch.get_num_threads()},
               parameters={"profile": profile, "sparsity": sparsity, "seed": seed})
"""


def _tidy(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_local_cluster_gives_the_sequential_metrics(tmp_path, monkeypatch):
    """A 4-point sweep that trains, prunes and fine-tunes through the package: on 2 local workers
    (starting on an empty cache, both needing the same baseline at once), then one run after
    another with the same thread count: the same summary.csv, byte for byte."""
    monkeypatch.setenv("COMPRESSLAB_CACHE", str(tmp_path / "cache"))
    nb = write_notebook(tmp_path / "prune_sweep.ipynb", PRUNE, 'profile = "full"\nsparsity = 0.5\nseed = 0')
    grid = {"sparsity": ["0.5,0.8,0.9,0.95"]}
    threads = runner.threads_per_run(runner.cpu_cores(), 2)
    said: list[str] = []
    quiet = {"show_progress": False, "cell_timeout": 120, "log": said.append}
    par, _ = runner.run_many([str(nb)], "quick", grid, tmp_path / "par", workers=2, **quiet)
    seq, _ = runner.run_many([str(nb)], "quick", grid, tmp_path / "seq", threads=threads, **quiet)
    assert all(r.ok for r in par + seq), [r.error for r in par + seq if not r.ok]
    assert any(f"torch threads per run: {threads} on 127.0.0.1" in line for line in said)
    assert any("dashboard: " in line for line in said)
    assert {r.threads for r in par} == {threads} and {r.results["threads"] for r in par + seq} == {threads}
    assert len({r.worker for r in par}) == 2 and not any(r.worker for r in seq)
    assert (tmp_path / "par" / "summary.csv").read_bytes() == (tmp_path / "seq" / "summary.csv").read_bytes()
    rows = _tidy(tmp_path / "par" / "summary.csv")
    assert [r["param.sparsity"] for r in rows if r["metric"] == "loss"] == ["0.5", "0.8", "0.9", "0.95"]
    assert len({r["text"] for r in rows if r["metric"] == "weights"}) == 4  # four different pruned models
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 1  # one baseline, trained once, then loaded


def _free_scheduler(folder: Path, env: dict) -> tuple[subprocess.Popen, str]:
    file = folder / "scheduler.json"
    proc = subprocess.Popen([sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1", "--port", "0",
                             "--no-dashboard", "--scheduler-file", str(file)], cwd=folder, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 60
    while not file.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert file.exists(), "the scheduler did not start within 60 s"
    time.sleep(0.2)
    return proc, json.loads(file.read_text())["address"]


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:  # each was started in its own session: its group holds its nanny, worker and kernels
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)


@pytest.fixture
def cluster_by_hand(tmp_path):
    """A scheduler and two `dask worker` processes on 127.0.0.1, each worker in its own scratch folder
    (its own working folder, results folder and baseline cache); all stopped afterwards."""
    procs: list[subprocess.Popen] = []
    try:
        proc, address = _free_scheduler(tmp_path, dict(os.environ))
        procs.append(proc)
        scratches = []
        for i in range(2):
            scratch = tmp_path / f"worker{i}"
            scratch.mkdir()
            env = {**os.environ, "COMPRESSLAB_RESULTS_DIR": str(scratch / "results"),
                   "COMPRESSLAB_CACHE": str(scratch / "cache")}
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "dask", "worker", address, "--nthreads", "1", "--host", "127.0.0.1",
                 "--no-dashboard", "--local-directory", str(scratch / "dask")], cwd=scratch, env=env,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
            scratches.append(scratch)
        from distributed import Client

        with Client(address, timeout=30) as client:
            client.wait_for_workers(2, timeout=90)
        yield address, scratches
    finally:
        _stop(procs)


def test_cluster_by_hand_sends_every_file_back(tmp_path, cluster_by_hand, capsys):
    address, scratches = cluster_by_hand
    nb = write_notebook(tmp_path / "tiny.ipynb", TINY)
    out = tmp_path / "client-out"
    scales = [0.5, 1.0, 3.0, 4.0]
    code = cli.main(["run", str(nb), "--scheduler", address, "--profile", "quick", "--no-progress",
                     "--cell-timeout", "120", "-p", "scale", ",".join(map(str, scales)), "--out", str(out)])
    said = capsys.readouterr().out
    assert code == 0, said
    assert f"Dask scheduler {address}" in said and "4 passed, 0 failed" in said
    used = set()
    for scale in scales:
        folder = out / "tiny" / f"scale={scale}"
        assert sorted(p.name for p in folder.iterdir()) == ["tiny.html", "tiny.ipynb", "tiny.results.json"]
        metrics = read(folder / "tiny.results.json")["metrics"]
        assert metrics["mean"] == pytest.approx(expected_mean(scale), rel=1e-12)
        assert metrics["threads"] == runner.threads_per_run(runner.cpu_cores(), 2) == int(metrics["omp"])
        where = Path(metrics["where"])  # the kernel recorded into a scratch folder of its worker
        owner = [s for s in scratches if s in where.parents]
        assert len(owner) == 1 and out not in where.parents
        used.add(owner[0])
        assert (folder / "tiny.html").read_text().lstrip().lower().startswith("<!doctype html")
    assert used == set(scratches)  # both workers ran something
    for scratch in scratches:  # nothing left behind on the workers
        assert not list(scratch.rglob("compresslab-run-*")) and not (scratch / "results").exists()
    rows = _tidy(out / "summary.csv")
    assert [(r["run"], r["metric"]) for r in rows if r["metric"] == "mean"] == [
        (f"tiny/scale={s}", "mean") for s in scales]


def test_a_killed_worker_is_retried_or_reported_and_the_others_finish(tmp_path, monkeypatch):
    nb = write_notebook(tmp_path / "tiny.ipynb", TINY)
    marker = tmp_path / "killed-once"
    monkeypatch.setenv("TINY_CRASH_MARKER", str(marker))  # inherited by the workers' kernels
    grid = {"scale": ["0.5,1.0,2.0,3.0"]}
    with sweep.local_client(2, log=lambda s: None) as client:
        runs, out = runner.run_many([str(nb)], "quick", grid, tmp_path / "retried", client=client, retries=1,
                                    show_progress=False, cell_timeout=120, log=lambda s: None)
        assert marker.exists() and all(r.ok for r in runs)
        assert [r.attempts for r in runs] == [1, 1, 2, 1]  # only the killed run was run again
        assert runs[2].results["mean"] == pytest.approx(expected_mean(2.0), rel=1e-12)
        assert "| tiny | ok |" in (out / "summary.md").read_text() and "| attempts |" in (out / "summary.md").read_text()
        marker.unlink()
        runs, out = runner.run_many([str(nb)], "quick", grid, tmp_path / "lost", client=client, retries=0,
                                    show_progress=False, cell_timeout=120, log=lambda s: None)
    assert [r.ok for r in runs] == [True, True, False, True]
    assert "died while running it" in runs[2].error and "after 1 attempt" in runs[2].error
    summary = (out / "summary.md").read_text()
    assert summary.count("| tiny | ok |") == 3 and "| tiny | failed |" in summary and "died while running it" in summary
    rows = _tidy(out / "summary.csv")
    assert [r["status"] for r in rows if r["run"] == "tiny/scale=2.0"] == ["failed"]
    assert not (out / "tiny" / "scale=2.0" / "tiny.results.json").exists()
