"""Notebook parameters: the declared type and allowed values of one parameter (`Param`), and the
kinds every notebook shares (profile, dataset, seed, epochs, fractions, temperatures, bit widths).

Each notebook's parameters are declared once, with the technique that owns the notebook
(`techniques.registry`); `compresslab run` checks a run's values against them before executing
anything, and `compresslab list` shows them.
"""

from __future__ import annotations

from dataclasses import dataclass

from compresslab.core.data import DATASETS
from compresslab.core.validate import SEED_LIMIT, check_choice, check_float, check_int, show

__all__ = ["Param", "choice", "PROFILE", "DATASET", "SEED", "EPOCHS", "FRACTION", "OPEN_FRACTION", "SHARE",
           "WEIGHT", "TEMPERATURE", "QUANT_BITS", "CODE_BITS"]


@dataclass(frozen=True)
class Param:
    """One parameter: kind int | float | choice | choices (a list of choices) | ints | floats |
    fractions (a dict name -> [0, 1)) | text (a string, e.g. a folder; "" for none),
    bounds lo/hi (open where lo_open/hi_open), choices, whether None is allowed, whether a list may be empty."""

    kind: str
    lo: float | None = None
    hi: float | None = None
    choices: tuple = ()
    optional: bool = False
    lo_open: bool = False
    hi_open: bool = False
    empty_ok: bool = False

    def describe(self) -> str:
        """The allowed values in words, e.g. 'float in (0, 1]' or "one of ('mnist', 'fashion_mnist')"."""
        if self.kind == "text":
            text = "str"
        elif self.kind == "choice":
            text = f"one of {self.choices}"
        elif self.kind == "choices":
            text = f"list of values from {self.choices}"
        else:
            lo = "" if self.lo is None else f"{'(' if self.lo_open else '['}{self.lo}"
            hi = "" if self.hi is None else f"{self.hi}{')' if self.hi_open else ']'}"
            bounds = f" in {lo}, {hi}" if lo and hi else (f" >= {self.lo}" if lo else "")
            text = {"int": "int", "float": "float", "ints": "list of int", "floats": "list of float",
                    "fractions": "dict layer -> float"}[self.kind] + bounds
        return text + (" or None" if self.optional else "")

    def check(self, owner: str, name: str, value: object) -> None:
        """Raise ValueError / TypeError naming `owner.name`, the value and what is allowed."""
        if value is None and self.optional:
            return
        if self.kind == "text":
            if not isinstance(value, str):
                raise TypeError(f"{owner}.{name}={show(value)} must be a {self.describe()}")
        elif self.kind == "choice":
            check_choice(owner, name, value, self.choices)
        elif self.kind == "choices":
            if not isinstance(value, (list, tuple)):
                raise TypeError(f"{owner}.{name}={show(value)} must be a {self.describe()}")
            if not value and not self.empty_ok:
                raise ValueError(f"{owner}.{name}={show(value)} must be a non-empty {self.describe()}")
            for i, v in enumerate(value):
                check_choice(owner, f"{name}[{i}]", v, self.choices)
        elif self.kind in ("int", "float"):
            self._one(owner, name, value, self.kind)
        elif self.kind in ("ints", "floats"):
            if not isinstance(value, (list, tuple)):
                raise TypeError(f"{owner}.{name}={show(value)} must be a {self.describe()}")
            if not value and not self.empty_ok:
                raise ValueError(f"{owner}.{name}={show(value)} must be a non-empty {self.describe()}")
            for i, v in enumerate(value):
                self._one(owner, f"{name}[{i}]", v, self.kind[:-1])
        else:
            if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
                raise TypeError(f"{owner}.{name}={show(value)} must be a {self.describe()}")
            for k, v in value.items():
                self._one(owner, f"{name}[{k!r}]", v, "float")

    def _one(self, owner: str, name: str, value: object, kind: str) -> None:
        if kind == "int":
            check_int(owner, name, value, self.lo, self.hi)
        else:
            check_float(owner, name, value, self.lo, self.hi, self.lo_open, self.hi_open)


def choice(*values: object) -> Param:
    """A parameter that takes one of `values`."""
    return Param("choice", choices=values)


PROFILE = choice("quick", "full")
DATASET = choice(*DATASETS)
SEED = Param("int", 0, SEED_LIMIT - 1)
EPOCHS = Param("float", 0, 1000, lo_open=True)
FRACTION = Param("float", 0, 1, hi_open=True)  # [0, 1)
OPEN_FRACTION = Param("float", 0, 1, lo_open=True, hi_open=True)  # (0, 1)
SHARE = Param("float", 0, 1, lo_open=True)  # (0, 1]
WEIGHT = Param("float", 0, 1)  # [0, 1]
TEMPERATURE = Param("float", 1e-3, 1e4)
QUANT_BITS = Param("int", 2, 16)
CODE_BITS = Param("int", 1, 16)
