"""Sweeps on Dask: every run of a sweep is one task on a local cluster of worker processes or on
an existing cluster.

The client sends each task the notebook's bytes and the run's parameters; the worker executes the
notebook with papermill in its own kernel, inside a scratch folder of its own, and sends back every
file of the run's output folder (executed notebook, HTML, results JSON) as bytes, which the client
writes into its output folder. Workers therefore need only the package and the data, never a
filesystem shared with the client.

Each kernel gets a torch thread count of (cores of its machine) / (runs that machine executes at
once), through OMP_NUM_THREADS, MKL_NUM_THREADS, OPENBLAS_NUM_THREADS and COMPRESSLAB_THREADS set
before torch loads, with OMP_WAIT_POLICY=PASSIVE: oversubscribed threads make small torch models
many times slower. The kernel does not inherit what Dask's nanny sets for the worker process itself
(MALLOC_TRIM_THRESHOLD_ makes a run some 20% slower), so a run executes as it would outside Dask.
A run whose worker dies is resubmitted up to `retries` times; a failing notebook is a failed run,
never a failed sweep. Dask is imported only when a sweep uses it.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from compresslab.core.io import write_bytes_atomic
from compresslab.core.results import SUFFIX
from compresslab.core.validate import check_instance, check_int
from compresslab.running import runner

__all__ = [
    "MAX_WORKERS",
    "MAX_RETRIES",
    "SCHEDULER_CONFIG",
    "SweepConfig",
    "check_address",
    "Job",
    "local_client",
    "connect",
    "plan_threads",
    "worker_environ",
    "run_sweep",
    "run_job",
    "run_on_cluster",
]

MAX_WORKERS = 256
MAX_RETRIES = 100
SCHEDULER_CONFIG = {"distributed.scheduler.allowed-failures": 0, "distributed.scheduler.worker-saturation": 1.0}
_ADDRESS = re.compile(r"^(?:(?P<scheme>[a-z][a-z0-9+.-]*)://)?(?P<host>\[[0-9a-fA-F:.]+\]|[^\s:/\[\]]+)"
                      r"(?::(?P<port>\d{1,5}))?/?$")


def check_address(address: object) -> str:
    """A scheduler address such as tcp://10.0.0.5:8786 or 10.0.0.5:8786 (ValueError otherwise)."""
    check_instance("", "scheduler", address, str)
    match = _ADDRESS.match(address.strip())
    port = match and match.group("port")
    if not match or (port is not None and not 1 <= int(port) <= 65535):
        raise ValueError(f"scheduler={address!r} is not a scheduler address: expected [tcp://]HOST[:PORT] "
                         "with a port in [1, 65535], e.g. tcp://10.0.0.5:8786")
    return address.strip()


@dataclass(frozen=True)
class SweepConfig:
    """How a sweep runs: `workers` local worker processes, or the cluster whose scheduler is at
    `scheduler` (neither: one run after another in this process); `retries`: resubmissions of a
    run whose worker died; `threads`: torch threads per run (None: cores / concurrent runs)."""

    workers: int | None = None
    scheduler: str | None = None
    retries: int = 0
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.workers is not None:
            check_int("SweepConfig", "workers", self.workers, 1, MAX_WORKERS)
        if self.scheduler is not None:
            object.__setattr__(self, "scheduler", check_address(self.scheduler))
        if self.workers is not None and self.scheduler is not None:
            raise ValueError("SweepConfig: give workers (a local cluster) or scheduler (an existing one), not both")
        check_int("SweepConfig", "retries", self.retries, 0, MAX_RETRIES)
        if self.threads is not None:
            check_int("SweepConfig", "threads", self.threads, 1, runner.MAX_THREADS)


@dataclass(frozen=True)
class Job:
    """One run as a task: its number in the sweep, the notebook's name and bytes, its parameters and
    how to execute it."""

    number: int
    stem: str
    source: bytes
    values: dict
    profile: str
    cell_timeout: int | None
    html: bool = True
    threads: Mapping[str, int] = field(default_factory=dict)  # worker address -> torch threads


@contextmanager
def local_client(workers: int, log: Callable[[str], None] = print) -> Iterator:
    """A Dask client of a new cluster of `workers` processes (one run at a time each) on 127.0.0.1.

    The scheduler hands a worker its next run only when it is free (worker-saturation 1.0), so no
    run waits behind a long one or is lost with a worker that never started it, and reschedules
    nothing itself (allowed-failures 0): a run lost with its worker comes back as an error, and
    `run_on_cluster` decides whether to resubmit it."""
    import dask
    from distributed import Client, LocalCluster

    check_int("", "workers", workers, 1, MAX_WORKERS)
    with dask.config.set(SCHEDULER_CONFIG):
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                               dashboard_address="127.0.0.1:0", memory_limit=0, silence_logs=logging.ERROR)
    client = Client(cluster)
    try:
        _announce(client, log)
        yield client
    finally:
        client.close()
        cluster.close()


