"""int8 accuracy: microfit's quantizer beside onnxruntime's quantize_static, same float model.

For each model (the default digits CNN, and a depthwise-separable CNN), both
trained with microfit.train on scikit-learn's digits, the same float ONNX and
the same calibration samples (the first 500 of the training split) go to:

- microfit: import, calibrate (every method, and minmax with bias
  correction), int8 reference accuracy on the test split;
- onnxruntime ``quantize_static`` (QDQ, per-channel int8 weights, int8
  activations, MinMax calibration), run by onnxruntime on the test split.

It also measures how often onnxruntime, running microfit's own QDQ export,
gives the reference's bytes (it rounds differently; docs/quantization.md).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .common import BenchResult

CALIB_SAMPLES = 500


def ds_cnn() -> nn.Module:
    """A depthwise-separable CNN (a second architecture: depthwise, ReLU6, average pooling)."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU6(),
        nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 1), nn.ReLU(),
        nn.AvgPool2d(2), nn.Flatten(), nn.Linear(32 * 4 * 4, 10))


def _ort_accuracy(path: Path, x_nchw: np.ndarray, y: np.ndarray) -> float:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    pred = [int(np.argmax(sess.run(None, {name: x_nchw[i:i + 1]})[0])) for i in range(len(x_nchw))]
    return float(np.mean(np.array(pred) == y))


def _ort_quantize_static(float_onnx: Path, out: Path, calib_nchw: np.ndarray) -> None:
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    input_name = onnx.load(str(float_onnx)).graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(calib_nchw[i:i + 1] for i in range(len(calib_nchw)))

        def get_next(self):
            batch = next(self.it, None)
            return None if batch is None else {input_name: batch}

    pre = out.with_name("preprocessed.onnx")
    quant_pre_process(str(float_onnx), str(pre), skip_symbolic_shape=True)
    quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax)


def _bench_model(name: str, factory, splits, tmp: Path, quick: bool) -> tuple[list[dict], str]:
    from microfit.export.onnx_export import export_onnx
    from microfit.ir.onnx_import import import_onnx, nchw_to_ir
    from microfit.ir.onnx_qdq_export import compare_with_onnxruntime
    from microfit.quantize.calibration import CALIBRATION_METHODS
    from microfit.quantize.quantize import QuantizeConfig, quantize, quantize_input
    from microfit.reference.executor import run_int8
    from microfit.reference.float_exec import run_float
    from microfit.train.fit import train
    from microfit.train.models import instantiate

    model = instantiate(factory, seed=0)
    train(model, splits, epochs=3 if quick else 15, seed=0, progress=False)
    model.eval()
    float_onnx = tmp / f"{name}.onnx"
    export_onnx(model, (1, *splits.input_shape), float_onnx)
    fgraph = import_onnx(float_onnx)
    x_test, y_test = splits.x_test, splits.y_test
    calib = splits.x_train[:CALIB_SAMPLES]
    float_acc = float(np.mean(run_float(fgraph, nchw_to_ir(x_test)).argmax(-1) == y_test))
    rows = [dict(model=name, quantizer="float", calibration="-", accuracy=float_acc, drop_pp=0.0)]

    configs = [(m, False) for m in CALIBRATION_METHODS] + [("minmax", True)]
    qgraph_minmax = None
    for method, bias_corr in configs:
        t0 = time.time()
        q = quantize(fgraph, nchw_to_ir(calib), QuantizeConfig(calibration=method,
                                                                bias_correction=bias_corr))
        if method == "minmax" and not bias_corr:
            qgraph_minmax = q
        xq = quantize_input(nchw_to_ir(x_test), q.tensors[q.inputs[0]].quant)
        out = run_int8(q, xq)
        acc = float(np.mean(out.reshape(len(out), -1).argmax(-1) == y_test))
        rows.append(dict(model=name, quantizer="microfit int8",
                         calibration=method + (" + bias corr." if bias_corr else ""),
                         accuracy=acc, drop_pp=round(100 * (float_acc - acc), 2),
                         seconds=round(time.time() - t0, 2)))

    t0 = time.time()
    ort_int8 = tmp / f"{name}_ort_int8.onnx"
    _ort_quantize_static(float_onnx, ort_int8, calib.astype(np.float32))
    acc = _ort_accuracy(ort_int8, x_test.astype(np.float32), y_test)
    rows.append(dict(model=name, quantizer="onnxruntime quantize_static",
                     calibration="minmax (QDQ, per-channel)", accuracy=acc,
                     drop_pp=round(100 * (float_acc - acc), 2),
                     seconds=round(time.time() - t0, 2)))

    assert qgraph_minmax is not None
    xq = quantize_input(nchw_to_ir(x_test), qgraph_minmax.tensors[qgraph_minmax.inputs[0]].quant)
    fused = compare_with_onnxruntime(qgraph_minmax, xq, all_layers=False).output
    plain = compare_with_onnxruntime(qgraph_minmax, xq, all_layers=False, optimize=False).output
    note = (f"{name}: onnxruntime running microfit's QDQ export gives the reference's output "
            f"bytes on {plain['agreement']:.2%} of {plain['bytes']} (max difference "
            f"{plain['max_abs_diff']}) as the QDQ spec reads (optimizations off: float ops, "
            f"rounding half to even), {fused['agreement']:.2%} (max difference "
            f"{fused['max_abs_diff']}) with its fused integer kernels")
    return rows, note


def run(quick: bool = False) -> BenchResult:
    from microfit.train.data import load_digits_splits
    from microfit.train.models import DigitsCNN

    torch.set_num_threads(1)
    splits = load_digits_splits(seed=0)
    rows: list[dict] = []
    notes = [f"scikit-learn digits: {len(splits.y_train)} train / {len(splits.y_test)} test; "
             f"calibration: the first {CALIB_SAMPLES} training samples, for both quantizers",
             "drop_pp: accuracy drop from the float model in percentage points"]
    with tempfile.TemporaryDirectory() as tmp:
        for name, factory in (("digits_cnn", DigitsCNN), ("ds_cnn", ds_cnn)):
            r, note = _bench_model(name, factory, splits, Path(tmp), quick)
            rows += r
            notes.append(note)
    return BenchResult("quant", "int8 test accuracy: microfit vs onnxruntime quantize_static",
                       ["model", "quantizer", "calibration", "accuracy", "drop_pp"], rows, notes)
