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

from compresslab.core import models
from compresslab.core.data import Dataset, Split
from compresslab.core.training import LossFn, TrainConfig, evaluate, train

__all__ = [
    "soft_targets",
    "entropy",
    "soft_loss",
    "kd_terms",
    "kd_loss",
    "soft_gradient_norm",
    "teacher_logits",
    "freeze",
    "distillation_loss_fn",
    "cached_distillation_loss_fn",
    "DistillConfig",
    "DistillReport",
    "apply_distillation",
]


def _check_temperature(temperature: float, name: str = "temperature") -> None:
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"{name}={temperature!r} must be a finite number > 0")


def _check_alpha(alpha: float, name: str = "alpha") -> None:
    if not (isinstance(alpha, (int, float)) and 0.0 <= alpha <= 1.0):
        raise ValueError(f"{name}={alpha!r} must be in [0, 1]")


# ---------------------------------------------------------------- tensor primitives

def soft_targets(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """p^T = softmax(logits / T) over the last dimension."""
    _check_temperature(temperature)
    return F.softmax(logits / temperature, dim=-1)


def entropy(probs: torch.Tensor, base: float = 2.0) -> torch.Tensor:
    """H(p) = -sum_i p_i log p_i over the last dimension (bits by default; 0 log 0 = 0)."""
    logp = torch.log(probs.clamp_min(torch.finfo(probs.dtype).tiny))
    return -(probs * logp).sum(-1) / math.log(base)


def soft_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(p_teacher^T || p_student^T), averaged over the batch (no T^2 factor).

    F.kl_div takes the student's log-probabilities as input and, with log_target=True, the
    teacher's log-probabilities as target; reduction='batchmean' divides the summed KL by the
    batch size, which is the mathematical mean KL per example ('mean' would also divide by N).
    """
    _check_temperature(temperature)
    log_p_student = F.log_softmax(student_logits / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits / temperature, dim=-1)
    return F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)


def kd_terms(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor,
    temperature: float, alpha: float,
) -> dict[str, torch.Tensor]:
    """The pieces of the KD loss: soft = KL at T, hard = CE at T=1, and the weighted total."""
    _check_alpha(alpha)
    soft = soft_loss(student_logits, teacher_logits, temperature)
    hard = F.cross_entropy(student_logits, targets)
    total = alpha * temperature**2 * soft + (1.0 - alpha) * hard
    return {"soft": soft, "hard": hard, "total": total}


def kd_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor,
    temperature: float, alpha: float,
) -> torch.Tensor:
    """alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y), batch-averaged."""
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

@torch.no_grad()
def teacher_logits(teacher: nn.Module, split: Split, batch_size: int = 1000) -> torch.Tensor:
    """The (frozen, eval-mode) teacher's logits for every example of `split`, in order, on CPU."""
    was_training = teacher.training
    teacher.eval()
    device = next(teacher.parameters()).device
    out = [teacher(x).float().cpu() for x, _ in split.batches(batch_size, device=device)]
    teacher.train(was_training)
    return torch.cat(out)


def freeze(teacher: nn.Module) -> nn.Module:
    """Put `teacher` in eval mode (dropout off) and stop gradients to its parameters; returns it."""
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def distillation_loss_fn(teacher: nn.Module, temperature: float, alpha: float) -> LossFn:
    """loss_fn(logits, targets, inputs) for `training.train`: KD against `teacher(inputs)`.

    The teacher sees exactly the student's (possibly jittered) inputs, runs in eval mode under
    torch.no_grad, and is frozen by this call (see `freeze`).
    """
    _check_temperature(temperature)
    _check_alpha(alpha)
    freeze(teacher)
    if models.is_convnet(teacher):  # the student's batches come channels_last; NCHW weights would be 2x slower
        teacher.to(memory_format=torch.channels_last)

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
    _check_temperature(temperature)
    _check_alpha(alpha)

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
        _check_temperature(self.temperature)
        _check_alpha(self.alpha)
        if not isinstance(self.train, TrainConfig):
            raise ValueError(f"train={self.train!r} must be a TrainConfig")


@dataclass
class DistillReport:
    """Test errors (counts out of n_test) of teacher, student before and after distillation."""

    config: DistillConfig
    n_test: int
    teacher_errors: int
    student_errors_before: int
    student_errors: int
    teacher_params: int
    student_params: int
    teacher_cached: bool
    seconds: float
    history: dict = field(default_factory=dict)

    @property
    def accuracy(self) -> float:
        return 1.0 - self.student_errors / self.n_test

    def to_dict(self) -> dict:
        return {"temperature": self.config.temperature, "alpha": self.config.alpha,
                "epochs": self.config.train.epochs, "n_test": self.n_test,
                "teacher_errors": self.teacher_errors, "student_errors_before": self.student_errors_before,
                "student_errors": self.student_errors, "accuracy": self.accuracy,
                "teacher_params": self.teacher_params, "student_params": self.student_params,
                "teacher_cached": self.teacher_cached, "seconds": self.seconds, "history": self.history}

    def table(self):
        import pandas as pd

        return pd.DataFrame([
            {"model": "teacher", "params": self.teacher_params, "test errors": self.teacher_errors},
            {"model": "student (before)", "params": self.student_params, "test errors": self.student_errors_before},
            {"model": f"student distilled (T={self.config.temperature:g}, alpha={self.config.alpha:g})",
             "params": self.student_params, "test errors": self.student_errors},
        ])

    def _repr_html_(self) -> str:
        head = (f"<p>distilled at T={self.config.temperature:g}, alpha={self.config.alpha:g}: "
                f"{self.student_errors} test errors of {self.n_test:,} (teacher {self.teacher_errors}) "
                f"&middot; {self.seconds:.1f} s</p>")
        return head + self.table().to_html(index=False)


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def apply_distillation(
    student: nn.Module, teacher: nn.Module, data: Dataset, config: DistillConfig,
    inplace: bool = False, progress: bool | None = None,
) -> tuple[nn.Module, DistillReport]:
    """Train (a copy of) `student` on `data` with the KD loss against the frozen `teacher`."""
    start = time.perf_counter()
    student = student if inplace else copy.deepcopy(student)
    freeze(teacher)
    teacher_errors = evaluate(teacher, data.test).errors
    errors_before = evaluate(student, data.test).errors
    cached = config.cache_teacher and config.train.input_jitter == 0
    if cached:
        device = next(student.parameters()).device
        table = teacher_logits(teacher, data.train).to(device)
        loss_fn = cached_distillation_loss_fn(table, data.train.labels.to(device), config.temperature, config.alpha)
        train_data = _indexed_train(data)
    else:
        loss_fn = distillation_loss_fn(teacher, config.temperature, config.alpha)
        train_data = data
    history = train(student, train_data, config.train, loss_fn=loss_fn, progress=progress)
    if not all(math.isfinite(v) for v in history.train_loss):
        warnings.warn(f"distillation at T={config.temperature:g} diverged (non-finite loss): the soft term's "
                      f"gradient grows with the logit gap, lower train.lr (now {config.train.lr:g})", stacklevel=2)
    report = DistillReport(
        config=config, n_test=len(data.test), teacher_errors=teacher_errors,
        student_errors_before=errors_before, student_errors=evaluate(student, data.test).errors,
        teacher_params=_params(teacher), student_params=_params(student), teacher_cached=cached,
        seconds=time.perf_counter() - start, history=history.to_dict(),
    )
    return student, report
