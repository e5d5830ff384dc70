"""The pruning engine's seven architectures (tests/prune_models.py), int8, against TFLite.

Each model (random weights, non-trivial BatchNorm statistics) is exported to
ONNX, imported, quantized by microfit, and compared layer by layer with TFLite
Micro's interpreter (mode "double") and LiteRT's reference kernels (mode
"litert") on 1,000 random int8 inputs. concat_net brings CONCATENATION and
SLICE (from torch.split), mlp_autoencoder BatchNorm1d after Linear layers;
further down, the importers' and quantizer's rules for those ops and their
errors.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import export_torch, randomize_bn
from prune_models import MODELS

from microfit.errors import QuantizationError, UnsupportedOpError
from microfit.ir.onnx_import import import_onnx, nchw_to_ir
from microfit.ir.tflite_export import export_tflite
from microfit.ir.tflite_import import import_tflite
from microfit.quantize.quantize import QuantizeConfig, quantize
from microfit.reference.executor import run_int8
from microfit.reference.float_exec import run_float

N_INPUTS = 1000
_CACHE: dict[str, tuple] = {}


def _model(name: str, tmp_path):
    """(torch model, float IR, int8 IR) of a pruning-list model, cached per process."""
    if name not in _CACHE:
        factory, shape, importable = MODELS[name]
        assert importable, f"{name} is marked as not importable in prune_models.MODELS"
        torch.manual_seed(0)
        model = factory()
        randomize_bn(model)
        model.eval()
        fgraph = import_onnx(export_torch(model, shape, tmp_path / f"{name}.onnx"))
        calib = np.random.default_rng(0).standard_normal((64, *shape[1:]), dtype=np.float32)
        qgraph = quantize(fgraph, nchw_to_ir(calib), QuantizeConfig(rounding="double"))
        _CACHE[name] = model, fgraph, qgraph
    return _CACHE[name]


@pytest.mark.slow  # ~100 CPU-seconds for the seven: the reference convolutions at 32x32
@pytest.mark.parametrize("name", sorted(MODELS))
def test_prune_model_equals_both_oracles_at_every_layer(name, tmp_path):
    pytest.importorskip("ai_edge_litert")
    pytest.importorskip("tflite_micro")
    from microfit.ir.tflite_oracle import ORACLE_MODES, ORACLES, compare_with_oracle

    _, _, q = _model(name, tmp_path)
    shape = q.tensors[q.inputs[0]].shape
    x = np.random.default_rng(len(name)).integers(-128, 128, size=(N_INPUTS, *shape[1:]),
                                                   dtype=np.int8)
    refs = {"double": run_int8(q, x, mode="double", keep_all=True)}
    refs["litert"] = _litert_reference(q, refs["double"])
    for oracle in ORACLES:
        res = compare_with_oracle(q, x, oracle, reference=refs[ORACLE_MODES[oracle]])
        print(f"[{name}] {res.summary()}")
        assert res.mode == ORACLE_MODES[oracle]
        assert len(res.layers) == len(q.nodes)
        assert res.equal, res.summary()
    assert len(np.unique(refs["double"][q.outputs[0]])) > 3, "degenerate test: output constant"


def _litert_reference(q, double: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every tensor in mode "litert", reusing the "double" run where the modes cannot differ.

    Only FULLY_CONNECTED computes differently in mode "litert" (the executor
    runs every other op as in "double"), so only it and what depends on it
    are recomputed: the conv stacks, the slow part, run once per model.
    """
    from microfit.reference.executor import run_node_int8

    values = dict(double)
    changed: set[str] = set()
    for node in q.nodes:
        if node.op == "FULLY_CONNECTED" or changed.intersection(node.inputs):
            y = run_node_int8(q, node, values, "litert")
            values[node.outputs[0]] = y.reshape(double[node.outputs[0]].shape)
            changed.add(node.outputs[0])
    return values


@pytest.mark.parametrize("name", ["concat_net", "mlp_autoencoder"])
def test_import_keeps_the_torch_function(name, tmp_path):
    """Concat order, split sizes, the Relu moved into a concat's inputs, BatchNorm1d folded."""
    model, fgraph, _ = _model(name, tmp_path)
    x = np.random.default_rng(1).standard_normal((16, *MODELS[name][1][1:]), dtype=np.float32)
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(run_float(fgraph, nchw_to_ir(x)), want, rtol=1e-4, atol=1e-4)
    if name == "concat_net":
        ops = [n.op for n in fgraph.nodes]
        assert ops.count("CONCATENATION") == 4 and ops.count("SLICE") == 2
    else:
        assert [n.op for n in fgraph.nodes] == ["FULLY_CONNECTED"] * 6


