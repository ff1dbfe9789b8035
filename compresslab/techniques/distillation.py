"""Knowledge distillation with temperature (Hinton, Vinyals & Dean 2015).

Soft targets at temperature T: p_i^T = softmax(z / T)_i. The student (logits s) learns from the
teacher (logits t) and the labels y with

    L = alpha * T^2 * KL(p_teacher^T || p_student^T) + (1 - alpha) * CE(softmax(s), y).

d KL / d s_i = (q_i - p_i) / T, and for large T, q_i - p_i ~ (s_i - t_i) / (N T) (zero-mean
logits over N classes), so the soft gradient shrinks like 1 / T^2: the T^2 factor keeps the
two terms' relative weight fixed when T changes. Distillation is only a `loss_fn` for the one
training loop; the teacher is frozen (eval mode, no gradient).
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from compresslab.core import metrics, models
from compresslab.core.data import Dataset, Split
from compresslab.core.params import DATASET, FRACTION, PROFILE, SEED, TEMPERATURE, WEIGHT, Param
from compresslab.core.report import Report
from compresslab.core.training import (
    LossFn,
    TrainConfig,
    evaluate,
    seed_everything,
    split_logits,
    train,
)
from compresslab.core.validate import (
    check_bool,
    check_choice,
    check_config,
    check_float,
    check_instance,
    check_seed,
)
from compresslab.techniques.registry import TINY_TRAIN, StepContext, Technique, register, tiny_mlp

__all__ = [
    "MIN_TEMPERATURE",
    "MAX_TEMPERATURE",
    "check_temperature",
    "check_alpha",
    "DistillStep",
    "soft_targets",
    "entropy",
    "logit_entropy",
    "soft_loss",
    "kd_terms",
    "kd_loss",
    "soft_gradient_norm",
    "freeze",
    "distillation_loss_fn",
    "cached_distillation_loss_fn",
    "DistillConfig",
    "DistillReport",
    "apply_distillation",
]


MIN_TEMPERATURE, MAX_TEMPERATURE = 1e-3, 1e4  # outside, logits / T overflow or every target is uniform


def check_temperature(temperature: float, name: str = "temperature", owner: str = "") -> None:
    """A distillation temperature: a number in [MIN_TEMPERATURE, MAX_TEMPERATURE] = [1e-3, 1e4]."""
    check_float(owner, name, temperature, MIN_TEMPERATURE, MAX_TEMPERATURE)


def check_alpha(alpha: float, name: str = "alpha", owner: str = "") -> None:
    """A distillation weight of the soft term: a number in [0, 1]."""
    check_float(owner, name, alpha, 0, 1)


# ---------------------------------------------------------------- tensor primitives

def soft_targets(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """p^T = softmax(logits / T) over the last dimension.

    >>> z = torch.tensor([[2.0, 0.0, 0.0]])
    >>> soft_targets(z, 1.0)  # e^2 / (e^2 + 2) = 0.787
    tensor([[0.7870, 0.1065, 0.1065]])
    >>> soft_targets(z, 4.0)  # a higher T softens: the runner-up classes get more mass
    tensor([[0.4519, 0.2741, 0.2741]])
    """
    check_temperature(temperature)
    return F.softmax(logits / temperature, dim=-1)


def entropy(probs: torch.Tensor, base: float = 2.0) -> torch.Tensor:
    """H(p) = -sum_i p_i log p_i over the last dimension (bits by default; 0 log 0 = 0).

    >>> entropy(torch.tensor([[0.5, 0.5], [0.25, 0.75]]))  # one fair coin flip; a biased one
    tensor([1.0000, 0.8113])
    """
    logp = torch.log(probs.clamp_min(torch.finfo(probs.dtype).tiny))
    return -(probs * logp).sum(-1) / math.log(base)


def logit_entropy(logits: torch.Tensor) -> torch.Tensor:
    """H(softmax(z)) = -sum_k p_k log p_k per row in nats, from logits (log-softmax in float64, so
    saturated logits give 0, not NaN).

    >>> logit_entropy(torch.zeros(1, 4))  # four equal logits: log 4 nats
    tensor([1.3863])
    """
    logp = torch.log_softmax(logits.double(), dim=1)
    return -(logp.exp() * logp).sum(dim=1).float()


def soft_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(p_teacher^T || p_student^T), averaged over the batch (no T^2 factor).

    F.kl_div takes the student's log-probabilities as input and, with log_target=True, the
    teacher's log-probabilities as target; reduction='batchmean' divides the summed KL by the
    batch size, which is the mathematical mean KL per example ('mean' would also divide by N).
    """
    check_temperature(temperature)
    log_p_student = F.log_softmax(student_logits / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits / temperature, dim=-1)
    return F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)


