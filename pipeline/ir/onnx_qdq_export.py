"""int8 IR -> QDQ ONNX (QuantizeLinear / DequantizeLinear around float ops), for onnxruntime.

The QDQ form is how ONNX carries a quantized model: every int8 tensor of the
IR becomes ``QuantizeLinear -> DequantizeLinear`` with the same scale and zero
point, weights and biases are int8 / int32 initializers behind a
``DequantizeLinear`` (per channel on axis 0), and the ops between are the
float ONNX ops. Runtimes fuse the patterns into integer kernels (onnxruntime:
QLinearConv, QLinearMatMul, ...), with their own requantization arithmetic:
onnxruntime rounds half to even in float, TFLite rounds in fixed point. So
the two agree on most bytes but not all, and :func:`compare_with_onnxruntime`
reports how many, layer by layer; it is a measurement, not a check.

Layout: ONNX convolutions are NCHW, so the model takes NCHW input like the
float ONNX it came from, weights go back to OIHW, and a flatten of a feature
map read by FULLY_CONNECTED flattens in NCHW order with the weight columns
permuted back (any other flatten transposes to NHWC first).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UnsupportedOpError
from .graph import Graph, QuantParams

OPSET = 13


class _Builder:
    def __init__(self, graph: Graph) -> None:
        import onnx
        from onnx import TensorProto, helper, numpy_helper

        self.onnx, self.helper, self.nh, self.TP = onnx, helper, numpy_helper, TensorProto
        self.g = graph
        self.nodes: list = []
        self.inits: list = []
        self.float_name: dict[str, str] = {}  # IR tensor -> its dequantized float value
        self.int8_name: dict[str, str] = {}  # IR tensor -> its QuantizeLinear output
        self.layout: dict[str, str] = {}  # IR tensor -> "NCHW" (4-D) or "NC"
        # 2-D tensors flattened in NCHW order: (h, w, c) of the feature map.
        self.flat_from: dict[str, tuple[int, int, int]] = {}

    def init(self, name: str, arr: np.ndarray) -> str:
        arr = np.asarray(arr)  # (ascontiguousarray would make a scalar 1-D)
        self.inits.append(self.nh.from_array(arr.copy(order="C"), name))
        return name

    def qparams(self, base: str, q: QuantParams, zp_dtype=np.int8) -> tuple[str, str]:
        s = self.init(f"{base}_scale", q.scale.astype(np.float32) if q.per_channel
                      else np.float32(q.scale[0]))
        z = self.init(f"{base}_zero_point", q.zero_point.astype(zp_dtype) if q.per_channel
                      else np.asarray(q.zero_point[0], dtype=zp_dtype))
        return s, z

    def node(self, op: str, inputs: list[str], outputs: list[str], **attrs) -> None:
        self.nodes.append(self.helper.make_node(op, inputs, outputs, name=f"{op}_{len(self.nodes)}",
                                                **attrs))

    def quantize(self, name: str, float_value: str) -> None:
        """float_value -> Q -> DQ; the IR tensor ``name`` is the Q output."""
        s, z = self.qparams(name, self.g.tensors[name].quant)
        self.node("QuantizeLinear", [float_value, s, z], [f"{name}_q"])
        self.node("DequantizeLinear", [f"{name}_q", s, z], [f"{name}_dq"])
        self.int8_name[name] = f"{name}_q"
        self.float_name[name] = f"{name}_dq"

    def bias_quant(self, n) -> QuantParams:
        """What TFLite's kernels use as the bias scale: s_in * s_w (the stored one is not read)."""
        t = self.g.tensors
        s_in = np.float32(t[n.inputs[0]].quant.scale[0])
        wq = t[n.inputs[1]].quant
        scale = (s_in * wq.scale.astype(np.float32)).astype(np.float32)
        return QuantParams(scale, np.zeros(scale.size, np.int64), 0 if scale.size > 1 else None)

    def const(self, name: str, data: np.ndarray, q: QuantParams, dtype) -> str:
        axis = {"axis": 0} if q.per_channel else {}
        s, z = self.qparams(name, q, dtype)
        self.init(f"{name}_int", data.astype(dtype))
        self.node("DequantizeLinear", [f"{name}_int", s, z], [f"{name}_dq"], **axis)
        return f"{name}_dq"

    def activation(self, node, y: str) -> str:
        act = node.attrs.get("activation", "NONE")
        if act == "RELU":
            self.node("Relu", [y], [f"{y}_relu"])
            return f"{y}_relu"
        if act == "RELU6":
            lo = self.init(f"{y}_min", np.float32(0.0))
            hi = self.init(f"{y}_max", np.float32(6.0))
            self.node("Clip", [y, lo, hi], [f"{y}_relu6"])
            return f"{y}_relu6"
        return y

    # -- ops --------------------------------------------------------------------------------
    def conv(self, n) -> str:
        t = self.g.tensors
        w, b = t[n.inputs[1]], t[n.inputs[2]]
        a = n.attrs
        if n.op == "CONV_2D":
            w_oihw = np.transpose(w.data, (0, 3, 1, 2))
            group = 1
        else:  # [1, KH, KW, C*M] -> [C*M, 1, KH, KW]
            w_oihw = np.transpose(w.data, (3, 0, 1, 2))
            group = t[n.inputs[0]].shape[3]
        wq = QuantParams(w.quant.scale, w.quant.zero_point, 0 if w.quant.per_channel else None)
        wn = self.const(w.name, w_oihw, wq, np.int8)
        bn = self.const(b.name, b.data, self.bias_quant(n), np.int32)
        top, left, bottom, right = (int(p) for p in a["padding"])
        y = f"{n.outputs[0]}_conv"
        self.node("Conv", [self.float_name[n.inputs[0]], wn, bn], [y], group=group,
                  strides=list(a["stride"]), dilations=list(a["dilation"]),
                  pads=[top, left, bottom, right], kernel_shape=list(w.shape[1:3]))
        return self.activation(n, y)

    def fc(self, n) -> str:
        t = self.g.tensors
        w, b = t[n.inputs[1]], t[n.inputs[2]]
        wdata = w.data
        if n.inputs[0] in self.flat_from:
            h, ww, c = self.flat_from[n.inputs[0]]
            # IR columns are (h, w, c)-ordered, the NCHW flatten is (c, h, w).
            wdata = wdata.reshape(-1, h, ww, c).transpose(0, 3, 1, 2).reshape(wdata.shape)
        wn = self.const(w.name, wdata, w.quant, np.int8)
        bn = self.const(b.name, b.data, self.bias_quant(n), np.int32)
        y = f"{n.outputs[0]}_gemm"
        self.node("Gemm", [self.float_name[n.inputs[0]], wn, bn], [y], transB=1)
        return self.activation(n, y)

    def pool(self, n) -> str:
        a = n.attrs
        top, left, bottom, right = (int(p) for p in a["padding"])
        y = f"{n.outputs[0]}_pool"
        op = "MaxPool" if n.op == "MAX_POOL_2D" else "AveragePool"
        extra = {} if op == "MaxPool" else {"count_include_pad": 0}
        self.node(op, [self.float_name[n.inputs[0]]], [y], kernel_shape=list(a["filter"]),
                  strides=list(a["stride"]), pads=[top, left, bottom, right], **extra)
        return self.activation(n, y)

    def reshape(self, n) -> str:
        x = n.inputs[0]
        src = self.float_name[x]
        if self.layout.get(x) == "NCHW":
            readers = self.g.consumers().get(n.outputs[0], [])
            if readers and all(r.op == "FULLY_CONNECTED" for r in readers) \
                    and n.outputs[0] not in self.g.outputs:
                # Flatten in ONNX's NCHW order and permute the FC weight columns
                # instead of transposing the activations: onnxruntime's layout
                # optimizer mis-handles a Transpose between its NHWC QLinear
                # kernels and a Reshape (measured: 7% byte agreement with it).
                _, h, w, c = self.g.tensors[x].shape
                self.flat_from[n.outputs[0]] = (h, w, c)
            else:
                self.node("Transpose", [src], [f"{n.outputs[0]}_nhwc"], perm=[0, 2, 3, 1])
                src = f"{n.outputs[0]}_nhwc"
        out_shape = self.g.tensors[n.outputs[0]].shape
        if len(out_shape) == 4:
            raise UnsupportedOpError(f"QDQ export: RESHAPE '{n.name}' to 4-D is not supported")
        shape = self.init(f"{n.outputs[0]}_shape", np.array([-1, *out_shape[1:]], np.int64))
        y = f"{n.outputs[0]}_reshape"
        self.node("Reshape", [src, shape], [y])
        return y

    def add(self, n) -> str:
        y = f"{n.outputs[0]}_add"
        self.node("Add", [self.float_name[n.inputs[0]], self.float_name[n.inputs[1]]], [y])
        return self.activation(n, y)

    def softmax(self, n) -> str:
        y = f"{n.outputs[0]}_softmax"
        self.node("Softmax", [self.float_name[n.inputs[0]]], [y], axis=-1)
        return y

    @staticmethod
    def _nchw_axis(rank: int, axis: int) -> int:
        """The NCHW axis of an IR (NHWC) axis."""
        return {3: 1, 1: 2, 2: 3}[axis] if rank == 4 else axis

    def concat(self, n) -> str:
        y = f"{n.outputs[0]}_concat"
        rank = len(self.g.tensors[n.outputs[0]].shape)
        self.node("Concat", [self.float_name[i] for i in n.inputs], [y],
                  axis=self._nchw_axis(rank, int(n.attrs["axis"])))
        return y

    def slice(self, n) -> str:
        a, out = n.attrs, n.outputs[0]
        rank = len(self.g.tensors[out].shape)
        begin, end = int(a["begin"]), int(a["begin"]) + int(a["size"])
        args = [self.init(f"{out}_{k}", np.array([v], np.int64))
                for k, v in (("starts", begin), ("ends", end),
                             ("axes", self._nchw_axis(rank, int(a["axis"]))))]
        y = f"{out}_slice"
        self.node("Slice", [self.float_name[n.inputs[0]], *args], [y])
        return y

    def build(self, outputs: list[str]):
        h, TP = self.helper, self.TP
        x = self.g.inputs[0]
        xt = self.g.tensors[x]
        if len(xt.shape) == 4:
            n, hh, ww, c = xt.shape
            in_shape = ["N", c, hh, ww]  # batch is free: onnxruntime runs a whole batch
            self.layout[x] = "NCHW"
        else:
            in_shape = ["N"] + list(xt.shape[1:])
            self.layout[x] = "NC"
        self.quantize(x, "input")
        handlers = {"CONV_2D": self.conv, "DEPTHWISE_CONV_2D": self.conv,
                    "FULLY_CONNECTED": self.fc, "MAX_POOL_2D": self.pool,
                    "AVERAGE_POOL_2D": self.pool, "RESHAPE": self.reshape, "ADD": self.add,
                    "SOFTMAX": self.softmax, "CONCATENATION": self.concat, "SLICE": self.slice}
        for n in self.g.nodes:
            if n.op not in handlers:
                raise UnsupportedOpError(f"QDQ export: op {n.op} ('{n.name}') is not supported")
            y = handlers[n.op](n)
            out = n.outputs[0]
            self.layout[out] = "NCHW" if len(self.g.tensors[out].shape) == 4 else "NC"
            self.quantize(out, y)
        graph_inputs = [h.make_tensor_value_info("input", TP.FLOAT, in_shape)]
        def onnx_shape(name: str) -> list[int]:
            shp = list(self.g.tensors[name].shape)
            return ["N", shp[3], shp[1], shp[2]] if len(shp) == 4 else ["N"] + shp[1:]

        graph_outputs = [h.make_tensor_value_info(self.int8_name[o], TP.INT8, onnx_shape(o))
                         for o in outputs]
        g = h.make_graph(self.nodes, "microfit_qdq", graph_inputs, graph_outputs,
                         initializer=self.inits)
        model = h.make_model(g, opset_imports=[h.make_opsetid("", OPSET)],
                             producer_name="microfit")
        model.ir_version = 8
        self.onnx.checker.check_model(model)
        return model


