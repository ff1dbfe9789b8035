"""Per-layer precision and the per-layer latency table: every file holds exactly the config asked for
(read back from the graph), outputs against PyTorch (exact for FP32 and for 4-bit weights quantized
by hand, bounded for INT8), the table's prediction against synthetic cost models (additive, and with
neighbour interactions: exact for every config with pair terms; a non-neighbour interaction: the known
error), the table's costs solved as an integer program against brute force, bad inputs refused before
any work, and the table's JSON round trip (old tables without pair terms still read)."""

from __future__ import annotations

import itertools
import json
import math
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("onnxruntime")
from compresslab.core.latency import Latency  # noqa: E402
from compresslab.deploy import base, layerexport, layertable, onnx_nbits, onnx_qdq, runtime_onnx  # noqa: E402

SHAPE = (1, 8, 8)


def tiny_mlp() -> nn.Module:
    """Three Linear layers; 64 and 40 inputs: two full blocks of 32, and one full plus one half block."""
    torch.manual_seed(0)
    return nn.Sequential(OrderedDict(flatten=nn.Flatten(), fc1=nn.Linear(64, 48), relu1=nn.ReLU(),
                                     fc2=nn.Linear(48, 40), relu2=nn.ReLU(), fc3=nn.Linear(40, 10))).eval()


def tiny_cnn() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(OrderedDict(conv=nn.Conv2d(1, 4, 3), relu=nn.ReLU(), flatten=nn.Flatten(),
                                     fc=nn.Linear(4 * 6 * 6, 10))).eval()


CALIBRATION = torch.randn(64, *SHAPE, generator=torch.Generator().manual_seed(2))
X = CALIBRATION[:16]  # inside the calibrated ranges: no activation is clipped


def all_configs(model: nn.Module, runtime: str) -> list[dict[str, str]]:
    options = layerexport.layer_options(model, runtime)
    return [dict(zip(options, combo)) for combo in itertools.product(*options.values())]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("layertable")


@pytest.fixture(scope="module")
def ort_files(workdir):
    """Every config of both tiny models on ONNX Runtime, deployed (27 + 6 files)."""
    out = []
    for model in (tiny_mlp(), tiny_cnn()):
        for config in all_configs(model, "onnxruntime"):
            out.append((model, config, layerexport.export_config(model, "onnxruntime", config, X, CALIBRATION,
                                                                 workdir)))
    return out


def test_options_per_runtime():
    assert layerexport.layer_options(tiny_cnn(), "onnxruntime") == {"conv": ("fp32", "int8"),
                                                                    "fc": ("fp32", "int8", "int4")}
    assert layerexport.layer_options(tiny_mlp(), "openvino") == dict.fromkeys(("fc1", "fc2", "fc3"), ("fp32", "int8"))


def test_every_onnx_file_holds_exactly_its_config(ort_files):
    for _, config, deployed in ort_files:
        assert layerexport.quantized_layers(deployed.path) == config
        int4 = {name.removesuffix(".weight") for name in onnx_nbits.nbits_layers(deployed.path)}
        assert int4 == {k for k, v in config.items() if v == "int4"}
        assert deployed.precision == layerexport.config_slug(config)
    # one FP32 export per model, shared by every config of it
    fp32 = {d.path for _, c, d in ort_files if set(c.values()) == {"fp32"}}
    assert len(fp32) == 2 and all(p.name == "fp32.onnx" for p in fp32)


def test_fp32_and_int4_match_pytorch_exactly(ort_files):
    """FP32: PyTorch's logits. int4: PyTorch with those layers' weights quantized by hand (symmetric
    blocks of 32 along the inputs, s = m / -8), the stored weights equal to the hand formula bit for bit."""
    for model, config, deployed in ort_files:
        if "int8" in config.values():
            continue
        stored = onnx_nbits.nbits_layers(deployed.path)
        hand = _with_weights(model, {k: onnx_nbits.int4_dequantized(getattr(model, k).weight.detach().numpy())
                                     for k, v in config.items() if v == "int4"})
        for k, v in config.items():
            if v == "int4":
                assert np.array_equal(stored[f"{k}.weight"]["weight"], getattr(hand, k).weight.detach().numpy())
        with torch.no_grad():
            assert float((deployed(X) - hand(X)).abs().max()) < 1e-4, config


