"""The .tflite writer: structure, padding decisions, determinism, alignment."""

from __future__ import annotations

import numpy as np
import pytest
import tflite_cases as cases

from microfit.errors import UnsupportedOpError
from microfit.ir.tflite_export import export_tflite, tflite_padding
from microfit.ir.tflite_schema import enum_names, schema

pytest.importorskip("ai_edge_litert")


def _model(data: bytes):
    return schema().ModelT.InitFromPackedBuf(data, 0)


def _ops(data: bytes) -> list[str]:
    m = _model(data)
    names = enum_names(schema().BuiltinOperator)
    return [names[m.operatorCodes[o.opcodeIndex].builtinCode] for o in m.subgraphs[0].operators]


@pytest.mark.parametrize("in_hw,k,s,d,pads,expected", [
    ((8, 8), (3, 3), (1, 1), (1, 1), (1, 1, 1, 1), "SAME"),
    ((8, 8), (3, 3), (2, 2), (1, 1), (0, 0, 1, 1), "SAME"),  # TFLite puts the odd pad after
    ((8, 8), (3, 3), (2, 2), (1, 1), (1, 1, 1, 1), None),    # PyTorch's padding=1, stride 2
    ((8, 8), (3, 3), (2, 2), (1, 1), (1, 1, 0, 0), None),
    ((9, 9), (3, 3), (1, 1), (2, 2), (2, 2, 2, 2), "SAME"),
    ((8, 8), (2, 2), (2, 2), (1, 1), (0, 0, 0, 0), "VALID"),
    ((7, 6), (2, 2), (2, 2), (1, 1), (0, 0, 1, 0), "SAME"),
])
def test_explicit_pads_map_to_same_valid_or_neither(in_hw, k, s, d, pads, expected):
    assert tflite_padding(in_hw, k, s, d, pads) == expected


def test_conv_with_pads_tflite_lacks_gets_an_explicit_pad_op():
    rng = np.random.default_rng(0)
    same = cases.conv_graph(rng, h=8, w=8, stride=(2, 2), pad="same")
    odd = cases.conv_graph(rng, h=8, w=8, stride=(2, 2), pad=(1, 1, 1, 1))
    assert _ops(export_tflite(same)) == ["CONV_2D"]
    data = export_tflite(odd)
    assert _ops(data) == ["PAD", "CONV_2D"]
    sub = _model(data).subgraphs[0]
    pad_out = sub.tensors[sub.operators[0].outputs[0]]
    assert list(pad_out.shape) == [1, 10, 10, 3]
    # The padded tensor must keep the input's quantization (PAD pads with its zero point).
    assert list(pad_out.quantization.zeroPoint) == [int(odd.tensors["x"].quant.zero_point[0])]


def test_pool_with_pads_tflite_lacks_is_a_clear_error():
    graph = cases.pool_graph(np.random.default_rng(0), "AVERAGE_POOL_2D", h=8, w=8, k=(3, 3),
                             stride=(2, 2), pad=(1, 1, 1, 1))
    with pytest.raises(UnsupportedOpError, match="neither TFLite's SAME nor VALID"):
        export_tflite(graph)


def test_export_is_deterministic_and_marks_the_file_as_tflite(tmp_path):
    graph = cases.reshape_graph(np.random.default_rng(1))
    a = export_tflite(graph, tmp_path / "a.tflite")
    b = export_tflite(cases.reshape_graph(np.random.default_rng(1)))
    assert a == b == (tmp_path / "a.tflite").read_bytes()
    assert a[4:8] == b"TFL3"


def test_constant_buffers_are_16_byte_aligned():
    data = export_tflite(cases.conv_graph(np.random.default_rng(2), cin=3, cout=5))
    m = schema().Model.GetRootAs(data, 0)
    base = np.frombuffer(data, np.uint8).ctypes.data
    offsets = []
    for i in range(m.BuffersLength()):
        b = m.Buffers(i)
        if b.DataLength():
            offsets.append(b.DataAsNumpy().ctypes.data - base)
    assert len(offsets) == 2  # weights and bias
    assert all(o % 16 == 0 for o in offsets), offsets


def test_per_channel_and_per_tensor_quantization_are_written_as_such():
    rng = np.random.default_rng(3)
    for per_channel, n in ((True, 7), (False, 1)):
        g = cases.fc_graph(rng, per_channel=per_channel)
        sub = _model(export_tflite(g)).subgraphs[0]
        w = next(t for t in sub.tensors if t.name in (b"w", "w"))
        assert len(w.quantization.scale) == n
        np.testing.assert_array_equal(np.asarray(w.quantization.scale, np.float32),
                                      g.tensors["w"].quant.scale)


def test_float_graph_is_rejected():
    graph = cases.fc_graph(np.random.default_rng(4))
    graph.tensors["x"].dtype = "float32"
    with pytest.raises(UnsupportedOpError, match="int8 graph"):
        export_tflite(graph)