@contextmanager
def connect(address: str, log: Callable[[str], None] = print, timeout: float = 30) -> Iterator:
    """A Dask client of the existing cluster whose scheduler is at `address`."""
    from distributed import Client

    client = Client(check_address(address), timeout=timeout)
    try:
        _announce(client, log)
        if not client.scheduler_info().get("workers"):
            log("no worker has connected to the scheduler yet: the runs start when one does")
        yield client
    finally:
        client.close()


def _announce(client, log: Callable[[str], None]) -> None:
    link = ""
    try:
        link = client.dashboard_link
    except Exception:  # noqa: BLE001 - no dashboard is not an error
        pass
    has_dashboard = "dashboard" in (client.scheduler_info().get("services") or {})
    log(f"Dask scheduler {client.scheduler.address}; dashboard: "
        + (link if link and has_dashboard else "not running (install bokeh to get one)"))


def plan_threads(client, threads: int | None = None) -> tuple[dict[str, int], str]:
    """(worker address -> torch threads per run, the choice in words): `threads` if given, else the
    cores of the worker's machine divided by the runs its workers execute at once (at least 1)."""
    try:
        workers = client.scheduler_info(n_workers=-1)["workers"]
    except TypeError:  # a distributed release that lists every worker anyway
        workers = client.scheduler_info()["workers"]
    cores = client.run(runner.cpu_cores) if threads is None else {}
    slots: dict[str, int] = {}
    for info in workers.values():
        slots[info["host"]] = slots.get(info["host"], 0) + info["nthreads"]
    plan = {address: threads or runner.threads_per_run(cores.get(address, 1), slots[info["host"]])
            for address, info in workers.items()}
    if threads is not None:
        why = [f"{threads} (as asked)"]
    else:
        why = sorted({f"{plan[a]} on {info['host']} ({cores.get(a, 1)} cores / {slots[info['host']]} runs at once)"
                      for a, info in workers.items()})
    if not workers:
        why = ["cores / runs at once, decided on each worker (none has connected yet; the runs wait for one)"]
    return plan, ("torch threads per run: " + "; ".join(why) + " - set in each kernel through OMP_NUM_THREADS, "
                  "MKL_NUM_THREADS, OPENBLAS_NUM_THREADS and COMPRESSLAB_THREADS, with OMP_WAIT_POLICY=PASSIVE")


def run_sweep(config: SweepConfig, client, items: Sequence[tuple[Path, dict, Path]], profile: str,
              cell_timeout: int | None, log: Callable[[str], None] = print, show_progress: bool = True,
              numbers: Sequence[int] | None = None, total: int | None = None) -> list[runner.RunResult]:
    """Run (notebook path, parameters, target folder) items on Dask: on `client` if given, else on
    a local cluster of `config.workers` processes or the cluster at `config.scheduler`; results in
    the order of `items`. `numbers` / `total`: how the runs are numbered in messages."""
    if client is not None:
        session = _borrowed(client, log)
    elif config.workers is not None:
        session = local_client(config.workers, log)
    elif config.scheduler is not None:
        session = connect(config.scheduler, log)
    else:
        raise ValueError("run_sweep needs a client, SweepConfig.workers or SweepConfig.scheduler")
    numbers = list(numbers) if numbers is not None else list(range(1, len(items) + 1))
    with session as active:
        threads, words = plan_threads(active, config.threads)
        log(words)
        jobs = [Job(n, path.stem, path.read_bytes(), dict(combo), profile, cell_timeout, True, threads)
                for n, (path, combo, _) in zip(numbers, items)]
        return run_on_cluster(active, jobs, [target for _, _, target in items], config.retries, log,
                              show_progress, total or len(items))


@contextmanager
def _borrowed(client, log: Callable[[str], None]) -> Iterator:
    """A client the caller owns: announced, used, left open."""
    _announce(client, log)
    yield client


def worker_environ() -> dict[str, str]:
    """This process's environment without the variables Dask's nanny set for the worker process
    (`distributed.nanny.pre-spawn-environ`: MALLOC_TRIM_THRESHOLD_ and one-thread BLAS settings)."""
    import dask
    import distributed  # noqa: F401 - registers its configuration defaults with dask.config

    preset = dask.config.get("distributed.nanny.pre-spawn-environ", default={}) or {}
    return {k: v for k, v in os.environ.items() if not (k in preset and str(preset[k]) == v)}


