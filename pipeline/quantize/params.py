"""Kernel parameters derived from a quantized graph: the one place they are computed.

The numpy reference executor and the C code generator both call
:func:`node_params`, so the constants the firmware runs with are, by
construction, the ones the reference checked. What TFLite computes in a
kernel's Prepare, microfit computes here, at codegen time, with TFLite's own
float32/double mix (each one matters for some scale), as measured against
TFLite Micro's interpreter:

- requantization multipliers (conv, depthwise, fc; per-channel and
  per-tensor alike): ``double(s_in) * double(s_w[c]) / double(s_out)`` from
  the float32 scales. (Older TFLite sources multiply ``s_in * s_w`` in
  float32 for per-tensor layers; today's TFLite Micro does not, and a test
  pins the difference.)
- fused activation bounds divide in float32 (see
  :func:`microfit.quantize.quantize.activation_range`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..ir.graph import Graph, Node
from .fixedpoint import REFERENCE_MODES, quantize_multiplier
from .quantize import activation_range


@dataclass
class KernelParams:
    """Integer constants of one node. Fields unused by an op stay at defaults.

    ``real_multiplier`` (float64, per output channel) is what the fixed-point
    ``multiplier``/``shift`` approximate; only LiteRT's reference
    FULLY_CONNECTED computes with it directly (mode ``"litert"``).
    """

    op: str
    input_offset: int = 0
    output_offset: int = 0
    act_min: int = -128
    act_max: int = 127
    multiplier: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    shift: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    real_multiplier: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))
    extra: dict = field(default_factory=dict)


def real_multipliers(in_scale: float, w_scales: np.ndarray, out_scale: float) -> np.ndarray:
    """Per-channel real requantization multipliers, computed as TFLite's Prepare does."""
    s_in, s_out = np.float32(in_scale), np.float32(out_scale)
    w = np.asarray(w_scales, dtype=np.float32)
    return np.array([float(s_in) * float(ws) / float(s_out) for ws in w])


def _fixed_point(real: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray]:
    mult = np.zeros(len(real), np.int32)
    shift = np.zeros(len(real), np.int32)
    qmode = "single" if mode == "single" else "double"
    for c, r in enumerate(real):
        mult[c], shift[c] = quantize_multiplier(float(r), qmode)
    return mult, shift


def node_params(graph: Graph, node: Node, mode: str | None = None) -> KernelParams:
    mode = mode or graph.meta.get("rounding", "double")
    if mode not in REFERENCE_MODES:
        raise ValueError(f"unknown rounding mode {mode!r}; use one of {REFERENCE_MODES}")
    t = graph.tensors
    out_q = t[node.outputs[0]].quant
    in_q = t[node.inputs[0]].quant
    act = node.attrs.get("activation", "NONE")
    p = KernelParams(node.op)
    if out_q is not None and node.op != "RESHAPE":
        p.act_min, p.act_max = activation_range(out_q, act)
    if node.op in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
        w_q = t[node.inputs[1]].quant
        p.input_offset = -int(in_q.zero_point[0])
        p.output_offset = int(out_q.zero_point[0])
        p.real_multiplier = real_multipliers(float(in_q.scale[0]), w_q.scale,
                                             float(out_q.scale[0]))
        p.multiplier, p.shift = _fixed_point(p.real_multiplier, mode)
    elif node.op == "ADD":
        from ..reference import ops

        b_q = t[node.inputs[1]].quant
        p.extra = ops.add_params(
            float(in_q.scale[0]), int(in_q.zero_point[0]),
            float(b_q.scale[0]), int(b_q.zero_point[0]),
            float(out_q.scale[0]), int(out_q.zero_point[0]),
            mode="single" if mode == "single" else "double")
        p.output_offset = int(out_q.zero_point[0])
    elif node.op == "SOFTMAX":
        from ..reference import ops

        p.extra = ops.softmax_params(float(in_q.scale[0]), float(node.attrs.get("beta", 1.0)),
                                     mode="single" if mode == "single" else "double")
        p.input_offset = -int(in_q.zero_point[0])
        p.output_offset = int(out_q.zero_point[0])
    elif node.op in ("LOGISTIC", "TANH"):
        from ..reference import ops

        # The whole op is a 256-entry table, built with the mode's arithmetic
        # ("litert": LiteRT's float-built table); C looks it up (lut_s8.c).
        p.extra = {"table": ops.lut_table(node.op, float(in_q.scale[0]), int(in_q.zero_point[0]),
                                          mode)}
        p.input_offset = -int(in_q.zero_point[0])
        p.output_offset = int(out_q.zero_point[0])
    elif node.op == "PAD":
        p.input_offset = -int(in_q.zero_point[0])
        p.output_offset = int(out_q.zero_point[0])
        p.extra = {"fill": int(in_q.zero_point[0])}  # int8 PAD fills with a real 0
    elif node.op in ("MAX_POOL_2D", "AVERAGE_POOL_2D", "RESHAPE"):
        p.input_offset = -int(in_q.zero_point[0])
        p.output_offset = int(out_q.zero_point[0])
    return p
