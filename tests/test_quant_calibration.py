"""Calibration methods and bias correction: each does what it claims, and differs from minmax."""

from __future__ import annotations

import numpy as np
import pytest

from microfit.errors import QuantizationError
from microfit.ir.graph import Graph, Node, Tensor
from microfit.quantize.calibration import (
    CALIBRATION_METHODS,
    CalibrationOptions,
    Histogram,
    calibrate_ranges,
    quantization_mse,
)
from microfit.quantize.quantize import (
    QuantizeConfig,
    activation_qparams,
    dequantize,
    quantize,
    quantize_input,
)
from microfit.reference.executor import run_int8
from microfit.reference.float_exec import run_float


def _feeder(values: np.ndarray):
    """An activations() callable over one tensor 't' split into batches."""
    def activations(batch: int):
        batch = batch or 256
        for i in range(0, len(values), batch):
            yield {"t": values[i:i + batch]}
    return activations


def _scale(rng: tuple[float, float]) -> float:
    return float(activation_qparams(*rng).scale[0])


@pytest.fixture
def with_outlier() -> np.ndarray:
    rng = np.random.default_rng(0)
    v = rng.normal(0.0, 1.0, (1000, 16))
    v[500, 3] = 40.0  # one sample, one value
    return v


def test_percentile_clips_an_outlier_that_minmax_keeps(with_outlier):
    mm = calibrate_ranges(_feeder(with_outlier), "minmax")["t"]
    pc = calibrate_ranges(_feeder(with_outlier), "percentile")["t"]
    assert mm[1] == 40.0
    assert pc[1] < 6.0  # N(0, 1) has 99.99% of its mass below 3.8
    assert _scale(pc) < _scale(mm) / 4
    # With nothing to clip, the percentile range is within a bin of minmax's.
    lo_side = calibrate_ranges(_feeder(with_outlier), "percentile",
                               CalibrationOptions(percentile=100.0))["t"]
    assert lo_side[1] == pytest.approx(40.0)


def test_moving_average_damps_a_rare_extreme_batch(with_outlier):
    opts = CalibrationOptions(moving_average_batch=100, momentum=0.9)
    mm = calibrate_ranges(_feeder(with_outlier), "minmax")["t"]
    ma = calibrate_ranges(_feeder(with_outlier), "moving_average", opts)["t"]
    batch_hi = [with_outlier[i:i + 100].max() for i in range(0, 1000, 100)]
    assert ma[1] < mm[1] / 2  # the outlier batch moved it by (1 - momentum) only
    assert ma[1] > float(np.median(batch_hi))  # ... but it did move it
    # momentum 0 is "the last batch's extremes"
    last = calibrate_ranges(_feeder(with_outlier), "moving_average",
                            CalibrationOptions(moving_average_batch=100, momentum=0.0))["t"]
    assert last == (float(with_outlier[900:].min()), float(with_outlier[900:].max()))


def test_mse_search_trades_clipping_against_rounding():
    # 160,000 values of N(0, 1) and one at 40. At 8 bits rounding error is
    # small, so clipping pays only a little: MSE shrinks the range part way,
    # percentile clips the bulk's tails too and loses.
    rng = np.random.default_rng(0)
    v = rng.normal(0.0, 1.0, (10000, 16))
    v[5000, 3] = 40.0

    def real_mse(r):  # on the raw values, not the histogram the search used
        qp = activation_qparams(*r)
        return float(np.mean((dequantize(quantize_input(v, qp), qp) - v) ** 2))

    mm, ms, pc = (calibrate_ranges(_feeder(v), m)["t"] for m in ("minmax", "mse", "percentile"))
    assert pc[1] < ms[1] < mm[1]
    assert real_mse(ms) < 0.9 * real_mse(mm)
    assert real_mse(ms) < real_mse(pc)


def test_mse_search_keeps_minmax_for_a_uniform_tensor():
    v = np.random.default_rng(1).uniform(-1, 1, (2000, 8))
    mm = calibrate_ranges(_feeder(v), "minmax")["t"]
    ms = calibrate_ranges(_feeder(v), "mse")["t"]
    # Clipping a uniform distribution only adds error: the search stays near the full range.
    assert ms[1] > 0.9 * mm[1] and ms[0] < 0.9 * mm[0]


