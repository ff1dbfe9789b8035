"""The `compresslab` command: list notebooks and parameters, run notebooks and sweeps, report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from compresslab.core import profiles
from compresslab.exercises import building, grading, releasing
from compresslab.running import runner
from compresslab.running.sweep import MAX_RETRIES, MAX_WORKERS

__all__ = [
    "positive_seconds",
    "bounded_int",
    "scheduler_address",
    "build_parser",
    "main",
]


def _cmd_list(args: argparse.Namespace) -> int:
    from compresslab.running.params import spec_for

    for stem, path in runner.notebooks().items():
        print(stem)
        spec = spec_for(stem)
        for name, info in runner.parameters(path).items():
            allowed = f"    [{spec[name].describe()}]" if name in spec else ""
            print(f"    {name} = {info['default']}{allowed}" + (f"    # {info['help']}" if info["help"] else ""))
    return 0


def positive_seconds(text: str) -> int:
    """argparse type of --cell-timeout: a whole number of seconds >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of seconds") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be a positive number of seconds (>= 1)")
    return value


def bounded_int(lo: int, hi: int, what: str):
    """An argparse type: a whole number in [lo, hi]; the error names the allowed range and `what` it is."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number ({what}: in [{lo}, {hi}])") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{value} is outside [{lo}, {hi}] ({what})")
        return value

    parse.__name__ = "int"
    return parse


def scheduler_address(text: str) -> str:
    """argparse type of --scheduler: [tcp://]HOST[:PORT]."""
    from compresslab.running.sweep import check_address

    try:
        return check_address(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err).replace("scheduler=", "", 1)) from None


def _cmd_run(args: argparse.Namespace) -> int:
    grid: dict[str, list[str]] = {}
    for key, value in args.param or []:
        if key == "profile":
            raise ValueError("set the profile with --profile, not -p profile")
        grid.setdefault(key, []).append(value)
    if args.resume and not args.out:
        raise ValueError("--resume needs --out FOLDER: the output folder of the sweep to resume")
    if args.retries and args.workers is None and args.scheduler is None:
        raise ValueError("--retries applies to runs on Dask workers: add --workers N or --scheduler ADDRESS")
    runs, out_dir = runner.run_many(args.names, args.profile, grid, Path(args.out) if args.out else None,
                                    args.cell_timeout, show_progress=not args.no_progress, workers=args.workers,
                                    scheduler=args.scheduler, retries=args.retries, resume=args.resume,
                                    threads=args.threads)
    failed = [r for r in runs if not r.ok]
    resumed = sum(r.resumed for r in runs)
    print(f"{len(runs) - len(failed)} passed, {len(failed)} failed" + (f" ({resumed} resumed)" if resumed else "")
          + f"; summary: {out_dir / 'summary.md'}")
    return 1 if failed else 0


def _cmd_report(args: argparse.Namespace) -> int:
    import warnings

    from compresslab.core.results import load_runs

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = load_runs(args.directory)
    for w in caught:  # one line per skipped file
        print(f"compresslab: warning: {w.message}", file=sys.stderr)
    if table.empty:
        print(f"no results files under {args.directory}")
        return 1
    print(table.to_string(index=False))
    return 0


def _cmd_exercises(args: argparse.Namespace) -> int:

    if args.action == "release":
        written = releasing.release(Path(args.out_dir))
        for path in written:
            print(f"wrote {path}")
        print(f"student release in {args.out_dir}: {len(written)} files, no solution text")
        return 0
    changed = building.build(check=args.check)
    if args.check:
        for path in changed:
            print(f"out of date: {path} (run `compresslab exercises build`)")
        print("student notebooks are up to date" if not changed else f"{len(changed)} student notebook(s) out of date")
        return 1 if changed else 0
    for path in changed:
        print(f"wrote {path}")
    print(f"{len(changed)} student notebook(s) written, {len(building.solutions()) - len(changed)} unchanged")
    return 0


