"""One emitter per IR op: constant params struct + the kernel call.

Each emitter returns the C statements of one step of ``model_invoke``. Params
structs are ``static const ... MF_CONST`` (in flash, PROGMEM on AVR), filled
with C99 designated initialisers so a reader sees what every number means.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..errors import UnsupportedOpError
from ..ir.graph import Graph, Node
from ..quantize.params import KernelParams
from . import layouts, sparse


def _struct(ctype: str, var: str, fields: dict[str, int]) -> str:
    body = ", ".join(f".{k} = {int(v)}" for k, v in fields.items())
    return f"        static const {ctype} {var} MF_CONST = {{{body}}};"


def _call(ptype: str, fields: dict[str, int], *statements: str) -> str:
    """One layer's block in model_invoke: its constant params struct ``p`` (in flash),
    then ``statements`` (the kernel call, and whatever it needs first)."""
    return "\n".join(["    {", _struct(ptype, "p", fields),
                      *(f"        {s}" for s in statements), "    }"])


def _hw(shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(shape) == 4:
        return shape[1], shape[2], shape[3]
    if len(shape) == 2:
        return 1, 1, shape[1]
    raise UnsupportedOpError(f"unexpected activation rank {len(shape)}")


def _weights(em, node: Node, p: KernelParams) -> tuple[str, str, str, str]:
    g = em.g
    w = g.tensors[node.inputs[1]]
    b = g.tensors[node.inputs[2]]
    wn = em.array("int8_t", w.name, w.data.astype(np.int8))
    bn = em.array("int32_t", b.name, b.data.astype(np.int32))
    mn = em.array("int32_t", f"{node.name}_multiplier", p.multiplier)
    sn = em.array("int32_t", f"{node.name}_shift", p.shift)
    return wn, bn, mn, sn


def _check_u16(node: Node, **vals: int) -> None:
    for k, v in vals.items():
        if not 0 <= int(v) <= 0xFFFF:
            raise UnsupportedOpError(f"'{node.name}': {k}={v} exceeds the runtime's 16-bit limit")


def _conv_geometry(g: Graph, node: Node) -> dict[str, int]:
    """mf_conv2d_params' geometry fields of a CONV_2D, or of a FULLY_CONNECTED as a 1x1 conv."""
    w = g.tensors[node.inputs[1]].shape
    if node.op == "FULLY_CONNECTED":
        return dict(in_h=1, in_w=1, in_c=w[1], out_h=1, out_w=1, out_c=w[0], k_h=1, k_w=1,
                    stride_h=1, stride_w=1, dilation_h=1, dilation_w=1, pad_top=0, pad_left=0)
    ih, iw, ic = _hw(g.tensors[node.inputs[0]].shape)
    oh, ow, oc = _hw(g.tensors[node.outputs[0]].shape)
    a = node.attrs
    return dict(in_h=ih, in_w=iw, in_c=ic, out_h=oh, out_w=ow, out_c=oc, k_h=w[1], k_w=w[2],
                stride_h=a["stride"][0], stride_w=a["stride"][1], dilation_h=a["dilation"][0],
                dilation_w=a["dilation"][1], pad_top=a["padding"][0], pad_left=a["padding"][1])


def scratch_bytes(g: Graph, node: Node, kernels: str) -> int:
    """Scratch memory the node's kernel needs (its C *_get_buffer_size), 0 for none."""
    if kernels == "fast" and node.op in ("CONV_2D", "FULLY_CONNECTED"):
        f = _conv_geometry(g, node)
        return layouts.conv_fast_buffer_size(f["in_c"], f["k_h"], f["k_w"], f["out_h"], f["out_w"])
    return 0


def _emit_conv_fast(em, idx: int, node: Node, p: KernelParams) -> str:
    """CONV_2D or FULLY_CONNECTED through mf_conv2d_s8_fast: packed weights, folded bias."""
    g = em.g
    fields = _conv_geometry(g, node)
    _check_u16(node, **fields)
    fields.update(input_offset=p.input_offset, output_offset=p.output_offset,
                  act_min=p.act_min, act_max=p.act_max)
    w = g.tensors[node.inputs[1]]
    b = g.tensors[node.inputs[2]]
    wn = em.array("int8_t", f"{w.name}_packed", layouts.pack_conv_weights(w.data))
    folded = layouts.fold_bias(b.data, w.data, p.input_offset)
    bn = em.array("int32_t", f"{b.name}_folded", folded)
    small = layouts.accumulators_small(folded, w.data)
    rn = em.array("int32_t", f"{node.name}_requant",
                  layouts.pack_requant(p.multiplier, p.shift, p.output_offset, small,
                                       weights=w.data, bias=folded, mode=em.mode))
    return _call("mf_conv2d_params", fields,
                f"mf_conv2d_s8_fast(&p, {em.ptr(node.inputs[0])}, {wn}, {bn}, {rn}, "
                f"{em.scratch(idx)}, {em.ptr(node.outputs[0])});")


