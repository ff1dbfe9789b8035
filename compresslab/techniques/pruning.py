"""Magnitude pruning, model level: schedules, the config, the report and `apply_pruning`.

The mask primitives (unstructured, layer-wise and global scope) live in `masks`, structured
shrinking and CSR kernels in `structured`; their names are re-exported here.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from torch import nn

from compresslab.core import metrics
from compresslab.core.data import Dataset
from compresslab.core.models import prunable_layers
from compresslab.core.params import DATASET, FRACTION, PROFILE, SEED, Param, choice
from compresslab.core.report import Report, fmt_percent
from compresslab.core.training import (
    Callback,
    LossFn,
    TrainConfig,
    TrainState,
    accuracy_fn,
    evaluate,
    train,
)
from compresslab.core.validate import (
    check_bool,
    check_choice,
    check_config,
    check_float,
    check_int,
    check_layer_names,
    check_per_layer,
)
from compresslab.techniques.masks import (
    SCHEDULES,
    SCOPES,
    copy_model,
    cubic_sparsity,
    global_magnitude_masks,
    magnitude_mask,
    make_permanent,
    prune_magnitude,
    set_masks,
)
from compresslab.techniques.registry import TINY_TRAIN, StepContext, Technique, register, tiny_mlp
from compresslab.techniques.structured import (
    structured_prune,
)

__all__ = [
    "GradualPruning", "PruneConfig", "PruningReport", "sparse_size", "apply_pruning",
    "sensitivity_scan"
]


# ----------------------------------------------------------------- schedules as callbacks

class GradualPruning(Callback):
    """Raise sparsity along the cubic schedule every `interval` steps from `start` for `n` updates."""

    def __init__(self, final: float, scope: str, start: int, n: int, interval: int, initial: float = 0.0):
        cubic_sparsity(start, initial, final, start, n, interval)  # validates
        self.final, self.scope, self.start, self.n, self.interval, self.initial = final, scope, start, n, interval, initial
        self.trace: list[tuple[int, float]] = []

    def on_batch_end(self, state: TrainState) -> None:
        t = state.step
        if t < self.start or t > self.start + self.n * self.interval or (t - self.start) % self.interval:
            return
        s = cubic_sparsity(t, self.initial, self.final, self.start, self.n, self.interval)
        prune_magnitude(state.model, s, self.scope)
        self.trace.append((t, s))


# ----------------------------------------------------------------- the model-level verb

@dataclass(frozen=True)
class PruneConfig:
    """How to prune.

    sparsity: fraction of weights removed (unstructured) or of hidden units (structured), [0, 1).
    schedule: one_shot (prune, then fine-tune), iterative (`iterations` rounds of prune + fine-tune,
    equal fractions of the survivors per round), gradual (cubic schedule during fine-tuning).
    finetune: the TrainConfig for fine-tuning (per round when iterative); None = no fine-tuning.
    """

    sparsity: float = 0.9
    scope: str = "global"
    structured: bool = False
    norm: int = 1
    schedule: str = "one_shot"
    iterations: int = 1
    layer_sparsity: dict | None = None
    finetune: TrainConfig | None = None
    permanent: bool = True

    def __post_init__(self) -> None:
        owner = "PruneConfig"
        check_float(owner, "sparsity", self.sparsity, 0, 1, hi_open=True)
        check_choice(owner, "scope", self.scope, SCOPES)
        check_bool(owner, "structured", self.structured)
        check_choice(owner, "norm", self.norm, (1, 2))
        check_choice(owner, "schedule", self.schedule, SCHEDULES)
        check_int(owner, "iterations", self.iterations, 1, 100)
        if self.layer_sparsity is not None:
            check_per_layer(owner, "layer_sparsity", self.layer_sparsity,
                            lambda o, f, v: check_float(o, f, v, 0, 1, hi_open=True))
            if self.scope != "layer":
                raise ValueError(f"{owner}.layer_sparsity needs scope='layer' (scope={self.scope!r})")
        check_config(owner, "finetune", self.finetune, TrainConfig, optional=True)
        check_bool(owner, "permanent", self.permanent)
        if self.structured and self.schedule == "gradual":
            raise ValueError(f"{owner}.structured=True supports schedule 'one_shot' or 'iterative', not 'gradual'")
        if self.schedule == "gradual" and self.finetune is None:
            raise ValueError(f"{owner}.schedule='gradual' prunes during fine-tuning: set finetune=TrainConfig(...)")

    def check_layers(self, model: nn.Module) -> None:
        """layer_sparsity names only Linear/Conv2d layers of `model` (ValueError naming the valid ones)."""
        check_layer_names("PruneConfig", "layer_sparsity", self.layer_sparsity, prunable_layers(model))


@dataclass(kw_only=True, repr=False)
class PruningReport(Report):
    """Report of apply_pruning. sparsity: fraction of weights (unstructured) or of parameters
    (structured) removed; accuracy_pruned: percent right after pruning, before fine-tuning; rounds:
    one row per round (accuracies in percent). Stored bytes: the shrunk FP32 model (structured),
    else CSR-like 32-bit value + 32-bit index per non-zero when that is smaller than dense FP32."""

    sparsity: float = 0.0
    accuracy_pruned: float | None = None
    rounds: list[dict] = field(default_factory=list)

    technique = "pruning"

    @property
    def params_before(self) -> int:
        return self.size_before.params

    @property
    def params_after(self) -> int:
        """Parameters of the shrunk model (structured) or non-zeros left (unstructured)."""
        return self.size_after.params if self.config.structured else self.size_after.nonzeros

    def headline_extra(self) -> list[str]:
        return [f"sparsity {100 * self.sparsity:.2f}%",
                f"accuracy right after pruning {fmt_percent(self.accuracy_pruned)}"]


def sparse_size(model: nn.Module) -> metrics.Size:
    """The ledger Size of a pruned model stored sparsely: 32-bit value + 32-bit index per non-zero
    weight (CSR-like), or dense FP32 when that is smaller."""
    sparse = metrics.model_size(model, bits_per_weight=64)
    return sparse if sparse.stored_bytes < sparse.fp32_bytes else metrics.model_size(model)


def apply_pruning(
    model: nn.Module, config: PruneConfig, data: Dataset | None = None, *, inplace: bool = False,
    progress: bool | None = None, loss_fn: LossFn | None = None,
) -> tuple[nn.Module, PruningReport]:
    """Prune (and fine-tune, if config.finetune and data) a copy of `model`; return it and a report.

    loss_fn: the fine-tuning loss (training.train's; cross-entropy when None), e.g. a distillation
    loss with the dense model as teacher."""
    accuracy = accuracy_fn(data, config.finetune)

    def acc(m: nn.Module) -> float | None:
        return accuracy(m)

    start = time.perf_counter()
    config.check_layers(model)
    model = model if inplace else copy_model(model)
    acc_before = acc(model)
    size_before = metrics.model_size(model)
    input_shape = data.input_shape if data is not None else (1, 28, 28)
    rounds: list[dict] = []
    acc_pruned = None
    target = config.layer_sparsity if config.layer_sparsity is not None else config.sparsity
    if config.schedule == "gradual":
        steps = config.finetune.total_steps(len(data.train))
        n = min(20, max(1, int(0.75 * steps)))
        interval = max(1, int(0.75 * steps) // n)
        callback = GradualPruning(config.sparsity, config.scope, start=0, n=n, interval=interval)
        history = train(model, data, config.finetune, loss_fn=loss_fn, callbacks=[callback], progress=progress)
        prune_magnitude(model, target, config.scope)  # land exactly on the target
        rounds.append({"round": 1, "sparsity": metrics.weight_sparsity(model),
                       "accuracy": acc(model), "schedule_points": len(callback.trace),
                       "train_seconds": history.seconds})
    else:
        for r in range(1, config.iterations + 1):
            frac = r / config.iterations
            if config.structured:  # each round drops the same share of the units still there
                per_round = 1 - (1 - config.sparsity) ** (1 / config.iterations)
                model = structured_prune(model, per_round, config.norm, input_shape)
            else:
                s_r = _round_sparsity(target, frac)
                prune_magnitude(model, s_r, config.scope)
            a_pruned = acc(model)
            if acc_pruned is None:
                acc_pruned = a_pruned
            seconds = 0.0
            if config.finetune is not None:
                seconds = train(model, data, config.finetune, loss_fn=loss_fn, progress=progress).seconds
            rounds.append({"round": r, "sparsity": metrics.weight_sparsity(model), "accuracy_pruned": a_pruned,
                           "accuracy": acc(model), "train_seconds": seconds})
    if config.permanent:
        make_permanent(model)
    size_after = metrics.model_size(model) if config.structured else sparse_size(model)
    report = PruningReport(
        config=config,
        sparsity=metrics.weight_sparsity(model) if not config.structured else 1 - size_after.params / size_before.params,
        size_before=size_before,
        size_after=size_after,
        accuracy_before=acc_before,
        accuracy_pruned=acc_pruned if acc_pruned is not None else (rounds[0]["accuracy"] if rounds else None),
        accuracy_after=acc(model),
        seconds=time.perf_counter() - start,
        layers=metrics.sparsity_table(model).to_dict("records"),
        rounds=rounds,
    )
    return model, report


def _round_sparsity(target: float | dict[str, float], frac: float) -> float | dict[str, float]:
    """Sparsity after a fraction `frac` of the rounds: 1 - (1 - s)^frac (same share of survivors each round)."""
    if isinstance(target, dict):
        return {k: 1 - (1 - s) ** frac for k, s in target.items()}
    return 1 - (1 - target) ** frac


def sensitivity_scan(
    model: nn.Module, data: Dataset, sparsities: Sequence[float], limit: int | None = None,
) -> list[dict]:
    """Prune one layer at a time (no fine-tuning) at each sparsity; test accuracy (percent) per (layer, sparsity)."""
    rows = []
    split = data.test
    if limit is not None:
        from compresslab.core.data import Split

        split = Split(split.images[:limit], split.labels[:limit], split.mean, split.std)
    for name in prunable_layers(model):
        for s in sparsities:
            trial = copy_model(model)
            set_masks(trial, {name: magnitude_mask(metrics.effective_weight(prunable_layers(trial)[name]), s)})
            rows.append({"layer": name, "sparsity": s, "accuracy": evaluate(trial, split).accuracy})
    return rows


# ----------------------------------------------------------------- registration

def _recipe_step(model: nn.Module, config: PruneConfig, data: Dataset, context: StepContext) -> tuple[nn.Module, Report]:
    """A recipe's prune step: prune, then fold the masks into the weights."""
    pruned, report = apply_pruning(model, config, data, progress=context.progress)
    return make_permanent(pruned), report


register(Technique(
    name="pruning", apply=apply_pruning, config=PruneConfig,
    example=lambda: (tiny_mlp(), PruneConfig(sparsity=0.8, finetune=TINY_TRAIN), {}),
    verb="prune", step=_recipe_step, notebook="01_magnitude_pruning",
    params={
        "profile": PROFILE, "model_name": choice("lenet300", "lenet5"), "dataset": DATASET,
        "sparsity": FRACTION, "scope": choice("global", "layer"),
        "schedule": choice("one_shot", "iterative", "gradual"), "iterations": Param("int", 1, 100),
        "structured_sparsity": FRACTION, "teacher_temperature": Param("float", 1e-3, 1e4, optional=True),
        "seed": SEED,
    },
    references={"magnitude_mask": magnitude_mask, "global_magnitude_masks": global_magnitude_masks,
                "cubic_sparsity": cubic_sparsity}))
