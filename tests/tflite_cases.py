"""Random int8 graphs, one op each, built directly in the quantized IR.

Building the quantized graph directly (instead of calibrating a float one)
lets the oracle tests reach the corners TFLite's arithmetic has: multipliers
above one (positive shift), zero points at both ends, per-tensor and
per-channel weights, every padding and activation, exact rounding ties.
"""

from __future__ import annotations

import numpy as np

from microfit.ir.graph import Graph, Node, QuantParams, Tensor
from microfit.reference.ops import output_size, same_padding


def qp(scale, zp, axis=None) -> QuantParams:
    return QuantParams(np.atleast_1d(np.asarray(scale, np.float32)), np.atleast_1d(np.asarray(zp)), axis)


def _act_q(rng: np.random.Generator, scale: float) -> QuantParams:
    return qp(scale, int(rng.integers(-128, 128)))


def _weighted(rng: np.random.Generator, op: str, x_shape: tuple[int, ...], w_shape: tuple[int, ...],
              out_shape: tuple[int, ...], attrs: dict, per_channel: bool = True,
              out_gain: float | None = None, w_max: int = 127) -> Graph:
    """One conv / depthwise / fc node with random int8 weights and realistic scales.

    The output quantization is fitted to the layer's real outputs on random
    inputs (2nd..98th percentile, widened to 0) divided by ``out_gain``: a gain
    of 1 fills int8, a large gain saturates most outputs and pushes the
    requantization multiplier above one (a positive shift). Under RELU6 the
    input scale is chosen so that 6.0 falls inside the output distribution.
    """
    from microfit.reference.float_exec import run_node_float

    cout = w_shape[0] if op != "DEPTHWISE_CONV_2D" else w_shape[3]
    axis = 3 if op == "DEPTHWISE_CONV_2D" else 0
    n_scales = cout if per_channel else 1
    w_scale = rng.uniform(0.002, 0.05, n_scales).astype(np.float32)
    w = rng.integers(-w_max, w_max + 1, w_shape).astype(np.int8)
    fan_in = int(np.prod(w_shape)) // cout
    b_max = int(20 * w_max * np.sqrt(fan_in))
    bias = rng.integers(-b_max, b_max + 1, cout).astype(np.int32)
    in_zp = int(rng.integers(-128, 128))
    # Exact integer accumulators (float64 holds them exactly at these sizes).
    node = Node("n", op, ["x", "w", "b"], ["y"], dict(attrs, activation="NONE"))
    probe = Graph({"w": Tensor("w", w_shape, data=w.astype(np.float64)),
                   "b": Tensor("b", (cout,), data=bias.astype(np.float64))}, [node], ["x"], ["y"])
    xs = rng.integers(-128, 128, (64,) + tuple(x_shape[1:])).astype(np.float64) - in_zp
    acc = run_node_float(node, probe, {"x": xs if op != "FULLY_CONNECTED" else xs})
    units = acc * np.broadcast_to(w_scale.astype(np.float64), (cout,))  # per in_scale
    if attrs.get("activation") == "RELU6":
        in_scale = 6.0 / max(float(np.percentile(np.abs(units), 80)), 1e-9)
    else:
        in_scale = float(rng.uniform(0.005, 0.1))
    real = units * np.float32(in_scale)
    gain = 1.0 if out_gain is None else out_gain
    lo = min(float(np.percentile(real, 2)) / gain, 0.0)
    hi = max(float(np.percentile(real, 98)) / gain, 0.0)
    out_scale = np.float32(max(hi - lo, 1e-6) / 255.0)
    out_zp = int(np.clip(np.round(-128 - lo / float(out_scale)), -128, 127))
    in_q = qp(in_scale, in_zp)
    bias_scale = (np.float32(in_scale) * w_scale.astype(np.float64)).astype(np.float32)
    tensors = {
        "x": Tensor("x", x_shape, "int8", None, in_q),
        "w": Tensor("w", w_shape, "int8", w, qp(w_scale, np.zeros(n_scales, int),
                                                 axis if per_channel else None)),
        "b": Tensor("b", (cout,), "int32", bias, qp(bias_scale, np.zeros(n_scales, int),
                                                     0 if per_channel else None)),
        "y": Tensor("y", out_shape, "int8", None, qp(out_scale, out_zp)),
    }
    return Graph(tensors, [Node("n", op, ["x", "w", "b"], ["y"], attrs)], ["x"], ["y"])


