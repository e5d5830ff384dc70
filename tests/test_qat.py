"""Quantization-aware fine-tuning: the fake-quantized forward is our int8 model, and it helps."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import randomize_bn
from models import MODELS, mlp
from torch import nn

from microfit.cli import main
from microfit.errors import QuantizationError
from microfit.export.onnx_export import export_onnx
from microfit.ir.onnx_import import import_onnx, nchw_to_ir
from microfit.quantize.qat import (
    QATConfig,
    calibrate_qat,
    fake_quant,
    ir_accuracy,
    prepare_qat,
    qat_finetune,
)
from microfit.quantize.quantize import dequantize, quantize, quantize_input
from microfit.reference.executor import run_int8
from microfit.train.data import load_digits_splits
from microfit.train.fit import evaluate, train
from microfit.train.models import make_default_model


def _int8_graph(model: nn.Module, calib: np.ndarray, tmp_path: Path):
    export_onnx(model, (1, *calib.shape[1:]), tmp_path / "m.onnx")
    fgraph = import_onnx(tmp_path / "m.onnx")
    return fgraph, quantize(fgraph, nchw_to_ir(calib))


def linear_bottleneck() -> nn.Module:
    """A BatchNorm with no activation after it (MobileNetV2's projection): its output rounds."""
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8),
                         nn.Conv2d(8, 8, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Flatten(), nn.Linear(8 * 8 * 8, 10))


@pytest.mark.parametrize("name", ["plain_cnn", "ds_cnn", "residual", "mlp", "linear_bottleneck"])
def test_fake_quant_forward_is_the_int8_reference_within_one_step(name, tmp_path):
    # BatchNorm folding, depthwise + ReLU6, add + average pool, softmax's fixed scale.
    torch.manual_seed(0)
    factory = {"mlp": mlp, "linear_bottleneck": linear_bottleneck}.get(name) or MODELS[name]
    model = factory().eval()
    randomize_bn(model)
    x = np.random.default_rng(0).random((300, 1, 8, 8), dtype=np.float32)
    calib, test = x[:200], x[200:]
    _, qgraph = _int8_graph(model, calib, tmp_path)
    qat = prepare_qat(model, torch.from_numpy(calib[:1]))
    calibrate_qat(qat, calib, QATConfig())  # the quantize stage's method, same samples
    xi = nchw_to_ir(test)
    out = run_int8(qgraph, quantize_input(xi, qgraph.tensors[qgraph.inputs[0]].quant))
    oq = qgraph.tensors[qgraph.outputs[0]].quant
    want = dequantize(out, oq).reshape(len(out), -1)
    with torch.no_grad():
        fake = qat(torch.from_numpy(test)).numpy().reshape(len(out), -1)
        plain = model(torch.from_numpy(test)).numpy().reshape(len(out), -1)
    steps = np.abs(fake - want) / float(oq.scale[0])
    float_steps = np.abs(plain - want) / float(oq.scale[0])
    assert steps.max() <= 1 + 1e-4
    # It is the rounding that makes them agree: the float model is further off.
    assert (steps > 0.5).mean() < (float_steps > 0.5).mean()


def test_fake_quant_rounds_to_the_grid_and_passes_gradients_inside_the_range():
    x = torch.tensor([-3.0, -0.26, 0.25, 0.74, 5.0], requires_grad=True)
    y = fake_quant(x, 0.5, -120)  # representable: [-4, 123.5]
    assert y.tolist() == [-3.0, -0.5, 0.5, 0.5, 5.0]
    y = fake_quant(x, 0.01, 0)  # [-1.28, 1.27]: -3 and 5 clip, and do not move with x
    y.sum().backward()
    assert y.detach().tolist() == pytest.approx([-1.28, -0.26, 0.25, 0.74, 1.27])
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]


@pytest.fixture(scope="module")
def outlier_case():
    """The digits CNN with one first-layer channel scaled by 500 and the next layer's
    inputs from it divided by 500: the same float function (ReLU commutes with a positive
    scale), but that channel stretches the int8 range the other channels share."""
    splits = load_digits_splits(seed=0)
    model = make_default_model(0)
    train(model, splits, epochs=4, progress=False)
    conv1, conv2 = model.features[0], model.features[2]
    with torch.no_grad():
        conv1.weight[0] *= 500
        conv1.bias[0] *= 500
        conv2.weight[:, 0] /= 500
    return splits, model.eval()


