"""How well a per-layer latency table predicts end-to-end latency: LeNet-5 and LeNet-300-100 on ONNX Runtime
(fp32 / int8 / int4 per layer) and OpenVINO (fp32 / int8 per layer), at batch 1 and 256.

For each model, runtime and batch size: measure the table (`layertable.measure_table`: the all-FP32 model,
every single-layer variant and every adjacent-pair variant, timed in interleaved rounds), then `--configs`
random per-layer configs (seeded; every layer's option drawn uniformly from what it can take) timed end to
end in interleaved rounds (`measure_configs`), and compare, side by side on the same configs, the additive
prediction (base + deltas: `table.without_pairs()`) and the pairwise one (+ adjacent-pair interactions):
relative error (predicted - measured) / measured, the fraction within 15%, the median and p90 of |error|.
Also written: how long each phase took (export and quantization per single and per pair variant and per
config, timing, the timing's share spent on pair variants), the CPU's flags, the thread count, the
per-layer deltas and pair interactions; and, per model and runtime, the layers whose fastest option
differs between batch 1 and batch 256.
Weights are random (seeded): latency does not depend on them.

    OMP_NUM_THREADS=1 python benchmarks/bench_layertable.py --threads 1 --out layertable.json
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch

from compresslab.core import io, models
from compresslab.deploy import layerexport, layertable
from compresslab.deploy.bench import cpu_features, thread_settings


def random_configs(options: dict[str, tuple[str, ...]], n: int, seed: int) -> list[dict[str, str]]:
    """`n` configs, each layer's option drawn uniformly from its options (seeded)."""
    rng = random.Random(seed)
    return [{layer: rng.choice(opts) for layer, opts in options.items()} for _ in range(n)]


def quantile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def summary(errors: list[float]) -> dict:
    absolute = [abs(e) for e in errors]
    return {"within_15pct": sum(a <= 0.15 for a in absolute) / len(absolute),
            "median_abs_error": statistics.median(absolute), "p90_abs_error": quantile(absolute, 0.9),
            "mean_error": statistics.fmean(errors)}


