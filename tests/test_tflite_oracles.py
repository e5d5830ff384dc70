"""Byte equality with TFLite's interpreters, layer by layer.

TFLite Micro (what devices run) must equal the numpy reference in mode
"double"; LiteRT's reference kernels must equal it in mode "litert" (see
docs/quantization.md for why LiteRT is not "single"). Every activation tensor
is an output of the exported model, so every layer's bytes are compared.

Counts (inputs x layers) are printed with ``-s`` for the closing notes.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import tflite_cases as cases

from microfit.ir.tflite_oracle import ORACLES, compare_with_oracle

pytest.importorskip("ai_edge_litert")
pytest.importorskip("tflite_micro")


def random_inputs(graph, n: int, seed: int) -> np.ndarray:
    shape = graph.tensors[graph.inputs[0]].shape
    rng = np.random.default_rng(seed)
    return rng.integers(-128, 128, size=(n,) + tuple(shape[1:]), dtype=np.int8)


def assert_equal_everywhere(graph, x, oracles=ORACLES) -> list:
    results = []
    for oracle in oracles:
        res = compare_with_oracle(graph, x, oracle)
        print(res.summary())
        assert res.equal, res.summary()
        results.append(res)
    return results


# -- one op at a time ----------------------------------------------------------------------------

OP_CASES = {
    "conv_same_relu": lambda r: cases.conv_graph(r, act="RELU"),
    "conv_valid_stride2": lambda r: cases.conv_graph(r, pad="valid", stride=(2, 2)),
    "conv_same_stride2_relu6": lambda r: cases.conv_graph(r, h=8, w=8, stride=(2, 2), act="RELU6"),
    "conv_explicit_pad_is_PAD": lambda r: cases.conv_graph(r, h=8, w=8, stride=(2, 2),
                                                           pad=(1, 1, 1, 1)),
    "conv_asymmetric_pad": lambda r: cases.conv_graph(r, pad=(0, 2, 1, 0), k=(2, 3)),
    "conv_dilated": lambda r: cases.conv_graph(r, h=9, w=9, dilation=(2, 2), act="RELU"),
    "conv_1x1_per_tensor": lambda r: cases.conv_graph(r, k=(1, 1), per_channel=False),
    "conv_multiplier_above_one": lambda r: cases.conv_graph(r, k=(1, 1), cin=1, w_max=2,
                                                            out_gain=16.0),
    "conv_saturating": lambda r: cases.conv_graph(r, out_gain=4.0),
    "dwconv_same": lambda r: cases.dwconv_graph(r, act="RELU"),
    "dwconv_mult2_stride2": lambda r: cases.dwconv_graph(r, h=8, w=8, mult=2, stride=(2, 2)),
    "dwconv_dilated_relu6": lambda r: cases.dwconv_graph(r, h=9, w=9, dilation=(2, 2),
                                                         act="RELU6"),
    "dwconv_explicit_pad": lambda r: cases.dwconv_graph(r, pad=(1, 0, 0, 1), k=(2, 2)),
    "fc_per_channel": lambda r: cases.fc_graph(r),
    "fc_per_tensor_relu": lambda r: cases.fc_graph(r, per_channel=False, act="RELU"),
    "fc_multiplier_above_one": lambda r: cases.fc_graph(r, cin=1, w_max=2, out_gain=16.0),
    "maxpool_valid": lambda r: cases.pool_graph(r, "MAX_POOL_2D"),
    "maxpool_same_overlapping": lambda r: cases.pool_graph(r, "MAX_POOL_2D", k=(3, 3),
                                                           stride=(2, 2), pad="same"),
    "avgpool_valid": lambda r: cases.pool_graph(r, "AVERAGE_POOL_2D", k=(3, 2), stride=(1, 2)),
    "avgpool_same_partial_windows": lambda r: cases.pool_graph(r, "AVERAGE_POOL_2D", k=(3, 3),
                                                               stride=(2, 2), pad="same"),
    "avgpool_global": lambda r: cases.pool_graph(r, "AVERAGE_POOL_2D", k=(7, 6), stride=(1, 1)),
    "add_same_scale": lambda r: cases.add_graph(r, scales=(0.05, 0.05, 0.08)),
    "add_rescaled_relu": lambda r: cases.add_graph(r, act="RELU"),
    "reshape_then_fc": lambda r: cases.reshape_graph(r),
    "softmax": lambda r: cases.softmax_graph(r),
    "softmax_wide_input_scale": lambda r: cases.softmax_graph(r, depth=33, in_scale=0.5),
    "softmax_beta_half_depth100": lambda r: cases.softmax_graph(r, depth=100, in_scale=0.05,
                                                                beta=0.5),
    "logistic": lambda r: cases.lut_graph(r, "LOGISTIC"),
    "logistic_coarse_input": lambda r: cases.lut_graph(r, "LOGISTIC", in_scale=0.5),
    "tanh": lambda r: cases.lut_graph(r, "TANH"),
    "tanh_fine_input": lambda r: cases.lut_graph(r, "TANH", shape=(1, 40), in_scale=0.003),
    "pad_hwc": lambda r: cases.pad_graph(r),
    "pad_2d": lambda r: cases.pad_graph(r, shape=(1, 6), paddings=((0, 0), (3, 1))),
}


@pytest.mark.parametrize("case", sorted(OP_CASES))
def test_single_op_equals_tflm_and_litert(case):
    seed = sorted(OP_CASES).index(case)
    graph = OP_CASES[case](np.random.default_rng(seed))
    assert_equal_everywhere(graph, random_inputs(graph, 300, seed))


def test_relu6_bound_divides_in_float32_like_tflite():
    # 6 / 0.23529412 is 25.4999999 in double but 25.5 in float32: TFLite's
    # bound is zero_point + 26, a double division would give + 25.
    rng = np.random.default_rng(7)
    graph = cases.conv_graph(rng, k=(1, 1), act="RELU6", out_gain=0.2)
    graph.tensors["y"].quant = cases.qp(np.float32(0.23529412), -128)
    from microfit.quantize.params import node_params

    assert node_params(graph, graph.nodes[0]).act_max == -128 + 26
    x = random_inputs(graph, 300, 7)
    # The clamp must really be reached for the test to mean something.
    from microfit.reference.executor import run_int8

    assert (run_int8(graph, x) == -102).any()
    assert_equal_everywhere(graph, x)


def test_negative_rounding_ties_follow_each_interpreter():
    # Scales that are powers of two make acc * M land exactly on -0.5, -1.5...
    # TFLite Micro and LiteRT's FC both round those away from zero; the
    # "single" mode (TFLITE_SINGLE_ROUNDING) rounds them up, which is why it
    # is not LiteRT's mode.
    rng = np.random.default_rng(3)
    for per_channel in (True, False):
        graph = cases.fc_graph(rng, cin=4, cout=2, per_channel=per_channel)
        t = graph.tensors
        n = len(t["w"].quant.scale)
        t["x"].quant = cases.qp(0.5, 0)
        t["w"].quant = cases.qp(np.full(n, 0.25), np.zeros(n, int), 0 if per_channel else None)
        t["w"].data = np.ones((2, 4), np.int8)
        t["b"].data = np.zeros(2, np.int32)
        t["b"].quant = cases.qp(np.full(n, 0.125), np.zeros(n, int), 0 if per_channel else None)
        t["y"].quant = cases.qp(1.0, 0)
        x = np.array([[-1, -1, -1, -1], [-3, -3, -3, -3], [1, 1, 1, 1], [-5, -5, -5, -5]],
                     np.int8)
        from microfit.reference.executor import run_int8

        assert run_int8(graph, x, mode="litert")[:, 0].tolist() == [-1, -2, 1, -3]
        assert run_int8(graph, x, mode="single")[:, 0].tolist() == [0, -1, 1, -2]
        assert_equal_everywhere(graph, np.repeat(x, 3, axis=0))


def test_a_one_byte_change_in_the_reference_is_caught():
    rng = np.random.default_rng(11)
    graph = cases.conv_graph(rng, act="RELU")
    x = random_inputs(graph, 200, 11)
    wrong = copy.deepcopy(graph)
    wrong.tensors["b"].data = wrong.tensors["b"].data.copy()
    wrong.tensors["b"].data[2] += 40  # one channel's bias, by a few output steps
    for oracle in ORACLES:
        res = compare_with_oracle(graph, x, oracle, reference_graph=wrong)
        assert not res.equal
        assert res.layers[0].first_index[-1] == 2


def test_per_tensor_fc_multiplier_is_the_double_product_and_litert_rounds_in_double():
    # For these scales float32(s_in * s_w) / s_out (what older TFLite sources
    # compute for per-tensor layers) and the all-double product give the
    # multipliers 1558915530 and 1558915609 (shift -8): an accumulator of
    # 66827 requantizes to 189 and 190. Today's TFLite Micro takes the double
    # product (190); LiteRT's reference FC computes 66827 * M in double and
    # rounds once (189).
    rng = np.random.default_rng(0)
    graph = cases.fc_graph(rng, cin=1, cout=2, per_channel=False)
    t = graph.tensors
    t["x"].quant = cases.qp(np.float32(0.034275588), 0)
    t["w"].quant = cases.qp(np.float32(0.015877668), 0)
    t["w"].data = np.ones((2, 1), np.int8)
    t["b"].quant = cases.qp(np.float32(0.034275588) * np.float32(0.015877668), 0)
    t["b"].data = np.array([66827, -66827], np.int32)
    t["y"].quant = cases.qp(np.float32(0.19191939), -100)
    from microfit.quantize.params import node_params
    from microfit.reference.executor import run_int8

    p = node_params(graph, graph.nodes[0], "double")
    assert (int(p.multiplier[0]), int(p.shift[0])) == (1558915609, -8)
    x = np.arange(-128, 128, dtype=np.int8).reshape(-1, 1)
    zero = x[128:129]
    assert run_int8(graph, zero, mode="double")[0, 0] == 90
    assert run_int8(graph, zero, mode="litert")[0, 0] == 89
    assert_equal_everywhere(graph, x)


# Scales where TFLite Micro's fixed-point LOGISTIC / TANH and LiteRT's float-built
# table disagree on some input (found by search; about 1 in 200 random scales for
# LOGISTIC, fewer for TANH). Each interpreter must still equal its own mode.
MODE_SPLITTING_LUT_CASES = [("LOGISTIC", 2.0440334441636026, -44),
                            ("LOGISTIC", 0.0004263112831981258, -104),
                            ("TANH", 0.0010237121220716598, 26),
                            ("TANH", 0.011068172233282663, -77)]


@pytest.mark.parametrize("op,scale,zp", MODE_SPLITTING_LUT_CASES)
def test_logistic_tanh_follow_each_interpreter_where_they_differ(op, scale, zp):
    from microfit.reference.ops import lut_table

    graph = cases.lut_graph(np.random.default_rng(0), op, shape=(1, 256), in_scale=scale, in_zp=zp)
    assert (lut_table(op, scale, zp, "double") != lut_table(op, scale, zp, "litert")).any()
    every_value = np.arange(-128, 128, dtype=np.int8).reshape(1, 256)
    assert_equal_everywhere(graph, every_value)
