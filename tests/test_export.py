"""ONNX export: self-contained, fixed names, deterministic, equal to torch in onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from microfit.export import ExportError, export_onnx
from microfit.prune import apply_plan, make_plan
from microfit.train import load_digits_splits, make_default_model, predict


@pytest.fixture(scope="module")
def splits():
    return load_digits_splits(seed=0)


def test_export_matches_torch_on_test_images(splits, tmp_path):
    model = make_default_model(seed=0)
    result = export_onnx(model, (1, *splits.input_shape), tmp_path / "float.onnx",
                         check_inputs=splits.x_test[:8], num_checks=8)
    assert result.max_abs_diff <= 1e-5
    assert result.op_types == ["Conv", "Relu", "Conv", "Relu", "MaxPool", "Reshape", "Gemm"]
    proto = onnx.load(str(result.path))
    assert [i.name for i in proto.graph.input] == ["input"]
    assert [o.name for o in proto.graph.output] == ["output"]
    dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 1, 8, 8]
    assert {o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")} == {17}
    # Weights live inside the file: nothing else was written.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["float.onnx"]
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    x = splits.x_test[10:11]
    (got,) = session.run(["output"], {"input": x})
    assert np.abs(got - predict(model, x)).max() <= 1e-5


def test_export_is_byte_identical_for_the_same_model(tmp_path):
    model = make_default_model(seed=2)
    a = export_onnx(model, (1, 1, 8, 8), tmp_path / "a.onnx").path
    b = export_onnx(make_default_model(seed=2), (1, 1, 8, 8), tmp_path / "sub" / "b.onnx").path
    assert a.read_bytes() == b.read_bytes()


def test_export_of_pruned_batchnorm_model_matches_torch(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
        nn.Linear(8 * 4 * 4, 10),
    )
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    model.eval()
    pruned = apply_plan(model, make_plan(model, (1, 1, 8, 8), 0.5))
    result = export_onnx(pruned, (1, 1, 8, 8), tmp_path / "pruned.onnx")
    assert result.max_abs_diff <= 1e-5
    assert "BatchNormalization" not in result.op_types  # folded by the exporter


def test_export_disagreement_is_an_export_error(tmp_path):
    # A negative tolerance cannot be met: exercises the mismatch path end to end.
    with pytest.raises(ExportError, match=r"disagrees with torch on check input 0"):
        export_onnx(make_default_model(), (1, 1, 8, 8), tmp_path / "m.onnx", atol=-1.0)


def test_export_failure_is_an_export_error(tmp_path, monkeypatch):
    def broken_exporter(*args, **kwargs):
        raise RuntimeError("no converter for aten::frobnicate")

    monkeypatch.setattr(torch.onnx, "export", broken_exporter)
    with pytest.raises(ExportError, match=r"export failed for DigitsCNN.*aten::frobnicate"):
        export_onnx(make_default_model(), (1, 1, 8, 8), tmp_path / "m.onnx")


def test_a_per_sample_shape_is_caught_before_export(tmp_path):
    with pytest.raises(ValueError, match=r"fails on a zero input of shape \(1, 8, 8\)"):
        export_onnx(make_default_model(), (1, 8, 8), tmp_path / "m.onnx")


def test_export_wants_batch_one(tmp_path):
    with pytest.raises(ValueError, match=r"full input shape with batch 1"):
        export_onnx(make_default_model(), (2, 1, 8, 8), tmp_path / "m.onnx")


def test_export_check_scales_its_tolerance_with_the_outputs(tmp_path):
    """Large logits differ by more than 1e-5 between two correct float32 runtimes; the check
    compares against 1e-5 x the largest output magnitude, so such a model still exports."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    with torch.no_grad():
        net[1].weight.mul_(3000.0)
    res = export_onnx(net, (1, 1, 8, 8), tmp_path / "big.onnx")
    assert res.max_abs_diff > 1e-5  # would have failed an absolute 1e-5