def test_int4_by_hand_against_brute_force():
    """The block rule against a search over every scale candidate: each block's codes reproduce its
    largest-magnitude value exactly, every value lands on its nearest grid point."""
    w = np.random.default_rng(0).normal(size=(5, 70)).astype(np.float32)
    codes, scales = onnx_nbits.int4_blocks(w)
    assert codes.shape == w.shape and scales.shape == (5, 3) and codes.max() <= 15
    deq = onnx_nbits.int4_dequantized(w)
    for r in range(5):
        for b in range(3):
            block, got = w[r, 32 * b:32 * (b + 1)], deq[r, 32 * b:32 * (b + 1)]
            grid = (np.arange(16) - 8) * scales[r, b]
            nearest = grid[np.abs(block[:, None] - grid[None, :]).argmin(1)]
            np.testing.assert_allclose(got, nearest, rtol=0, atol=1e-7)
            assert got[np.abs(block).argmax()] == block[np.abs(block).argmax()]


def test_int8_layers_against_hand_arithmetic_and_the_adapter(ort_files, workdir):
    """Last layer int8 alone: ORT = the QDQ arithmetic by hand on PyTorch's hidden activations, up to
    half a step of the output's requantization. Every int8 config: within 5% of the logits' range of
    PyTorch with any int4 layer's weights quantized by hand (each of at most 2 x 3 activation roundings and 3 weight roundings moves a logit by about
    half a step, 1/510 of a range). All layers int8: the adapter's whole-model INT8 file, to 1e-5."""
    for model, config, deployed in ort_files:
        if "int8" not in config.values():
            continue
        hand = _with_weights(model, {k: onnx_nbits.int4_dequantized(getattr(model, k).weight.detach().numpy())
                                     for k, v in config.items() if v == "int4"})  # int4 layers as by hand
        with torch.no_grad():
            ref = hand(X)
            out = deployed(X)
        assert float((out - ref).abs().max()) < 0.05 * float(ref.abs().max()), config
        last = list(config)[-1]
        if config[last] == "int8" and set(v for k, v in config.items() if k != last) == {"fp32"}:
            layer = onnx_qdq.qdq_layers(deployed.path)[0]
            hidden = _input_of(model, last, X)
            step = _output_scale(deployed.path, layer.output)
            by_hand = onnx_qdq.by_hand(layer, hidden.numpy())
            assert np.abs(out.numpy() - by_hand).max() <= step / 2 + 1e-5, config
        if set(config.values()) == {"int8"}:
            whole = runtime_onnx.OnnxRuntimeAdapter().export(
                model, X, base.DeployOptions(precision="int8"), CALIBRATION, workdir / f"whole-{len(config)}")
            assert float((whole(X) - out).abs().max()) < 1e-5


def _with_weights(model: nn.Module, weights: dict) -> nn.Module:
    import copy

    out = copy.deepcopy(model)
    for k, w in weights.items():
        getattr(out, k).weight.data = torch.from_numpy(np.asarray(w, np.float32))
    return out


def _input_of(model: nn.Module, layer: str, x: torch.Tensor) -> torch.Tensor:
    seen = {}
    handle = getattr(model, layer).register_forward_pre_hook(lambda m, a: seen.setdefault("x", a[0].detach()))
    with torch.no_grad():
        model(x)
    handle.remove()
    return seen["x"]


def _output_scale(path, tensor: str) -> float:
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    node = next(n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] == tensor)
    return float(inits[node.input[1]])


