"""Float execution of an IR graph in numpy.

Used to calibrate activation ranges and to check that the ONNX importer
(layout change, folding, fusion) preserved the model's function, against
onnxruntime and torch. Not an integer reference: see executor.py for that.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..errors import UnsupportedOpError
from ..ir.graph import Graph, Node


def _pad_nhwc(x: np.ndarray, pads: list[int], value: float) -> np.ndarray:
    top, left, bottom, right = pads
    return np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=value)


def _windows(x: np.ndarray, kh: int, kw: int, stride: list[int], dil: list[int]) -> np.ndarray:
    """[N, OH, OW, C, KH, KW] views of ``x`` (already padded)."""
    eff_h, eff_w = (kh - 1) * dil[0] + 1, (kw - 1) * dil[1] + 1
    win = sliding_window_view(x, (eff_h, eff_w), axis=(1, 2))
    return win[:, :: stride[0], :: stride[1], :, :: dil[0], :: dil[1]]


def _activation(y: np.ndarray, act: str) -> np.ndarray:
    if act == "RELU":
        return np.maximum(y, 0)
    if act == "RELU6":
        return np.clip(y, 0, 6)
    return y


def _conv(x, w, b, attrs) -> np.ndarray:
    kh, kw = w.shape[1], w.shape[2]
    xp = _pad_nhwc(x, attrs["padding"], 0.0)
    win = _windows(xp, kh, kw, attrs["stride"], attrs["dilation"])  # N,OH,OW,C,KH,KW
    y = np.einsum("nhwcij,oijc->nhwo", win, w, optimize=True)
    return y + b


def _dwconv(x, w, b, attrs) -> np.ndarray:
    kh, kw = w.shape[1], w.shape[2]
    mult = int(attrs.get("depth_multiplier", 1))
    xp = _pad_nhwc(x, attrs["padding"], 0.0)
    win = _windows(xp, kh, kw, attrs["stride"], attrs["dilation"])  # N,OH,OW,C,KH,KW
    win = np.repeat(win, mult, axis=3)  # output channel o reads input channel o // mult
    y = np.einsum("nhwoij,ijo->nhwo", win, w[0], optimize=True)
    return y + b


def _pool(x, attrs, kind: str) -> np.ndarray:
    kh, kw = attrs["filter"]
    pad_val = -np.inf if kind == "max" else np.nan
    xp = _pad_nhwc(x, attrs["padding"], pad_val)
    win = _windows(xp, kh, kw, attrs["stride"], [1, 1])
    if kind == "max":
        return win.max(axis=(4, 5))
    return np.nanmean(win, axis=(4, 5))


def run_node_float(node: Node, graph: Graph, values: dict[str, np.ndarray]) -> np.ndarray:
    def c(i: int) -> np.ndarray:
        return graph.tensors[node.inputs[i]].data.astype(np.float64)

    x = values[node.inputs[0]]
    act = node.attrs.get("activation", "NONE")
    if node.op == "CONV_2D":
        y = _conv(x, c(1), c(2), node.attrs)
    elif node.op == "DEPTHWISE_CONV_2D":
        y = _dwconv(x, c(1), c(2), node.attrs)
    elif node.op == "FULLY_CONNECTED":
        y = x @ c(1).T + c(2)
    elif node.op == "MAX_POOL_2D":
        y = _pool(x, node.attrs, "max")
    elif node.op == "AVERAGE_POOL_2D":
        y = _pool(x, node.attrs, "avg")
    elif node.op == "RESHAPE":
        y = x  # a view: run_float reshapes every result to its tensor's shape
    elif node.op == "ADD":
        y = x + values[node.inputs[1]]
    elif node.op == "SOFTMAX":
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        y = e / e.sum(axis=-1, keepdims=True)
    elif node.op == "LOGISTIC":
        y = 1.0 / (1.0 + np.exp(-np.clip(x, -80.0, 80.0)))
    elif node.op == "TANH":
        y = np.tanh(x)
    elif node.op == "PAD":
        y = np.pad(x, [tuple(p) for p in node.attrs["paddings"]], constant_values=0.0)
    elif node.op == "CONCATENATION":
        y = np.concatenate([values[i] for i in node.inputs], axis=int(node.attrs["axis"]))
    elif node.op == "SLICE":
        a = node.attrs
        y = np.take(x, np.arange(int(a["begin"]), int(a["begin"]) + int(a["size"])),
                    axis=int(a["axis"]))
    else:
        raise UnsupportedOpError(f"float executor: op {node.op} ('{node.name}') not supported")
    return _activation(y, act)


def run_float(graph: Graph, x: np.ndarray, keep_all: bool = False) -> dict[str, np.ndarray] | np.ndarray:
    """Run a batch ``x`` (IR layout) through a float graph.

    Returns the (single) output, or every activation tensor by name when
    ``keep_all`` is true (what calibration needs).
    """
    values: dict[str, np.ndarray] = {graph.inputs[0]: np.asarray(x, dtype=np.float64)}
    for node in graph.nodes:
        y = run_node_float(node, graph, values)
        out_shape = graph.tensors[node.outputs[0]].shape
        values[node.outputs[0]] = y.reshape((y.shape[0],) + tuple(out_shape[1:]))
    if keep_all:
        return values
    return values[graph.outputs[0]]
