"""Determinism of centroid fine-tuning, the caller's teacher left alone, and non-finite or empty inputs."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import make_tiny_dataset

from compresslab.core import models, training
from compresslab.core.data import Dataset, Split
from compresslab.core.training import TrainConfig
from compresslab.techniques import compressedfile as cf
from compresslab.techniques import distillation as kd
from compresslab.techniques import quantops as Q
from compresslab.techniques import sharing as S


@pytest.fixture
def two_threads():
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(old)


def _trained(seed: int = 0) -> torch.nn.Module:
    training.seed_everything(seed)
    model = models.create("lenet300")
    training.train(model, make_tiny_dataset(), TrainConfig(epochs=1, batch_size=32, lr=0.05), progress=False)
    return model


def test_sharing_with_finetune_is_bitwise_reproducible_on_two_threads(two_threads, tiny_data):
    model = _trained()
    config = S.ShareConfig(fc_bits=4, finetune=TrainConfig(epochs=2, batch_size=32, lr=0.01))
    a, _ = S.apply_sharing(model, config, tiny_data)
    b, _ = S.apply_sharing(model, config, tiny_data)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    bytes_a, _ = cf.encode_model(a, index_bits=5, bits=4)
    bytes_b, _ = cf.encode_model(b, index_bits=5, bits=4)
    assert bytes_a == bytes_b


def test_segment_sums_equal_the_scatter_add_they_replace():
    gen = torch.Generator().manual_seed(0)
    idx = torch.randint(0, 7, (50, 40), generator=gen)
    grad = torch.randn(50, 40, generator=gen)
    flat = idx.reshape(-1)
    order = torch.argsort(flat, stable=True)
    ends = torch.bincount(flat, minlength=9).cumsum(0)  # clusters 7 and 8 are empty
    expected = torch.zeros(9, dtype=torch.float64).index_add_(0, flat, grad.reshape(-1).double())
    assert torch.allclose(S.segment_sums(grad, order, ends), expected, rtol=0, atol=1e-12)
    codebook = torch.randn(9, requires_grad=True)
    weight = S.SharedWeight(codebook.detach(), idx, torch.ones_like(idx, dtype=torch.bool))
    (weight(torch.empty(0)) * grad).sum().backward()
    assert torch.allclose(weight.codebook.grad.double(), expected, atol=1e-5)


def test_distillation_leaves_the_callers_teacher_trainable(tiny_data):
    training.seed_everything(0)
    teacher, student = models.create("lenet300"), models.create("mlp", hidden=[20])
    teacher.train()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    kd.apply_distillation(student, kd.DistillConfig(train=TrainConfig(epochs=1, batch_size=64)), tiny_data,
                          teacher=teacher)
    assert all(p.requires_grad for p in teacher.parameters()) and teacher.training
    assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())
    training.train(teacher, tiny_data, TrainConfig(epochs=1, batch_size=64), progress=False)  # still fine-tunable
    frozen = kd.freeze(teacher)
    assert frozen is not teacher and not any(p.requires_grad for p in frozen.parameters()) and not frozen.training
    assert all(p.requires_grad for p in teacher.parameters())


@pytest.mark.parametrize("values", [[1.0, float("nan"), 2.0], [float("inf"), 1.0]])
def test_quantize_tensor_and_kmeans_refuse_non_finite_values(values):
    x = torch.tensor(values)
    with pytest.raises(ValueError, match="x has 1 non-finite"):
        Q.quantize_tensor(x, bits=4)
    with pytest.raises(ValueError, match="w has 1 non-finite"):
        S.kmeans_1d(x, 2)


def test_quantize_tensor_and_kmeans_refuse_empty_tensors():
    with pytest.raises(ValueError, match="x is empty"):
        Q.quantize_tensor(torch.zeros(0), bits=4)
    with pytest.raises(ValueError, match="w is empty"):
        S.kmeans_1d(torch.zeros(0), 2)


def test_train_and_evaluate_refuse_an_empty_split(tiny_data):
    empty = Split(torch.zeros(0, 28, 28, dtype=torch.uint8), torch.zeros(0, dtype=torch.long), 0.2, 0.3)
    model = models.create("lenet300")
    with pytest.raises(ValueError, match="empty split"):
        training.evaluate(model, empty)
    no_train = Dataset("tiny", empty, tiny_data.test, None, tiny_data.classes, {})
    with pytest.raises(ValueError, match="data.train is empty"):
        training.train(model, no_train, TrainConfig(epochs=1), progress=False)


def test_evaluate_still_counts_a_one_example_split(tiny_data):
    one = Split(tiny_data.test.images[:1], tiny_data.test.labels[:1], 0.2, 0.3)
    result = training.evaluate(models.create("lenet300"), one)
    assert result.n == 1 and result.errors in (0, 1) and math.isfinite(result.loss)


def _issue_cases():
    from compresslab.techniques.deepcompression import DeepCompressionConfig
    from compresslab.techniques.lottery import LotteryConfig
    from compresslab.techniques.pruning import PruneConfig

    return [
        (lambda: TrainConfig(lr=math.inf), ValueError, "TrainConfig.lr=inf"),
        (lambda: TrainConfig(weight_decay=math.nan), ValueError, "TrainConfig.weight_decay=nan"),
        (lambda: TrainConfig(seed=None), TypeError, "TrainConfig.seed=None"),
        (lambda: TrainConfig(batch_size=2.5), TypeError, "TrainConfig.batch_size=2.5"),
        (lambda: TrainConfig(epochs=math.inf), ValueError, "TrainConfig.epochs=inf"),
        (lambda: TrainConfig(epochs="1"), TypeError, "TrainConfig.epochs='1' must be a number"),
        (lambda: LotteryConfig(random_mask_seed=2**64), ValueError, "LotteryConfig.random_mask_seed=18446744073709551616"),
        (lambda: S.ShareConfig(seed=-1), ValueError, "ShareConfig.seed=-1"),
        (lambda: PruneConfig(finetune={}), TypeError, "PruneConfig.finetune={} must be a TrainConfig"),
        (lambda: S.ShareConfig(finetune={}), TypeError, "ShareConfig.finetune={} must be a TrainConfig"),
        (lambda: DeepCompressionConfig(share=S.ShareConfig(), prune={}), TypeError, "DeepCompressionConfig.prune={}"),
    ]


@pytest.mark.parametrize("case", range(11))
def test_the_issues_config_values_raise_naming_the_field(case):
    build, error, message = _issue_cases()[case]
    with pytest.raises(error) as info:
        build()
    assert str(info.value).startswith(message), str(info.value)


def test_a_seed_at_the_top_of_the_range_trains():
    data = make_tiny_dataset(32, 16, 0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    training.train(model, data, TrainConfig(epochs=1, seed=2**63 - 1), progress=False)
