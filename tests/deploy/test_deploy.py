"""Real INT8 through torchao's PT2E flow, on a tiny model (one compiled INT8 graph, one FP32)."""

import warnings
from collections import OrderedDict

import pytest
import torch
from torch import nn

from compresslab.core.training import TrainConfig
from compresslab.deploy import pt2e
from compresslab.techniques import quantization as Q
from compresslab.techniques import quantops

BATCH = 16


def _tiny_cnn() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(1, 4, 5, stride=2)), ("relu1", nn.ReLU()), ("pool1", nn.MaxPool2d(2)),
        ("flatten", nn.Flatten()), ("fc1", nn.Linear(4 * 6 * 6, 10)),
    ]))


@pytest.fixture(scope="module")
def data():
    from conftest import make_tiny_dataset

    return make_tiny_dataset(n_train=128, n_test=64, n_val=0)


@pytest.fixture(scope="module")
def trained(data):
    model = _tiny_cnn()
    from compresslab.core.training import train

    train(model, data, TrainConfig(epochs=3, lr=0.05, batch_size=32), progress=False, evaluate_test=False)
    return model.eval()


@pytest.fixture(scope="module")
def built(trained, data):
    config = pt2e.Int8Config(batch_sizes=(BATCH,), calibration_size=128, benchmark=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch.export / inductor chatter
        return pt2e.apply_int8(trained, config, data)


def test_int8_model_is_a_module_that_evaluate_runs(built, data):
    from compresslab.core.training import evaluate

    int8, report = built
    assert isinstance(int8, torch.nn.Module) and int8.eval() is int8 and not int8.training
    assert evaluate(int8, data.test).accuracy == pytest.approx(report.accuracy_after)
    assert list(int8.children()) == [] and sum(p.numel() for p in int8.parameters()) == 0


def test_int8_matches_reference_and_fake_quant(built, trained, data):
    int8, report = built
    x = data.test.tensors(BATCH)[0]
    out = int8(x)
    ref = int8.reference(x)
    with torch.no_grad():
        fp32 = trained(x)
    spread = float(fp32.std())
    # the compiled INT8 kernels compute what the q/dq graph describes, up to integer rounding
    assert quantops.sqnr_db(ref, out) > 30
    assert float((out - ref).abs().max()) < 0.1 * spread
    # ... and what our from-scratch fake quant with the same scheme computes
    cfg = Q.QuantConfig(weight_bits=8, act_bits=8, weight_scheme="symmetric", weight_granularity="per_channel",
                        act_scheme="asymmetric", calibration_size=128)
    sim, _ = Q.apply_ptq(trained, cfg, data)
    with torch.no_grad():
        ours = sim(x)
    assert quantops.sqnr_db(ours, out) > 20
    assert quantops.sqnr_db(fp32, out) > 20


def test_report(built, trained):
    int8, report = built
    assert report.method == "ptq" and report.compiled and int8.compiled
    assert report.warning is None
    assert report.agreement_reference > 95
    assert abs(report.accuracy_after - report.accuracy_before) < 10
    # sizes: one int8 byte per weight, float biases / scales / zero points on top
    n_weights = sum(m.weight.numel() for m in (trained.conv1, trained.fc1))
    assert report.int8_bytes["int8_bytes"] == n_weights
    assert report.fp32_bytes == 4 * sum(p.numel() for p in trained.parameters())
    assert report.fp32_bytes / report.int8_bytes["total_bytes"] > 2.5
    assert report.timings == [] and report.latency is None and report.speedups == {}  # benchmark=False
    assert report.to_dict()["config"]["batch_sizes"] == [BATCH]  # JSON has lists
    assert type(report).from_dict(report.to_dict()).config == report.config  # and tuples come back
    assert "INT8" in report._repr_html_()


def test_timing_variants_uncompiled(trained, data):
    config = pt2e.Int8Config(batch_sizes=(1, BATCH), calibration_size=64, compile=False, rounds=2, repeats=3)
    _, report = pt2e.apply_int8(trained, config, data)
    assert not report.compiled and "compile=False" in report.warning
    assert {row["variant"] for row in report.timings} == {"fp32 eager", "fp32 channels_last", "int8"}
    assert {row["batch"] for row in report.timings} == {1, BATCH}
    assert all(row["median ms"] > 0 and row["threads"] >= 1 for row in report.timings)
    int8_b1 = next(r for r in report.timings if r["variant"] == "int8" and r["batch"] == 1)
    assert report.latency["batch_size"] == 1 and round(report.latency["median_ms"], 4) == int8_b1["median ms"]
    assert report.point()["latency_ms"] == report.latency["median_ms"]
    assert report.extra["fair_baseline"] == "fp32 channels_last"
    assert set(report.speedups) == {f"int8 vs {v} @ batch {b}" for v in ("fp32 channels_last", "fp32 eager")
                                    for b in (1, BATCH)}


def test_benchmark_interleaves_and_ranks():
    import time

    slow = (lambda x: time.sleep(0.004), False)
    fast = (lambda x: time.sleep(0.001), False)
    table = pt2e.benchmark({"slow": slow, "fast": fast}, (2,), (1, 4, 4), rounds=3, repeats=3, baseline="slow")
    rows = table.table()
    assert list(rows["variant"]) == ["slow", "fast"] and set(rows["batch"]) == {2}
    assert int(rows["p10 ms"].min()) >= 0 and table.rows[0].repeats == 9  # 3 rounds x 3 calls
    assert table.speedup("fast", 2) > 1.5  # sleeping 1 ms beats sleeping 4 ms, whatever the load


def test_int8_pads_other_batch_sizes(built, data):
    int8, _ = built
    x = data.test.tensors(BATCH + 5)[0]
    out = int8(x)  # one full compiled batch + a padded one, no new compilation
    assert out.shape == (BATCH + 5, 10)
    assert torch.allclose(out[:BATCH], int8(x[:BATCH]))


def test_fallback_without_compiler(trained, data, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(torch, "compile", broken)
    config = pt2e.Int8Config(batch_sizes=(BATCH,), calibration_size=64, benchmark=False)
    with pytest.warns(RuntimeWarning, match="NOT representative"):
        int8, report = pt2e.apply_int8(trained, config, data)
    assert not report.compiled and not int8.compiled and "no C++ compiler" in report.warning
    x = data.test.tensors(3)[0]
    assert torch.equal(int8(x), int8.reference(x))  # runs the converted graph as is
    assert report.timings == [] and report.latency is None and report.speedups == {}


def test_qat_flow_trains_the_exported_graph(trained, data):
    config = pt2e.Int8Config(batch_sizes=(BATCH,), calibration_size=64, compile=False, benchmark=False,
                                 qat=TrainConfig(epochs=1, lr=0.01, batch_size=32))
    int8, report = pt2e.apply_int8(trained, config, data)
    assert report.method == "qat" and not report.compiled
    assert report.accuracy_after == report.accuracy_reference
    assert abs(report.accuracy_after - report.accuracy_before) < 15
    ops = {str(n.target) for n in int8.converted.graph.nodes if n.op == "call_function"}
    assert any("quantize_per_tensor" in op for op in ops)  # a real q/dq graph came out


def test_weight_bytes_counts_int8_constants():
    gm = torch.fx.symbolic_trace(nn.Linear(3, 2))
    gm.register_buffer("w8", torch.zeros(5, 4, dtype=torch.int8))
    graph = gm.graph
    out = next(n for n in graph.nodes if n.op == "output")
    with graph.inserting_before(out):
        graph.get_attr("w8")
    gm.recompile()
    sizes = pt2e.weight_bytes(gm)
    assert sizes["int8_bytes"] == 20
    assert sizes["other_bytes"] == 4 * (3 * 2 + 2)


@pytest.mark.parametrize("kwargs,field", [
    ({"batch_sizes": ()}, "batch_sizes"), ({"batch_sizes": (0,)}, "batch_sizes"),
    ({"calibration_size": 0}, "calibration_size"), ({"rounds": 0}, "rounds"), ({"repeats": -1}, "repeats"),
    ({"qat": {"epochs": 1}}, "qat"), ({"threads": 0}, "threads"),
])
def test_bad_deploy_config(kwargs, field):
    with pytest.raises((ValueError, TypeError), match=field):
        pt2e.Int8Config(**kwargs)


@pytest.mark.parametrize("weights", [torch.channels_last, torch.contiguous_format])
def test_eager_is_nchw_and_channels_last_is_nhwc_whatever_the_weights_arrive_in(trained, built, weights, monkeypatch):
    """'fp32 eager' computes with NCHW weights, 'fp32 channels_last' with NHWC ones, for a model
    trained here (channels_last weights) and for the same model with NCHW weights alike."""
    import copy

    from compresslab.deploy import pt2e

    int8, _ = built
    model = copy.deepcopy(trained).to(memory_format=weights)
    seen: dict[str, set] = {}
    current = []
    model.conv1.register_forward_hook(lambda m, i, o: seen.setdefault(current[0], set()).add(
        m.weight.stride(1) == 1))  # channels innermost

    def capture(variants, batch_sizes, shape, rounds, repeats, threads, baseline):
        for label, (fn, cl) in variants.items():
            if label.startswith("fp32") and label != "fp32 compiled":
                current[:] = [label]
                x = torch.randn(2, *shape)
                fn(x.contiguous(memory_format=torch.channels_last) if cl else x)
        raise StopIteration

    monkeypatch.setattr(pt2e, "benchmark", capture)
    config = pt2e.Int8Config(batch_sizes=(BATCH,), calibration_size=64, compile=False)
    with pytest.raises(StopIteration):
        pt2e._time_variants(model, int8, config, (1, 28, 28))
    assert seen == {"fp32 eager": {False}, "fp32 channels_last": {True}}, seen