def kd_terms(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor,
    temperature: float, alpha: float,
) -> dict[str, torch.Tensor]:
    """The pieces of the KD loss: soft = KL at T, hard = CE at T=1, and the weighted total."""
    check_alpha(alpha)
    soft = soft_loss(student_logits, teacher_logits, temperature)
    hard = F.cross_entropy(student_logits, targets)
    total = alpha * temperature**2 * soft + (1.0 - alpha) * hard
    return {"soft": soft, "hard": hard, "total": total}


def kd_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor,
    temperature: float, alpha: float,
) -> torch.Tensor:
    """alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y), batch-averaged.

    >>> s, y = torch.tensor([[0.0, 0.0]]), torch.tensor([0])
    >>> t = torch.tensor([[2.0, 0.0]])
    >>> p = soft_targets(t, 2.0)  # alpha = 1: only the soft term, T^2 * KL(p || uniform)
    >>> bool(torch.isclose(kd_loss(s, t, y, temperature=2.0, alpha=1.0), 4 * (p * (p / 0.5).log()).sum()))
    True
    >>> bool(torch.isclose(kd_loss(s, t, y, temperature=2.0, alpha=0.0), F.cross_entropy(s, y)))  # labels only
    True
    """
    return kd_terms(student_logits, teacher_logits, targets, temperature, alpha)["total"]


def soft_gradient_norm(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float, scaled: bool = True,
) -> float:
    """|| d/ds [c * KL(p_t^T || p_s^T)] ||_2 over the batch, with c = T^2 if `scaled` else 1."""
    s = student_logits.detach().clone().requires_grad_(True)
    loss = soft_loss(s, teacher_logits.detach(), temperature)
    if scaled:
        loss = temperature**2 * loss
    (grad,) = torch.autograd.grad(loss, s)
    return grad.norm().item()


# ---------------------------------------------------------------- the teacher and the loss_fn

def freeze(teacher: nn.Module) -> nn.Module:
    """A frozen copy of `teacher`: eval mode (dropout off), no gradients to its parameters.

    The caller's model is left as it was (still trainable, in its own mode)."""
    frozen = copy.deepcopy(teacher).eval()
    for p in frozen.parameters():
        p.requires_grad_(False)
    return frozen