def one_case(model, name, runtime, batch, args, workdir) -> dict:
    example = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    calibration = torch.rand(args.calibration, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    start = time.perf_counter()
    table, _ = layertable.measure_table(model, runtime, batch, example, calibration, workdir, threads=args.threads,
                                        rounds=args.rounds, repeats=args.repeats)
    table_s = time.perf_counter() - start
    configs = random_configs(layerexport.layer_options(model, runtime), args.configs, args.seed)
    inner = layertable.default_timer(example.shape[1:], args.threads, args.rounds, args.repeats)
    spent = {}

    def timer(variants, batch_size):
        t0 = time.perf_counter()
        out = inner(variants, batch_size)
        spent["timing"] = time.perf_counter() - t0
        return out

    start = time.perf_counter()
    measured = layertable.measure_configs(model, runtime, configs, batch, example, calibration, workdir,
                                          threads=args.threads, timer=timer)
    configs_s = time.perf_counter() - start
    additive = table.without_pairs()
    errors = layertable.prediction_errors(table, configs, measured)
    additive_errors = layertable.prediction_errors(additive, configs, measured)
    unique = len({layerexport.config_slug(layerexport.full_config(model, runtime, c)) for c in configs})
    exports = dict(table.export_seconds)
    singles = [v for k, v in exports.items() if k != layertable.BASE and "," not in k]
    pairs = [v for k, v in exports.items() if "," in k]
    return {
        "model": name, "runtime": runtime, "batch": batch, "table": table.to_dict(),
        "configs": configs, "measured": [m.to_dict() for m in measured],
        "predicted_ms": [table.predict(c) for c in configs], "errors": errors,
        "additive_predicted_ms": [additive.predict(c) for c in configs], "additive_errors": additive_errors,
        "summary": {"pairwise": summary(errors), "additive": summary(additive_errors),
                    "n_configs": len(configs), "unique_configs": unique,
                    "single_variants": len(singles), "pair_variants": len(pairs)},
        "seconds": {"table_total": table_s, "table_timing": table.timing_seconds,
                    "table_timing_pair_share": table.timing_seconds * len(pairs) / len(exports),
                    "table_export_first_fp32": exports.get(layertable.BASE, 0.0),
                    "table_export_per_variant_median": statistics.median(singles),
                    "table_export_pairs_total": sum(pairs),
                    "table_export_per_pair_median": statistics.median(pairs) if pairs else 0.0,
                    "configs_total": configs_s, "configs_timing": spent.get("timing", 0.0),
                    "configs_export_per_config": (configs_s - spent.get("timing", 0.0)) / unique},
    }


def best_options(table: dict) -> dict[str, str]:
    return {layer: min(row, key=row.get) for layer, row in table["delta_ms"].items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("layertable.json"))
    parser.add_argument("--models", nargs="+", default=["lenet5", "lenet300"])
    parser.add_argument("--runtimes", nargs="+", default=["onnxruntime", "openvino"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 256])
    parser.add_argument("--configs", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--calibration", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    threads = thread_settings(args.threads)
    cases = []
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models:
            torch.manual_seed(args.seed)
            model = models.create(name).eval()
            for runtime in args.runtimes:
                for batch in args.batches:
                    case = one_case(model, name, runtime, batch, args, Path(folder))
                    cases.append(case)
                    s, t = case["summary"], case["seconds"]
                    print(f"{name:9} {runtime:12} b{batch:<4} base {case['table']['base_ms']:.4f} ms  "
                          f"{s['single_variants']} single + {s['pair_variants']} pair variants, table "
                          f"{t['table_total']:.1f} s (pair exports {t['table_export_pairs_total']:.1f} s, timing "
                          f"{t['table_timing']:.1f} s of which pairs ~{t['table_timing_pair_share']:.1f} s)  "
                          f"configs {t['configs_total']:.1f} s  load {os.getloadavg()[0]:.2f}", flush=True)
                    for kind in ("additive", "pairwise"):
                        k = s[kind]
                        print(f"    {kind:8} within 15%: {k['within_15pct']:4.0%}  |err| median "
                              f"{k['median_abs_error']:.3f} p90 {k['p90_abs_error']:.3f}  mean err "
                              f"{k['mean_error']:+.3f}", flush=True)
                    for layer, row in case["table"]["delta_ms"].items():
                        print(f"    {layer:6} " + "  ".join(f"{o} {d:+.4f}" for o, d in row.items()))
                    for pair, row in case["table"]["pair_ms"].items():
                        print(f"    {pair:10} " + "  ".join(f"{o} {d:+.4f}" for o, d in row.items()))
    flips = []
    for name in args.models:
        for runtime in args.runtimes:
            tables = {c["batch"]: c["table"] for c in cases if c["model"] == name and c["runtime"] == runtime}
            if 1 in tables and 256 in tables:
                b1, b256 = best_options(tables[1]), best_options(tables[256])
                for layer in b1:
                    if b1[layer] != b256[layer]:
                        flips.append({"model": name, "runtime": runtime, "layer": layer, "best_b1": b1[layer],
                                      "best_b256": b256[layer], "delta_b1": tables[1]["delta_ms"][layer],
                                      "delta_b256": tables[256]["delta_ms"][layer]})
    for f in flips:
        print(f"fastest option differs: {f['model']} {f['runtime']} {f['layer']}: batch 1 {f['best_b1']} "
              f"{f['delta_b1']}, batch 256 {f['best_b256']} {f['delta_b256']}")
    io.write_json_atomic(args.out, {"cpu": cpu_features(), "threads": threads, "args": {
        k: v for k, v in vars(args).items() if k != "out"}, "cases": cases, "batch_flips": flips})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