def run_job(job: Job) -> dict:
    """On a worker: execute one run in a scratch folder; return its outcome and its files as bytes."""
    address, nthreads, base = "local", 1, None
    try:
        from distributed import get_worker

        worker = get_worker()
        address, nthreads, base = worker.address, worker.state.nthreads, worker.local_directory
    except (ImportError, ValueError):  # called outside a worker (tests, debugging)
        pass
    threads = job.threads.get(address) or runner.threads_per_run(runner.cpu_cores(), nthreads)
    scratch = Path(tempfile.mkdtemp(prefix="compresslab-run-", dir=base))
    lines: list[str] = []
    try:
        source = scratch / "notebook" / f"{job.stem}.ipynb"
        write_bytes_atomic(source, job.source)
        out = scratch / "out"
        result = runner.execute(source, out, job.values, job.profile, job.cell_timeout, html=job.html,
                                log=lines.append, threads=threads, environ=worker_environ())
        files = {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
        return {"ok": result.ok, "error": result.error, "seconds": result.seconds, "results": result.results,
                "parameters": result.parameters, "files": files, "worker": address, "threads": threads,
                "log": lines}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _received(job: Job, payload: dict, target: Path, attempts: int, say: Callable[[str], None]) -> runner.RunResult:
    """Write a finished run's files under `target` on this machine; its RunResult there (failed,
    with the reason, if the files cannot be written)."""
    for line in payload["log"]:
        say(f"  {job.stem}: {line.strip()}")
    ok, error = payload["ok"], payload["error"]
    try:
        for name, data in payload["files"].items():
            relative = Path(name)
            if relative.is_absolute() or ".." in relative.parts:
                raise ValueError(f"the worker sent a file outside its run folder: {name!r}")
            write_bytes_atomic(target / relative, data)
    except (OSError, ValueError) as err:
        ok, error = False, f"its files could not be written to {target}: {err}"
    return runner.RunResult(job.stem, payload["parameters"], target / f"{job.stem}.ipynb", payload["seconds"],
                            ok, error, payload["results"], attempts=attempts, worker=payload["worker"],
                            threads=payload["threads"])


def run_on_cluster(client, jobs: Sequence[Job], targets: Sequence[Path], retries: int = 0,
                   log: Callable[[str], None] = print, show_progress: bool = True,
                   total: int | None = None) -> list[runner.RunResult]:
    """Submit every job, write each finished run's files into its target folder as it arrives, and
    return the results in the order of `jobs`. A task that fails (its worker died, or was lost) is
    resubmitted up to `retries` times, then reported as a failed run with the error."""
    from distributed import as_completed
    from tqdm.auto import tqdm

    check_int("", "retries", retries, 0, MAX_RETRIES)
    token = uuid.uuid4().hex[:8]
    total = total or len(jobs)
    results: list[runner.RunResult | None] = [None] * len(jobs)
    for target, job in zip(targets, jobs):  # never report an earlier execution's numbers
        (target / f"{job.stem}{SUFFIX}").unlink(missing_ok=True)

    def submit(i: int, attempt: int):
        job = jobs[i]
        return client.submit(run_job, job, key=f"compresslab-{job.stem}-{token}-{i}-try{attempt}", pure=False)

    pending = {submit(i, 1): (i, 1) for i in range(len(jobs))}
    bar = tqdm(total=len(jobs), unit="run", desc="sweep", file=sys.stderr, leave=True,
               disable=None if show_progress else True)  # None: shown on a terminal only
    say = (lambda text: bar.write(text, file=sys.stdout)) if show_progress and log is print else log
    done = 0
    queue = as_completed(list(pending))  # resubmitted tasks join it with queue.add
    try:
        for future in queue:
            i, attempt = pending.pop(future)
            job, label = jobs[i], _label(jobs[i], total)
            try:
                payload = future.result()
            except Exception as err:  # noqa: BLE001 - a lost worker, a lost connection: retry or report
                reason = _reason(err)
                if attempt <= retries:
                    say(f"{label} lost ({reason}); resubmitting, attempt {attempt + 1} of {retries + 1}")
                    new = submit(i, attempt + 1)
                    pending[new] = (i, attempt + 1)
                    queue.add(new)
                    continue
                results[i] = runner.RunResult(job.stem, {"profile": job.profile, **job.values},
                                              targets[i] / f"{job.stem}.ipynb", 0.0, False,
                                              f"lost with its worker after {attempt} attempt(s): {reason}",
                                              attempts=attempt)
            else:
                results[i] = _received(job, payload, targets[i], attempt, say)
            done += 1
            bar.update(1)
            say(_line(results[i], label, done, len(jobs)))
    finally:
        bar.close()
        for future in pending:
            future.cancel()
    return [r for r in results if r is not None]


def _reason(err: Exception) -> str:
    """Why a task came back without a result, in one line."""
    last = getattr(err, "last_worker", None)
    if type(err).__name__ == "KilledWorker" and last is not None:
        return f"worker {getattr(last, 'address', last)} died while running it (KilledWorker)"
    return f"{type(err).__name__}: {str(err)[:300]}"


def _label(job: Job, total: int) -> str:
    return f"[{job.number}/{total}] {job.stem} {runner.run_label(job.values)}".rstrip()


def _line(result: runner.RunResult, label: str, done: int, total: int) -> str:
    where = f" on {result.worker} ({result.threads} thread(s))" if result.worker else ""
    retried = f" after {result.attempts} attempts" if result.attempts > 1 else ""
    if result.ok:
        return f"{label} ok in {result.seconds:.0f} s{where}{retried} -> {result.output}  ({done}/{total} done)"
    return (f"{label} FAILED after {result.seconds:.0f} s{where}{retried}: {result.error}\n"
            f"    executed notebook: {result.output}  ({done}/{total} done)")