def _pads(mode, h, w, k, s, d):
    if mode == "valid":
        return [0, 0, 0, 0]
    if mode == "same":
        (t, b), (le, r) = same_padding(h, k[0], s[0], d[0]), same_padding(w, k[1], s[1], d[1])
        return [t, le, b, r]
    return list(mode)  # explicit (top, left, bottom, right)


def conv_graph(rng, *, h=7, w=6, cin=3, cout=5, k=(3, 3), stride=(1, 1), dilation=(1, 1),
               pad="same", act="NONE", per_channel=True, out_gain=None, w_max=127) -> Graph:
    p = _pads(pad, h, w, k, stride, dilation)
    oh = output_size(h, k[0], stride[0], dilation[0], p[0], p[2])
    ow = output_size(w, k[1], stride[1], dilation[1], p[1], p[3])
    return _weighted(rng, "CONV_2D", (1, h, w, cin), (cout, k[0], k[1], cin), (1, oh, ow, cout),
                     {"stride": list(stride), "dilation": list(dilation), "padding": p,
                      "activation": act}, per_channel, out_gain, w_max)


def dwconv_graph(rng, *, h=7, w=6, cin=4, mult=1, k=(3, 3), stride=(1, 1), dilation=(1, 1),
                 pad="same", act="NONE", out_gain=None) -> Graph:
    p = _pads(pad, h, w, k, stride, dilation)
    oh = output_size(h, k[0], stride[0], dilation[0], p[0], p[2])
    ow = output_size(w, k[1], stride[1], dilation[1], p[1], p[3])
    return _weighted(rng, "DEPTHWISE_CONV_2D", (1, h, w, cin), (1, k[0], k[1], cin * mult),
                     (1, oh, ow, cin * mult),
                     {"stride": list(stride), "dilation": list(dilation), "padding": p,
                      "activation": act, "depth_multiplier": mult}, True, out_gain)


def fc_graph(rng, *, cin=40, cout=7, act="NONE", per_channel=True, out_gain=None,
             w_max=127) -> Graph:
    return _weighted(rng, "FULLY_CONNECTED", (1, cin), (cout, cin), (1, cout),
                     {"activation": act}, per_channel, out_gain, w_max)


def pool_graph(rng, op: str, *, h=7, w=6, c=3, k=(2, 2), stride=(2, 2), pad="valid",
               act="NONE") -> Graph:
    p = _pads(pad, h, w, k, stride, (1, 1))
    oh = output_size(h, k[0], stride[0], 1, p[0], p[2])
    ow = output_size(w, k[1], stride[1], 1, p[1], p[3])
    q = _act_q(rng, float(rng.uniform(0.01, 0.1)))
    tensors = {"x": Tensor("x", (1, h, w, c), "int8", None, q),
               "y": Tensor("y", (1, oh, ow, c), "int8", None, q)}
    node = Node("n", op, ["x"], ["y"], {"filter": list(k), "stride": list(stride), "padding": p,
                                        "activation": act})
    return Graph(tensors, [node], ["x"], ["y"])


def add_graph(rng, *, shape=(1, 5, 4, 3), act="NONE", scales=None) -> Graph:
    if scales is None:
        s1 = float(rng.uniform(0.01, 0.1))
        s2 = s1 * 1.7  # input 2 is input 1 rescaled: a coarser scale keeps it unsaturated
        so = (s1 + s2) * float(rng.uniform(0.5, 0.8))
        scales = (s1, s2, so)
    s1, s2, so = scales
    tensors = {"a": Tensor("a", shape, "int8", None, _act_q(rng, s1)),
               "y": Tensor("y", shape, "int8", None, _act_q(rng, so))}
    # A two-input ADD needs a second activation: make it a max pool of the
    # input (kernel 1), so the graph keeps one input as the C code wants.
    tensors["b"] = Tensor("b", shape, "int8", None, tensors["a"].quant)
    nodes = [Node("copy", "MAX_POOL_2D", ["a"], ["b"], {"filter": [1, 1], "stride": [1, 1],
                                                         "padding": [0, 0, 0, 0],
                                                         "activation": "NONE"})]
    if s2 != s1:
        # A second scale for input 2: a 1x1 depthwise conv with unit weights rescales it.
        tensors["b2"] = Tensor("b2", shape, "int8", None, _act_q(rng, s2))
        c = shape[-1]
        tensors["dw_w"] = Tensor("dw_w", (1, 1, 1, c), "int8", np.full((1, 1, 1, c), 127, np.int8),
                                 qp(np.full(c, 1 / 127, np.float32), np.zeros(c, int), 3))
        tensors["dw_b"] = Tensor("dw_b", (c,), "int32", np.zeros(c, np.int32),
                                 qp(np.full(c, np.float32(s1) / 127, np.float32),
                                    np.zeros(c, int), 0))
        nodes.append(Node("rescale", "DEPTHWISE_CONV_2D", ["b", "dw_w", "dw_b"], ["b2"],
                          {"stride": [1, 1], "dilation": [1, 1], "padding": [0, 0, 0, 0],
                           "activation": "NONE", "depth_multiplier": 1}))
        second = "b2"
    else:
        second = "b"
    nodes.append(Node("add", "ADD", ["a", second], ["y"], {"activation": act}))
    return Graph(tensors, nodes, ["a"], ["y"])