def _kernels(path, disabled: list[str]) -> dict[str, str]:
    """{node name: the kernel ORT ran it with} from a profile of one run (all graph optimizations)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.enable_profiling = 1, True
    opts.profile_file_prefix = str(Path(path).with_name(f"profile{len(disabled)}"))
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"], disabled_optimizers=disabled)
    sess.run(None, {sess.get_inputs()[0].name: X.numpy()})
    events = json.loads(Path(sess.end_profiling()).read_text())
    return {e["name"].removesuffix("_kernel_time"): e["args"]["op_name"] for e in events
            if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")}


def test_an_fp32_layer_between_int8_layers_runs_in_float(workdir):
    """fc1 and fc3 int8, fc2 FP32 between them: ORT's WeightBiasQuantization would run fc2 as an int8
    QGemm; with `runtime_onnx.KEEP_FLOAT` disabled (as every session is) it runs a float Gemm, and
    the file's config is what runs: int8 kernels exactly for fc1 and fc3."""
    deployed = layerexport.export_config(tiny_mlp(), "onnxruntime", {"fc1": "int8", "fc3": "int8"}, X, CALIBRATION,
                                         workdir)
    quantized = {"QGemm", "QLinearMatMul", "MatMulIntegerToFloat", "QLinearConv"}
    default = _kernels(deployed.path, [])
    kept = _kernels(deployed.path, list(runtime_onnx.KEEP_FLOAT))
    assert sum(op in quantized for op in default.values()) == 3  # the optimizer quantized fc2 too
    assert sum(op in quantized for op in kept.values()) == 2
    assert any(op in ("Gemm", "FusedGemm", "MatMul") for op in kept.values())


# ---- the table against synthetic cost models ------------------------------------------------------------

COST = {"fc1": {"fp32": 1.0, "int8": 0.375, "int4": 0.5}, "fc2": {"fp32": 0.5, "int8": 0.25, "int4": 0.625},
        "fc3": {"fp32": 0.125, "int8": 0.25, "int4": 0.125}}
OVERHEAD = 2.0  # dyadic numbers: every sum is exact in floating point


def fake_timer(interaction: float = 0.0):
    """Times nothing: a variant's median is OVERHEAD + its layers' costs (its config read back from its
    file), plus `interaction` when fc1 and fc2 are both int8."""
    def timer(variants, batch_size):
        out = {}
        for label, deployed in variants.items():
            config = layerexport.quantized_layers(deployed.path)
            ms = OVERHEAD + sum(COST[k][v] for k, v in config.items())
            ms += interaction if config["fc1"] == config["fc2"] == "int8" else 0.0
            out[label] = Latency(label, batch_size, ms, 0.75 * ms, 1.5 * ms, 10, 1)
        return out
    return timer


@pytest.mark.parametrize("interaction", [0.0, 0.5])
def test_prediction_exact_for_additive_costs_and_off_by_the_interaction(workdir, interaction):
    """The additive table (pairs=False): exact when costs add up, off by the interaction otherwise."""
    model = tiny_mlp()
    table, deployed = layertable.measure_table(model, "onnxruntime", 4, X, CALIBRATION, workdir,
                                               timer=fake_timer(interaction), pairs=False)
    assert set(deployed) == {"fp32", "fc1=int8", "fc1=int4", "fc2=int8", "fc2=int4", "fc3=int8", "fc3=int4"}
    assert table.base_ms == OVERHEAD + 1.625 and table.delta_ms["fc1"] == {"fp32": 0.0, "int8": -0.625, "int4": -0.5}
    assert table.spread["fc2=int4"] == {"p10_ms": 0.75 * 3.75, "median_ms": 3.75, "p90_ms": 1.5 * 3.75}
    configs = all_configs(model, "onnxruntime")
    measured = layertable.measure_configs(model, "onnxruntime", configs, 4, X, CALIBRATION, workdir,
                                          timer=fake_timer(interaction))
    errors = layertable.prediction_errors(table, configs, measured)
    for config, m, error in zip(configs, measured, errors):
        truth = OVERHEAD + sum(COST[k][v] for k, v in config.items())
        both = config["fc1"] == config["fc2"] == "int8"
        assert table.predict(config) == truth and m.median_ms == truth + (interaction if both else 0.0)
        assert error == (0.0 if not both else -interaction / (truth + interaction))