def _cmd_check(args: argparse.Namespace) -> int:

    grades, out_dir = grading.grade(args.notebooks, Path(args.out) if args.out else None, args.student_id,
                                      args.cell_timeout)
    passed, total = sum(g.passed for g in grades), sum(g.total for g in grades)
    if len(grades) > 1:
        print("\nnotebook scores:")
        for g in grades:
            print(f"  {g.student} {g.notebook}: {g.passed}/{g.total}")
    print(f"score: {passed}/{total} checks passed ({100 * passed / max(total, 1):.0f}%); "
          f"grades.md, gradebook.csv, answers.md and feedback/ in {out_dir}")
    return 0 if grades and all(g.ok for g in grades) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="compresslab", description="Run and explore the compresslab notebooks.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_list = sub.add_parser("list", help="notebooks and their papermill parameters with defaults")
    p_list.set_defaults(func=_cmd_list)
    p_run = sub.add_parser("run", help="execute notebooks headless (papermill); sweeps with -p KEY V1,V2")
    p_run.add_argument("names", nargs="+", help="notebook name(s), number(s), or 'all'")
    p_run.add_argument("--profile", choices=profiles.PROFILES, default="full",
                       help="quick: small data and few epochs (minutes); full: the real experiment (default)")
    p_run.add_argument("-p", "--param", nargs=2, action="append", metavar=("KEY", "VALUE"),
                       help="set a parameter; 'V1,V2,V3' runs one execution per value (a grid for several keys)")
    p_run.add_argument("--out", help="output folder (default runs/<timestamp>/)")
    p_run.add_argument("--cell-timeout", type=positive_seconds, default=None,
                       help="seconds one cell may run before the run fails (default 600 quick, 3600 full)")
    p_run.add_argument("--no-progress", action="store_true",
                       help="do not show the running cell and section (shown on stderr by default)")
    where = p_run.add_mutually_exclusive_group()
    where.add_argument("--workers", type=bounded_int(1, MAX_WORKERS, "local worker processes"), default=None,
                       metavar="N", help="run the sweep on a local Dask cluster of N worker processes, each "
                                         "run in its own kernel with cores / N torch threads")
    where.add_argument("--scheduler", type=scheduler_address, default=None, metavar="ADDRESS",
                       help="submit the runs to the Dask cluster whose scheduler is at ADDRESS "
                            "(tcp://HOST:8786); the files of every run come back to --out")
    p_run.add_argument("--retries", type=bounded_int(0, MAX_RETRIES, "resubmissions of a run lost with its worker"),
                       default=0, metavar="K", help="resubmit a run whose worker died up to K times (Dask only)")
    p_run.add_argument("--resume", action="store_true",
                       help="skip runs whose results are already recorded in --out for the same parameters")
    p_run.add_argument("--threads", type=bounded_int(1, runner.MAX_THREADS, "torch threads per run"), default=None,
                       metavar="T", help="torch threads in each run's kernel (default: cores / concurrent runs "
                                         "on Dask; inherited otherwise)")
    p_run.set_defaults(func=_cmd_run)
    p_report = sub.add_parser("report", help="table of every recorded result below a folder")
    p_report.add_argument("directory", nargs="?", default="runs")
    p_report.set_defaults(func=_cmd_report)
    p_ex = sub.add_parser("exercises", help="student exercise notebooks (generated from exercises/solutions/)")
    ex_sub = p_ex.add_subparsers(dest="action", required=True)
    p_build = ex_sub.add_parser("build", help="write exercises/NN_*.ipynb from the solution notebooks")
    p_build.add_argument("--check", action="store_true",
                         help="write nothing; exit 1 if a student notebook is out of date with its solution")
    p_build.set_defaults(func=_cmd_exercises)
    p_release = ex_sub.add_parser("release", help="write the student distribution (notebooks, README, DATA.md; "
                                                  "no solutions) into OUT_DIR")
    p_release.add_argument("out_dir", metavar="OUT_DIR")
    p_release.set_defaults(func=_cmd_exercises)
    p_check = sub.add_parser("check", help="grade submissions: the student's functions against the package's checks, "
                                           "in a fresh process per notebook")
    p_check.add_argument("notebooks", nargs="+", help="notebook file(s), or folder(s) of submissions")
    p_check.add_argument("--student-id", help="the student whose cases to draw (default: from each file name, "
                                              "alice_01_pruning.ipynb -> alice, else its folder)")
    p_check.add_argument("--out", help="output folder (default runs/check-<timestamp>/)")
    p_check.add_argument("--cell-timeout", type=positive_seconds, default=300,
                         help="seconds one check may run (default 300)")
    p_check.set_defaults(func=_cmd_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ValueError as err:
        print(f"compresslab: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
