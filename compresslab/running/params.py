"""The declared parameters of every notebook, as the runner checks them.

Each notebook's parameters are declared once, with the technique that owns the notebook
(`techniques.registry`, `Technique.params`, of `core.params.Param`). `compresslab run` checks a
run's values against them before executing anything, and `compresslab list` shows them; a test
checks that every parameter of every notebook's parameters cell is declared and that its default
is allowed.
"""

from __future__ import annotations

from collections.abc import Mapping

from compresslab.core.params import Param
from compresslab.techniques.registry import notebook_specs

__all__ = ["spec_for", "check_values"]


def spec_for(notebook: str) -> dict[str, Param]:
    """The declared parameters of a notebook (by file stem); {} for a notebook that declares none."""
    return notebook_specs().get(notebook, {})


def check_values(notebook: str, values: Mapping[str, object]) -> None:
    """Raise ValueError / TypeError for the first value that its declaration does not allow.

    Names without a declaration are left to the runner's unknown-parameter check."""
    spec = spec_for(notebook)
    for name, value in values.items():
        if name in spec:
            spec[name].check(notebook, name, value)
