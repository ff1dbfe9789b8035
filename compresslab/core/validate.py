"""One set of validators for every config: each error names `Class.field`, the value and what is allowed.

A wrong type raises TypeError, a value out of range ValueError. Nested configs report their path:
`check_config("PruneConfig", "finetune", value, TrainConfig)` re-validates the inner config and
turns "TrainConfig.epochs=0 ..." into "PruneConfig.finetune.epochs=0 ...".
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

__all__ = [
    "SEED_LIMIT",
    "show",
    "check_int",
    "check_float",
    "check_choice",
    "check_bool",
    "check_seed",
    "check_bits",
    "check_instance",
    "check_names",
    "check_per_layer",
    "check_layer_names",
    "check_config",
    "nested",
    "check_tensor",
    "check_overflow",
]

SEED_LIMIT = 2**63  # seeds are 0 <= seed < 2**63 (what torch.Generator.manual_seed accepts)


def show(value: object, limit: int = 60) -> str:
    """repr(value), shortened to `limit` characters for error messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _where(owner: str, field: str) -> str:
    return f"{owner}.{field}" if owner else field


def _range(lo: float | None, hi: float | None, lo_open: bool = False, hi_open: bool = False) -> str:
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {lo}"
    if hi is not None:
        return f"{'<' if hi_open else '<='} {hi}"
    return "finite"


def check_int(owner: str, field: str, value: object, lo: int | None = None, hi: int | None = None) -> int:
    """An int (not bool) in [lo, hi] (None = unbounded on that side)."""
    allowed = _range(lo, hi)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{_where(owner, field)}={show(value)} must be an integer {allowed}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ValueError(f"{_where(owner, field)}={show(value)} must be an integer {allowed}")
    return int(value)


def check_float(owner: str, field: str, value: object, lo: float | None = None, hi: float | None = None,
                lo_open: bool = False, hi_open: bool = False, finite: bool = True) -> float:
    """A real number (int or float, not bool), finite unless `finite=False`, inside the given bounds."""
    allowed = _range(lo, hi, lo_open, hi_open)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{_where(owner, field)}={show(value)} must be a number {allowed}")
    x = float(value) if not isinstance(value, numbers.Integral) or abs(value) < 2**1023 else math.inf
    if math.isnan(x) or (finite and math.isinf(x)):
        raise ValueError(f"{_where(owner, field)}={show(value)} must be a finite number {allowed}")
    if lo is not None and (x < lo or (lo_open and x == lo)):
        raise ValueError(f"{_where(owner, field)}={show(value)} must be {allowed}")
    if hi is not None and (x > hi or (hi_open and x == hi)):
        raise ValueError(f"{_where(owner, field)}={show(value)} must be {allowed}")
    return x


def check_choice(owner: str, field: str, value: object, choices: tuple) -> object:
    """`value` is one of `choices` (compared with ==, types must match: 1 is not '1')."""
    if not any(type(value) is type(c) and value == c for c in choices):
        raise ValueError(f"{_where(owner, field)}={show(value)} must be one of {choices}")
    return value


def check_bool(owner: str, field: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{_where(owner, field)}={show(value)} must be True or False")
    return value


def check_seed(owner: str, field: str, value: object) -> int:
    """A seed: an int (not bool) with 0 <= seed < 2**63."""
    return check_int(owner, field, value, 0, SEED_LIMIT - 1)


def check_bits(owner: str, field: str, value: object, lo: int = 1, hi: int = 16) -> int:
    """A bit width: an integer in [lo, hi]."""
    return check_int(owner, field, value, lo, hi)


def check_instance(owner: str, field: str, value: object, cls: type | tuple[type, ...],
                   optional: bool = False) -> object:
    """`value` is an instance of `cls` (or None when optional)."""
    if optional and value is None:
        return value
    if not isinstance(value, cls):
        names = " or ".join(c.__name__ for c in (cls if isinstance(cls, tuple) else (cls,)))
        raise TypeError(f"{_where(owner, field)}={show(value)} must be a {names}" + (" or None" if optional else ""))
    return value


def check_names(owner: str, field: str, value: object, optional: bool = True, allow_empty: bool = False) -> tuple | None:
    """A tuple/list of strings (layer names), returned as a tuple; None when optional."""
    if optional and value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list)) \
            or not all(isinstance(n, str) for n in value):
        raise TypeError(f"{_where(owner, field)}={show(value)} must be a tuple of layer names"
                        + (" or None" if optional else ""))
    if not value and not allow_empty:
        raise ValueError(f"{_where(owner, field)}={show(value)} must name at least one layer")
    return tuple(value)


