"""Float IR -> int8 IR, with TFLite's int8 scheme.

- weights: int8, symmetric, per output channel (zero point 0, range -127..127);
- activations: int8, asymmetric, per tensor, ranges calibrated on data;
- biases: int32 with scale = input scale x weight scale (per channel);
- ops that TFLite requires to keep their input's scale (max pool, average
  pool, reshape, pad) share it; SOFTMAX outputs scale 1/256, zero point -128,
  LOGISTIC and TANH TFLite's fixed 1/256, -128 and 1/128, 0.

Calibration observes every activation tensor of the float graph (post fused
activation) over the calibration samples with the chosen method (minmax,
moving average, percentile, MSE: see calibration.py). Optional bias
correction then removes, per output channel, the mean error that weight
rounding adds to each conv / fc output (see :func:`correct_biases`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

from ..errors import QuantizationError
from ..ir.graph import Graph, Node, QuantParams, Tensor
from ..reference.float_exec import run_float, run_node_float
from ..reference.ops import LUT_OUTPUT_QUANT
from .calibration import CALIBRATION_METHODS, CalibrationOptions, calibrate_ranges
from .fixedpoint import ROUNDING_MODES, tflite_round

#: Ops whose output must use exactly the input's quantization (TFLite's rule).
SAME_SCALE_OPS = ("MAX_POOL_2D", "AVERAGE_POOL_2D", "RESHAPE", "SLICE", "PAD")
WEIGHTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")

__all__ = ["CALIBRATION_METHODS", "CalibrationOptions", "QuantizeConfig", "quantize",
           "calibrate", "correct_biases", "activation_qparams", "activation_range",
           "quantize_input", "dequantize", "quantize_weights_per_channel"]


@dataclass
class QuantizeConfig:
    """How to quantize: rounding mode, calibration method and its options, bias correction."""

    rounding: str = "double"
    calibration: str = "minmax"
    calibration_batch: int = 256
    bias_correction: bool = False
    options: CalibrationOptions = field(default_factory=CalibrationOptions)

    def __post_init__(self) -> None:
        if self.rounding not in ROUNDING_MODES:
            raise QuantizationError(f"rounding must be one of {ROUNDING_MODES}, got {self.rounding!r}")
        if self.calibration not in CALIBRATION_METHODS:
            raise QuantizationError(
                f"calibration method {self.calibration!r} is not available; use one of "
                f"{CALIBRATION_METHODS}")
        self.options.check()


def activation_qparams(lo: float, hi: float) -> QuantParams:
    """Asymmetric int8 parameters covering [lo, hi] (widened to include 0, as TFLite does)."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if hi - lo <= 0:
        hi = lo + 1e-6  # a constant-zero tensor: any scale represents it exactly
    scale = np.float32((hi - lo) / 255.0)
    zp = int(tflite_round(-128.0 - lo / float(scale)))
    zp = max(-128, min(127, zp))
    return QuantParams(np.array([scale], np.float32), np.array([zp]))


def quantize_weights_per_channel(w: np.ndarray) -> tuple[np.ndarray, QuantParams]:
    """Symmetric int8 per output channel (axis 0 for conv/fc, 3 for depthwise)."""
    axis = 0
    if w.ndim == 4 and w.shape[0] == 1:  # depthwise [1, KH, KW, C]
        axis = 3
    moved = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
    amax = np.abs(moved).max(axis=1)
    # An all-zero channel keeps scale 1 so its bias still quantizes sanely.
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    shape = [1] * w.ndim
    shape[axis] = -1
    q = np.clip(np.round(w / scale.astype(np.float64).reshape(shape)), -127, 127).astype(np.int8)
    return q, QuantParams(scale, np.zeros_like(scale, dtype=np.int64), axis)


def quantize_input(x: np.ndarray, q: QuantParams) -> np.ndarray:
    """Float inputs -> int8, rounding half away from zero (as TFLite's QUANTIZE)."""
    s = float(q.scale[0])
    v = np.asarray(x, dtype=np.float64) / s
    v = np.sign(v) * np.floor(np.abs(v) + 0.5) + int(q.zero_point[0])
    return np.clip(v, -128, 127).astype(np.int8)


def dequantize(q: np.ndarray, qp: QuantParams) -> np.ndarray:
    return (q.astype(np.float64) - int(qp.zero_point[0])) * float(qp.scale[0])


