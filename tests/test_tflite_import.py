""".tflite import: TensorFlow's own converter output, round trips, clear errors, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tflite_cases as cases

from microfit.errors import ModelLoadError, UnsupportedOpError
from microfit.ir.tflite_export import export_tflite
from microfit.ir.tflite_import import import_tflite
from microfit.ir.tflite_oracle import ORACLES, compare_with_oracle
from microfit.ir.tflite_schema import FILE_IDENTIFIER, schema
from microfit.reference.executor import run_int8

pytest.importorskip("ai_edge_litert")

# Made once by tests/fixtures/tflite/make_fixture.py with TensorFlow's converter.
KERAS = Path(__file__).parent / "fixtures" / "tflite" / "keras_cnn_int8.tflite"


def _inputs(graph, n: int, seed: int) -> np.ndarray:
    shape = graph.tensors[graph.inputs[0]].shape
    return np.random.default_rng(seed).integers(-128, 128, (n,) + tuple(shape[1:]), dtype=np.int8)


def test_tensorflow_converter_model_imports_as_expected():
    g = import_tflite(KERAS)
    assert [n.op for n in g.nodes] == [
        "CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D", "ADD", "MAX_POOL_2D", "CONV_2D",
        "AVERAGE_POOL_2D", "RESHAPE", "FULLY_CONNECTED", "FULLY_CONNECTED", "SOFTMAX"]
    acts = [n.attrs.get("activation") for n in g.nodes]
    assert acts[:3] == ["RELU", "RELU6", "NONE"]
    # SAME became explicit pads; ZeroPadding2D's PAD was folded into the next conv.
    assert g.nodes[0].attrs["padding"] == [1, 1, 1, 1]
    assert g.nodes[5].attrs["padding"] == [1, 0, 0, 1]
    assert g.tensors[g.inputs[0]].dtype == "int8" and g.tensors[g.outputs[0]].dtype == "int8"
    assert g.meta["source"] == "tflite"


def test_tensorflow_converter_model_equals_both_oracles_at_every_layer():
    # The oracles run TensorFlow's file as written (only its output list is
    # widened), so this checks the importer and the reference together.
    g = import_tflite(KERAS)
    x = _inputs(g, 1000, 0)
    for oracle in ORACLES:
        res = compare_with_oracle(g, x, oracle, tflite=KERAS)
        print(res.summary())
        assert len(res.layers) == len(g.nodes)
        assert res.equal, res.summary()


def test_tensorflow_converter_model_generates_c_equal_to_the_reference(tmp_path):
    from conftest import have

    if not have("gcc"):
        pytest.skip("gcc missing")
    from microfit.codegen.generate import generate
    from microfit.codegen.host import build_host_model, run_host_model

    g = import_tflite(KERAS)
    assert g.nodes[-1].op == "SOFTMAX"
    generate(g, tmp_path / "gen")
    exe = build_host_model(tmp_path / "gen", tmp_path / "model", sanitize=True)
    x = _inputs(g, 200, 1)
    expected = run_int8(g, x).reshape(len(x), -1)
    got = run_host_model(exe, x.reshape(len(x), -1), expected.shape[1])
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("make", [
    lambda r: cases.conv_graph(r, h=8, w=8, stride=(2, 2), pad=(1, 1, 1, 1), act="RELU6"),
    lambda r: cases.dwconv_graph(r, mult=2, pad=(0, 1, 1, 0), k=(2, 2)),
    lambda r: cases.fc_graph(r, per_channel=False),
    lambda r: cases.reshape_graph(r),
    lambda r: cases.add_graph(r, act="RELU"),
    lambda r: cases.pool_graph(r, "AVERAGE_POOL_2D", k=(3, 3), stride=(2, 2), pad="same"),
    lambda r: cases.softmax_graph(r),
], ids=["conv_pad", "dwconv", "fc_per_tensor", "reshape_fc", "add", "avgpool", "softmax"])
def test_export_import_export_is_byte_identical(make):
    g = make(np.random.default_rng(5))
    first = export_tflite(g)
    back = import_tflite(first)
    assert export_tflite(back) == first
    x = _inputs(g, 200, 5)
    for mode in ("double", "single", "litert"):
        np.testing.assert_array_equal(run_int8(back, x, mode=mode), run_int8(g, x, mode=mode))


def test_tensorflow_model_survives_import_export_import():
    g = import_tflite(KERAS)
    again = import_tflite(export_tflite(g))
    x = _inputs(g, 100, 2)
    np.testing.assert_array_equal(run_int8(again, x), run_int8(g, x))
    assert export_tflite(again) == export_tflite(g)


def _with_first_op(data: bytes, op: str) -> bytes:
    import flatbuffers

    s = schema()
    m = s.ModelT.InitFromPackedBuf(data, 0)
    code = getattr(s.BuiltinOperator, op)
    m.operatorCodes[m.subgraphs[0].operators[0].opcodeIndex].builtinCode = code
    m.operatorCodes[m.subgraphs[0].operators[0].opcodeIndex].deprecatedBuiltinCode = min(code, 127)
    b = flatbuffers.Builder(1024)
    b.Finish(m.Pack(b), file_identifier=FILE_IDENTIFIER)
    return bytes(b.Output())


def test_unsupported_builtin_names_the_op_and_its_index():
    data = export_tflite(cases.reshape_graph(np.random.default_rng(6)))
    m = schema().ModelT.InitFromPackedBuf(data, 0)
    assert len(m.subgraphs[0].operators) == 2
    with pytest.raises(UnsupportedOpError, match=r"operator 0 is HARD_SWISH"):
        import_tflite(_with_first_op(data, "HARD_SWISH"))


def test_pad_that_does_not_only_feed_a_convolution_becomes_a_standalone_pad():
    rng = np.random.default_rng(7)
    g = cases.conv_graph(rng, h=8, w=8, stride=(2, 2), pad=(1, 1, 1, 1))
    data = export_tflite(g, outputs=["y"])
    s = schema()
    m = s.ModelT.InitFromPackedBuf(data, 0)
    sub = m.subgraphs[0]
    pad_out = int(sub.operators[0].outputs[0])
    sub.outputs = np.array([pad_out, int(sub.outputs[0])], np.int32)  # PAD output is now read
    import flatbuffers

    b = flatbuffers.Builder(1024)
    b.Finish(m.Pack(b), file_identifier=FILE_IDENTIFIER)
    imported = import_tflite(bytes(b.Output()))
    assert [n.op for n in imported.nodes] == ["PAD", "CONV_2D"]
    assert imported.nodes[0].attrs["paddings"] == [[0, 0], [1, 1], [1, 1], [0, 0]]
    assert imported.nodes[1].attrs["padding"] == [0, 0, 0, 0]
    x = _inputs(g, 50, 7)
    got = run_int8(imported, x, keep_all=True)
    np.testing.assert_array_equal(got[imported.outputs[1]], run_int8(g, x))
    zp = int(g.tensors["x"].quant.zero_point[0])
    assert (got[imported.outputs[0]][:, 0, :, :] == zp).all()  # the padded top row


def test_padv2_with_a_value_other_than_the_zero_point_is_rejected():
    g = cases.pad_graph(np.random.default_rng(8))
    s = schema()
    m = s.ModelT.InitFromPackedBuf(export_tflite(g), 0)
    sub = m.subgraphs[0]
    zp = int(g.tensors["x"].quant.zero_point[0])
    value = s.TensorT()
    value.name, value.shape, value.type = "value", np.array([], np.int32), s.TensorType.INT8
    buf = s.BufferT()
    buf.data = np.array([(zp + 1) % 256], np.uint8)
    m.buffers.append(buf)
    value.buffer = len(m.buffers) - 1
    sub.tensors.append(value)
    sub.operators[0].inputs = np.append(sub.operators[0].inputs, len(sub.tensors) - 1).astype(np.int32)
    code = m.operatorCodes[sub.operators[0].opcodeIndex]
    code.builtinCode = code.deprecatedBuiltinCode = s.BuiltinOperator.PADV2
    import flatbuffers

    b = flatbuffers.Builder(1024)
    b.Finish(m.Pack(b), file_identifier=FILE_IDENTIFIER)
    with pytest.raises(UnsupportedOpError, match=r"operator 0 \(PADV2\) pads with a value other"):
        import_tflite(bytes(b.Output()))


def test_not_a_tflite_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "x.tflite"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelLoadError, match="not a .tflite"):
        import_tflite(bad)
    with pytest.raises(ModelLoadError, match="does not exist"):
        import_tflite(tmp_path / "missing.tflite")


def test_cli_generate_takes_a_tflite_file(tmp_path):
    from microfit.cli import main

    model = tmp_path / "net.tflite"
    g = cases.conv_graph(np.random.default_rng(8), act="RELU")
    export_tflite(g, model)
    assert main(["-q", "--json", "generate", str(model), "--target", "qemu-mps2-an386"]) == 0
    run = tmp_path / "net"
    assert (run / "generated" / "model.c").exists()
    assert json.loads((run / "quant.json").read_text())["meta"]["source"] == "tflite"
    # The explicit form writes into a chosen run folder.
    assert main(["-q", "generate", str(tmp_path / "other"), "--tflite", str(model)]) == 0
    assert (tmp_path / "other" / "generated" / "model.c").exists()