def check_per_layer(owner: str, field: str, value: object, check_value: Callable[[str, str, object], object],
                    optional: bool = True) -> dict | None:
    """A per-layer mapping {layer name: value}: a non-empty dict with string keys whose values each pass
    `check_value(owner, "field['name']", value)`; None when optional. The names themselves are checked
    against a model by `check_layer_names` when the model is known."""
    if optional and value is None:
        return None
    if not isinstance(value, dict) or not all(isinstance(n, str) for n in value):
        raise TypeError(f"{_where(owner, field)}={show(value)} must be a dict {{layer name: value}}"
                        + (" or None" if optional else ""))
    if not value:
        raise ValueError(f"{_where(owner, field)}={{}} must name at least one layer"
                         + (" (None: the default for every layer)" if optional else ""))
    for name, v in value.items():
        check_value(owner, f"{field}[{name!r}]", v)
    return value


def check_layer_names(owner: str, field: str, names: Iterable[str] | None, layers: Iterable[str]) -> None:
    """Every name in `names` (a tuple of layer names, or a per-layer mapping's keys; None: nothing to
    check) is one of the model's `layers`; an unknown name (a typo such as 'fc_1') raises ValueError
    naming the field, the unknown names and the valid ones."""
    if names is None:
        return
    valid = list(layers)
    unknown = sorted({str(n) for n in names} - set(valid))
    if unknown:
        raise ValueError(f"{_where(owner, field)} names unknown layers {unknown}; the model's layers are {valid}")


@contextmanager
def nested(owner: str, field: str, inner: str) -> Iterator[None]:
    """Re-raise a ValueError/TypeError of the inner config `inner` with the path `owner.field.`.

    "TrainConfig.lr=inf ..." raised inside `with nested("PruneConfig", "finetune", "TrainConfig")`
    becomes "PruneConfig.finetune.lr=inf ..."; other messages get the prefix "PruneConfig.finetune: "."""
    try:
        yield
    except (ValueError, TypeError) as err:
        message, prefix = str(err), f"{inner}."
        path = _where(owner, field)
        message = path + "." + message[len(prefix):] if message.startswith(prefix) else f"{path}: {message}"
        raise type(err)(message) from None


def check_config(owner: str, field: str, value: object, cls: type, optional: bool = False) -> object:
    """A nested config: an instance of `cls` (or None when optional), valid as it stands now.

    Re-runs its validation so that an instance changed after construction is caught too, with the
    error naming the full path (e.g. DeepCompressionConfig.prune.finetune.epochs)."""
    check_instance(owner, field, value, cls, optional)
    if value is not None:
        with nested(owner, field, type(value).__name__):
            value.__post_init__()
    return value


TENSOR_KINDS = {"any": "any dtype", "number": "a real (non-bool) dtype", "float": "a floating-point dtype",
                "int": "an integer dtype"}


def check_tensor(name: str, value: object, allow_empty: bool = False, dim: int | None = None,
                 shape: tuple[int, ...] | None = None, kind: str = "any") -> None:
    """A tensor argument that is non-empty (unless allowed), has `dim` dimensions or exactly `shape`
    when given, a dtype of `kind` (TENSOR_KINDS: any, number, float, int) and, if floating point, is
    all finite."""
    import torch

    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    dtype = value.dtype
    fits = {"any": True, "float": dtype.is_floating_point,
            "number": dtype != torch.bool and not dtype.is_complex,
            "int": not dtype.is_floating_point and not dtype.is_complex and dtype != torch.bool}[kind]
    if not fits:
        raise TypeError(f"{name} must have {TENSOR_KINDS[kind]}, got {dtype}")
    if dim is not None and value.dim() != dim:
        raise ValueError(f"{name} must have {dim} dimension(s), got shape {tuple(value.shape)}")
    if shape is not None and tuple(value.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {tuple(value.shape)}, {tuple(shape)} expected")
    if value.numel() == 0 and not allow_empty:
        raise ValueError(f"{name} is empty (shape {tuple(value.shape)}): nothing to work on")
    if value.is_floating_point() or value.is_complex():
        bad = int((~torch.isfinite(value.detach())).sum())
        if bad:
            raise ValueError(f"{name} has {bad} non-finite value(s) (NaN or inf) of {value.numel()}")


def check_overflow(what: str, value: object) -> None:
    """A result computed from finite inputs is finite too: else ValueError saying that `what`
    overflowed (the inputs are too large for the dtype the computation runs in)."""
    import torch

    if isinstance(value, torch.Tensor) and (value.is_floating_point() or value.is_complex()):
        if not bool(torch.isfinite(value.detach()).all()):
            raise ValueError(f"{what} overflowed to inf or NaN: the inputs are too large for {value.dtype}")
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{what} overflowed to inf or NaN: the inputs are too large for float64")
