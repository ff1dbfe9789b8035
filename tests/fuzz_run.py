"""A longer fuzz run than the suite's (not collected by pytest): counts per outcome.

    OMP_NUM_THREADS=1 python tests/fuzz_run.py --configs 5000 --files 5000

Configs: tried / clean error (ValueError or TypeError naming Class.field) / accepted / crash (any
other exception, a message not naming the field, or an error inside torch when an accepted config
is used on a tiny model and data) / hang (over 10 s). Files: tried / clean error (ValueError) /
accepted (identical model) / wrong model / crash / hang.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import os
import resource
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch  # noqa: E402
from conftest import make_tiny_dataset  # noqa: E402
from filefuzz import file_bytes, shared_model  # noqa: E402
from fuzzing import CONFIGS, JUNK, fields, mutation, try_config  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from compresslab.core import models, training  # noqa: E402
from compresslab.core.training import TrainConfig  # noqa: E402
from compresslab.techniques import compressedfile as cf  # noqa: E402
from compresslab.techniques.lowrank import LowRankConfig, apply_lowrank  # noqa: E402
from compresslab.techniques.pruning import PruneConfig, apply_pruning  # noqa: E402
from compresslab.techniques.quantization import QuantConfig, apply_ptq  # noqa: E402
from compresslab.techniques.sharing import ShareConfig, apply_sharing  # noqa: E402


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang()


DATA = make_tiny_dataset(64, 32, 0)


def _short(config: TrainConfig | None) -> TrainConfig | None:
    return None if config is None else dataclasses.replace(config, epochs=min(config.epochs, 0.01))


def use(config: object) -> None:
    """Run an accepted config for one step on a tiny model (errors inside torch surface here)."""
    model = models.create("mlp", hidden=[8])
    if isinstance(config, TrainConfig):
        training.train(model, DATA, _short(config), progress=False)
    elif isinstance(config, PruneConfig):
        layer = {n: v for n, v in (config.layer_sparsity or {}).items()}
        if layer and set(layer) - {"fc1", "fc2"}:
            return  # unknown layer names are the verb's clean error, not the config's
        apply_pruning(model, dataclasses.replace(config, finetune=_short(config.finetune)), DATA)
    elif isinstance(config, ShareConfig):
        apply_sharing(model, dataclasses.replace(config, finetune=_short(config.finetune), layer_bits=None,
                                                 layers=None), DATA)
    elif isinstance(config, QuantConfig):
        apply_ptq(model, dataclasses.replace(config, calibration_size=min(config.calibration_size, 64)), DATA)
    elif isinstance(config, LowRankConfig) and config.layers is None and not isinstance(config.rank, dict):
        apply_lowrank(model, dataclasses.replace(config, finetune=_short(config.finetune)), DATA)


def run_configs(n: int) -> collections.Counter:
    counts: collections.Counter = collections.Counter()
    crashes: list[str] = []

    @settings(max_examples=n, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(target=st.sampled_from([(c, f) for c in CONFIGS for f in fields(c)]), value=JUNK)
    def one(target, value):
        cls, field = target
        counts["tried"] += 1
        signal.alarm(10)
        try:
            outcome, config = try_config(cls, field, value)
            if outcome.kind == "accepted":
                try:
                    use(config)
                except ValueError:
                    pass  # a clean error of the verb (e.g. a rank above the layer's)
                except Hang:
                    raise
                except Exception as err:  # noqa: BLE001
                    outcome.kind, outcome.detail = "crash", f"{cls.__name__}.{field}={value!r} in use: {err!r}"
        except Hang:
            counts["hang"] += 1
            crashes.append(f"hang: {cls.__name__}.{field}={value!r}")
            return
        finally:
            signal.alarm(0)
        counts[{"error": "clean error", "accepted": "accepted", "crash": "crash"}[outcome.kind]] += 1
        if outcome.kind == "crash":
            crashes.append(outcome.detail)

    one()
    for line in crashes[:20]:
        print("  ", line)
    return counts


def run_files(n: int) -> collections.Counter:
    model = shared_model()
    content = file_bytes(model)
    expected = model.state_dict()
    counts: collections.Counter = collections.Counter()
    problems: list[str] = []
    path = Path(tempfile.gettempdir()) / f"compresslab-fuzz-{os.getpid()}.dc"

    @settings(max_examples=n, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def one(data):
        kind, mutated = data.draw(mutation(content))
        counts["tried"] += 1
        path.write_bytes(mutated)
        signal.alarm(5)
        try:
            loaded = cf.load(path)
        except ValueError:
            counts["clean error"] += 1
            return
        except Hang:
            counts["hang"] += 1
            problems.append(f"hang: {kind}")
            return
        except Exception as err:  # noqa: BLE001
            counts["crash"] += 1
            problems.append(f"crash: {kind}: {err!r}"[:300])
            return
        finally:
            signal.alarm(0)
        got = loaded.state_dict()
        if got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in expected):
            counts["accepted (identical)"] += 1
        else:
            counts["wrong model"] += 1
            problems.append(f"wrong model: {kind}")

    one()
    path.unlink(missing_ok=True)
    for line in problems[:20]:
        print("  ", line)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--configs", type=int, default=2000)
    parser.add_argument("--files", type=int, default=2000)
    args = parser.parse_args()
    signal.signal(signal.SIGALRM, _alarm)
    for name, run, n in (("configs", run_configs, args.configs), ("files", run_files, args.files)):
        start = time.perf_counter()
        counts = run(n)
        print(f"{name}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
              + f"  ({time.perf_counter() - start:.0f} s, peak RSS "
              f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB)")


if __name__ == "__main__":
    main()
