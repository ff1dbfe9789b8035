"""Strategies and oracles shared by the fuzz test and longer fuzz runs (tests/fuzz_run.py).

Configs: every registered technique's config (from the registry, so a new technique is fuzzed without
being listed here) and the configs nested in them; each field gets junk values (unknown layer names
among them) on top of the technique's own example config; construction must either accept the value
or raise ValueError/TypeError naming `Class.field` (nested fields with their path), and an accepted
config runs through its verb on the example model with a clean error or a finite model. Files: a
valid Deep Compression file is mutated (bytes, metadata values, header, length) and its CRC
recomputed; loading must raise ValueError or give exactly the saved model. A packed weight file is
mutated (bytes, header entries, header length, size); reading and loading it must raise ValueError
or give finite weights of the model's shapes.
"""

from __future__ import annotations

import dataclasses
import json
import linecache
import math
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import torch
from filefuzz import ARCH, assemble, recrc, split
from hypothesis import strategies as st

import compresslab
from compresslab.core import models, training
from compresslab.core.energy import OpEnergy
from compresslab.core.training import TrainConfig
from compresslab.deploy.monitor import DriftConfig
from compresslab.deploy.pt2e import Int8Config
from compresslab.techniques import registry
from compresslab.techniques.deepcompression import EncodeConfig
from compresslab.techniques.lowrank import LowRankConfig
from compresslab.techniques.pruning import PruneConfig
from compresslab.techniques.quantization import QuantConfig

TECHNIQUES = {t.config: t for t in registry.techniques().values()}  # config class -> its registered technique
NESTED = (TrainConfig, EncodeConfig, DriftConfig, OpEnergy)  # configs inside those or used on their own
CONFIGS = tuple(dict.fromkeys([*TECHNIQUES, *NESTED]))

# fields that exclude each other: fuzzing one clears the others on the example config
ALONE = {LowRankConfig: ("rank", "energy", "param_ratio")}
SLOW = (Int8Config,)  # torch.export + PT2E quantization per call (seconds): fuzzed, not run
LAYER_NAMES = st.sampled_from([{"fc_1": 0.5}, {"fc1": 0.5}, {"fc_1": 4}, {"fc1": 4}, {"fc2": 2}, ("fc_1",), ("fc1",),
                               ("fc1", "fc_1"), {"fc1": 1.0, "fc_1": 1.0}, {"conv1": 3}, ("fc2", "fc1")])

JUNK = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, -1, 2, 3, 17, 2**31, 2**63, 2**64, 10**400]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, 1e308, 5e-324, -0.0, 0.5, 0.999999, 1.0, 1.5, 2.5]),
    st.text(max_size=6), st.sampled_from(["1", "", "sgd", "adam", "layer", "global", "ticket", "linear"]),
    st.lists(st.one_of(st.integers(-3, 70), st.floats(allow_nan=True), st.text(max_size=2)), max_size=4),
    st.tuples(st.integers(-3, 70)),
    st.dictionaries(st.text(max_size=3), st.one_of(st.floats(allow_nan=True), st.integers(-3, 20)), max_size=2),
    st.sampled_from([{}, [], (), object(), b"x", 1j, TrainConfig(), QuantConfig(), PruneConfig()]),
    LAYER_NAMES,
)


