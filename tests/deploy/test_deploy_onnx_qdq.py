"""The QDQ arithmetic by hand (`deploy.onnx_qdq`) equals ONNX Runtime on files the installed quantizer
writes in every layout it produces: Gemm, MatMul and Conv layers, per-tensor and per-channel
weights, with and without a following ReLU (which the quantizer folds into the next QuantizeLinear),
for every quantized layer of the file, not only the first."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("onnxruntime")
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from onnxruntime.quantization import QuantFormat, QuantType, quantize_static  # noqa: E402

from compresslab.deploy import base, onnx_qdq, runtime_onnx  # noqa: E402


def _models() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {
        "gemm_relu": nn.Sequential(nn.Flatten(), nn.Linear(36, 10), nn.ReLU(), nn.Linear(10, 4)),
        "gemm_gemm": nn.Sequential(nn.Flatten(), nn.Linear(36, 10), nn.Linear(10, 4)),
        "matmul": nn.Sequential(nn.Flatten(), nn.Linear(36, 10, bias=False), nn.ReLU(), nn.Linear(10, 4, bias=False)),
        "conv_relu": nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(108, 4)),
        "conv_conv": nn.Sequential(nn.Conv2d(1, 3, 3), nn.Conv2d(3, 2, 3, stride=2, padding=1), nn.Flatten(),
                                   nn.Linear(8, 4)),
    }


class _Reader:
    def __init__(self, x: np.ndarray):
        self.batches = iter([{"x": x[i:i + 16]} for i in range(0, len(x), 16)])

    def get_next(self):
        return next(self.batches, None)


def _qdq_file(name: str, per_channel: bool, tmp_path) -> tuple[nn.Module, str, np.ndarray]:
    model = _models()[name].eval()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(64, 1, 6, 6, generator=gen) * 1.5 + 0.3
    fp32 = runtime_onnx.export_onnx(model, x[:2], tmp_path / f"{name}.onnx")
    path = tmp_path / f"{name}_{per_channel}_int8.onnx"
    quantize_static(str(fp32), str(path), _Reader(x.numpy()), quant_format=QuantFormat.QDQ,
                    per_channel=per_channel, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    return model, str(path), x[:32].numpy()


def _run(path, outputs, x, level) -> list[np.ndarray]:
    """The file cut from its input to `outputs`, run by ORT at graph-optimization `level`."""
    sub = onnx_qdq.sub_model(path, outputs)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = level
    if level != ort.GraphOptimizationLevel.ORT_DISABLE_ALL and runtime_onnx.needs_exact_int8():
        opts.add_session_config_entry("session.x64quantprecision", "1")
    return ort.InferenceSession(sub.SerializeToString(), opts, providers=["CPUExecutionProvider"]).run(None, {"x": x})


LAYOUTS = [(name, pc) for name in ("gemm_relu", "gemm_gemm", "matmul", "conv_relu", "conv_conv") for pc in (True, False)]


@pytest.mark.parametrize(("name", "per_channel"), LAYOUTS, ids=[f"{n}-{'channel' if p else 'tensor'}" for n, p in LAYOUTS])
def test_every_layer_by_hand_equals_the_runtime(name, per_channel, tmp_path):
    model, path, x = _qdq_file(name, per_channel, tmp_path)
    layers = onnx_qdq.qdq_layers(path)
    torch_layers = [m for m in model if isinstance(m, (nn.Linear, nn.Conv2d))]
    assert len(layers) == len(torch_layers) and {la.op for la in layers} <= set(onnx_qdq.LAYER_OPS)
    for layer, module in zip(layers, torch_layers):
        assert layer.per_channel == (per_channel and module.weight.shape[0] > 1)
        # the stored weight is the module's, rounded to its scale: |dq(W_q) - W| <= s_w / 2 per channel
        w = module.weight.detach().double().numpy()
        step = np.broadcast_to(np.asarray(layer.weight_scale, np.float64).reshape(-1, *[1] * (w.ndim - 1)), w.shape)
        assert layer.weight().shape == w.shape and np.all(np.abs(layer.weight() - w) <= step / 2 + 1e-7)
        if module.bias is None:
            assert layer.bias is None
        else:  # int32 bias at scale s_x * s_w (or float): within half its step of the module's
            assert np.allclose(layer.bias, module.bias.detach().double().numpy(),
                               atol=layer.input_scale * float(np.max(layer.weight_scale)) / 2 + 1e-7)
        for level in (ort.GraphOptimizationLevel.ORT_DISABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
            inp, out = _run(path, [layer.input, layer.output], x, level)
            got = onnx_qdq.by_hand(layer, inp)
            assert got.shape == out.shape
            assert np.abs(got - out.astype(np.float64)).max() <= 1e-5 * max(1.0, np.abs(out).max()), (layer.op, level)


def test_relu_folded_away_and_the_cut_is_the_layers_own_output(tmp_path):
    """The quantizer removes a ReLU that a QuantizeLinear follows: the layer's output then keeps its
    negative values, and the cut model (first_layer_model) returns them."""
    _, path, x = _qdq_file("gemm_relu", True, tmp_path)
    graph = onnx.load(path).graph
    assert "Relu" not in {n.op_type for n in graph.node}
    layer = onnx_qdq.qdq_layers(path)[0]
    sub = onnx_qdq.first_layer_model(path, tmp_path / "first.onnx")
    out = runtime_onnx.session(sub, 1).run(None, {"x": x})[0]
    assert (out < 0).any() and np.abs(onnx_qdq.by_hand(layer, x) - out).max() < 1e-4
    with pytest.raises(ValueError, match="index=5 is out of range: the file has 2"):
        onnx_qdq.first_layer_model(path, tmp_path / "bad.onnx", index=5)


def test_the_project_session_is_exact_on_real_weights(tmp_path):
    """The deployed session (`runtime_onnx.session`) equals the by-hand QDQ arithmetic on a trained
    LeNet-300-100's first layer: exact kernels on every CPU (U8U8 where the CPU has no VNNI)."""
    from deploy_support import calibration, held_out, trained


    q = runtime_onnx.OnnxRuntimeAdapter().export(trained("lenet300"), held_out(2)[0],
                                                   base.DeployOptions(precision="int8"), calibration(), tmp_path)
    layer = onnx_qdq.qdq_layers(q.path)[0]
    sub = onnx_qdq.first_layer_model(q.path, tmp_path / "first.onnx")
    x = held_out(64)[0].numpy()
    out = runtime_onnx.session(sub, 1).run(None, {"x": x})[0]
    assert layer.weight_q.dtype == np.int8 and np.abs(onnx_qdq.by_hand(layer, x) - out).max() < 1e-3


