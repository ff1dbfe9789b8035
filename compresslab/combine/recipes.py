"""Recipes: techniques chained as a list of the technique verbs, applied to one trained model.

A `Recipe` is a name, a tuple of `Step`s and the precision its final weights are stored and run in
(`packedfile.KINDS`); each step names one verb and carries that verb's config. The verbs are the
registered techniques that have one (`techniques.registry.verbs()`), each with its own step:

    prune            pruning.apply_pruning(PruneConfig), masks folded into the weights
    distill          a fresh student (DistillStep: models.create(student, **student_kwargs)) trained by
                     distillation.apply_distillation(DistillConfig) with the current model as teacher
    lowrank          lowrank.apply_lowrank(LowRankConfig)
    lowbit           lowbit.apply_lowbit(LowBitConfig); teacher_temperature set: trained with the
                     distillation loss, the recipe's starting (dense) model as teacher
    qat              quantization.apply_qat(QATConfig), turned back into plain layers (weights float)
    adaround         adaround.apply_adaround(AdaRoundConfig), turned back into plain layers
    sparsegpt        sparsegpt.apply_sparsegpt(SparseGPTConfig): one-shot pruning of the Linear layers
                     with error compensation on calibration inputs, no retraining
    awq              awq.apply_awq(AWQConfig): activation-aware group-wise weight quantization of the
                     Linear layers (weights on their grid, kept in float)
    deep_compression deepcompression.apply_deep_compression(DeepCompressionConfig), file written

`run_recipe` applies the steps in order and returns the final model, every step's Report, and the
file the last step wrote (if any). Storing and running the result is `combine.points`.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from compresslab.core.data import Dataset
from compresslab.core.report import Report
from compresslab.core.validate import check_choice, check_config, check_instance
from compresslab.techniques.distillation import check_alpha, check_temperature
from compresslab.techniques.packedfile import KINDS
from compresslab.techniques.registry import StepContext, verbs

__all__ = ["FAMILIES", "Step", "Recipe", "run_recipe"]

FAMILIES = ("precision", "single", "combination")


@dataclass(frozen=True)
class Step:
    """One verb (a registered technique's) and its config; teacher_temperature / teacher_alpha: train
    the step with the distillation loss, the recipe's starting model as teacher (techniques that
    allow it: `Technique.teacher`)."""

    verb: str
    config: object
    teacher_temperature: float | None = None
    teacher_alpha: float = 0.9

    def __post_init__(self) -> None:
        owner = "Step"
        known = verbs()
        check_choice(owner, "verb", self.verb, tuple(known))
        check_config(owner, "config", self.config, known[self.verb].recipe_config)
        if self.teacher_temperature is not None:
            if not known[self.verb].teacher:
                allowed = sorted(v for v, t in known.items() if t.teacher)
                raise ValueError(f"{owner}.teacher_temperature is for a step of {allowed}, not {self.verb!r}")
            check_temperature(self.teacher_temperature, "teacher_temperature", owner)
        check_alpha(self.teacher_alpha, "teacher_alpha", owner)


@dataclass(frozen=True)
class Recipe:
    """name; steps in order; precision: how the final weights are stored (packedfile.KINDS: fp32 ...
    binary; int8 also runs INT8 in the runtime); family: precision (one rung of the ladder), single
    (one technique) or combination; sparse: store only non-zeros (a bitmap of positions)."""

    name: str
    steps: tuple[Step, ...] = ()
    precision: str = "fp32"
    family: str = "single"
    sparse: bool = False

    def __post_init__(self) -> None:
        owner = "Recipe"
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"{owner}.name={self.name!r} must be a non-empty string")
        check_instance(owner, "steps", self.steps, tuple)
        for i, step in enumerate(self.steps):
            check_instance(owner, f"steps[{i}]", step, Step)
        check_choice(owner, "precision", self.precision, KINDS)
        check_choice(owner, "family", self.family, FAMILIES)
        for step in self.steps[:-1]:
            if verbs()[step.verb].writes_file:
                raise ValueError(f"{owner}: {step.verb} writes the final file, so it must be the last step")

    @property
    def verbs(self) -> str:
        """The steps as 'prune -> int8' (the storage precision last, unless fp32)."""
        names = [s.verb for s in self.steps] + ([self.precision] if self.precision != "fp32" else [])
        return " -> ".join(names) or "fp32"


def run_recipe(recipe: Recipe, model: nn.Module, data: Dataset, *, progress: bool | None = None,
               workdir: str | os.PathLike | None = None) -> tuple[nn.Module, list[Report], Path | None]:
    """Apply the recipe's steps to a copy of `model`; return (final model, reports, the file the last
    step wrote or None)."""
    check_instance("", "recipe", recipe, Recipe)
    if not isinstance(data, Dataset):
        raise ValueError(f"run_recipe needs a Dataset, got {type(data).__name__}")
    dense = model
    current = copy.deepcopy(model)
    reports: list[Report] = []
    written = None
    for step in recipe.steps:
        technique = verbs()[step.verb]
        file = None
        if technique.writes_file and workdir is not None:
            file = Path(workdir) / f"{recipe.name.replace(' ', '_').replace('>', '')}{technique.writes_file}"
        context = StepContext(dense=dense, recipe=recipe.name, file=file, progress=progress,
                              teacher_temperature=step.teacher_temperature, teacher_alpha=step.teacher_alpha)
        current, rep = technique.run_step(current, step.config, data, context)
        written = file or written
        reports.append(rep)
    return current.eval(), reports, written