# a chain / boundary cost model: each boundary between two neighbours costs by both their options (an
# int8 layer's input quantize and output dequantize vanish between two int8 layers), dyadic numbers
BOUNDARY = {("int8", "int8"): -0.375, ("int8", "int4"): 0.125, ("int4", "int8"): -0.0625, ("int4", "int4"): 0.25}


def chain_cost(config: dict, order: list[str], far: float = 0.0) -> float:
    """OVERHEAD + each layer's cost + each adjacent boundary's + `far` when the first and last of
    `order` are both int8 (and not neighbours: an interaction past a neighbour)."""
    ms = OVERHEAD + sum(CHAIN[k][v] for k, v in config.items())
    ms += sum(BOUNDARY.get((config[a], config[b]), 0.0) for a, b in zip(order, order[1:]))
    return ms + (far if config[order[0]] == config[order[-1]] == "int8" else 0.0)


CHAIN = COST | {"conv": {"fp32": 1.5, "int8": 0.75}, "fc": {"fp32": 0.25, "int8": 0.125, "int4": 0.0625}}


def chain_timer(order: list[str], far: float = 0.0):
    def timer(variants, batch_size):
        out = {}
        for label, deployed in variants.items():
            ms = chain_cost(layerexport.quantized_layers(deployed.path), order, far)
            out[label] = Latency(label, batch_size, ms, 0.5 * ms, 2.0 * ms, 10, 1)
        return out
    return timer


@pytest.mark.parametrize("make", [tiny_mlp, tiny_cnn])
def test_pair_terms_make_the_prediction_exact_for_neighbour_interactions(workdir, make):
    """Brute force over every config: with pair terms the prediction equals the fake measurement
    exactly; the additive table (the same deltas) errs by exactly the config's boundary terms."""
    model = make()
    order = list(layerexport.layer_options(model, "onnxruntime"))
    table, deployed = layertable.measure_table(model, "onnxruntime", 8, X, CALIBRATION, workdir,
                                               timer=chain_timer(order))
    pairs = {(a, o1, b, o2) for a, b in zip(order, order[1:]) for o1 in ("int8", "int4") for o2 in ("int8", "int4")
             if o1 in layerexport.layer_options(model, "onnxruntime")[a]
             and o2 in layerexport.layer_options(model, "onnxruntime")[b]}
    assert set(deployed) == set(table.spread) == ({"fp32"} | {f"{k}={o}" for k in order for o in table.delta_ms[k]
                                                             if o != "fp32"}
                                                  | {f"{a}={o1},{b}={o2}" for a, o1, b, o2 in pairs})
    assert table.pair_ms == {f"{a}|{b}": {f"{o1}|{o2}": BOUNDARY[(o1, o2)] for x, o1, y, o2 in pairs
                                          if (x, y) == (a, b)} for a, b in zip(order, order[1:])}
    additive = table.without_pairs()
    configs = all_configs(model, "onnxruntime")
    measured = layertable.measure_configs(model, "onnxruntime", configs, 8, X, CALIBRATION, workdir,
                                          timer=chain_timer(order))
    assert layertable.prediction_errors(table, configs, measured) == [0.0] * len(configs)
    for config, m in zip(configs, measured):
        assert table.predict(config) == m.median_ms == chain_cost(config, order)
        boundary = sum(BOUNDARY.get((config[a], config[b]), 0.0) for a, b in zip(order, order[1:]))
        assert additive.predict(config) == m.median_ms - boundary
    rows = table.pair_rows()
    assert len(rows) == len(pairs) and all(r["interaction_ms"] == BOUNDARY[(r["option1"], r["option2"])]
                                           for r in rows)
    assert all(r["relative"] == r["interaction_ms"] / table.base_ms and r["p10_ms"] == 0.5 * r["median_ms"]
               for r in rows)


