"""QDQ ONNX export, measured against onnxruntime.

onnxruntime reads QDQ as float ops on dequantized values with QuantizeLinear
rounding half to even, so equality with TFLite's fixed point is not the
spec: these tests bound the disagreement (agreement rate, max difference)
and print it; they do not assert equality. They run onnxruntime with graph
optimizations off (the spec as written): its fused integer kernels depend on
the CPU (bench/bench_quant.py reports both).
"""

from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
import tflite_cases as cases

from microfit.ir.onnx_qdq_export import compare_with_onnxruntime, export_qdq_onnx

CASES = {
    "conv_relu6_stride2": lambda r: cases.conv_graph(r, h=8, w=8, stride=(2, 2), act="RELU6",
                                                     pad=(1, 1, 1, 1)),
    "dwconv_mult2": lambda r: cases.dwconv_graph(r, mult=2, act="RELU"),
    "fc_per_tensor": lambda r: cases.fc_graph(r, per_channel=False),
    "reshape_fc": lambda r: cases.reshape_graph(r),
    "maxpool_same": lambda r: cases.pool_graph(r, "MAX_POOL_2D", k=(3, 3), stride=(2, 2),
                                               pad="same"),
    "avgpool_same": lambda r: cases.pool_graph(r, "AVERAGE_POOL_2D", k=(3, 3), stride=(2, 2),
                                               pad="same"),
    "add_relu": lambda r: cases.add_graph(r, act="RELU"),
    "softmax": lambda r: cases.softmax_graph(r),
}


def _x(graph, n, seed):
    shape = graph.tensors[graph.inputs[0]].shape
    return np.random.default_rng(seed).integers(-128, 128, (n,) + tuple(shape[1:]), dtype=np.int8)


@pytest.mark.parametrize("name", sorted(CASES))
def test_onnxruntime_agrees_on_almost_every_byte(name):
    g = CASES[name](np.random.default_rng(1))
    res = compare_with_onnxruntime(g, _x(g, 500, 1), optimize=False)
    print(f"[{name}] {res.summary()}")
    for layer, d in res.layers.items():
        # Rounding differs by at most one step per requantization; ADD
        # requantizes three times.
        assert d["max_abs_diff"] <= 2, (layer, d)
        assert d["agreement"] >= 0.9, (layer, d)


def test_pools_and_reshape_without_rounding_agree_exactly():
    g = cases.pool_graph(np.random.default_rng(2), "MAX_POOL_2D", k=(2, 2), stride=(2, 2))
    res = compare_with_onnxruntime(g, _x(g, 300, 2), optimize=False)
    assert res.output["agreement"] == 1.0


def test_a_wrong_bias_shows_up_as_disagreement():
    import onnxruntime as ort

    from microfit.reference.executor import run_int8

    g = cases.fc_graph(np.random.default_rng(3))
    x = _x(g, 300, 3)
    assert compare_with_onnxruntime(g, x, optimize=False).output["agreement"] > 0.9
    wrong = copy.deepcopy(g)
    wrong.tensors["b"].data = wrong.tensors["b"].data + 5000  # several output steps
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(export_qdq_onnx(wrong).SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    s, zp = np.float32(g.tensors["x"].quant.scale[0]), int(g.tensors["x"].quant.zero_point[0])
    got = sess.run(None, {"input": ((x.astype(np.float32) - zp) * s).astype(np.float32)})[0]
    assert np.mean(got == run_int8(g, x)) < 0.5


def test_qdq_model_is_valid_onnx_with_one_quantize_per_int8_tensor(tmp_path):
    g = cases.reshape_graph(np.random.default_rng(4))
    m = export_qdq_onnx(g, tmp_path / "m.onnx")
    onnx.checker.check_model(onnx.load(str(tmp_path / "m.onnx")))
    ops = [n.op_type for n in m.graph.node]
    assert ops.count("QuantizeLinear") == len(g.activation_tensors())
    assert m.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.INT8
    w_init = {i.name: i for i in m.graph.initializer}["w_int"]
    assert w_init.data_type == onnx.TensorProto.INT8
