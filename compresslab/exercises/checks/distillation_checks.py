"""Exercise checks for notebook 04 distillation."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from compresslab.exercises.checking import (
    call,
    compare,
    exercise_check,
    fail,
    require_unchanged,
    seeded_generator,
)
from compresslab.techniques import distillation

__all__ = [
    "check_soft_targets",
    "check_kd_loss",
]

# ----------------------------------------------------------------- 04 distillation

@exercise_check("soft_targets")
def check_soft_targets(fn: Callable) -> int:
    """soft_targets(logits, temperature) -> softmax(logits / T) over the classes."""
    name = "soft_targets"
    g = seeded_generator(10)
    hand = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, 3.0]])
    cases = [("logits=[[2, 1, 0], [0, 0, 3]], T=1", hand, 1.0), ("logits=[[2, 1, 0], [0, 0, 3]], T=2", hand, 2.0),
             ("random logits (8, 10), T=4", 3 * torch.randn(8, 10, generator=g), 4.0),
             ("random logits (8, 10), T=20", 3 * torch.randn(8, 10, generator=g), 20.0),
             ("random logits (5, 10), T=0.5", torch.randn(5, 10, generator=g), 0.5)]
    for case, z, t in cases:
        before = z.clone()
        got = call(name, fn, case, z, t)
        require_unchanged(name, case, before, z)
        expected = distillation.soft_targets(before, t)
        compare(name, case, got, expected, "divide the logits by T, then softmax over the last dimension (the classes)",
                 {"divide the LOGITS by T before the softmax, not the probabilities after it": F.softmax(before, -1) / t,
                  "divide by T (a high temperature flattens the distribution), don't multiply": F.softmax(before * t, -1),
                  "the softmax runs over the classes (dim=-1), not over the batch (dim=0)": F.softmax(before / t, 0)},
                 atol=1e-6)
    return len(cases)


@exercise_check("kd_loss")
def check_kd_loss(fn: Callable) -> int:
    """kd_loss(student_logits, teacher_logits, targets, temperature, alpha) -> scalar (Hinton et al. 2015)."""
    name = "kd_loss"
    g = seeded_generator(11)
    cases = [("student=[[1, 0, -1], [0, 2, 0]], teacher=[[3, 0, 0], [0, 1, 2]], targets=[0, 2], T=2, alpha=0.5",
              torch.tensor([[1.0, 0.0, -1.0], [0.0, 2.0, 0.0]]), torch.tensor([[3.0, 0.0, 0.0], [0.0, 1.0, 2.0]]),
              torch.tensor([0, 2]), 2.0, 0.5)]
    for t, a in [(1.0, 0.3), (4.0, 0.9), (8.0, 0.7), (4.0, 1.0), (3.0, 0.0)]:
        cases.append((f"random batch of 16 x 10 logits, T={t}, alpha={a}", 2 * torch.randn(16, 10, generator=g),
                      4 * torch.randn(16, 10, generator=g), torch.randint(0, 10, (16,), generator=g), t, a))
    for case, s, te, y, t, a in cases:
        s_in = s.clone().requires_grad_(True)
        got = call(name, fn, case, s_in, te.clone(), y.clone(), t, a)
        s_ref = s.clone().requires_grad_(True)
        expected = distillation.kd_loss(s_ref, te, y, t, a)
        soft = distillation.soft_loss(s, te, t)
        hard = F.cross_entropy(s, y)
        p_t = F.softmax(te / t, -1)
        teacher_entropy = float(-(p_t * F.log_softmax(te / t, -1)).sum(-1).mean())
        kl_reversed = F.kl_div(F.log_softmax(te / t, -1), F.log_softmax(s / t, -1), reduction="batchmean", log_target=True)
        p_s, log_p_s, log_p_t = F.softmax(s / t, -1), F.log_softmax(s / t, -1), F.log_softmax(te / t, -1)
        mistakes = {
            "F.kl_div expects the student's LOG-probabilities as its input (log_softmax), not probabilities "
            "(softmax): your result matches the loss computed with probabilities in place of log-probabilities":
                a * t**2 * F.kl_div(p_s, log_p_t, reduction="batchmean", log_target=True) + (1 - a) * hard,
            "both arguments of F.kl_div are probabilities here: the input must be the student's log-probabilities "
            "(log_softmax); the target may be probabilities only with log_target=False":
                a * t**2 * F.kl_div(p_s, p_t, reduction="batchmean") + (1 - a) * hard,
            "with log_target=True the target must be the teacher's LOG-probabilities; you passed probabilities "
            "(use log_softmax, or keep the probabilities and set log_target=False)":
                a * t**2 * F.kl_div(log_p_s, p_t, reduction="batchmean", log_target=True) + (1 - a) * hard,
            "the soft term must be multiplied by T^2 (Hinton et al.): its gradient shrinks like 1/T^2, the factor "
            "keeps the two terms balanced when T changes": a * soft + (1 - a) * hard,
            "scale the soft term by T^2, not by T": a * t * soft + (1 - a) * hard,
            "KL is not symmetric: use KL(p_teacher || p_student) = sum p_t (log p_t - log p_s); with F.kl_div the "
            "INPUT is the student's log-probabilities and the target the teacher's": a * t**2 * kl_reversed + (1 - a) * hard,
            "F.kl_div with reduction='mean' averages over batch x classes; use reduction='batchmean' (sum over "
            "classes, mean over the batch)": a * t**2 * soft / s.shape[1] + (1 - a) * hard,
            "that is the soft cross-entropy H(p_t, p_s) = KL + H(p_t): the same gradient, but the exercise asks for "
            "the KL divergence (subtract the teacher's entropy, or use F.kl_div)":
                a * t**2 * (soft + teacher_entropy) + (1 - a) * hard,
            "alpha weighs the SOFT term: alpha * T^2 * KL + (1 - alpha) * CE": (1 - a) * t**2 * soft + a * hard,
            "the hard term is the ordinary cross-entropy at T = 1 (the student's logits as they are)":
                a * t**2 * soft + (1 - a) * F.cross_entropy(s / t, y),
        }
        hint = "loss = alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T)) + (1 - alpha) * cross_entropy(student, targets)"
        compare(name, case, got.detach() if isinstance(got, torch.Tensor) else got, expected.detach(), hint,
                 mistakes, atol=1e-5, rtol=1e-4)
        if not isinstance(got, torch.Tensor) or not got.requires_grad:
            raise fail(name, case, "the loss carries no gradient to the student's logits", "a differentiable scalar",
                        "a detached value", "compute the loss with torch operations on student_logits (no .item(), no .detach())")
        got.backward()
        expected.backward()
        grad = s_in.grad if s_in.grad is not None else torch.zeros_like(s)
        compare(name, f"{case}; the gradient w.r.t. the student's logits", grad, s_ref.grad, hint, atol=1e-5, rtol=1e-4)
    return len(cases)