def test_measure_space_times_the_table_and_the_configs_in_one_phase(workdir):
    """One timer call for the table's variants and the configs: the same table as measure_table (the
    configs' models are not part of it, the all-FP32 config shares the base's timing) and each config's
    fake measurement, in order."""
    model = tiny_mlp()
    order = list(layerexport.layer_options(model, "onnxruntime"))
    calls = []

    def counting(variants, batch_size):
        calls.append(set(variants))
        return chain_timer(order)(variants, batch_size)

    configs = all_configs(model, "onnxruntime")
    table, deployed, measured = layertable.measure_space(model, "onnxruntime", 8, configs, X, CALIBRATION, workdir,
                                                         timer=counting)
    alone, alone_deployed = layertable.measure_table(model, "onnxruntime", 8, X, CALIBRATION, workdir,
                                                     timer=chain_timer(order))
    # one phase; a config that is one of the table's variants (all-FP32, one layer, two neighbours) is timed once
    assert len(calls) == 1 and len(calls[0]) == len(configs) == 27 and len(alone_deployed) == 15
    assert table.delta_ms == alone.delta_ms and table.pair_ms == alone.pair_ms and table.base_ms == alone.base_ms
    assert set(alone_deployed) == set(table.spread)
    assert set(deployed) == set(alone_deployed) | {layerexport.config_slug(c) for c in configs}
    assert [m.median_ms for m in measured] == [chain_cost(c, order) for c in configs]
    with pytest.raises(ValueError, match="configs"):
        layertable.measure_space(model, "onnxruntime", 8, {"fc1": "int8"}, X, CALIBRATION, workdir, timer=counting)


def test_sessions_keep_the_median_session_of_each_model(workdir):
    """Three sessions per model, the i-th running (1 + i / 8) times the cost: the table and the configs
    are those of the median session (factor 9 / 8), the same for every model."""
    model = tiny_mlp()
    order = list(layerexport.layer_options(model, "onnxruntime"))

    def offset_timer(variants, batch_size):
        out = {}
        for label, deployed in variants.items():
            ms = chain_cost(layerexport.quantized_layers(deployed.path), order) * (1 + int(label.split("#")[1]) / 8)
            out[label] = Latency(label, batch_size, ms, 0.5 * ms, 2.0 * ms, 10, 1)
        return out

    configs = all_configs(model, "onnxruntime")
    table, deployed, measured = layertable.measure_space(model, "onnxruntime", 8, configs, X, CALIBRATION, workdir,
                                                         timer=offset_timer, sessions=3)
    assert table.base_ms == chain_cost({k: "fp32" for k in order}, order) * 9 / 8
    assert all(m.median_ms == chain_cost(c, order) * 9 / 8 and m.repeats == 30 for c, m in zip(configs, measured))
    assert all(abs(table.predict(c) - m.median_ms) < 1e-9 for c, m in zip(configs, measured))
    with pytest.raises(ValueError, match="sessions"):
        layertable.measure_space(model, "onnxruntime", 8, configs, X, CALIBRATION, workdir, timer=offset_timer,
                                 sessions=0)


def test_a_non_neighbour_interaction_is_the_pair_tables_known_error(workdir):
    """fc1 and fc3 (not neighbours) both int8 cost `far` more: the pair variants never hold both, so
    the prediction misses exactly `far` on those configs and nothing elsewhere."""
    model, far = tiny_mlp(), 0.5
    order = ["fc1", "fc2", "fc3"]
    table, _ = layertable.measure_table(model, "onnxruntime", 8, X, CALIBRATION, workdir, timer=chain_timer(order, far))
    configs = all_configs(model, "onnxruntime")
    measured = layertable.measure_configs(model, "onnxruntime", configs, 8, X, CALIBRATION, workdir,
                                          timer=chain_timer(order, far))
    for config, m, error in zip(configs, measured, layertable.prediction_errors(table, configs, measured)):
        hit = config["fc1"] == config["fc3"] == "int8"
        assert m.median_ms - table.predict(config) == (far if hit else 0.0)
        assert error == (-far / m.median_ms if hit else 0.0)


