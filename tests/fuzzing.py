"""Strategies and oracles shared by the fuzz test and longer fuzz runs (tests/fuzz_run.py).

Configs: each field of each config gets junk values; construction must either accept the value or
raise ValueError/TypeError naming `Class.field` (nested fields with their path). Files: a valid
Deep Compression file is mutated (bytes, metadata values, header, length) and its CRC recomputed;
loading must raise ValueError or give exactly the saved model.
"""

from __future__ import annotations

import dataclasses
import json
import math
import struct
import zlib

from filefuzz import ARCH, assemble, recrc, split
from hypothesis import strategies as st

from compresslab.core.training import TrainConfig
from compresslab.deploy.pt2e import Int8Config
from compresslab.techniques.deepcompression import DeepCompressionConfig, EncodeConfig
from compresslab.techniques.distillation import DistillConfig
from compresslab.techniques.lottery import LotteryConfig
from compresslab.techniques.lowrank import LowRankConfig
from compresslab.techniques.pruning import PruneConfig
from compresslab.techniques.quantization import QATConfig, QuantConfig
from compresslab.techniques.sharing import ShareConfig

CONFIGS = (TrainConfig, PruneConfig, LotteryConfig, QuantConfig, QATConfig, DistillConfig, LowRankConfig,
           ShareConfig, EncodeConfig, DeepCompressionConfig, Int8Config)

# fields that need a partner to be valid at all: the base kwargs used when fuzzing another field
BASE = {LowRankConfig: {"energy": 0.9}}
ALONE = {LowRankConfig: ("rank", "energy", "param_ratio")}

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
)


def fields(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


@dataclasses.dataclass
class Outcome:
    kind: str  # "error" (clean, names the field), "accepted", "crash" (anything else)
    detail: str = ""


def try_config(cls: type, field: str, value: object) -> tuple[Outcome, object | None]:
    """Build cls with `field=value` (plus BASE kwargs when the field needs a partner)."""
    kwargs = {} if field in ALONE.get(cls, ()) else dict(BASE.get(cls, {}))
    kwargs[field] = value
    try:
        config = cls(**kwargs)
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