def calibrate(graph: Graph, calib_x: np.ndarray, config: QuantizeConfig) -> dict[str, tuple[float, float]]:
    """Calibrated (lo, hi) of every activation tensor, with ``config.calibration``."""
    if calib_x is None or len(calib_x) == 0:
        raise QuantizationError("calibration set is empty: give at least one input sample")

    def activations(batch: int):
        batch = batch or config.calibration_batch
        for start in range(0, len(calib_x), batch):
            yield run_float(graph, calib_x[start:start + batch], keep_all=True)

    return calibrate_ranges(activations, config.calibration, config.options)


def correct_biases(graph: Graph, qweights: dict[str, np.ndarray], calib_x: np.ndarray,
                   batch: int = 256) -> dict[str, np.ndarray]:
    """Float biases with the mean output error of weight rounding removed, per channel.

    For each conv / fc node, ``E[conv(x, W_q) - conv(x, W)]`` over the
    calibration inputs ``x`` (the float model's own activations) is the
    systematic shift that rounding the weights to int8 adds to every output
    channel; subtracting it from the bias cancels it (empirical bias
    correction, Nagel et al. 2019). ``qweights`` maps weight tensor names to
    their dequantized values. Returns corrected biases by bias tensor name.
    """
    sums: dict[str, np.ndarray] = {}
    count: dict[str, int] = {}
    nodes = [n for n in graph.nodes if n.op in WEIGHTED_OPS]
    for start in range(0, len(calib_x), batch):
        values = run_float(graph, calib_x[start:start + batch], keep_all=True)
        for n in nodes:
            plain = Node(n.name, n.op, n.inputs, n.outputs, dict(n.attrs, activation="NONE"))
            exact = run_node_float(plain, graph, values)
            shadow = Graph({**graph.tensors, n.inputs[1]: Tensor(
                n.inputs[1], graph.tensors[n.inputs[1]].shape, data=qweights[n.inputs[1]])},
                [plain], graph.inputs, graph.outputs)
            rounded = run_node_float(plain, shadow, values)
            err = (rounded - exact).reshape(-1, exact.shape[-1])
            sums[n.inputs[2]] = sums.get(n.inputs[2], 0) + err.sum(axis=0)
            count[n.inputs[2]] = count.get(n.inputs[2], 0) + err.shape[0]
    return {b: graph.tensors[b].data.astype(np.float64) - sums[b] / count[b] for b in sums}


def quantize(graph: Graph, calib_x: np.ndarray, config: QuantizeConfig | None = None) -> Graph:
    """Return the int8 twin of a float IR graph, calibrated on ``calib_x`` (IR layout)."""
    config = config or QuantizeConfig()
    ranges = calibrate(graph, calib_x, config)
    q = Graph({}, copy.deepcopy(graph.nodes), list(graph.inputs), list(graph.outputs),
              dict(graph.meta))
    qparams: dict[str, QuantParams] = {}
    producers = graph.producers()
    shared = concat_shared_qparams(graph, ranges)
    for name in graph.activation_tensors():
        node = producers.get(name)
        if name in shared:
            qparams[name] = shared[name]
        elif node is not None and node.op in SAME_SCALE_OPS:
            qparams[name] = qparams[node.inputs[0]]
        elif node is not None and node.op == "SOFTMAX":
            qparams[name] = QuantParams(np.array([1.0 / 256.0], np.float32), np.array([-128]))
        elif node is not None and node.op in LUT_OUTPUT_QUANT:
            scale, zp = LUT_OUTPUT_QUANT[node.op]  # TFLite's fixed LOGISTIC / TANH output
            qparams[name] = QuantParams(np.array([scale], np.float32), np.array([zp]))
        else:
            qparams[name] = activation_qparams(*ranges[name])
        t = graph.tensors[name]
        q.tensors[name] = Tensor(name, t.shape, "int8", None, qparams[name])

    weights = {}
    for node in graph.nodes:
        if node.op in WEIGHTED_OPS:
            w = graph.tensors[node.inputs[1]]
            weights[w.name] = quantize_weights_per_channel(w.data.astype(np.float64))
    biases = {}
    if config.bias_correction:
        deq = {name: _dequantize_weights(wq, wqp) for name, (wq, wqp) in weights.items()}
        biases = correct_biases(graph, deq, calib_x, config.calibration_batch)
    for node in graph.nodes:
        if node.op in WEIGHTED_OPS:
            w = graph.tensors[node.inputs[1]]
            b = graph.tensors[node.inputs[2]]
            wq, wqp = weights[w.name]
            q.tensors[w.name] = Tensor(w.name, w.shape, "int8", wq, wqp)
            in_scale = float(qparams[node.inputs[0]].scale[0])
            bias_scale = in_scale * wqp.scale.astype(np.float64)
            b_float = biases.get(b.name, b.data.astype(np.float64))
            bq = np.round(b_float / bias_scale)
            if np.any(np.abs(bq) > 2**31 - 1):
                raise QuantizationError(f"bias of '{node.name}' overflows int32 after quantization; "
                                        "the layer's weights are nearly zero")
            q.tensors[b.name] = Tensor(b.name, b.shape, "int32", bq.astype(np.int32),
                                       QuantParams(bias_scale.astype(np.float32),
                                                   np.zeros_like(bias_scale, dtype=np.int64), 0))
        else:
            for i in node.inputs:
                if graph.tensors[i].is_const:
                    raise QuantizationError(f"'{node.name}' ({node.op}) has a constant input "
                                            f"'{i}' microfit cannot quantize yet")
    q.meta["rounding"] = config.rounding
    q.meta["calibration"] = config.calibration
    q.meta["calibration_samples"] = int(len(calib_x))
    q.meta["bias_correction"] = bool(config.bias_correction)
    return q