def test_qat_recovers_the_accuracy_post_training_quantization_loses(outlier_case, tmp_path):
    splits, model = outlier_case
    float_acc = evaluate(model, splits.x_test, splits.y_test)
    calib = splits.x_train[:500]
    fgraph, qgraph = _int8_graph(model, calib, tmp_path)
    _, ptq = ir_accuracy(fgraph, qgraph, splits.x_test, splits.y_test)
    res = qat_finetune(model, splits, QATConfig(epochs=3))
    assert res.kept and res.val_accuracy_after > res.val_accuracy_before
    fgraph, qgraph = _int8_graph(res.model, calib, tmp_path)
    _, qat = ir_accuracy(fgraph, qgraph, splits.x_test, splits.y_test)
    assert float_acc - ptq > 0.03  # the case loses: > 3 points
    assert float_acc - qat < 0.015, (float_acc, ptq, qat)  # QAT brings it back within 1.5
    # The fine-tuned model is the user's class with the same state_dict keys (BN unfolded).
    assert type(res.model) is type(model)
    assert res.model.state_dict().keys() == model.state_dict().keys()


def test_qat_leaves_the_callers_model_alone(outlier_case):
    splits, model = outlier_case
    before = {k: v.clone() for k, v in model.state_dict().items()}
    qat_finetune(model, splits, QATConfig(epochs=1))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_untraceable_model_and_zero_epochs_name_the_fix():
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(x) if x.sum() > 0 else -self.fc(x)

    with pytest.raises(QuantizationError, match="torch.fx.*without QAT"):
        prepare_qat(Branchy(), torch.zeros(1, 4))
    with pytest.raises(QuantizationError, match="--qat-epochs 1"):
        QATConfig(epochs=0)


@pytest.fixture(scope="module")
def pruned_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("qat") / "run"
    assert main(["-q", "train", str(run), "--epochs", "3"]) == 0
    assert main(["-q", "prune", str(run), "--finetune-epochs", "1"]) == 0
    return run


def test_quantize_with_qat_flag_fine_tunes_and_quantizes_the_result(pruned_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(pruned_run, run)
    assert main(["-q", "quantize", str(run), "--qat", "--qat-epochs", "1"]) == 0
    info = json.loads((run / "quantize.json").read_text())
    assert info["qat"]["mode"] == "on" and info["qat"]["ran"] and info["qat"]["used"]
    assert (run / "qat.pt").exists() and (run / "qat.onnx").exists()
    # quant.json is the QAT model's int8 twin: its weights are those of qat.onnx.
    from microfit.ir.graph import Graph

    qgraph = Graph.load(run / "quant.json", run / "quant.npz")
    fgraph = import_onnx(run / "qat.onnx")
    requant = quantize(fgraph, nchw_to_ir(np.load(run / "data.npz")["x_train"][:500]))
    w = next(n.inputs[1] for n in qgraph.nodes if n.op == "CONV_2D")
    assert np.array_equal(qgraph.tensors[w].data, requant.tensors[w].data)
    # Without --qat, quantize goes back to the pruned model's float.onnx.
    assert main(["-q", "quantize", str(run)]) == 0
    assert json.loads((run / "quantize.json").read_text())["qat"] is None


def test_auto_mode_skips_qat_when_int8_meets_the_goal_and_says_so(pruned_run, tmp_path):
    from microfit import stages
    from microfit.runfolder import RunFolder

    run = tmp_path / "run"
    shutil.copytree(pruned_run, run)
    info = stages.stage_quantize(RunFolder(run), qat="auto")["qat"]
    drop = info["ptq_float_val_accuracy"] - info["ptq_int8_val_accuracy"]
    assert drop <= 0.01 and not info["ran"]  # the digits CNN loses nothing to int8
    assert info["decision"].startswith("QAT not needed") and "goal 1.00" in info["decision"]
    assert not (run / "qat.pt").exists()


def test_qat_without_pruned_model_names_the_fix(pruned_run, tmp_path, capsys):
    from microfit import stages
    from microfit.runfolder import RunFolder

    run = tmp_path / "run"
    shutil.copytree(pruned_run, run)
    (run / "pruned.pt").unlink()
    assert main(["quantize", str(run), "--qat"]) == 2
    assert "error:" in capsys.readouterr().out
    with pytest.raises(QuantizationError, match=r"pruned.pt is missing: run `microfit prune"):
        stages.stage_quantize(RunFolder(run), qat="on")
    assert main(["quantize", str(run), "--qat", "--qat-epochs", "0"]) == 2
    with pytest.raises(QuantizationError, match="give --qat-epochs 1 or more"):
        stages.stage_quantize(RunFolder(run), qat="on", qat_epochs=0)


def test_run_defaults_to_auto_and_quantize_to_off():
    from microfit.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["run"]).qat == "auto"
    args = parser.parse_args(["run", "--qat", "off", "--qat-epochs", "2"])
    assert (args.qat, args.qat_epochs) == ("off", 2)
    assert parser.parse_args(["quantize", "r"]).qat == "off"
    assert parser.parse_args(["quantize", "r", "--qat"]).qat == "on"
    with pytest.raises(SystemExit):
        parser.parse_args(["run", "--qat", "sometimes"])