def fields(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


@dataclasses.dataclass
class Outcome:
    kind: str  # "error" (clean, names the field), "accepted", "crash" (anything else)
    detail: str = ""


def try_config(cls: type, field: str, value: object) -> tuple[Outcome, object | None]:
    """cls with `field=value`: on the registered technique's example config (its other fields valid,
    the fields that exclude this one cleared), or on the defaults for a nested config."""
    kwargs = {k: None for k in ALONE.get(cls, ()) if field in ALONE[cls]}
    kwargs[field] = value
    try:
        config = dataclasses.replace(TECHNIQUES[cls].example()[1], **kwargs) if cls in TECHNIQUES else cls(**kwargs)
    except (ValueError, TypeError) as err:
        message = str(err)
        if cls.__name__ in message and field in message:
            return Outcome("error"), None
        return Outcome("crash", f"{cls.__name__}.{field}={value!r}: message does not name it: {message}"), None
    except Exception as err:  # noqa: BLE001 - anything else is a crash
        return Outcome("crash", f"{cls.__name__}.{field}={value!r}: {type(err).__name__}: {err}"), None
    return Outcome("accepted"), config


def bad_train_value(field: str, value: object) -> bool:
    """True if TrainConfig rejects `field=value` (used to corrupt a nested config)."""
    try:
        TrainConfig(**{field: value})
    except (ValueError, TypeError):
        return True
    return False


def corrupted(config: object, field: str, value: object) -> object:
    """A copy of a frozen config with one field set after validation (as code that bypasses it would)."""
    copy = dataclasses.replace(config)
    object.__setattr__(copy, field, value)
    return copy


# ----------------------------------------------------------------- file mutations

META_JUNK = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**66), max_value=2**66),
    st.sampled_from([0, 1, -1, 2, 15, 16, 17, 28, 31, 32, 64, 10**8, 10**12, 2**63]),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=4),
    st.lists(st.integers(-2, 10**7), max_size=5), st.just({}), st.just([[[]]]),
)


@st.composite
def mutation(draw, content: bytes):
    """One mutated file from a valid `content`, CRC (and, where it says so, length) made to fit."""
    version, meta, body = split(content)
    kind = draw(st.sampled_from(["bytes", "meta_layer", "meta_other", "header", "resize", "meta_raw"]))
    if kind == "bytes":
        data = bytearray(content[:-4])
        for _ in range(draw(st.integers(1, 4))):
            at = draw(st.integers(0, len(data) - 1))
            data[at] = draw(st.integers(0, 255))
        return kind, recrc(bytes(data))
    if kind == "meta_layer":
        layer = draw(st.integers(0, len(meta["layers"]) - 1))
        index = draw(st.integers(0, len(meta["layers"][layer]) - 1))
        meta["layers"][layer][index] = draw(META_JUNK)
    elif kind == "meta_other":
        key = draw(st.sampled_from(["architecture", "layers", "others", "sha256", "extra"]))
        value = draw(st.one_of(META_JUNK, st.just({"name": "mlp", "kwargs": {"hidden": [10**12]}}),
                               st.just({"name": "mlp", "kwargs": {"hidden": [13]}}),
                               st.just({"name": "lenet300"}), st.just(ARCH)))
        meta[key] = value
    elif kind == "header":
        data = bytearray(content[:-4])
        field = draw(st.sampled_from([(8, "<H"), (10, "<H"), (12, "<I"), (16, "<Q")]))
        struct.pack_into(field[1], data, field[0], draw(st.integers(0, 2 ** (8 * struct.calcsize(field[1])) - 1)))
        return kind, recrc(bytes(data))
    elif kind == "resize":
        cut = draw(st.integers(-len(body), 64))
        new_body = body[:cut] if cut < 0 else body + bytes(draw(st.binary(min_size=cut, max_size=cut)))
        raw = content[24:24 + len(content) - 28 - len(body)]
        return kind, assemble(raw, new_body, version)
    else:
        text = json.dumps(meta, separators=(",", ":"))
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.text(max_size=3)) + text[at + draw(st.integers(0, 3)):]
        raw = zlib.compress(text.encode("utf-8", "surrogatepass"))
        return kind, assemble(raw, body, version)
    raw = zlib.compress(json.dumps(meta, separators=(",", ":")).encode())
    return kind, assemble(raw, body, version)


# ----------------------------------------------------------------- oracles: clean errors, finite results

PACKAGE = str(Path(compresslab.__file__).parent)


def clean_error(err: BaseException) -> bool:
    """ValueError/TypeError from an explicit `raise` in the package (its last frame is a raise statement
    in compresslab/): not one from inside torch or numpy, nor Python's own complaint about an operand."""
    if not isinstance(err, (ValueError, TypeError)):
        return False
    tb = err.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    filename = tb.tb_frame.f_code.co_filename
    if not filename.startswith(PACKAGE):
        return False
    lines = [linecache.getline(filename, n).strip() for n in range(max(1, tb.tb_lineno - 2), tb.tb_lineno + 1)]
    return any(line.startswith("raise") for line in lines)