def test_the_tables_program_costs_solve_to_the_measured_optimum(workdir):
    """program_costs() in the integer program: base_ms + a config's cost (pair terms included) is its
    predicted latency; under each budget the config it picks has the lowest made-up score of all the
    configs whose latency fits (brute force over every config), and fits."""
    from compresslab.techniques import mixedprecision as MP

    model = tiny_mlp()
    order = list(layerexport.layer_options(model, "onnxruntime"))
    table, _ = layertable.measure_table(model, "onnxruntime", 8, X, CALIBRATION, workdir, timer=chain_timer(order))
    costs, pair_costs = table.program_costs()
    assert costs == table.delta_ms and set(pair_costs) == {("fc1", "fc2"), ("fc2", "fc3")}
    assert pair_costs[("fc1", "fc2")][("int8", "int8")] == BOUNDARY[("int8", "int8")]
    scores = {k: {"fp32": 0.0, "int8": 1.0 + i, "int4": 3.0 + 2 * i} for i, k in enumerate(order)}
    configs = all_configs(model, "onnxruntime")
    for config in configs:
        assert MP.total_cost(costs, config, pair_costs) + table.base_ms == table.predict(config) == chain_cost(
            config, order)
    for budget_ms in sorted({chain_cost(c, order) for c in configs}):
        got = MP.solve(scores, costs, budget_ms - table.base_ms, pair_costs=pair_costs)
        fits = [c for c in configs if chain_cost(c, order) <= budget_ms]
        assert table.predict(got) <= budget_ms
        assert MP.total(scores, got) == min(MP.total(scores, c) for c in fits)


def test_default_timer_times_every_variant(workdir):
    """The real harness, briefly: one Latency per variant at the batch asked for, with the thread count."""
    table, _ = layertable.measure_table(tiny_cnn(), "onnxruntime", 2, X, CALIBRATION, workdir, rounds=1, repeats=3)
    assert table.batch_size == 2 and table.threads == 1 and table.base_ms > 0
    assert set(table.spread) == {"fp32", "conv=int8", "fc=int8", "fc=int4", "conv=int8,fc=int8", "conv=int8,fc=int4"}
    assert all(r["p10_ms"] <= r["median_ms"] <= r["p90_ms"] for r in table.rows())
    assert {"avx2", "vnni", "model"} <= set(table.cpu) and set(table.export_seconds) == set(table.spread)


# ---- OpenVINO ------------------------------------------------------------------------------------------

def test_openvino_files_hold_their_config_and_fp32_matches(workdir):
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    for model in (tiny_mlp(), tiny_cnn()):
        for config in all_configs(model, "openvino"):
            deployed = layerexport.export_config(model, "openvino", config, X, CALIBRATION, workdir)
            assert layerexport.quantized_layers(deployed.path) == config
            with torch.no_grad():
                ref, out = model(X), deployed(X)
            bound = 1e-4 if set(config.values()) == {"fp32"} else 0.05 * float(ref.abs().max())
            assert float((out - ref).abs().max()) < bound, config


# ---- bad inputs, the JSON form -------------------------------------------------------------------------

@pytest.mark.parametrize("runtime, config, match", [
    ("tflite", {}, "runtime='tflite' must be one of"),
    ("onnxruntime", {"fc_1": "int8"}, r"config names unknown layers \['fc_1'\].*fc1"),
    ("onnxruntime", {"fc1": "int2"}, r"config\['fc1'\]='int2' must be one of \('fp32', 'int8', 'int4'\)"),
    ("openvino", {"fc1": "int4"}, r"config\['fc1'\]='int4' must be one of \('fp32', 'int8'\)"),
])
def test_bad_configs_raise_before_any_work(tmp_path, runtime, config, match):
    with pytest.raises(ValueError, match=match):
        layerexport.export_config(tiny_mlp(), runtime, config, X, CALIBRATION, tmp_path)
    assert not any(tmp_path.iterdir())


