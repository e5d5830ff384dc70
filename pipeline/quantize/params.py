"""Kernel parameters derived from a quantized graph: the one place they are computed.

The numpy reference executor and the C code generator both call
:func:`node_params`, so the constants the firmware runs with are, by
construction, the ones the reference checked. What TFLite computes in a
kernel's Prepare, microfit computes here, at codegen time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..ir.graph import Graph, Node
from .fixedpoint import quantize_multiplier
from .quantize import activation_range


@dataclass
class KernelParams:
    """Integer constants of one node. Fields unused by an op stay at defaults."""

    op: str
    input_offset: int = 0
    output_offset: int = 0
    act_min: int = -128
    act_max: int = 127
    multiplier: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    shift: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    extra: dict = field(default_factory=dict)


def _per_channel_requant(in_scale: float, w_scales: np.ndarray, out_scale: float,
                         mode: str) -> tuple[np.ndarray, np.ndarray]:
    mult = np.zeros(len(w_scales), np.int32)
    shift = np.zeros(len(w_scales), np.int32)
    for c, ws in enumerate(w_scales):
        # TFLite: double(input_scale) * double(filter_scale) / double(output_scale),
        # each a float32 value.
        real = float(np.float32(in_scale)) * float(np.float32(ws)) / float(np.float32(out_scale))
        mult[c], shift[c] = quantize_multiplier(real, mode)
    return mult, shift


def node_params(graph: Graph, node: Node, mode: str | None = None) -> KernelParams:
    mode = mode or graph.meta.get("rounding", "double")
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
        p.multiplier, p.shift = _per_channel_requant(
            float(in_q.scale[0]), w_q.scale, float(out_q.scale[0]), mode)
    elif node.op == "ADD":
        from ..reference import ops

        b_q = t[node.inputs[1]].quant
        p.extra = ops.add_params(
            float(in_q.scale[0]), int(in_q.zero_point[0]),
            float(b_q.scale[0]), int(b_q.zero_point[0]),
            float(out_q.scale[0]), int(out_q.zero_point[0]), mode=mode)
        p.output_offset = int(out_q.zero_point[0])
    elif node.op in ("MAX_POOL_2D", "AVERAGE_POOL_2D", "RESHAPE"):
        p.input_offset = -int(in_q.zero_point[0])
        p.output_offset = int(out_q.zero_point[0])
    return p
