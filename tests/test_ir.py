"""ONNX import: layout change, BN folding and activation fusion keep the function."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from conftest import export_torch, randomize_bn
from models import MODELS, mlp
from torch import nn

from microfit.errors import ModelLoadError, UnsupportedOpError
from microfit.ir.graph import Graph
from microfit.ir.onnx_import import import_onnx, nchw_to_ir
from microfit.reference.float_exec import run_float


@pytest.mark.parametrize("name", sorted(MODELS) + ["mlp"])
def test_imported_graph_matches_onnxruntime(name, tmp_path, rng):
    torch.manual_seed(0)
    model = mlp() if name == "mlp" else MODELS[name]()
    randomize_bn(model)
    path = export_torch(model, (1, 1, 8, 8), tmp_path / "m.onnx")
    graph = import_onnx(path)
    x = rng.random((16, 1, 8, 8), dtype=np.float32)
    sess = ort.InferenceSession(str(path))
    expected = np.concatenate([sess.run(None, {"input": x[i:i + 1]})[0] for i in range(len(x))])
    got = run_float(graph, nchw_to_ir(x))
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=2e-5, rtol=1e-5)


def test_batchnorm_and_relu_are_folded_into_the_conv(tmp_path):
    model = MODELS["plain_cnn"]()
    randomize_bn(model)
    graph = import_onnx(export_torch(model, (1, 1, 8, 8), tmp_path / "m.onnx"))
    ops = [n.op for n in graph.nodes]
    assert ops == ["CONV_2D", "MAX_POOL_2D", "CONV_2D", "RESHAPE", "FULLY_CONNECTED"]
    assert graph.nodes[0].attrs["activation"] == "RELU"
    # OHWI weights, NHWC activations
    assert graph.tensors[graph.nodes[0].inputs[1]].shape == (8, 3, 3, 1)
    assert graph.tensors[graph.inputs[0]].shape == (1, 8, 8, 1)


def test_depthwise_conv_is_recognised(tmp_path):
    graph = import_onnx(export_torch(MODELS["ds_cnn"](), (1, 1, 8, 8), tmp_path / "m.onnx"))
    dw = [n for n in graph.nodes if n.op == "DEPTHWISE_CONV_2D"]
    assert len(dw) == 2
    assert dw[1].attrs["depth_multiplier"] == 2
    assert dw[1].attrs["dilation"] == [2, 2]


def test_unsupported_op_names_the_node_and_op(tmp_path):
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.LeakyReLU(0.1), nn.Flatten(), nn.Linear(144, 10))
    path = export_torch(model, (1, 1, 8, 8), tmp_path / "m.onnx")
    with pytest.raises(UnsupportedOpError, match="LeakyRelu") as exc:
        import_onnx(path)
    assert "Supported:" in str(exc.value)


def test_grouped_conv_is_a_clear_error(tmp_path):
    model = nn.Sequential(nn.Conv2d(4, 8, 3, groups=2))
    path = export_torch(model, (1, 4, 8, 8), tmp_path / "m.onnx")
    with pytest.raises(UnsupportedOpError, match="group=2"):
        import_onnx(path)


def test_bad_model_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not protobuf")
    with pytest.raises(ModelLoadError, match="not a readable ONNX model"):
        import_onnx(bad)
    with pytest.raises(ModelLoadError, match="does not exist"):
        import_onnx(tmp_path / "missing.onnx")


def test_graph_save_load_round_trip_is_byte_identical(tmp_path):
    graph = import_onnx(export_torch(MODELS["residual"](), (1, 1, 8, 8), tmp_path / "m.onnx"))
    graph.save(tmp_path / "a.json")
    again = Graph.load(tmp_path / "a.json")
    again.save(tmp_path / "b.json")
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    assert again.content_hash() == graph.content_hash()


def test_zero_pad_before_a_conv_folds_into_its_padding(tmp_path, rng):
    model = nn.Sequential(nn.ZeroPad2d((1, 0, 2, 1)), nn.Conv2d(1, 4, 3, stride=2), nn.ReLU(),
                          nn.Flatten(), nn.Linear(4 * 5 * 4, 10))
    path = export_torch(model, (1, 1, 8, 8), tmp_path / "m.onnx")
    graph = import_onnx(path)
    assert [n.op for n in graph.nodes] == ["CONV_2D", "RESHAPE", "FULLY_CONNECTED"]
    assert graph.nodes[0].attrs["padding"] == [2, 1, 1, 0]  # top, left, bottom, right
    x = rng.random((8, 1, 8, 8), dtype=np.float32)
    sess = ort.InferenceSession(str(path))
    expected = np.concatenate([sess.run(None, {"input": x[i:i + 1]})[0] for i in range(len(x))])
    np.testing.assert_allclose(run_float(graph, nchw_to_ir(x)), expected, atol=2e-5, rtol=1e-5)


def test_pad_that_a_conv_does_not_read_is_a_standalone_pad(tmp_path, rng):
    model = nn.Sequential(nn.ZeroPad2d(1), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(25, 10))
    path = export_torch(model, (1, 1, 8, 8), tmp_path / "m.onnx")
    graph = import_onnx(path)
    assert [n.op for n in graph.nodes][:2] == ["PAD", "MAX_POOL_2D"]
    x = rng.random((8, 1, 8, 8), dtype=np.float32) - 0.5  # negative: the padded zeros win
    sess = ort.InferenceSession(str(path))
    expected = np.concatenate([sess.run(None, {"input": x[i:i + 1]})[0] for i in range(len(x))])
    np.testing.assert_allclose(run_float(graph, nchw_to_ir(x)), expected, atol=2e-5, rtol=1e-5)