def test_concat_inputs_and_output_share_one_quantization(tmp_path):
    """TFLite's int8 concatenation kernels refuse to rescale: one scale and zero point for
    every input and output, and through the same-scale ops (slice, pool, reshape) tied to them."""
    _, _, q = _model("concat_net", tmp_path)
    for node in q.nodes:
        if node.op in ("CONCATENATION", "SLICE"):
            params = {q.tensors[t].quant.to_json().__repr__() for t in node.inputs + node.outputs}
            assert len(params) == 1, node
    # Different concatenations stay independent when nothing ties them.
    cats = [n for n in q.nodes if n.op == "CONCATENATION"]
    assert q.tensors[cats[0].outputs[0]].quant.scale != q.tensors[cats[1].outputs[0]].quant.scale


def test_concat_net_tflite_round_trip_and_split_v_import(tmp_path):
    """export -> import -> export is byte-identical; a file with SPLIT_V (what TensorFlow's
    converter writes for torch.split) imports as the same SLICE nodes and runs the same bytes."""
    from microfit.ir.tflite_schema import FILE_IDENTIFIER, schema

    _, _, q = _model("concat_net", tmp_path)
    raw = export_tflite(q)
    assert export_tflite(import_tflite(raw)) == raw
    s = schema()
    m = s.ModelT.InitFromPackedBuf(raw, 0)
    sub = m.subgraphs[0]
    slice_code = [i for i, c in enumerate(m.operatorCodes)
                  if c.builtinCode == s.BuiltinOperator.SLICE][0]
    slices = [k for k, o in enumerate(sub.operators) if o.opcodeIndex == slice_code]
    assert len(slices) == 2
    code = s.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = s.BuiltinOperator.SPLIT_V
    code.version = 2
    m.operatorCodes.append(code)

    def const(values, name):
        b = s.BufferT()
        b.data = np.frombuffer(np.array(values, "<i4").tobytes(), np.uint8)
        m.buffers.append(b)
        t = s.TensorT()
        t.name, t.shape, t.type = name, np.array([len(values)], np.int32), s.TensorType.INT32
        t.buffer = len(m.buffers) - 1
        sub.tensors.append(t)
        return len(sub.tensors) - 1

    first, second = (sub.operators[k] for k in slices)
    split = s.OperatorT()
    split.opcodeIndex = len(m.operatorCodes) - 1
    split.inputs = np.array([first.inputs[0], const([16, -1], "sizes"), const([3], "axis")],
                            np.int32)
    split.outputs = np.array([first.outputs[0], second.outputs[0]], np.int32)
    opts = s.SplitVOptionsT()
    opts.numSplits = 2
    split.builtinOptionsType, split.builtinOptions = s.BuiltinOptions.SplitVOptions, opts
    sub.operators = sub.operators[:slices[0]] + [split] + sub.operators[slices[1] + 1:]
    import flatbuffers

    b = flatbuffers.Builder(len(raw) + 1024)
    b.Finish(m.Pack(b), file_identifier=FILE_IDENTIFIER)
    g2 = import_tflite(bytes(b.Output()))
    assert [n.op for n in g2.nodes] == [n.op for n in q.nodes]
    x = np.random.default_rng(2).integers(-128, 128, size=(20, 16, 16, 1), dtype=np.int8)
    np.testing.assert_array_equal(run_int8(g2, x), run_int8(q, x))


# ----------------------------------------------------------------------------
# small hand-built ONNX graphs: the rules and the errors


