"""Accuracy-aware tuning from different starting settings, over seeds: LeNet-5 on Fashion-MNIST with
notebook 11's recipe (5,000 validation images carved from training, the cached baseline), the same
sensitivity order (each layer's output KL at the start setting) and the 0.3-point floor.

    OMP_NUM_THREADS=1 python benchmarks/bench_tuning.py --seeds 0 1 2 --starts int4 int3 int2

Prints, per seed and start: the final configuration, the evaluations, whether the floor holds on the
validation images, its share of uniform INT8's layer bytes, and the test accuracy (percent).
"""

from __future__ import annotations

import argparse

from compresslab.core import latency, profiles, training
from compresslab.techniques import mixedprecision as MP
from compresslab.techniques import sensitivity as S


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--starts", nargs="+", default=["int4", "int3", "int2"], choices=S.QUANT_OPTIONS)
    parser.add_argument("--max-drop", type=float, default=0.3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    latency.set_threads(args.threads)
    for seed in args.seeds:
        run = profiles.start("full", "fashion_mnist", seed, full={"val_size": 5000})
        fp32 = profiles.baseline_for("lenet5", run, epochs=15, progress=False).model.eval()
        weights = S.option_weights(fp32, S.QUANT_OPTIONS)
        scores: dict[str, dict[str, float]] = {}
        for row in S.measure(fp32, run.data.val, S.QUANT_OPTIONS, weights=weights):
            scores.setdefault(row["layer"], {})[row["option"]] = row["kl"]
        costs = MP.layer_bytes(fp32)
        int8_bytes = MP.total(costs, dict.fromkeys(costs, "int8"))
        reference = training.evaluate(fp32, run.data.val).accuracy

        def val_accuracy(config: dict, fp32=fp32, weights=weights, run=run) -> float:
            return training.evaluate(S.with_options(fp32, config, weights=weights), run.data.val).accuracy

        for start in args.starts:
            order = sorted(scores, key=lambda n, start=start: -scores[n][start])
            tuning = MP.accuracy_aware(val_accuracy, dict.fromkeys(scores, start), order, "int8", reference,
                                       args.max_drop)
            test = training.evaluate(S.with_options(fp32, tuning.config, weights=weights), run.data.test).accuracy
            print(f"seed {seed} start {start}: {tuning.config}; {tuning.evaluations} evaluations; floor met "
                  f"{tuning.met} (drop {reference - tuning.accuracy:.2f} points); "
                  f"{MP.total(costs, tuning.config) / int8_bytes:.3f} of INT8's bytes; test {test:.2f}%", flush=True)


if __name__ == "__main__":
    main()