def distillation_loss_fn(teacher: nn.Module, temperature: float, alpha: float) -> LossFn:
    """loss_fn(logits, targets, inputs) for `training.train`: KD against `teacher(inputs)`.

    The teacher sees exactly the student's (possibly jittered) inputs, runs in eval mode under
    torch.no_grad; the loss uses a frozen copy (see `freeze`), the caller's teacher is left as it was.
    """
    check_temperature(temperature)
    check_alpha(alpha)
    teacher = freeze(teacher)
    models.prepare_model(teacher)  # the student's batches come channels_last; NCHW weights would be 2x slower

    def loss_fn(logits: torch.Tensor, targets: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        if teacher.training:  # someone switched it back to train mode: dropout must stay off
            teacher.eval()
        with torch.no_grad():
            t = teacher(inputs).to(logits.device)
        return kd_loss(logits, t, targets, temperature, alpha)

    return loss_fn


def _indexed_train(data: Dataset) -> Dataset:
    """`data` whose train labels are the example indices 0..n-1 (to look up cached teacher logits)."""
    train_split = data.train
    indexed = Split(train_split.images, torch.arange(len(train_split)), train_split.mean, train_split.std)
    return Dataset(data.name, indexed, data.test, data.val, data.classes, data.fingerprint)


def cached_distillation_loss_fn(
    logits_table: torch.Tensor, labels: torch.Tensor, temperature: float, alpha: float,
) -> LossFn:
    """loss_fn for a dataset made by `_indexed_train`: targets are row indices into the tables.

    Equivalent to `distillation_loss_fn` when the student's inputs are not jittered (the eval-mode
    teacher is a fixed function of the image), but the teacher runs once instead of every epoch.
    """
    check_temperature(temperature)
    check_alpha(alpha)

    def loss_fn(logits: torch.Tensor, index: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        idx = index.to(logits_table.device)
        t = logits_table[idx].to(logits.device)
        y = labels[idx].to(logits.device)
        return kd_loss(logits, t, y, temperature, alpha)

    return loss_fn


# ---------------------------------------------------------------- the model-level verb

@dataclass(frozen=True)
class DistillConfig:
    """How to distill.

    temperature: T > 0 of the softened softmax (T = 1 is the ordinary softmax).
    alpha: weight of the soft term in [0, 1]; alpha = 0 is plain cross-entropy training.
    train: the TrainConfig of the student's training run.
    cache_teacher: compute the teacher's training-set logits once (only without input jitter,
    where it gives the same targets as running the teacher on every batch).
    """

    temperature: float = 4.0
    alpha: float = 0.9
    train: TrainConfig = field(default_factory=TrainConfig)
    cache_teacher: bool = True

    def __post_init__(self) -> None:
        owner = "DistillConfig"
        check_temperature(self.temperature, "temperature", owner)
        check_alpha(self.alpha, "alpha", owner)
        check_config(owner, "train", self.train, TrainConfig)
        check_bool(owner, "cache_teacher", self.cache_teacher)


@dataclass(kw_only=True, repr=False)
class DistillReport(Report):
    """Report of apply_distillation: the student's accuracy before / after (percent), and the test
    errors (counts out of n_test) of teacher and student, the numbers Hinton et al. report.
    Stored bytes: the student in FP32."""

    n_test: int = 0
    teacher_errors: int = 0
    student_errors_before: int = 0
    student_errors: int = 0
    teacher_params: int = 0
    teacher_cached: bool = False
    history: dict = field(default_factory=dict)

    technique = "distillation"

    @property
    def student_params(self) -> int:
        return self.size_after.params

    @property
    def teacher_accuracy(self) -> float:
        """The teacher's test accuracy in percent."""
        return 100.0 * (1 - self.teacher_errors / self.n_test)

    def headline_extra(self) -> list[str]:
        return [f"T={self.config.temperature:g}, alpha={self.config.alpha:g}",
                f"{self.student_errors} test errors of {self.n_test:,} (teacher {self.teacher_errors})"]

    def extra_tables(self) -> list:
        import pandas as pd

        return [pd.DataFrame([
            {"model": "teacher", "params": self.teacher_params, "test errors": self.teacher_errors},
            {"model": "student (before)", "params": self.student_params, "test errors": self.student_errors_before},
            {"model": f"student distilled (T={self.config.temperature:g}, alpha={self.config.alpha:g})",
             "params": self.student_params, "test errors": self.student_errors},
        ])]


def apply_distillation(
    model: nn.Module, config: DistillConfig, data: Dataset, *, teacher: nn.Module, inplace: bool = False,
    progress: bool | None = None, loss_fn: LossFn | None = None,
) -> tuple[nn.Module, DistillReport]:
    """Train (a copy of) the student `model` on `data` with the KD loss against the frozen `teacher`.

    loss_fn must be None: distillation builds its own loss (distillation_loss_fn)."""
    if loss_fn is not None:
        raise ValueError("loss_fn must be None: apply_distillation trains with its own KD loss (config.temperature, alpha)")
    if not isinstance(data, Dataset):
        raise ValueError(f"apply_distillation needs a Dataset to train on, got {type(data).__name__}")
    start = time.perf_counter()
    student = model if inplace else copy.deepcopy(model)
    teacher = freeze(teacher)  # a frozen copy: the caller's teacher stays trainable
    teacher_errors = evaluate(teacher, data.test).errors
    errors_before = evaluate(student, data.test).errors
    size_before = metrics.model_size(student)
    cached = config.cache_teacher and config.train.input_jitter == 0
    if cached:
        device = next(student.parameters()).device
        table = split_logits(teacher, data.train).to(device)
        kd = cached_distillation_loss_fn(table, data.train.labels.to(device), config.temperature, config.alpha)
        train_data = _indexed_train(data)
    else:
        kd = distillation_loss_fn(teacher, config.temperature, config.alpha)
        train_data = data
    history = train(student, train_data, config.train, loss_fn=kd, progress=progress)
    if not all(math.isfinite(v) for v in history.train_loss):
        warnings.warn(f"distillation at T={config.temperature:g} diverged (non-finite loss): the soft term's "
                      f"gradient grows with the logit gap, lower train.lr (now {config.train.lr:g})", stacklevel=2)
    n_test = len(data.test)
    errors = evaluate(student, data.test).errors
    report = DistillReport(
        config=config, n_test=n_test, teacher_errors=teacher_errors,
        student_errors_before=errors_before, student_errors=errors,
        accuracy_before=100.0 * (n_test - errors_before) / n_test, accuracy_after=100.0 * (n_test - errors) / n_test,
        size_before=size_before, size_after=metrics.model_size(student),
        teacher_params=metrics.parameter_count(teacher), teacher_cached=cached,
        seconds=time.perf_counter() - start, history=history.to_dict(),
    )
    return student, report


# ----------------------------------------------------------------- registration

@dataclass(frozen=True)
class DistillStep:
    """A student architecture (models.create name and kwargs) and its DistillConfig."""

    student: str = "mlp"
    student_kwargs: dict = field(default_factory=lambda: {"hidden": (100,)})
    config: DistillConfig = field(default_factory=DistillConfig)
    seed: int = 0

    def __post_init__(self) -> None:
        owner = "DistillStep"
        check_choice(owner, "student", self.student, tuple(models.MODELS))
        check_instance(owner, "student_kwargs", self.student_kwargs, dict)
        check_config(owner, "config", self.config, DistillConfig)
        check_seed(owner, "seed", self.seed)


def _recipe_step(model: nn.Module, config: DistillStep, data: Dataset, context: StepContext) -> tuple[nn.Module, Report]:
    """A recipe's distill step: a fresh student (seeded) learns from the current model."""
    seed_everything(config.seed)
    student = models.create(config.student, **config.student_kwargs)
    return apply_distillation(student, config.config, data, teacher=model, progress=context.progress)


register(Technique(
    name="distillation", apply=apply_distillation, config=DistillConfig,
    example=lambda: (tiny_mlp(1, (8,)), DistillConfig(train=TINY_TRAIN), {"teacher": tiny_mlp(2, (32,))}),
    verb="distill", step=_recipe_step, step_config=DistillStep, notebook="04_knowledge_distillation",
    params={
        "profile": PROFILE, "dataset": DATASET, "temperatures": Param("floats", 1e-3, 1e4),
        "alpha": WEIGHT, "alphas": Param("floats", 0, 1, empty_ok=True), "tiny_hidden": Param("ints", 1, 10000),
        "teacher_dropout": FRACTION, "teacher_jitter": Param("int", 0, 4), "temperature": TEMPERATURE,
        "image_index": Param("int", 0, 9999), "seed": SEED,
    },
    references={"soft_targets": soft_targets, "kd_loss": kd_loss}))
