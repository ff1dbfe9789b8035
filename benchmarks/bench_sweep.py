"""Throughput of a quick sweep: one after another in this process, then on 1 and on 2 local Dask workers.

The same 4-run quick sweep (notebook 01, four sparsities by default) runs three ways in one
invocation: sequentially in this process with cores torch threads per run, on a local cluster of 1
worker (cores threads per run) and on a local cluster of 2 workers (cores / 2 threads per run).
Before the timed sweeps, one untimed run per thread count fills a private baseline cache, so every
timed run loads its baseline instead of training it. Printed: wall time, runs per minute, the
throughput ratio of 2 workers over 1 (the target on 2 idle cores is >= 1.6x), the per-run overhead
of going through the scheduler (1 worker against the sequential sweep, and wall time not spent
executing notebooks), the cluster start-up time, and the load average before and after, since a
busy machine lowers every number.

    python benchmarks/bench_sweep.py [--notebook 01] [--param sparsity] [--values 0.5,0.8,0.9,0.95]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from compresslab.running import runner, sweep


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f} (1 / 5 / 15 min)"


def timed_sweep(label: str, out: Path, args, **how) -> dict:
    """Run the sweep once; wall seconds, the runs' own seconds and how it ran."""
    grid = {args.param: [args.values]}
    quiet = {"log": lambda text: None, "show_progress": False}
    start = time.perf_counter()
    runs, _ = runner.run_many([args.notebook], args.profile, grid, out / label, **quiet, **how)
    wall = time.perf_counter() - start
    failed = [r.error for r in runs if not r.ok]
    if failed:
        raise SystemExit(f"{label}: {len(failed)} run(s) failed: {failed[0]}")
    return {"label": label, "wall": wall, "runs": len(runs), "busy": sum(r.seconds for r in runs),
            "threads": sorted({r.threads or how.get("threads") for r in runs} - {None})}


def on_workers(workers: int, out: Path, args) -> dict:
    start = time.perf_counter()
    with sweep.local_client(workers, log=lambda text: None) as client:
        startup = time.perf_counter() - start
        result = timed_sweep(f"{workers} worker(s)", out, args, client=client)
    return {**result, "startup": startup}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notebook", default="01")
    parser.add_argument("--profile", default="quick", choices=runner.PROFILES)
    parser.add_argument("--param", default="sparsity")
    parser.add_argument("--values", default="0.5,0.8,0.9,0.95")
    args = parser.parse_args()

    cores = runner.cpu_cores()
    print(f"{cores} cores; load average before: {load()}")
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as scratch:
        out = Path(scratch)
        os.environ["COMPRESSLAB_CACHE"] = str(out / "cache")  # private, filled below; inherited by the workers
        first = runner.split_values(args.values)[0]
        for threads in sorted({runner.threads_per_run(cores, 1), runner.threads_per_run(cores, 2)}):
            runner.run_many([args.notebook], args.profile, {args.param: [first]}, out / f"warm-{threads}",
                            log=lambda text: None, show_progress=False, threads=threads)
        results = [timed_sweep("sequential", out, args, threads=runner.threads_per_run(cores, 1)),
                   on_workers(1, out, args), on_workers(2, out, args)]
    print(f"\n{'how':<14}{'threads/run':>12}{'wall s':>9}{'runs/min':>10}{'mean run s':>12}{'start-up s':>12}")
    for r in results:
        startup = f"{r['startup']:.1f}" if "startup" in r else "-"
        print(f"{r['label']:<14}{','.join(map(str, r['threads'])):>12}{r['wall']:>9.1f}"
              f"{60 * r['runs'] / r['wall']:>10.2f}{r['busy'] / r['runs']:>12.1f}{startup:>12}")
    seq, one, two = results
    n = one["runs"]
    print(f"\nthroughput, 2 workers / 1 worker: {one['wall'] / two['wall']:.2f}x (target on {cores} idle cores: >= 1.6x)")
    print(f"throughput, 2 workers / sequential: {seq['wall'] / two['wall']:.2f}x")
    print(f"per-run overhead of the scheduler: {(one['wall'] - seq['wall']) / n:+.2f} s against the sequential "
          f"sweep; {(one['wall'] - one['busy']) / n:.2f} s of wall time per run outside the notebook on 1 worker "
          f"({(seq['wall'] - seq['busy']) / n:.2f} s sequentially); cluster start-up {one['startup']:.1f} s")
    print(f"load average after: {load()}")


if __name__ == "__main__":
    main()