def _emit_conv_avr(em, idx: int, node: Node, p: KernelParams) -> str:
    """CONV_2D or FULLY_CONNECTED through mf_conv2d_s8_avr: folded bias, 16-bit partial sums."""
    g = em.g
    fields = _conv_geometry(g, node)
    _check_u16(node, **fields)
    fields.update(input_offset=p.input_offset, output_offset=p.output_offset,
                  act_min=p.act_min, act_max=p.act_max)
    w = g.tensors[node.inputs[1]]
    b = g.tensors[node.inputs[2]]
    wn = em.array("int8_t", w.name, w.data.astype(np.int8))
    bn = em.array("int32_t", f"{b.name}_folded", layouts.fold_bias(b.data, w.data, p.input_offset))
    mn = em.array("int32_t", f"{node.name}_multiplier", p.multiplier)
    sn = em.array("int32_t", f"{node.name}_shift", p.shift)
    group = layouts.avr_group(w.data, fields["in_c"])
    return _call("mf_conv2d_params", fields,
                f"mf_conv2d_s8_avr(&p, {em.ptr(node.inputs[0])}, {wn}, {bn}, {mn}, {sn}, {group}, "
                f"{em.ptr(node.outputs[0])});")


def _emit_conv_like(em, node: Node, p: KernelParams, depthwise: bool) -> str:
    """CONV_2D and DEPTHWISE_CONV_2D share geometry fields and call shape."""
    g = em.g
    ih, iw, ic = _hw(g.tensors[node.inputs[0]].shape)
    oh, ow, oc = _hw(g.tensors[node.outputs[0]].shape)
    w = g.tensors[node.inputs[1]].shape
    a = node.attrs
    fields = dict(in_h=ih, in_w=iw, in_c=ic, out_h=oh, out_w=ow)
    if depthwise:
        fields["depth_multiplier"] = a.get("depth_multiplier", 1)
    else:
        fields["out_c"] = oc
    fields.update(k_h=w[1], k_w=w[2], stride_h=a["stride"][0], stride_w=a["stride"][1],
                  dilation_h=a["dilation"][0], dilation_w=a["dilation"][1],
                  pad_top=a["padding"][0], pad_left=a["padding"][1])
    _check_u16(node, **fields)
    fields.update(input_offset=p.input_offset, output_offset=p.output_offset,
                  act_min=p.act_min, act_max=p.act_max)
    wn, bn, mn, sn = _weights(em, node, p)
    kind = "depthwise_conv2d" if depthwise else "conv2d"
    return _call(f"mf_{kind}_params", fields,
                f"mf_{kind}_s8(&p, {em.ptr(node.inputs[0])}, {wn}, {bn}, {mn}, {sn}, "
                f"{em.ptr(node.outputs[0])});")


def emit_conv(em, idx: int, node: Node, p: KernelParams) -> str:
    if (call := sparse.emit_sparse(em, idx, node, p)) is not None:
        return call
    if em.kernels == "fast":
        return _emit_conv_fast(em, idx, node, p)
    if em.kernels == "avr":
        return _emit_conv_avr(em, idx, node, p)
    return _emit_conv_like(em, node, p, depthwise=False)


def _emit_dwconv_fast(em, idx: int, node: Node, p: KernelParams) -> str:
    """DEPTHWISE_CONV_2D (multiplier 1) through mf_depthwise_conv2d_s8_fast."""
    g = em.g
    ih, iw, ic = _hw(g.tensors[node.inputs[0]].shape)
    oh, ow, _ = _hw(g.tensors[node.outputs[0]].shape)
    w = g.tensors[node.inputs[1]]
    b = g.tensors[node.inputs[2]]
    a = node.attrs
    fields = dict(in_h=ih, in_w=iw, in_c=ic, out_h=oh, out_w=ow, depth_multiplier=1,
                  k_h=w.shape[1], k_w=w.shape[2], stride_h=a["stride"][0], stride_w=a["stride"][1],
                  dilation_h=a["dilation"][0], dilation_w=a["dilation"][1],
                  pad_top=a["padding"][0], pad_left=a["padding"][1])
    _check_u16(node, **fields)
    fields.update(input_offset=p.input_offset, output_offset=p.output_offset,
                  act_min=p.act_min, act_max=p.act_max)
    wn = em.array("int16_t", f"{w.name}_packed", layouts.pack_depthwise_weights(w.data))
    biases = layouts.depthwise_biases(b.data, w.data, p.input_offset)
    bn = em.array("int32_t", f"{b.name}_folded", biases)
    small = layouts.depthwise_small(biases, w.data)
    rn = em.array("int32_t", f"{node.name}_requant",
                  layouts.pack_requant(p.multiplier, p.shift, p.output_offset, small,
                                       weights=w.data.reshape(-1, ic).T, bias=biases[:ic],
                                       mode=em.mode))
    return _call("mf_depthwise_conv2d_params", fields,
                f"mf_depthwise_conv2d_s8_fast(&p, {em.ptr(node.inputs[0])}, {wn}, {bn}, {rn}, "
                f"{em.ptr(node.outputs[0])});")