def concat_shared_qparams(graph: Graph, ranges: dict[str, tuple[float, float]]
                          ) -> dict[str, QuantParams]:
    """One set of parameters for every tensor tied to a CONCATENATION (TFLite's rule).

    TFLite's int8 CONCATENATION kernels (TFLite Micro's and LiteRT's) refuse
    inputs whose scale or zero point differ from the output's, and its
    converter propagates one scale through same-scale ops. So the inputs and
    output of a concatenation, and everything tied to them by a same-scale op
    (pool, reshape, slice: output to input), form one group; the group's range
    is the union of the calibrated ranges of its members that no such op
    produces (convolution, fc and add outputs, the graph input). Groups
    without a concatenation keep the usual rule (outputs inherit the input's).
    """
    parent: dict[str, str] = {}

    def find(t: str) -> str:
        while parent.get(t, t) != t:
            t = parent[t]
        return t

    def union(a: str, b: str) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[ra] = rb

    tied = {n.outputs[0]: n for n in graph.nodes if n.op in SAME_SCALE_OPS + ("CONCATENATION",)}
    for out, n in tied.items():
        for i in n.inputs if n.op == "CONCATENATION" else n.inputs[:1]:
            union(out, i)
    roots = {find(n.outputs[0]) for n in graph.nodes if n.op == "CONCATENATION"}
    groups: dict[str, list[str]] = {}
    for t in graph.activation_tensors():
        if find(t) in roots:
            groups.setdefault(find(t), []).append(t)
    producers = graph.producers()
    result: dict[str, QuantParams] = {}
    for members in groups.values():
        soft = [t for t in members if t in producers and producers[t].op == "SOFTMAX"]
        if soft:
            raise QuantizationError(
                f"softmax output '{soft[0]}' feeds a concatenation: its fixed scale 1/256 cannot "
                "be shared with the other inputs; concatenate before the softmax")
        free = [ranges[t] for t in members if t not in tied]
        qp = activation_qparams(min(r[0] for r in free), max(r[1] for r in free))
        for t in members:
            result[t] = qp
    return result


def _dequantize_weights(wq: np.ndarray, qp: QuantParams) -> np.ndarray:
    shape = [1] * wq.ndim
    shape[qp.axis if qp.axis is not None else 0] = -1
    scale = qp.scale.astype(np.float64)
    return wq.astype(np.float64) * (scale.reshape(shape) if qp.axis is not None else scale[0])


def activation_range(qp: QuantParams, activation: str) -> tuple[int, int]:
    """int8 clamp bounds that implement a fused activation (TFLite's rule).

    TFLite divides in float32 (``TfLiteRound(f / scale)`` with float ``f`` and
    ``scale``); a double division rounds differently for some scales (e.g.
    6 / 0.23529412 is 25.4999999 in double but exactly 25.5 in float32).
    """
    scale, zp = np.float32(qp.scale[0]), int(qp.zero_point[0])
    lo, hi = -128, 127

    def q(f: float) -> int:
        return zp + int(tflite_round(float(np.float32(f) / scale)))

    if activation in ("RELU", "RELU6"):
        lo = max(lo, q(0.0))
    if activation == "RELU6":
        hi = min(hi, q(6.0))
    return lo, hi