def _layer(w_q, scale=1.0, zero=0, op="Gemm") -> onnx_qdq.QdqLayer:
    w_q = np.asarray(w_q, np.int8)
    return onnx_qdq.QdqLayer(op=op, input="x", output="y", input_scale=scale, input_zero_point=zero,
                             weight_q=w_q, weight_scale=np.ones(len(w_q)), weight_zero_point=np.zeros(len(w_q), np.int8),
                             weight_axis=0, bias=None, attributes={"transB": 1})


def test_u8s8_saturation_by_hand_case():
    """a = q(x) + 128 = (255, 255), w = (127, 127): the pair sums to 64,770, clamped to 32,767, so the
    kernel's dot product is 32,767 - 128 * 254 = 255 instead of 127 * 127 * 2 = 32,258."""
    layer = _layer([[127, 127]])
    x = np.array([[127.0, 127.0]])
    assert onnx_qdq.by_hand(layer, x)[0, 0] == 127 * 127 * 2
    assert onnx_qdq.u8s8_saturated(layer, x)[0, 0] == 32767 - 128 * 254
    # no pair leaves int16 -> exact; an odd length is padded with a zero product
    small = _layer([[1, -2, 3], [60, 60, -60]])
    xs = np.array([[100.0, -50.0, 7.0], [-128.0, 127.0, 0.0]])
    assert np.array_equal(onnx_qdq.u8s8_saturated(small, xs), onnx_qdq.by_hand(small, xs))


def test_u8s8_refuses_what_it_does_not_model():
    with pytest.raises(ValueError, match="Gemm / MatMul"):
        onnx_qdq.u8s8_saturated(_layer(np.ones((1, 1, 1, 1)), op="Conv"), np.zeros((1, 1, 1, 1)))
    asym = onnx_qdq.QdqLayer(**{**_layer([[1]]).__dict__, "weight_zero_point": np.array([3], np.int8)})
    with pytest.raises(ValueError, match="zero point 0"):
        onnx_qdq.u8s8_saturated(asym, np.zeros((1, 1)))


def test_dequantize_follows_the_axis():
    q = np.arange(6, dtype=np.int8).reshape(2, 3)
    assert np.array_equal(onnx_qdq.dequantize(q, np.array([1.0, 2.0]), np.array([0, 1]), axis=0),
                          [[0, 1, 2], [4, 6, 8]])
    assert np.array_equal(onnx_qdq.dequantize(q, np.array([1.0, 2.0, 3.0]), np.zeros(3), axis=1),
                          [[0, 2, 6], [3, 8, 15]])
    assert np.array_equal(onnx_qdq.dequantize(q, np.float32(0.5), np.int8(1)), (q - 1) * 0.5)


def test_needs_exact_int8_from_the_cpu_flags():
    assert runtime_onnx.needs_exact_int8({"avx2": True, "vnni": False})
    assert not runtime_onnx.needs_exact_int8({"avx2": True, "vnni": True})
    assert not runtime_onnx.needs_exact_int8({"avx2": False, "vnni": False})