def _onnx(nodes, inits, in_shape, out_shape):
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        [numpy_helper.from_array(np.asarray(v, np.float32 if k[0] != "i" else np.int64), k)
         for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _conv_inits(rng, cin=2, cout=3):
    return {"w": rng.standard_normal((cout, cin, 1, 1)), "b": rng.standard_normal(cout)}


def _check_against_onnxruntime(model, x):
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(model.SerializeToString())
    want = sess.run(None, {"x": x})[0]
    np.testing.assert_allclose(run_float(import_onnx(model), nchw_to_ir(x)), want,
                               rtol=1e-5, atol=1e-5)


def test_batchnorm_after_gemm_folds_into_the_fully_connected(rng):
    from onnx import helper

    inits = {"w": rng.standard_normal((5, 4)), "b": rng.standard_normal(5),
             "s": rng.random(5) + 0.5, "o": rng.standard_normal(5), "m": rng.standard_normal(5),
             "v": rng.random(5) + 0.5}
    model = _onnx([helper.make_node("Gemm", ["x", "w", "b"], ["g"], transB=1, name="fc"),
                   helper.make_node("BatchNormalization", ["g", "s", "o", "m", "v"], ["n"],
                                    name="bn"),
                   helper.make_node("Relu", ["n"], ["y"], name="relu")], inits, [1, 4], [1, 5])
    g = import_onnx(model)
    assert [(n.op, n.attrs["activation"]) for n in g.nodes] == [("FULLY_CONNECTED", "RELU")]
    _check_against_onnxruntime(model, rng.standard_normal((1, 4)).astype(np.float32))


def test_layout_transpose_before_flatten_is_absorbed(rng):
    """Transpose(0, 2, 3, 1) then Reshape flattens in NHWC order: the Gemm keeps its columns."""
    from onnx import helper

    inits = {**_conv_inits(rng), "fw": rng.standard_normal((4, 3 * 3 * 2)),
             "i_shape": [1, 18]}
    model = _onnx([helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv"),
                   helper.make_node("Transpose", ["c"], ["t"], perm=[0, 2, 3, 1], name="nhwc"),
                   helper.make_node("Reshape", ["t", "i_shape"], ["r"], name="flat"),
                   helper.make_node("Gemm", ["r", "fw"], ["y"], transB=1, name="fc")],
                  inits, [1, 2, 3, 2], [1, 4])
    assert [n.op for n in import_onnx(model).nodes] == ["CONV_2D", "RESHAPE", "FULLY_CONNECTED"]
    _check_against_onnxruntime(model, rng.standard_normal((1, 2, 3, 2)).astype(np.float32))


def test_slice_along_channels_imports_as_slice(rng):
    from onnx import helper

    inits = {**_conv_inits(rng, 2, 6), "i_s": [2], "i_e": [5], "i_a": [1]}
    model = _onnx([helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv"),
                   helper.make_node("Slice", ["c", "i_s", "i_e", "i_a"], ["y"], name="sl")],
                  inits, [1, 2, 3, 3], [1, 3, 3, 3])
    g = import_onnx(model)
    assert g.nodes[-1].op == "SLICE" and g.nodes[-1].attrs == {"axis": 3, "begin": 2, "size": 3}
    x = rng.standard_normal((1, 2, 3, 3)).astype(np.float32)
    ort = pytest.importorskip("onnxruntime")
    want = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_allclose(run_float(g, nchw_to_ir(x)), nchw_to_ir(want), rtol=1e-5,
                               atol=1e-5)


def _two_convs_then(rng, node, out_shape, relu_on_first=False):
    from onnx import helper

    inits = {**_conv_inits(rng), "w2": rng.standard_normal((3, 2, 1, 1)),
             "b2": rng.standard_normal(3)}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["a"], name="conv_a"),
             helper.make_node("Conv", ["x", "w2", "b2"], ["b_"], name="conv_b"), node]
    return _onnx(nodes, inits, [1, 2, 4, 4], out_shape)


@pytest.mark.parametrize("make,match", [
    (lambda h: h.make_node("Transpose", ["a"], ["y"], perm=[0, 1, 3, 2], name="swap_hw"),
     r"Transpose 'swap_hw' with perm \[0, 1, 3, 2\]"),
    (lambda h: h.make_node("Transpose", ["a"], ["y"], perm=[0, 2, 3, 1], name="to_nhwc"),
     r"Transpose 'to_nhwc' with perm \[0, 2, 3, 1\] is not a layout change"),
    (lambda h: h.make_node("Concat", ["a", "b_"], ["y"], axis=0, name="batch_cat"),
     r"Concat 'batch_cat' along axis 0 .*\(never the batch axis\)"),
])
def test_unsupported_transpose_and_concat_axis_name_the_node(rng, make, match):
    from onnx import helper

    model = _two_convs_then(rng, make(helper), None)
    with pytest.raises(UnsupportedOpError, match=match):
        import_onnx(model)