def export_qdq_onnx(graph: Graph, path: str | Path | None = None,
                    outputs: list[str] | None = None):
    """The int8 graph as a QDQ ONNX model (NCHW float input, int8 outputs).

    ``outputs`` (default: the graph's) are IR tensor names; each becomes an
    int8 model output (the QuantizeLinear result).
    """
    if not graph.is_quantized():
        raise UnsupportedOpError("QDQ export needs the int8 graph (quant.json)")
    model = _Builder(graph).build(list(outputs or graph.outputs))
    if path is not None:
        Path(path).write_bytes(model.SerializeToString())
    return model


@dataclass
class OrtAgreement:
    """Byte agreement between onnxruntime on the QDQ model and the numpy reference."""

    inputs: int
    layers: dict[str, dict] = field(default_factory=dict)

    @property
    def output(self) -> dict:
        return list(self.layers.values())[-1]

    def summary(self) -> str:
        lines = [f"onnxruntime (QDQ) vs reference, {self.inputs} inputs:"]
        for name, d in self.layers.items():
            lines.append(f"  {name}: {d['agreement']:.2%} of {d['bytes']} bytes equal, "
                         f"max difference {d['max_abs_diff']}")
        return "\n".join(lines)


def compare_with_onnxruntime(graph: Graph, x: np.ndarray, mode: str = "double",
                             all_layers: bool = True, optimize: bool = True) -> OrtAgreement:
    """Run the QDQ export in onnxruntime on int8 inputs ``x`` (IR layout) and compare bytes.

    ``optimize=False`` disables onnxruntime's graph optimizations, so it runs
    the QDQ spec literally (float ops on dequantized values, QuantizeLinear
    rounding half to even) instead of its fused integer kernels. The two
    differ: with every layer exposed as an output fewer fusions happen, and
    on x86 the fused u8 x s8 kernels have been measured far off (7% of the
    digits CNN's output bytes equal, max difference 35, against 96% and 1
    unfused), consistent with the int16 saturation onnxruntime documents for
    full-range int8 weights (its ``reduce_range`` option).
    """
    import onnxruntime as ort

    from ..reference.executor import run_int8

    names = ([t for t in graph.activation_tensors() if t not in graph.inputs] if all_layers
             else list(graph.outputs))
    builder = _Builder(graph)
    model = builder.build(names)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    xin = graph.tensors[graph.inputs[0]]
    s, zp = np.float32(xin.quant.scale[0]), int(xin.quant.zero_point[0])
    xf = ((x.astype(np.float32) - zp) * s).astype(np.float32)
    if xf.ndim == 4:
        xf = np.ascontiguousarray(xf.transpose(0, 3, 1, 2))
    ref = run_int8(graph, x, mode=mode, keep_all=True)
    got = sess.run(None, {"input": xf})
    res = OrtAgreement(len(x))
    for name, g in zip(names, got, strict=True):
        r = ref[name]
        if g.ndim == 4 and r.ndim == 4:
            g = g.transpose(0, 2, 3, 1)
        elif name in builder.flat_from:
            h, w, c = builder.flat_from[name]
            g = g.reshape(len(g), c, h, w).transpose(0, 2, 3, 1).reshape(len(g), -1)
        d = np.abs(g.reshape(r.shape).astype(np.int64) - r.astype(np.int64))
        res.layers[name] = {"bytes": int(d.size), "agreement": float(np.mean(d == 0)),
                            "max_abs_diff": int(d.max()) if d.size else 0}
    return res