def test_bad_measurement_arguments_raise_before_any_work(tmp_path):
    cnn = tiny_cnn()
    with pytest.raises(ValueError, match=r"config\['conv'\]='int4' must be one of \('fp32', 'int8'\)"):
        layerexport.export_config(cnn, "onnxruntime", {"conv": "int4"}, X, CALIBRATION, tmp_path)
    with pytest.raises(ValueError, match="calibration"):
        layerexport.export_config(cnn, "onnxruntime", {"conv": "int8"}, X, None, tmp_path)
    with pytest.raises(ValueError, match="batch_size=0"):
        layertable.measure_table(cnn, "onnxruntime", 0, X, CALIBRATION, tmp_path)
    with pytest.raises(TypeError, match="threads"):
        layertable.measure_table(cnn, "onnxruntime", 1, X, CALIBRATION, tmp_path, threads=1.5)
    with pytest.raises(TypeError, match="pairs=1 must be True or False"):
        layertable.measure_table(cnn, "onnxruntime", 1, X, CALIBRATION, tmp_path, pairs=1)
    with pytest.raises(ValueError, match=r"unknown layers \['fc9'\]"):
        layertable.measure_configs(cnn, "onnxruntime", [{"fc": "int8"}, {"fc9": "int8"}], 1, X, CALIBRATION, tmp_path)
    assert not any(tmp_path.iterdir())


def table(pairs: bool = False) -> layertable.LatencyTable:
    """Two layers; with `pairs`, fc1 at int8 and fc2 at int4 together take 1.5 ms (interaction
    1.5 - 1.5 - 2.25 + 2.0 = -0.25 ms)."""
    spread = {"fp32": {"p10_ms": 1.5, "median_ms": 2.0, "p90_ms": 3.0},
              "fc1=int8": {"p10_ms": 1.0, "median_ms": 1.5, "p90_ms": 2.0},
              "fc2=int4": {"p10_ms": 2.0, "median_ms": 2.25, "p90_ms": 2.5}}
    if pairs:
        spread["fc1=int8,fc2=int4"] = {"p10_ms": 1.25, "median_ms": 1.5, "p90_ms": 1.75}
    return layertable.LatencyTable(
        "onnxruntime", 256, 1, {"model": "cpu", "vnni": True}, 2.0,
        {"fc1": {"fp32": 0.0, "int8": -0.5}, "fc2": {"fp32": 0.0, "int4": 0.25}}, spread, {"fp32": 0.5}, 3.0,
        {"fc1|fc2": {"int8|int4": -0.25}} if pairs else {})


def test_table_json_round_trip_and_rows():
    t = table()
    again = layertable.LatencyTable.from_dict(json.loads(json.dumps(t.to_dict())))
    assert again == t and again.predict({"fc1": "int8", "fc2": "int4"}) == 1.75 and t.pair_rows() == []
    rows = t.rows()
    assert [(r["layer"], r["option"], r["delta_ms"]) for r in rows] == [
        ("fc1", "fp32", 0.0), ("fc1", "int8", -0.5), ("fc2", "fp32", 0.0), ("fc2", "int4", 0.25)]
    assert rows[1]["relative"] == -0.25 and rows[1]["p90_ms"] == 2.0
    with pytest.raises(ValueError, match=r"config\['fc2'\]='int8' must be one of"):
        t.predict({"fc2": "int8"})