def emit_dwconv(em, idx: int, node: Node, p: KernelParams) -> str:
    if em.kernels == "fast" and node.attrs.get("depth_multiplier", 1) == 1:
        return _emit_dwconv_fast(em, idx, node, p)
    return _emit_conv_like(em, node, p, depthwise=True)


def emit_fc(em, idx: int, node: Node, p: KernelParams) -> str:
    if (call := sparse.emit_sparse(em, idx, node, p)) is not None:
        return call
    if em.kernels == "fast":
        return _emit_conv_fast(em, idx, node, p)
    if em.kernels == "avr":
        return _emit_conv_avr(em, idx, node, p)
    w = em.g.tensors[node.inputs[1]].shape
    fields = dict(in_features=w[1], out_features=w[0], input_offset=p.input_offset,
                  output_offset=p.output_offset, act_min=p.act_min, act_max=p.act_max)
    wn, bn, mn, sn = _weights(em, node, p)
    return _call("mf_fully_connected_params", fields,
                f"mf_fully_connected_s8(&p, {em.ptr(node.inputs[0])}, {wn}, {bn}, {mn}, {sn}, "
                f"{em.ptr(node.outputs[0])});")


def _emit_pool(fn: str) -> Callable:
    def emit(em, idx: int, node: Node, p: KernelParams) -> str:
        g = em.g
        ih, iw, ic = _hw(g.tensors[node.inputs[0]].shape)
        oh, ow, _ = _hw(g.tensors[node.outputs[0]].shape)
        a = node.attrs
        fields = dict(in_h=ih, in_w=iw, channels=ic, out_h=oh, out_w=ow,
                      k_h=a["filter"][0], k_w=a["filter"][1],
                      stride_h=a["stride"][0], stride_w=a["stride"][1],
                      pad_top=a["padding"][0], pad_left=a["padding"][1])
        _check_u16(node, **fields)
        fields.update(act_min=p.act_min, act_max=p.act_max)
        return _call("mf_pool2d_params", fields,
                    f"{fn}(&p, {em.ptr(node.inputs[0])}, {em.ptr(node.outputs[0])});")
    return emit


def emit_add(em, idx: int, node: Node, p: KernelParams) -> str:
    x = p.extra
    size = em.g.tensors[node.outputs[0]].size
    if em.kernels == "fast":
        # Only the output fields are read; the inputs' rescaling is tabulated.
        fields = dict(size=size, output_multiplier=x["output_multiplier"],
                      output_shift=x["output_shift"], output_offset=p.output_offset,
                      act_min=p.act_min, act_max=p.act_max)
        mode = "single" if em.mode == "single" else "double"
        tn = em.array("int32_t", f"{node.name}_tables", layouts.add_tables(x, mode))
        return _call("mf_add_params", fields,
                    f"mf_add_s8_fast(&p, {em.ptr(node.inputs[0])}, {em.ptr(node.inputs[1])}, "
                    f"{tn}, {em.ptr(node.outputs[0])});")
    fields = dict(size=size, input1_offset=x["input1_offset"], input2_offset=x["input2_offset"],
                  left_shift=x["left_shift"],
                  input1_multiplier=x["input1_multiplier"], input1_shift=x["input1_shift"],
                  input2_multiplier=x["input2_multiplier"], input2_shift=x["input2_shift"],
                  output_multiplier=x["output_multiplier"], output_shift=x["output_shift"],
                  output_offset=p.output_offset, act_min=p.act_min, act_max=p.act_max)
    return _call("mf_add_params", fields,
                f"mf_add_s8(&p, {em.ptr(node.inputs[0])}, {em.ptr(node.inputs[1])}, "
                f"{em.ptr(node.outputs[0])});")


def emit_softmax(em, idx: int, node: Node, p: KernelParams) -> str:
    shape = em.g.tensors[node.inputs[0]].shape
    depth = int(shape[-1])
    rows = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
    if not 1 <= depth <= 4095:
        raise UnsupportedOpError(f"'{node.name}': softmax depth {depth} is outside the runtime's "
                                 "1..4095 (its Q12.19 sum would overflow)")
    x = p.extra
    fields = dict(rows=rows, depth=depth, input_multiplier=x["input_multiplier"],
                  input_left_shift=x["input_left_shift"], diff_min=x["diff_min"])
    return _call("mf_softmax_params", fields,
                f"mf_softmax_s8(&p, {em.ptr(node.inputs[0])}, {em.ptr(node.outputs[0])});")


