"""A longer fuzz run than the suite's (not collected by pytest): counts per outcome.

    OMP_NUM_THREADS=1 python tests/fuzz_run.py --configs 20000 --files 20000 --primitives 20000 --packed 20000

Configs (every registered technique's config and the nested ones, fuzzing.CONFIGS): tried / clean
error (ValueError or TypeError naming Class.field) / accepted, then ran / clean error / not run
(SLOW or nested) when the accepted config goes through its verb / crash (any other exception, a
message not naming the field, an error from inside torch in the verb, non-finite weights without a
warning) / hang (over 10 s). Files: tried / clean error (ValueError) / accepted (identical model) /
wrong model / crash / hang. Primitives: clean error / finite result / crash / silent non-finite /
hang (primfuzz). Packed files: clean error / accepted (finite weights) / crash / silent non-finite / hang.
"""

from __future__ import annotations

import argparse
import collections
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
from filefuzz import file_bytes, packed_bytes, shared_model, sparse_vd_bytes  # noqa: E402
from fuzzing import CONFIGS, JUNK, clean_error, fields, mutation, packed_mutation, try_config, use  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from primfuzz import _show, primitive_case, try_primitive  # noqa: E402

from compresslab.core import models  # noqa: E402
from compresslab.techniques import compressedfile as cf  # noqa: E402
from compresslab.techniques import packedfile as pf  # noqa: E402


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang()


DATA = make_tiny_dataset(64, 32, 0)


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
                result = use(config, DATA)
                counts[f"accepted, then {result.split(':')[0]}"] += 1
                if result.startswith(("crash", "silent")):
                    outcome.kind, outcome.detail = "crash", f"{cls.__name__}.{field}={value!r} in use: {result}"
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


def run_files(n: int, sparse: bool = False) -> collections.Counter:
    """Mutated Deep Compression files; sparse: a 99% sparse model written as sparse VD writes it."""
    model = shared_model(seed=1, k=5, density=0.01) if sparse else shared_model()
    content = sparse_vd_bytes(model) if sparse else file_bytes(model)
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


def run_primitives(n: int) -> collections.Counter:
    counts: collections.Counter = collections.Counter()
    problems: list[str] = []
    per_primitive: collections.Counter = collections.Counter()

    @settings(max_examples=n, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(case=primitive_case())
    def one(case):
        prim, arg, value = case
        counts["tried"] += 1
        per_primitive[prim.name] += 1
        signal.alarm(10)
        try:
            kind, detail = try_primitive(prim, arg, value)
        except Hang:
            kind, detail = "hang", f"hang: {prim.name}({arg}={_show(value)})"
        finally:
            signal.alarm(0)
        counts[kind] += 1
        if detail:
            problems.append(detail)

    one()
    print(f"   {len(per_primitive)} primitives, {min(per_primitive.values())} to {max(per_primitive.values())} cases each")
    for line in problems[:20]:
        print("  ", line)
    return counts


def run_packed(n: int) -> collections.Counter:
    model = models.create("mlp", hidden=[6])
    contents = {kind: packed_bytes(model, kind, sparse=kind == "int8") for kind in pf.KINDS}
    counts: collections.Counter = collections.Counter()
    problems: list[str] = []
    path = Path(tempfile.gettempdir()) / f"compresslab-fuzz-{os.getpid()}.pk"

    @settings(max_examples=n, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(kind=st.sampled_from(sorted(contents)), data=st.data())
    def one(kind, data):
        how, mutated = data.draw(packed_mutation(contents[kind]))
        counts["tried"] += 1
        path.write_bytes(mutated)
        signal.alarm(5)
        try:
            loaded = pf.unpack_into(models.create("mlp", hidden=[6]), pf.read(path))
        except ValueError as err:
            if clean_error(err):
                counts["clean error"] += 1
            else:
                counts["crash"] += 1
                problems.append(f"crash: {kind} {how}: {err!r}"[:300])
            return
        except Hang:
            counts["hang"] += 1
            problems.append(f"hang: {kind} {how}")
            return
        except Exception as err:  # noqa: BLE001
            counts["crash"] += 1
            problems.append(f"crash: {kind} {how}: {err!r}"[:300])
            return
        finally:
            signal.alarm(0)
        if all(torch.isfinite(p).all() for p in loaded.parameters()):
            counts["accepted (finite weights)"] += 1
        else:
            counts["silent non-finite"] += 1
            problems.append(f"silent non-finite: {kind} {how}")

    one()
    path.unlink(missing_ok=True)
    for line in problems[:20]:
        print("  ", line)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--configs", type=int, default=2000)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--primitives", type=int, default=2000)
    parser.add_argument("--packed", type=int, default=2000)
    args = parser.parse_args()
    signal.signal(signal.SIGALRM, _alarm)
    print(f"config classes ({len(CONFIGS)}): {', '.join(c.__name__ for c in CONFIGS)}")
    for name, run, n in (("configs", run_configs, args.configs), ("files", run_files, args.files),
                         ("sparse VD files", lambda n: run_files(n, sparse=True), args.files),
                         ("primitives", run_primitives, args.primitives), ("packed files", run_packed, args.packed)):
        start = time.perf_counter()
        counts = run(n)
        print(f"{name}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
              + f"  ({time.perf_counter() - start:.0f} s, peak RSS "
              f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB)")


if __name__ == "__main__":
    main()