def test_pair_table_json_round_trip_rows_and_old_dicts():
    t = table(pairs=True)
    again = layertable.LatencyTable.from_dict(json.loads(json.dumps(t.to_dict())))
    assert again == t and again.predict({"fc1": "int8", "fc2": "int4"}) == 1.5 == t.spread["fc1=int8,fc2=int4"][
        "median_ms"]
    assert t.predict({"fc1": "int8"}) == 1.5 and t.predict({"fc2": "int4"}) == 2.25
    assert t.without_pairs() == table() and t.without_pairs().predict({"fc1": "int8", "fc2": "int4"}) == 1.75
    assert t.pair_rows() == [{"first": "fc1", "second": "fc2", "option1": "int8", "option2": "int4",
                              "interaction_ms": -0.25, "relative": -0.125, "p10_ms": 1.25, "median_ms": 1.5,
                              "p90_ms": 1.75}]
    assert t.program_costs() == ({"fc1": {"fp32": 0.0, "int8": -0.5}, "fc2": {"fp32": 0.0, "int4": 0.25}},
                                 {("fc1", "fc2"): {("int8", "int4"): -0.25}})
    old = {k: v for k, v in table().to_dict().items() if k != "pair_ms"} | {"schema": 1}
    assert layertable.LatencyTable.from_dict(old) == table()  # a table written before pair terms


def _damaged():
    good = table().to_dict()
    yield "a list", [good]
    for key in good:
        yield f"no {key}", {k: v for k, v in good.items() if k != key}
    yield "schema 3", good | {"schema": 3}
    yield "schema 1 with pairs", good | {"schema": 1}
    yield "schema as text", good | {"schema": "2"}
    yield "NaN base", good | {"base_ms": math.nan}
    yield "base not the FP32 median", good | {"base_ms": 2.5}
    yield "fp32 delta not 0", good | {"delta_ms": good["delta_ms"] | {"fc1": {"fp32": 0.1, "int8": -0.5}}}
    yield "delta not the variant's median", good | {"delta_ms": good["delta_ms"] | {"fc1": {"fp32": 0.0, "int8": -0.4}}}
    yield "unknown option", good | {"delta_ms": good["delta_ms"] | {"fc2": {"fp32": 0.0, "int3": 0.25}}}
    yield "a timing missing", good | {"spread": {k: v for k, v in good["spread"].items() if k != "fc2=int4"}}
    yield "p10 above the median", good | {"spread": good["spread"] | {"fc1=int8": {"p10_ms": 1.6, "median_ms": 1.5,
                                                                                   "p90_ms": 2.0}}}
    yield "batch 0", good | {"batch_size": 0}
    yield "threads as text", good | {"threads": "1"}
    yield "export seconds of an unknown label", good | {"export_seconds": {"fc9=int8": 1.0}}
    paired = table(pairs=True).to_dict()
    spread, pair = paired["spread"], paired["pair_ms"]
    yield "pair not the medians' combination", paired | {"pair_ms": {"fc1|fc2": {"int8|int4": -0.2}}}
    yield "pair of unknown layers", paired | {"pair_ms": {"fc1|fc9": {"int8|int4": -0.25}}}
    yield "pair in the wrong order", paired | {"pair_ms": {"fc2|fc1": {"int4|int8": -0.25}}}
    yield "pair option a layer does not take", paired | {"pair_ms": {"fc1|fc2": {"int8|int8": -0.25}}}
    yield "pair option with fp32", paired | {"pair_ms": {"fc1|fc2": {"int8|int4": -0.25, "fp32|int4": 0.0}}}
    yield "pair interaction NaN", paired | {"pair_ms": {"fc1|fc2": {"int8|int4": math.nan}}}
    yield "pair interaction as text", paired | {"pair_ms": {"fc1|fc2": {"int8|int4": "-0.25"}}}
    yield "pair row not a dict", paired | {"pair_ms": {"fc1|fc2": [-0.25]}}
    yield "pair_ms a list", paired | {"pair_ms": [pair]}
    yield "pair timing missing", paired | {"spread": {k: v for k, v in spread.items() if "," not in k}}
    yield "pair timing without its pair", paired | {"pair_ms": {}}
    yield "pair export seconds of an unknown label", paired | {"export_seconds": {"fc1=int8,fc2=int8": 1.0}}


@pytest.mark.parametrize("what, data", list(_damaged()), ids=[w for w, _ in _damaged()])
def test_damaged_table_dicts_are_refused(what, data):
    with pytest.raises((ValueError, TypeError)):
        layertable.LatencyTable.from_dict(data)
