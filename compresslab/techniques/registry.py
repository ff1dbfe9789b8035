"""The technique registry: every technique is registered once, at the end of its own module, and
everything that lists techniques is derived from it:

- the recipe verbs of `combine.recipes` (`verbs()`: a verb name, its step config and its `step`);
- the runner's parameter declarations (`notebook_specs()`: the notebook a technique owns);
- the contract test's cases (`Technique.example`: a tiny model, a config and the verb's keywords);
- the exercises' reference implementations (`references()`).

    register(Technique(name="pruning", apply=apply_pruning, config=PruneConfig, example=...,
                       verb="prune", step=..., notebook="01_magnitude_pruning", params={...},
                       references={"magnitude_mask": magnitude_mask}))

`techniques()` imports every module of the packages in `PACKAGES` once (so a new module registers
itself without being listed anywhere) and returns the registry by name. The packages are named, not
imported, here: the deploy layer registers its INT8 technique the same way.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from torch import nn

from compresslab.core import models
from compresslab.core.params import Param
from compresslab.core.training import TrainConfig

__all__ = ["Technique", "StepContext", "PACKAGES", "TINY_TRAIN", "tiny_mlp", "register", "techniques", "verbs",
           "notebook_specs", "references"]

TINY_TRAIN = TrainConfig(epochs=1, batch_size=64, lr=0.05)  # the contract examples' training: one short epoch


def tiny_mlp(seed: int = 0, hidden: tuple[int, ...] = (32,)) -> nn.Module:
    """The contract examples' model: an MLP on 784 inputs with 10 classes, seeded."""
    import torch

    torch.manual_seed(seed)
    return models.create("mlp", hidden=hidden)

PACKAGES = ("compresslab.techniques", "compresslab.deploy")


@dataclass(frozen=True)
class StepContext:
    """What a recipe step may use besides its model, config and data: the recipe's starting (dense)
    model, its name, the path of the file it writes (techniques with `writes_file`; None: in
    memory only), the progress switch, and a distillation teacher's settings
    (teacher_temperature None: no teacher)."""

    dense: nn.Module
    recipe: str = "recipe"
    file: Path | None = None
    progress: bool | None = None
    teacher_temperature: float | None = None
    teacher_alpha: float = 0.9


@dataclass(frozen=True)
class Technique:
    """One technique.

    name: unique (e.g. "pruning"); apply: its verb `apply_<technique>(model, config, data=None, *,
    inplace, progress, loss_fn, ...) -> (model, Report)`; config: the verb's config class;
    example: () -> (model, config, keywords), a tiny case (MLP on 784 inputs, 10 classes) the
    contract tests run; verb / step / step_config: its name in recipes, and
    step(model, step_config, data, context) -> (model, Report) (default: apply, then nothing);
    teacher: whether a recipe step may train it with the distillation loss (context.teacher_*);
    writes_file: the suffix of the file a step writes (context.file); such a step must be last;
    notebook / params: a notebook and the parameters of it this technique declares;
    references: exercise name -> the package function that is its reference answer;
    frontier: (arch, epochs, seed) -> the recipes it adds to notebook 08's frontier, each a dict
    {"name", "steps": [(verb, config), ...], "precision", "family", "sparse"} (see
    `combine.catalogue`)."""

    name: str
    apply: Callable
    config: type
    example: Callable[[], tuple[nn.Module, object, dict]]
    verb: str | None = None
    step: Callable | None = None
    step_config: type | None = None
    teacher: bool = False
    writes_file: str | None = None
    notebook: str | None = None
    params: Mapping[str, Param] = field(default_factory=dict)
    references: Mapping[str, Callable] = field(default_factory=dict)
    frontier: Callable[[str, float, int], list[dict]] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(f"Technique.name={self.name!r} must be an identifier")
        if not callable(self.apply) or not self.apply.__name__.startswith("apply_"):
            raise ValueError(f"Technique {self.name!r}: apply must be an apply_<technique> function")
        if not isinstance(self.config, type):
            raise ValueError(f"Technique {self.name!r}: config must be a class, got {self.config!r}")
        if (self.notebook is None) != (not self.params):
            raise ValueError(f"Technique {self.name!r}: notebook and params go together")
        if self.step is not None and self.verb is None:
            raise ValueError(f"Technique {self.name!r}: a step needs a verb name")
        for name, p in self.params.items():
            if not isinstance(p, Param):
                raise ValueError(f"Technique {self.name!r}: params[{name!r}] must be a Param, got {p!r}")

    @property
    def recipe_config(self) -> type:
        """The config class a recipe step of this verb carries."""
        return self.step_config or self.config

    def run_step(self, model: nn.Module, config: object, data, context: StepContext):
        """One recipe step: `step` if given, else `apply` with the context's progress switch."""
        if self.step is not None:
            return self.step(model, config, data, context)
        return self.apply(model, config, data, progress=context.progress)


_REGISTRY: dict[str, Technique] = {}
_LOADED: list[bool] = []


def register(technique: Technique) -> Technique:
    """Add `technique`; a second technique with the same name, verb or exercise name is refused
    (re-registering the identical verb, as a module reload does, replaces it). Several techniques may
    declare parameters of one notebook (AdaRound adds its knobs to notebook 03's); a parameter two of
    them declare must be declared alike."""
    if not isinstance(technique, Technique):
        raise TypeError(f"register takes a Technique, got {type(technique).__name__}")
    for other in _REGISTRY.values():
        if other.name == technique.name and other.apply.__qualname__ == technique.apply.__qualname__:
            continue
        clash = [what for what, a, b in (("name", other.name, technique.name), ("verb", other.verb, technique.verb))
                 if a is not None and a == b]
        if other.notebook is not None and other.notebook == technique.notebook:
            clash += [f"notebook {other.notebook!r} parameter {n!r} declared differently"
                      for n in set(other.params) & set(technique.params) if other.params[n] != technique.params[n]]
        clash += [f"exercise {n!r}" for n in set(other.references) & set(technique.references)]
        if clash:
            raise ValueError(f"Technique {technique.name!r} clashes with {other.name!r}: same {', '.join(clash)}")
    _REGISTRY[technique.name] = technique
    return technique


def techniques() -> Mapping[str, Technique]:
    """Every registered technique by name, after importing each module of PACKAGES once."""
    if not _LOADED:
        for package_name in PACKAGES:
            package = importlib.import_module(package_name)
            for info in pkgutil.iter_modules(package.__path__):
                importlib.import_module(f"{package_name}.{info.name}")
        _LOADED.append(True)
    return MappingProxyType(_REGISTRY)


def verbs() -> dict[str, Technique]:
    """Recipe verb name -> technique, for the techniques that can be a recipe step."""
    return {t.verb: t for t in techniques().values() if t.verb is not None}


def notebook_specs() -> dict[str, dict[str, Param]]:
    """Notebook stem -> its declared parameters (those of every technique declaring that notebook, in
    registration order), in notebook order."""
    specs: dict[str, dict[str, Param]] = {}
    for t in techniques().values():
        if t.notebook is not None:
            specs.setdefault(t.notebook, {}).update(t.params)
    return dict(sorted(specs.items()))


def references() -> dict[str, Callable]:
    """Exercise name -> the package function that is its reference answer."""
    return {name: fn for t in techniques().values() for name, fn in t.references.items()}