def reshape_graph(rng) -> Graph:
    q = _act_q(rng, 0.05)
    tensors = {"x": Tensor("x", (1, 3, 4, 5), "int8", None, q),
               "y": Tensor("y", (1, 60), "int8", None, q)}
    g = Graph(tensors, [Node("r", "RESHAPE", ["x"], ["y"], {"new_shape": [1, 60]})], ["x"], ["y"])
    # A RESHAPE alone has no kernel to check; follow it with an FC.
    fc = fc_graph(rng, cin=60, cout=6)
    for name in ("w", "b"):
        g.tensors[name] = fc.tensors[name]
    # Bias scale = this graph's input scale x weight scale, as a converter writes it.
    w_scale = fc.tensors["w"].quant.scale.astype(np.float64)
    g.tensors["b"].quant = qp((np.float32(q.scale[0]) * w_scale).astype(np.float32),
                              np.zeros(w_scale.size, int), 0)
    g.tensors["z"] = fc.tensors["y"]
    g.nodes.append(Node("fc", "FULLY_CONNECTED", ["y", "w", "b"], ["z"], {"activation": "RELU"}))
    g.outputs = ["z"]
    return g


def softmax_graph(rng, *, depth=10, in_scale=None, beta=1.0) -> Graph:
    s = float(rng.uniform(0.02, 0.2)) if in_scale is None else in_scale
    tensors = {"x": Tensor("x", (1, depth), "int8", None, _act_q(rng, s)),
               "y": Tensor("y", (1, depth), "int8", None, qp(1 / 256, -128))}
    return Graph(tensors, [Node("sm", "SOFTMAX", ["x"], ["y"], {"beta": beta})], ["x"], ["y"])


def lut_graph(rng, op: str, *, shape=(1, 4, 5, 3), in_scale=None, in_zp=None) -> Graph:
    """One LOGISTIC or TANH node; the output has TFLite's fixed int8 quantization."""
    from microfit.reference.ops import LUT_OUTPUT_QUANT

    s = float(np.exp(rng.uniform(np.log(0.005), np.log(0.2)))) if in_scale is None else in_scale
    z = int(rng.integers(-128, 128)) if in_zp is None else in_zp
    out_scale, out_zp = LUT_OUTPUT_QUANT[op]
    tensors = {"x": Tensor("x", shape, "int8", None, qp(s, z)),
               "y": Tensor("y", shape, "int8", None, qp(out_scale, out_zp))}
    return Graph(tensors, [Node("n", op, ["x"], ["y"], {})], ["x"], ["y"])


def pad_graph(rng, *, shape=(1, 5, 4, 3), paddings=((0, 0), (1, 2), (0, 3), (2, 1))) -> Graph:
    """One standalone PAD (fill: the input zero point), output quantized as the input."""
    q = _act_q(rng, float(rng.uniform(0.01, 0.1)))
    out = tuple(d + b + a for d, (b, a) in zip(shape, paddings, strict=True))
    tensors = {"x": Tensor("x", shape, "int8", None, q), "y": Tensor("y", out, "int8", None, q)}
    return Graph(tensors, [Node("pad", "PAD", ["x"], ["y"], {"paddings": [list(p) for p in paddings]})],
                 ["x"], ["y"])
