"""One input-layout helper (models.to_model_layout / prepare_input / prepare_model) and one latency
harness (latency.latency_rounds, used by deploy.benchmark). Oracles: strides and values of the
tensors a variant receives, NCHW outputs, and ratios computed by hand."""

import math

import pytest
import torch

from compresslab.core import latency, models
from compresslab.deploy import pt2e


def _is_cl(x: torch.Tensor) -> bool:
    """Channels innermost (NHWC strides); the tests use C > 1, where the two layouts differ in memory."""
    return x.dim() == 4 and x.stride(1) == 1


def test_to_model_layout_changes_strides_never_values():
    x = torch.randn(3, 2, 5, 5)
    y = models.to_model_layout(x, True)
    assert _is_cl(y) and torch.equal(x, y)
    assert models.to_model_layout(x, False) is x
    flat = torch.randn(3, 784)
    assert models.to_model_layout(flat, True) is flat  # only 4-D batches have a channels_last form


def test_prepare_input_and_model_follow_the_architecture():
    x3 = torch.randn(4, 3, 8, 8)
    assert _is_cl(models.prepare_input(x3, models.lenet5()))
    assert models.prepare_input(x3, models.lenet300()) is x3
    x = torch.randn(4, 1, 28, 28)
    torch.manual_seed(0)
    net = models.lenet5().eval()
    with torch.no_grad():
        reference = net(x)  # NCHW weights, NCHW input
        prepared = models.prepare_model(net)
        assert prepared is net and net.conv2.weight.is_contiguous(memory_format=torch.channels_last)
        assert torch.allclose(net(models.prepare_input(x, net)), reference, atol=1e-5)
    mlp = models.lenet300()
    before = [p.data_ptr() for p in mlp.parameters()]
    assert [p.data_ptr() for p in models.prepare_model(mlp).parameters()] == before  # untouched


def test_latency_rounds_feeds_each_variant_its_own_layout_and_reports_threads():
    seen: dict[str, set] = {"nchw": set(), "cl": set()}

    def recorder(label):
        return lambda x: seen[label].add(_is_cl(x))  # looks `seen` up at call time

    old = torch.get_num_threads()
    rows = latency.latency_rounds({"nchw": recorder("nchw"), "cl": recorder("cl"), "conv": models.lenet5()},
                                  rounds=2, channels_last={"nchw": False, "cl": True}, batch_sizes=(2,),
                                  input_shape=(1, 28, 28), repeats=2, warmup=1, threads=1)
    seen = {"nchw": set(), "cl": set()}  # C = 1 batches look the same in both layouts: look at C = 3
    rows_c3 = latency.latency_rounds({"nchw": recorder("nchw"), "cl": recorder("cl")}, rounds=1,
                                     channels_last={"nchw": False, "cl": True}, batch_sizes=(2,),
                                     input_shape=(3, 4, 4), repeats=1, warmup=0)
    assert torch.get_num_threads() == old  # restored after timing
    assert seen["nchw"] == {False} and seen["cl"] == {True}
    assert {r.label for r in rows} == {"nchw", "cl", "conv"} and len(rows_c3) == 2
    assert all(r.threads == 1 and r.repeats == 4 and r.p10_ms <= r.median_ms <= r.p90_ms for r in rows)


def test_deploy_benchmark_is_latency_rounds():
    seen = []
    table = pt2e.benchmark({"a": (lambda x: seen.append(("a", _is_cl(x))), True),
                              "b": (lambda x: seen.append(("b", _is_cl(x))), False)},
                             (2,), (3, 4, 4), rounds=2, repeats=3, threads=1, baseline="a")
    assert {s for s in seen} == {("a", True), ("b", False)}
    assert [r.label for r in table.rows] == ["a", "b"] and all(r.repeats == 6 and r.threads == 1 for r in table.rows)


def test_no_ratio_of_a_zero_time():
    assert latency.time_ratio(6.0, 2.0) == 3.0
    assert math.isnan(latency.time_ratio(1.0, 0.0)) and math.isnan(latency.time_ratio(0.0, 1.0))
    table = latency.SpeedTable(baseline="dense")
    table.add([latency.Latency("dense", 1, 2.0, 1.5, 2.5, 10, 1), latency.Latency("fast", 1, 0.0, 0.0, 0.0, 10, 1),
               latency.Latency("half", 1, 1.0, 0.8, 1.2, 10, 1)])
    assert table.speedup("half", 1) == pytest.approx(2.0) and math.isnan(table.speedup("fast", 1))
    rows = table.table()
    assert list(rows["p10 ms"]) == [1.5, 0.0, 0.8] and list(rows["threads"]) == [1, 1, 1]


class _StrideSpy(torch.nn.Module):
    """A conv layer that records, per call, whether its weight and its input are channels-innermost."""

    calls: list = []  # class attribute: shared with the copies the harness may time

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)

    def forward(self, x):
        _StrideSpy.calls.append((self.conv.weight.stride(1) == 1, _is_cl(x)))
        return self.conv(x)


@pytest.mark.parametrize("weights_cl", [False, True])
@pytest.mark.parametrize("batches_cl", [False, True])
def test_a_timed_module_computes_with_weights_in_the_batches_layout(weights_cl, batches_cl):
    """oneDNN's speed follows the weights' layout, so the harness matches it to the batches' (on a copy)."""
    spy = _StrideSpy()
    if weights_cl:
        spy.to(memory_format=torch.channels_last)
    strides = [tuple(p.stride()) for p in spy.parameters()]
    _StrideSpy.calls = []
    latency.latency(spy, batch_sizes=(2,), input_shape=(3, 6, 6), repeats=2, warmup=1, channels_last=batches_cl)
    assert _StrideSpy.calls and set(_StrideSpy.calls) == {(batches_cl, batches_cl)}
    assert [tuple(p.stride()) for p in spy.parameters()] == strides  # the caller's module is not changed
    assert (latency.in_layout(spy, batches_cl) is spy) == (weights_cl == batches_cl)  # copied only when needed
