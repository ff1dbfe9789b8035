"""Recipes: techniques chained as a list of the technique verbs, applied to one trained model.

A `Recipe` is a name, a tuple of `Step`s and the precision its final weights are stored and run in
(`packedfile.KINDS`); each step names one verb and carries that verb's config:

    prune            pruning.apply_pruning(PruneConfig), masks folded into the weights
    distill          a fresh student (models.create(student, **student_kwargs)) trained by
                     distillation.apply_distillation(DistillConfig) with the current model as teacher
    lowrank          lowrank.apply_lowrank(LowRankConfig)
    lowbit           lowbit.apply_lowbit(LowBitConfig); teacher_temperature set: trained with the
                     distillation loss, the recipe's starting (dense) model as teacher
    qat              quantization.apply_qat(QATConfig), turned back into plain layers (weights float)
    deep_compression deepcompression.apply_deep_compression(DeepCompressionConfig), file written

`run_recipe` applies the steps in order and returns the final model, every step's Report, and the
Deep Compression file (if any). Storing and running the result is `combine.points`.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from compresslab.core import models
from compresslab.core.data import Dataset
from compresslab.core.report import Report
from compresslab.core.training import seed_everything
from compresslab.core.validate import (
    check_choice,
    check_config,
    check_float,
    check_instance,
    check_seed,
)
from compresslab.techniques import (
    deepcompression,
    distillation,
    lowbit,
    lowrank,
    masks,
    pruning,
    quantization,
)
from compresslab.techniques.packedfile import KINDS

__all__ = ["VERBS", "FAMILIES", "DistillStep", "Step", "Recipe", "plain_layers", "run_recipe"]

FAMILIES = ("precision", "single", "combination")


@dataclass(frozen=True)
class DistillStep:
    """A student architecture (models.create name and kwargs) and its DistillConfig."""

    student: str = "mlp"
    student_kwargs: dict = field(default_factory=lambda: {"hidden": (100,)})
    config: distillation.DistillConfig = field(default_factory=distillation.DistillConfig)
    seed: int = 0

    def __post_init__(self) -> None:
        owner = "DistillStep"
        check_choice(owner, "student", self.student, tuple(models.MODELS))
        check_instance(owner, "student_kwargs", self.student_kwargs, dict)
        check_config(owner, "config", self.config, distillation.DistillConfig)
        check_seed(owner, "seed", self.seed)


VERBS = {"prune": pruning.PruneConfig, "distill": DistillStep, "lowrank": lowrank.LowRankConfig,
         "lowbit": lowbit.LowBitConfig, "qat": quantization.QATConfig,
         "deep_compression": deepcompression.DeepCompressionConfig}


@dataclass(frozen=True)
class Step:
    """One verb and its config; teacher_temperature / teacher_alpha: train a lowbit step with the
    distillation loss (the recipe's starting model as teacher)."""

    verb: str
    config: object
    teacher_temperature: float | None = None
    teacher_alpha: float = 0.9

    def __post_init__(self) -> None:
        owner = "Step"
        check_choice(owner, "verb", self.verb, tuple(VERBS))
        check_config(owner, "config", self.config, VERBS[self.verb])
        if self.teacher_temperature is not None:
            if self.verb != "lowbit":
                raise ValueError(f"{owner}.teacher_temperature is for a lowbit step, not {self.verb!r}")
            check_float(owner, "teacher_temperature", self.teacher_temperature, 0, 1e4, lo_open=True)
        check_float(owner, "teacher_alpha", self.teacher_alpha, 0, 1)


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
        if any(s.verb == "deep_compression" for s in self.steps[:-1]):
            raise ValueError(f"{owner}: deep_compression writes the final file, so it must be the last step")

    @property
    def verbs(self) -> str:
        """The steps as 'prune -> int8' (the storage precision last, unless fp32)."""
        names = [s.verb for s in self.steps] + ([self.precision] if self.precision != "fp32" else [])
        return " -> ".join(names) or "fp32"


def plain_layers(model: nn.Module) -> nn.Module:
    """A copy of `model` with every fake-quant layer (QuantLinear / QuantConv2d) replaced by a plain
    nn.Linear / nn.Conv2d holding the same float weight and bias."""
    model = copy.deepcopy(model)
    for name, layer in list(quantization.quant_layers(model).items()):
        if isinstance(layer, nn.Conv2d):
            new = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride,
                            padding=layer.padding, dilation=layer.dilation, groups=layer.groups,
                            bias=layer.bias is not None)
        else:
            new = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None)
        new.weight, new.bias = layer.weight, layer.bias
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, new)
    return model.eval()


def run_recipe(recipe: Recipe, model: nn.Module, data: Dataset, *, progress: bool | None = None,
               workdir: str | os.PathLike | None = None) -> tuple[nn.Module, list[Report], Path | None]:
    """Apply the recipe's steps to a copy of `model`; return (final model, reports, DC file or None)."""
    check_instance("", "recipe", recipe, Recipe)
    if not isinstance(data, Dataset):
        raise ValueError(f"run_recipe needs a Dataset, got {type(data).__name__}")
    dense = model
    current = copy.deepcopy(model)
    reports: list[Report] = []
    dc_file = None
    for step in recipe.steps:
        c = step.config
        if step.verb == "prune":
            current, rep = pruning.apply_pruning(current, c, data, progress=progress)
            current = masks.make_permanent(current)
        elif step.verb == "distill":
            seed_everything(c.seed)
            student = models.create(c.student, **c.student_kwargs)
            current, rep = distillation.apply_distillation(student, c.config, data, teacher=current, progress=progress)
        elif step.verb == "lowrank":
            current, rep = lowrank.apply_lowrank(current, c, data, progress=progress)
        elif step.verb == "lowbit":
            loss = None if step.teacher_temperature is None else distillation.distillation_loss_fn(
                dense, step.teacher_temperature, step.teacher_alpha)
            current, rep = lowbit.apply_lowbit(current, c, data, progress=progress, loss_fn=loss)
        elif step.verb == "qat":
            current, rep = quantization.apply_qat(current, c, data, progress=progress)
            current = plain_layers(current)
        else:
            folder = Path(workdir) if workdir is not None else None
            if folder is not None:
                folder.mkdir(parents=True, exist_ok=True)
                dc_file = folder / f"{recipe.name.replace(' ', '_').replace('>', '')}.dcz"
            current, rep = deepcompression.apply_deep_compression(current, c, data, progress=progress, path=dc_file)
            current = masks.make_permanent(current)
        reports.append(rep)
    return current.eval(), reports, dc_file