def emit_reshape(em, idx: int, node: Node, p: KernelParams) -> str:
    # A view: the planner gave output and input the same arena bytes.
    return ""


def _outer_inner(shape: tuple[int, ...], axis: int) -> tuple[int, int]:
    return int(np.prod(shape[:axis], dtype=np.int64)), int(np.prod(shape[axis + 1:], dtype=np.int64))


def emit_concatenation(em, idx: int, node: Node, p: KernelParams) -> str:
    """CONCATENATION: one mf_concatenation_s8 call copying every input's rows in turn."""
    if idx in em.plan.concat_views:
        return ""  # a view: the planner put each input where the output needs it
    g = em.g
    axis = int(node.attrs["axis"])
    outer, inner = _outer_inner(g.tensors[node.outputs[0]].shape, axis)
    sizes = [int(g.tensors[i].shape[axis]) for i in node.inputs]
    fields = dict(outer=outer, inner=inner, num_inputs=len(node.inputs))
    sn = em.array("int32_t", f"{node.name}_axis_sizes", np.array(sizes, np.int32))
    ptrs = ", ".join(em.ptr(i) for i in node.inputs)
    return _call("mf_concatenation_params", fields,
                f"const int8_t *const in[{len(node.inputs)}] = {{{ptrs}}};",
                f"mf_concatenation_s8(&p, in, {sn}, {em.ptr(node.outputs[0])});")


def emit_slice(em, idx: int, node: Node, p: KernelParams) -> str:
    """SLICE along one axis (what ONNX Split and Slice import as): mf_slice_s8."""
    a = node.attrs
    shape = em.g.tensors[node.inputs[0]].shape
    axis = int(a["axis"])
    outer, inner = _outer_inner(shape, axis)
    fields = dict(outer=outer, in_axis=int(shape[axis]), begin=int(a["begin"]),
                  size=int(a["size"]), inner=inner)
    return _call("mf_slice_params", fields,
                f"mf_slice_s8(&p, {em.ptr(node.inputs[0])}, {em.ptr(node.outputs[0])});")


def emit_lut(em, idx: int, node: Node, p: KernelParams) -> str:
    """LOGISTIC / TANH: the reference's 256-entry table (exact by construction), mf_lut_s8."""
    tn = em.array("int8_t", f"{node.name}_table", p.extra["table"])
    size = em.g.tensors[node.outputs[0]].size
    return _call("mf_lut_params", {"size": size},
                f"mf_lut_s8(&p, {tn}, {em.ptr(node.inputs[0])}, {em.ptr(node.outputs[0])});")


def pad_fields(in_shape: tuple[int, ...], paddings, fill: int) -> dict[str, int]:
    """mf_pad_params of an IR PAD (NHWC, or [N, C] as a 1 x 1 x C image)."""
    pads = [[int(v) for v in pair] for pair in paddings]
    if len(in_shape) == 2:
        pads = [pads[0], [0, 0], [0, 0], pads[1]]
    ih, iw, ic = _hw(tuple(in_shape))
    if pads[0] != [0, 0]:
        raise UnsupportedOpError(f"PAD pads the batch axis ({pads[0]}); the runtime pads one image")
    return dict(in_h=ih, in_w=iw, in_c=ic, pad_top=pads[1][0], pad_bottom=pads[1][1],
                pad_left=pads[2][0], pad_right=pads[2][1], pad_front=pads[3][0],
                pad_back=pads[3][1], fill=fill)


def emit_pad(em, idx: int, node: Node, p: KernelParams) -> str:
    """A standalone PAD (fill: the zero point): mf_pad_s8."""
    fields = pad_fields(em.g.tensors[node.inputs[0]].shape, node.attrs["paddings"],
                        p.extra["fill"])
    _check_u16(node, **{k: v for k, v in fields.items() if k != "fill"})
    return _call("mf_pad_params", fields,
                f"mf_pad_s8(&p, {em.ptr(node.inputs[0])}, {em.ptr(node.outputs[0])});")


EMITTERS: dict[str, Callable] = {
    "CONV_2D": emit_conv,
    "DEPTHWISE_CONV_2D": emit_dwconv,
    "FULLY_CONNECTED": emit_fc,
    "MAX_POOL_2D": _emit_pool("mf_max_pool2d_s8"),
    "AVERAGE_POOL_2D": _emit_pool("mf_avg_pool2d_s8"),
    "ADD": emit_add,
    "RESHAPE": emit_reshape,
    "SOFTMAX": emit_softmax,
    "LOGISTIC": emit_lut,
    "TANH": emit_lut,
    "PAD": emit_pad,
    "CONCATENATION": emit_concatenation,
    "SLICE": emit_slice,
}