def test_relu_after_concat_of_a_shared_tensor_is_a_clear_error(rng):
    """The Relu cannot move into conv_a: another op reads conv_a's output too."""
    from onnx import helper

    model = _two_convs_then(rng, helper.make_node("Concat", ["a", "b_"], ["c"], axis=1,
                                                  name="cat"), None)
    model.graph.node.extend([helper.make_node("Relu", ["c"], ["r"], name="act"),
                             helper.make_node("Add", ["r", "r2"], ["y"], name="sum")])
    model.graph.node.insert(2, helper.make_node("Concat", ["a", "a"], ["r2"], axis=1, name="cat2"))
    with pytest.raises(UnsupportedOpError, match=r"Relu 'act' after Concat 'cat'.*input 'a'"):
        import_onnx(model)


def test_softmax_into_concat_is_a_quantization_error():
    from microfit.ir.graph import Graph, Node, Tensor

    t = {"x": Tensor("x", (1, 4)), "s": Tensor("s", (1, 4)), "y": Tensor("y", (1, 8))}
    g = Graph(t, [Node("sm", "SOFTMAX", ["x"], ["s"], {"beta": 1.0}),
                  Node("cat", "CONCATENATION", ["s", "x"], ["y"], {"axis": 1})], ["x"], ["y"])
    with pytest.raises(QuantizationError, match="softmax output 's' feeds a concatenation"):
        quantize(g, np.random.default_rng(0).standard_normal((8, 4)))


def test_tflite_concat_with_differing_quantization_is_rejected(tmp_path):
    """TFLite's int8 CONCATENATION kernels refuse to rescale; so does the importer."""
    _, _, q = _model("concat_net", tmp_path)
    cat = next(n for n in q.nodes if n.op == "CONCATENATION")
    from microfit.ir.graph import QuantParams

    bad = q.tensors[cat.inputs[0]]
    saved = bad.quant
    bad.quant = QuantParams(saved.scale * 2, saved.zero_point)
    try:
        raw = export_tflite(q)
    finally:
        bad.quant = saved
    with pytest.raises(UnsupportedOpError, match=r"\(CONCATENATION\).*quantized differently"):
        import_tflite(raw)


@pytest.mark.parametrize("name", ["concat_net", "mlp_autoencoder"])
def test_generated_c_equals_reference_on_host_under_sanitizers(name, tmp_path):
    """mf_concatenation_s8 / mf_slice_s8 in a whole model, portable kernels, ASan + UBSan."""
    from microfit.codegen.generate import generate
    from microfit.codegen.host import build_host_model, run_host_model

    _, _, q = _model(name, tmp_path)
    shape = q.tensors[q.inputs[0]].shape
    x = np.random.default_rng(3).integers(-128, 128, size=(100, *shape[1:]), dtype=np.int8)
    ref = run_int8(q, x).reshape(len(x), -1)
    gen = generate(q, tmp_path / "gen", kernels="portable")
    if name == "concat_net":
        model_c = (gen.out_dir / "model.c").read_text()
        assert model_c.count("mf_concatenation_s8(") == 4 and model_c.count("mf_slice_s8(") == 2
    exe = build_host_model(gen.out_dir, tmp_path / "host", sanitize=True)
    np.testing.assert_array_equal(run_host_model(exe, x.reshape(len(x), -1), ref.shape[1]), ref)


def test_qdq_onnx_concat_and_slice_agree_exactly_with_onnxruntime():
    """Both are copies: onnxruntime's float Concat/Slice between Q/DQ pairs gives the same bytes."""
    pytest.importorskip("onnxruntime")
    from microfit.ir.graph import Graph, Node, QuantParams, Tensor
    from microfit.ir.onnx_qdq_export import compare_with_onnxruntime

    qp = QuantParams(np.array([0.05], np.float32), np.array([3]))
    t = {n: Tensor(n, s, "int8", None, qp) for n, s in
         (("x", (1, 3, 4, 6)), ("a", (1, 3, 4, 2)), ("b", (1, 3, 4, 4)), ("y", (1, 3, 4, 6)))}
    g = Graph(t, [Node("sa", "SLICE", ["x"], ["a"], {"axis": 3, "begin": 0, "size": 2}),
                  Node("sb", "SLICE", ["x"], ["b"], {"axis": 3, "begin": 2, "size": 4}),
                  Node("cat", "CONCATENATION", ["b", "a"], ["y"], {"axis": 3})],
              ["x"], ["y"], {"rounding": "double"})
    x = np.random.default_rng(5).integers(-128, 128, (50, 3, 4, 6), dtype=np.int8)
    res = compare_with_onnxruntime(g, x, optimize=False)
    assert res.output["agreement"] == 1.0
    np.testing.assert_array_equal(run_int8(g, x), np.concatenate([x[..., 2:], x[..., :2]], -1))