def test_histogram_quantile_and_mse_are_consistent():
    h = Histogram(0.0, 10.0, np.ones(100, np.int64))
    assert h.quantile(0.5) == pytest.approx(5.0)
    assert h.quantile(0.999) == pytest.approx(9.99)
    assert quantization_mse(h, 0.0, 10.0) < quantization_mse(h, 0.0, 5.0)


def _mlp_float_graph(rng) -> Graph:
    w1 = rng.normal(0, 0.3, (24, 16))
    w2 = rng.normal(0, 0.3, (10, 24))
    t = {"x": Tensor("x", (1, 16)), "h": Tensor("h", (1, 24)), "y": Tensor("y", (1, 10)),
         "w1": Tensor("w1", w1.shape, data=w1), "b1": Tensor("b1", (24,), data=rng.normal(0, .1, 24)),
         "w2": Tensor("w2", w2.shape, data=w2), "b2": Tensor("b2", (10,), data=rng.normal(0, .1, 10))}
    nodes = [Node("fc1", "FULLY_CONNECTED", ["x", "w1", "b1"], ["h"], {"activation": "RELU"}),
             Node("fc2", "FULLY_CONNECTED", ["h", "w2", "b2"], ["y"], {"activation": "NONE"})]
    return Graph(t, nodes, ["x"], ["y"])


@pytest.mark.parametrize("method", CALIBRATION_METHODS)
def test_every_method_quantizes_a_model_that_tracks_the_float_one(method):
    rng = np.random.default_rng(2)
    g = _mlp_float_graph(rng)
    x = rng.uniform(0, 1, (600, 16))
    q = quantize(g, x[:400], QuantizeConfig(calibration=method))
    assert q.meta["calibration"] == method
    yq = run_int8(q, quantize_input(x[400:], q.tensors["x"].quant))
    err = dequantize(yq, q.tensors["y"].quant) - run_float(g, x[400:])
    assert np.abs(err).mean() < 0.05


def test_bias_correction_removes_the_mean_error_of_weight_rounding():
    rng = np.random.default_rng(3)
    # Few, coarse weights and positive inputs: rounding the weights shifts
    # every output channel by a mean amount that a bias can take back.
    w = rng.normal(0, 1.0, (6, 5))
    w[:, 0] = 127.0  # the channel's scale is set by one big weight: the rest round coarsely
    t = {"x": Tensor("x", (1, 5)), "y": Tensor("y", (1, 6)),
         "w": Tensor("w", w.shape, data=w), "b": Tensor("b", (6,), data=np.zeros(6))}
    g = Graph(t, [Node("fc", "FULLY_CONNECTED", ["x", "w", "b"], ["y"],
                       {"activation": "NONE"})], ["x"], ["y"])
    x = rng.uniform(0, 1, (4000, 5))
    x[:, 0] = 0.0  # the big weight's input is off: it only sets the scale
    errors = {}
    for corrected in (False, True):
        q = quantize(g, x[:2000], QuantizeConfig(bias_correction=corrected))
        yq = run_int8(q, quantize_input(x[2000:], q.tensors["x"].quant))
        err = dequantize(yq, q.tensors["y"].quant) - run_float(g, x[2000:])
        errors[corrected] = np.abs(err.mean(axis=0))  # per-channel mean error
        assert q.meta["bias_correction"] is corrected
    assert errors[True].mean() < errors[False].mean() / 3


def test_unknown_method_and_bad_options_are_clear_errors():
    with pytest.raises(QuantizationError, match="not available"):
        QuantizeConfig(calibration="kl")
    with pytest.raises(QuantizationError, match="percentile"):
        QuantizeConfig(calibration="percentile", options=CalibrationOptions(percentile=30))


def test_cli_offers_every_method_and_bias_correction():
    from microfit.cli import build_parser

    for method in CALIBRATION_METHODS:
        args = build_parser().parse_args(["quantize", "r", "--calibration", method,
                                          "--bias-correction"])
        assert args.calibration == method and args.bias_correction
