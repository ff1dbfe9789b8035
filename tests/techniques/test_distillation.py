"""Knowledge distillation: the KD loss against hand formulas, its gradients, the frozen teacher."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from compresslab.core import models
from compresslab.core.data import Dataset, Split
from compresslab.core.training import TrainConfig
from compresslab.techniques import distillation as kd
from compresslab.views import distillation


def _logits(seed: int, batch: int = 6, classes: int = 10, scale: float = 3.0) -> torch.Tensor:
    return scale * torch.randn(batch, classes, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _hand_kd(s, t, y, temperature, alpha):
    """The KD loss written out: alpha T^2 mean_b sum_i q_i (log q_i - log p_i) + (1 - alpha) mean_b -log softmax(s)_y."""
    total_soft, total_hard = 0.0, 0.0
    for b in range(s.shape[0]):
        zs, zt = [v / temperature for v in s[b].tolist()], [v / temperature for v in t[b].tolist()]
        ls = math.log(sum(math.exp(v) for v in zs))
        lt = math.log(sum(math.exp(v) for v in zt))
        q = [math.exp(v - lt) for v in zt]
        total_soft += sum(qi * ((vt - lt) - (vs - ls)) for qi, vt, vs in zip(q, zt, zs, strict=True))
        raw = s[b].tolist()
        total_hard += -(raw[int(y[b])] - math.log(sum(math.exp(v) for v in raw)))
    n = s.shape[0]
    return alpha * temperature**2 * total_soft / n + (1 - alpha) * total_hard / n


@pytest.mark.parametrize("temperature,alpha", [(1.0, 0.5), (2.0, 0.9), (4.0, 0.3), (20.0, 1.0), (0.5, 0.7)])
def test_kd_loss_matches_hand_formula(temperature, alpha):
    s, t = _logits(0), _logits(1)
    y = torch.tensor([0, 3, 9, 2, 2, 7])
    got = kd.kd_loss(s, t, y, temperature, alpha).item()
    assert got == pytest.approx(_hand_kd(s, t, y, temperature, alpha), rel=1e-10, abs=1e-12)


def test_batchmean_is_mean_kl_per_example_not_per_element():
    s, t = _logits(2), _logits(3)
    per_example = [kd.soft_loss(s[i:i + 1], t[i:i + 1], 3.0).item() for i in range(len(s))]
    assert kd.soft_loss(s, t, 3.0).item() == pytest.approx(sum(per_example) / len(s), rel=1e-12)
    assert all(v >= 0 for v in per_example)  # Gibbs' inequality


def test_alpha_zero_is_plain_cross_entropy():
    s, t = _logits(4), _logits(5)
    y = torch.tensor([1, 1, 0, 5, 8, 9])
    for temperature in (1.0, 7.0):
        assert kd.kd_loss(s, t, y, temperature, 0.0).item() == pytest.approx(F.cross_entropy(s, y).item(), rel=1e-12)


def test_zero_loss_and_gradient_when_student_equals_teacher():
    t = _logits(6)
    s = t.clone().requires_grad_(True)
    y = torch.tensor([0, 1, 2, 3, 4, 5])
    for temperature in (1.0, 4.0, 20.0):
        loss = kd.kd_loss(s, t, y, temperature, 1.0)
        (grad,) = torch.autograd.grad(loss, s)
        assert abs(loss.item()) < 1e-12
        assert grad.abs().max().item() < 1e-12


def test_soft_gradient_matches_closed_form():
    # d/ds_i KL(q || p) = (p_i - q_i) / T per example, divided by the batch size (batchmean)
    s, t, temperature = _logits(7), _logits(8), 3.0
    sv = s.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(kd.soft_loss(sv, t, temperature), sv)
    expected = (F.softmax(s / temperature, -1) - F.softmax(t / temperature, -1)) / temperature / len(s)
    torch.testing.assert_close(grad, expected, rtol=1e-10, atol=1e-12)


def test_t_squared_keeps_soft_gradient_magnitude_roughly_constant():
    s, t = _logits(9, batch=64, scale=1.5), _logits(10, batch=64, scale=1.5)
    temps = [2.0, 4.0, 8.0, 16.0, 32.0]
    scaled = [kd.soft_gradient_norm(s, t, T, scaled=True) for T in temps]
    unscaled = [kd.soft_gradient_norm(s, t, T, scaled=False) for T in temps]
    assert max(scaled) / min(scaled) < 1.5
    # without T^2 the gradient falls like 1/T^2: 256x over this range (allow slack below the limit)
    assert unscaled[0] / unscaled[-1] > 100
    # high-T limit: T^2 * grad -> (centred(s) - centred(t)) / (N * B)
    centred = lambda z: z - z.mean(-1, keepdim=True)  # noqa: E731
    limit = ((centred(s) - centred(t)) / (s.shape[1] * s.shape[0])).norm().item()
    assert kd.soft_gradient_norm(s, t, 200.0) == pytest.approx(limit, rel=0.01)


def test_soft_targets_and_entropy():
    z = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    assert torch.allclose(kd.soft_targets(z, 1.0), F.softmax(z, -1))
    entropies = [kd.entropy(kd.soft_targets(z, T)).item() for T in (0.5, 1, 2, 5, 100)]
    assert entropies == sorted(entropies)  # softer with T
    assert entropies[-1] == pytest.approx(2.0, abs=1e-3)  # -> log2(4) bits as T -> inf
    assert kd.entropy(torch.tensor([1.0, 0.0, 0.0])).item() == 0.0


@pytest.mark.parametrize("kwargs", [
    {"temperature": 0.0}, {"temperature": -1.0}, {"temperature": float("inf")}, {"temperature": float("nan")},
    {"alpha": -0.1}, {"alpha": 1.5}, {"train": {"epochs": 1}},
])
def test_bad_configs_raise(kwargs):
    with pytest.raises((ValueError, TypeError), match=next(iter(kwargs))):
        kd.DistillConfig(**kwargs)


def test_bad_primitive_arguments_raise():
    s = _logits(11)
    with pytest.raises(ValueError, match="temperature"):
        kd.kd_loss(s, s, torch.zeros(6, dtype=torch.long), 0.0, 0.5)
    with pytest.raises(ValueError, match="alpha"):
        kd.distillation_loss_fn(models.create("mlp", hidden=(4,)), 2.0, 2.0)


# ---------------------------------------------------------------- training with a frozen teacher

def _toy_data(n_train: int = 256, n_test: int = 128, seed: int = 0) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (n_train + n_test,), generator=g)
    images = torch.randint(0, 60, (n_train + n_test, 28, 28), generator=g, dtype=torch.uint8)
    for c in range(10):  # a bright class-specific stripe makes the task learnable
        images[labels == c, 2 * c:2 * c + 3, :] = 250
    train_split = Split(images[:n_train], labels[:n_train], 0.13, 0.31)
    test_split = Split(images[n_train:], labels[n_train:], 0.13, 0.31)
    return Dataset("toy", train_split, test_split, None, tuple(str(c) for c in range(10)), {"name": "toy"})


def _teacher() -> torch.nn.Module:
    torch.manual_seed(1)
    return models.create("mlp", hidden=(32,), dropout=0.5)


@pytest.mark.parametrize("jitter", [0, 1])
def test_teacher_is_not_updated_and_runs_in_eval_mode(jitter):
    data, teacher = _toy_data(), _teacher()
    teacher.train()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    modes = []
    teacher.register_forward_hook(lambda m, i, o: modes.append(m.training))
    torch.manual_seed(2)
    student = models.create("mlp", hidden=(16,))
    config = kd.DistillConfig(temperature=4.0, alpha=0.9,
                              train=TrainConfig(epochs=2, batch_size=64, lr=0.05, input_jitter=jitter))
    trained, report = kd.apply_distillation(student, config, data, teacher=teacher, progress=False)
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in teacher.parameters())
    assert modes and not any(modes)  # every teacher forward ran with dropout off
    assert report.teacher_cached == (jitter == 0)
    # the student did change, the input student did not (deep copy)
    assert not torch.equal(trained.fc1.weight, student.fc1.weight)
    assert report.n_test == 128 and 0 <= report.student_errors <= 128
    assert report.to_dict()["config"]["temperature"] == 4.0
    assert report.accuracy_after == 100 * (128 - report.student_errors) / 128


def test_cached_teacher_gives_the_same_training_as_the_live_teacher():
    data, teacher = _toy_data(), _teacher()
    results = []
    for cache in (True, False):
        torch.manual_seed(3)
        student = models.create("mlp", hidden=(16,))
        config = kd.DistillConfig(temperature=2.0, alpha=0.7, cache_teacher=cache,
                                  train=TrainConfig(epochs=1, batch_size=32, lr=0.05))
        trained, report = kd.apply_distillation(student, config, data, teacher=teacher, progress=False)
        assert report.teacher_cached == cache
        results.append((trained, report))
    (a, ra), (b, rb) = results
    torch.testing.assert_close(a.fc1.weight, b.fc1.weight, rtol=1e-4, atol=1e-5)
    assert ra.history["train_loss"] == pytest.approx(rb.history["train_loss"], rel=1e-4)


def test_distillation_loss_fn_uses_teacher_on_the_same_inputs():
    teacher = _teacher()
    x = torch.randn(5, 1, 28, 28)
    y = torch.tensor([0, 1, 2, 3, 4])
    loss_fn = kd.distillation_loss_fn(teacher, 3.0, 0.6)
    assert teacher.training  # the caller's teacher keeps its mode; the loss runs a frozen copy in eval mode
    s = torch.randn(5, 10, requires_grad=True)
    with torch.no_grad():
        t = teacher.eval()(x)
    assert loss_fn(s, y, x).item() == pytest.approx(kd.kd_loss(s, t, y, 3.0, 0.6).item(), rel=1e-6)
    assert all(p.requires_grad for p in teacher.parameters())  # the loss uses a frozen copy


def test_distilled_student_learns_the_teacher():
    """A student distilled from a good teacher agrees with it far more than a random student does."""
    data = _toy_data(n_train=512)
    torch.manual_seed(4)
    teacher = models.create("mlp", hidden=(32,))
    from compresslab.core.training import evaluate, train

    train(teacher, data, TrainConfig(epochs=3, batch_size=64, lr=0.05), progress=False)
    assert evaluate(teacher, data.test).accuracy > 90
    torch.manual_seed(5)
    student = models.create("mlp", hidden=(16,))
    config = kd.DistillConfig(temperature=4.0, alpha=1.0, train=TrainConfig(epochs=3, batch_size=64, lr=0.01))
    _, report = kd.apply_distillation(student, config, data, teacher=teacher, progress=False)
    assert report.student_errors < report.student_errors_before
    assert report.student_errors <= report.teacher_errors + 10  # alpha=1: no labels seen, only the teacher


# ---------------------------------------------------------------- the panel's render function and the figures

def test_render_distillation_reports_the_kd_terms_of_that_image():

    data, teacher = _toy_data(), _teacher()
    torch.manual_seed(6)
    student = models.create("mlp", hidden=(16,))
    view = distillation.render_distillation(teacher, student, data.test, temperature=3.0, image_index=5, alpha=0.4)
    x, y = data.test.tensors(limit=6)
    with torch.no_grad():
        zt, zs = teacher.eval()(x[5:6]).double(), student.eval()(x[5:6]).double()
    assert view.metrics["label"] == int(y[5])
    assert view.metrics["KD loss"] == pytest.approx(kd.kd_loss(zs, zt, y[5:6], 3.0, 0.4).item(), abs=1e-5)
    assert view.metrics["soft term T^2 KL"] == pytest.approx(9.0 * kd.soft_loss(zs, zt, 3.0).item(), abs=1e-5)
    assert len(view.figure.axes) == 2
    import matplotlib.pyplot as plt

    plt.close(view.figure)


def test_distillation_figures():
    import matplotlib.pyplot as plt


    z = _logits(12, batch=2).float()
    figs = [
        distillation.soft_target_grid(torch.zeros(2, 28, 28, dtype=torch.uint8), [1, 2],
                               {1.0: kd.soft_targets(z, 1.0), 4.0: kd.soft_targets(z, 4.0)}, [str(c) for c in range(10)]),
        distillation.entropy_vs_temperature([1, 2, 4], {"teacher": [0.1, 0.5, 1.5]}, max_bits=math.log2(10)),
        distillation.t_squared_gradients([1, 2, 4], [1.0, 1.1, 1.2], [1.0, 0.3, 0.08]),
        distillation.distillation_sweep({"distilled": ([1, 2, 4], [120, 110, 100])}, {"teacher": 90, "alone": 150}),
    ]
    assert [len(f.axes) for f in figs] == [6, 1, 1, 1]
    for f in figs:
        plt.close(f)


def test_divergence_is_reported():
    data, teacher = _toy_data(), _teacher()
    torch.manual_seed(7)
    student = models.create("mlp", hidden=(16,))
    config = kd.DistillConfig(temperature=20.0, alpha=1.0, train=TrainConfig(epochs=1, batch_size=64, lr=1e6))
    with pytest.warns(UserWarning, match="diverged"):
        kd.apply_distillation(student, config, data, teacher=teacher, progress=False)