def non_finite(result: object) -> bool:
    """True if any floating-point number in `result` (tensors, arrays, floats, nested) is NaN or inf."""
    if isinstance(result, torch.Tensor):
        return result.is_floating_point() and not bool(torch.isfinite(result).all())
    if isinstance(result, np.ndarray):
        return result.dtype.kind == "f" and not bool(np.isfinite(result).all())
    if isinstance(result, float):
        return not math.isfinite(result)
    if isinstance(result, dict):
        return any(non_finite(v) for v in result.values())
    if isinstance(result, (list, tuple)):
        return any(non_finite(v) for v in result)
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        return any(non_finite(getattr(result, f.name)) for f in dataclasses.fields(result))
    return False


# ----------------------------------------------------------------- running an accepted config

CAPS = {"calibration": 64, "calibration_size": 64, "calibration_batch": 64, "levels": 2, "iterations": 2, "iters": 30}


def shortened(config: object) -> object:
    """`config` with every TrainConfig inside it cut to one step and calibration, levels, iterations
    and k-means iterations capped (CAPS): the same code paths in a fraction of the time."""
    changes = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if isinstance(value, TrainConfig):
            changes[f.name] = dataclasses.replace(value, epochs=min(value.epochs, 0.01))
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            changes[f.name] = shortened(value)
        elif f.name in CAPS and type(value) is int:
            changes[f.name] = min(value, CAPS[f.name])
    return dataclasses.replace(config, **changes)


def use(config: object, data) -> str:
    """Run an accepted config: a TrainConfig trains a step, a technique's config runs its registered
    verb on the technique's example model. Returns "ran", "clean error", "not run" (SLOW or a nested
    config), "silent NaN: ..." (non-finite weights without a warning) or "crash: ...". """
    if isinstance(config, SLOW):
        return "not run"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if isinstance(config, TrainConfig):
                model = models.create("mlp", hidden=[8])
                training.train(model, data, dataclasses.replace(config, epochs=min(config.epochs, 0.01)), progress=False)
            elif type(config) in TECHNIQUES:
                technique = TECHNIQUES[type(config)]
                model, _, kwargs = technique.example()
                model, _ = technique.apply(model, shortened(config), data, **kwargs)
            else:
                return "not run"
        except Exception as err:  # noqa: BLE001 - classified
            if clean_error(err):
                return "clean error"
            return f"crash: {type(config).__name__}: {type(err).__name__}: {str(err)[:200]}"
    if any(non_finite(p.detach()) for p in model.parameters()) and not caught:
        return f"silent NaN: {type(config).__name__} gave non-finite weights without a warning"
    return "ran"


# ----------------------------------------------------------------- packed weight files

@st.composite
def packed_mutation(draw, content: bytes):
    """One mutated packed weight file (magic, 4-byte header length, JSON header, blobs) from `content`."""
    (n,) = struct.unpack("<I", content[5:9])
    header, blobs = json.loads(content[9:9 + n]), content[9 + n:]
    kind = draw(st.sampled_from(["bytes", "entry", "header", "header_len", "resize"]))
    if kind == "bytes":
        data = bytearray(content)
        for _ in range(draw(st.integers(1, 4))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        return kind, bytes(data)
    if kind == "header_len":
        return kind, content[:5] + struct.pack("<I", draw(st.integers(0, 2**32 - 1))) + content[9:]
    if kind == "resize":
        cut = draw(st.integers(-len(content), 64))
        return kind, content[:cut] if cut < 0 else content + bytes(draw(st.binary(min_size=cut, max_size=cut)))
    if kind == "entry":
        entry = header[draw(st.integers(0, len(header) - 1))]
        key = draw(st.sampled_from(sorted(entry) + ["extra"]))
        entry[key] = draw(st.one_of(META_JUNK, st.sampled_from(["int3", "fp32", "binary", "int4", "fc1", "fc_1"]),
                                    st.lists(st.integers(-2, 300), min_size=4, max_size=4)))
        if draw(st.booleans()):
            entry.pop(draw(st.sampled_from(sorted(entry))))
    else:
        header = draw(st.sampled_from([[], {}, None, 7, "x", [header[0]], header + header[:1], header[::-1]]))
    head = json.dumps(header).encode()
    return kind, content[:5] + struct.pack("<I", len(head)) + head + blobs
