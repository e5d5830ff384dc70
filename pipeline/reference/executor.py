"""The numpy integer executor: THE definition of the right answer.

Walks an int8 IR graph node by node with the integer kernels of ops.py and
the constants of quantize/params.py (the same constants codegen bakes into
the C sources). Every output byte of the C runtime, the firmware and TFLite's
interpreters is compared against what this returns.

Modes: ``"double"`` (TFLite Micro, the default) and ``"single"`` are what the
C runtime implements; ``"litert"`` reproduces the LiteRT interpreter's
reference kernels (see :mod:`microfit.quantize.fixedpoint`), so that LiteRT
can check this reference too.
"""

from __future__ import annotations

import numpy as np

from ..errors import UnsupportedOpError
from ..ir.graph import Graph, Node
from ..quantize.fixedpoint import REFERENCE_MODES, round_by_real_multiplier
from ..quantize.params import KernelParams, node_params
from . import ops


def _fully_connected_litert(x: np.ndarray, w: np.ndarray, b: np.ndarray,
                            p: KernelParams) -> np.ndarray:
    """LiteRT's reference int8 FULLY_CONNECTED: exact integer sum, double-precision requantization."""
    acc = (x.astype(np.int64) + p.input_offset) @ w.astype(np.int64).T + b.astype(np.int64)
    y = round_by_real_multiplier(acc, p.real_multiplier) + p.output_offset
    return np.clip(y, p.act_min, p.act_max).astype(np.int8)


def run_node_int8(graph: Graph, node: Node, values: dict[str, np.ndarray], mode: str) -> np.ndarray:
    p = node_params(graph, node, mode)
    t = graph.tensors
    x = values[node.inputs[0]]
    a = node.attrs
    if mode == "litert":
        if node.op == "FULLY_CONNECTED":
            return _fully_connected_litert(x.reshape(x.shape[0], -1), t[node.inputs[1]].data,
                                           t[node.inputs[2]].data, p)
        mode = "double"  # LiteRT's other reference kernels requantize as TFLite Micro does
    if node.op in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        fn = ops.conv2d_s8 if node.op == "CONV_2D" else ops.depthwise_conv2d_s8
        return fn(x, t[node.inputs[1]].data, t[node.inputs[2]].data,
                  input_offset=p.input_offset, output_offset=p.output_offset,
                  multiplier=p.multiplier, shift=p.shift, stride=a["stride"],
                  dilation=a["dilation"], padding=a["padding"], act_min=p.act_min,
                  act_max=p.act_max, mode=mode)
    if node.op == "FULLY_CONNECTED":
        return ops.fully_connected_s8(x.reshape(x.shape[0], -1), t[node.inputs[1]].data,
                                      t[node.inputs[2]].data, input_offset=p.input_offset,
                                      output_offset=p.output_offset, multiplier=p.multiplier,
                                      shift=p.shift, act_min=p.act_min, act_max=p.act_max,
                                      mode=mode)
    if node.op in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
        fn = ops.max_pool2d_s8 if node.op == "MAX_POOL_2D" else ops.avg_pool2d_s8
        return fn(x, kernel=a["filter"], stride=a["stride"], padding=a["padding"],
                  act_min=p.act_min, act_max=p.act_max)
    if node.op == "RESHAPE":
        return x
    if node.op == "ADD":
        return ops.add_s8(x, values[node.inputs[1]], **p.extra, act_min=p.act_min,
                          act_max=p.act_max, mode=mode)
    if node.op == "SOFTMAX":
        return ops.softmax_s8(x, **p.extra, mode=mode)
    if node.op in ("LOGISTIC", "TANH"):
        return ops.lut_s8(x, p.extra["table"])  # the table already follows the mode
    if node.op == "PAD":
        return ops.pad_s8(x, a["paddings"], p.extra["fill"])
    if node.op == "CONCATENATION":
        return ops.concatenation_s8([values[i] for i in node.inputs], axis=int(a["axis"]))
    if node.op == "SLICE":
        return ops.slice_s8(x, int(a["axis"]), int(a["begin"]), int(a["size"]))
    raise UnsupportedOpError(f"integer reference has no kernel for {node.op} ('{node.name}')")


def run_int8(graph: Graph, x: np.ndarray, mode: str | None = None,
             keep_all: bool = False) -> np.ndarray | dict[str, np.ndarray]:
    """Run a batch of int8 inputs (IR layout) through the int8 graph.

    Returns the output batch, or every tensor by name with ``keep_all`` (for
    layer-by-layer comparisons).
    """
    mode = mode or graph.meta.get("rounding", "double")
    if mode not in REFERENCE_MODES:
        raise ValueError(f"unknown rounding mode {mode!r}; use one of {REFERENCE_MODES}")
    x = np.asarray(x)
    if x.dtype != np.int8:
        raise TypeError(f"run_int8 takes int8 inputs, got {x.dtype}; quantize them first")
    in_shape = graph.tensors[graph.inputs[0]].shape
    values = {graph.inputs[0]: x.reshape((len(x),) + tuple(in_shape[1:]))}
    for node in graph.nodes:
        y = run_node_int8(graph, node, values, mode)
        out_shape = graph.tensors[node.outputs[0]].shape
        values[node.outputs[0]] = y.reshape((len(x),) + tuple(out_shape[1:]))
    return values if keep_all else values[graph.outputs[0]]
