"""ONNX (float, opset 13+) -> microfit IR.

The importer converts layout as it goes: ONNX activations are NCHW, the IR's
are NHWC (as TFLite's and our kernels'). Weights are transposed once here, so
no later stage ever sees NCHW. These fusions happen on the way, because every
target wants them and they are exact in float:

- BatchNormalization after a convolution is folded into its weights and bias;
- Relu / Clip(0, 6) after a conv, fc or add becomes the producer's fused
  activation;
- a zero Pad read only by a Conv becomes part of the Conv's pads (any other
  zero Pad is a standalone PAD);
- Flatten / Reshape from NHWC 4-D to 2-D becomes a RESHAPE view, and the
  FULLY_CONNECTED reading it gets its weight columns permuted from ONNX's
  channel-major order to NHWC order, so the result is unchanged.

Anything else is an :class:`~microfit.errors.UnsupportedOpError` naming the node
and its op type.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ModelLoadError, UnsupportedOpError
from .graph import Graph, Node, Tensor

SUPPORTED_ONNX_OPS = (
    "Conv", "BatchNormalization", "Relu", "Clip", "MaxPool", "AveragePool",
    "GlobalAveragePool", "ReduceMean", "Flatten", "Reshape", "Gemm", "MatMul", "Add",
    "Softmax", "Identity", "Dropout", "Constant", "Pad",
    "Concat", "Split", "Slice", "Transpose", "Sigmoid", "Tanh",
)


@dataclass
class _Act:
    """An activation value during import: IR tensor name and its ONNX-side layout."""

    name: str
    layout: str  # "NHWC" for 4-D tensors (converted from NCHW), "NC" for 2-D
    # For a 2-D tensor flattened from NHWC (h, w, c): the spatial shape, so a
    # following FULLY_CONNECTED can permute its columns.
    flat_from: tuple[int, int, int] | None = None


def _sanitize(name: str) -> str:
    s = re.sub(r"[^0-9A-Za-z_]", "_", name).strip("_")
    return s or "t"


class _Importer:
    def __init__(self, model) -> None:  # onnx.ModelProto
        import onnx
        from onnx import numpy_helper

        self.onnx = onnx
        self.numpy_helper = numpy_helper
        try:
            model = onnx.shape_inference.infer_shapes(model)
        except Exception as exc:  # noqa: BLE001 - onnx raises many types here
            raise ModelLoadError(f"ONNX shape inference failed: {exc}") from exc
        self.model = model
        g = model.graph
        self.consts: dict[str, np.ndarray] = {
            init.name: numpy_helper.to_array(init) for init in g.initializer
        }
        self.shapes: dict[str, tuple[int, ...]] = {}
        for vi in list(g.value_info) + list(g.input) + list(g.output):
            dims = vi.type.tensor_type.shape.dim
            if all(d.HasField("dim_value") for d in dims):
                self.shapes[vi.name] = tuple(int(d.dim_value) for d in dims)
        self.consumers: dict[str, list] = {}
        for n in g.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.tensors: dict[str, Tensor] = {}
        self.nodes: list[Node] = []
        # Pad outputs waiting for the Conv that absorbs them: (input, extra pads).
        self.pending_pads: dict[str, tuple[_Act, list[int]]] = {}
        self.acts: dict[str, _Act] = {}
        self.used_names: set[str] = set()

    # -- helpers ---------------------------------------------------------------
    def _unique(self, base: str) -> str:
        base = _sanitize(base)
        name, k = base, 1
        while name in self.used_names:
            k += 1
            name = f"{base}_{k}"
        self.used_names.add(name)
        return name

    def _add_const(self, base: str, data: np.ndarray) -> str:
        name = self._unique(base)
        data = np.ascontiguousarray(data.astype(np.float32))
        self.tensors[name] = Tensor(name, tuple(data.shape), "float32", data)
        return name

    def _add_act(self, onnx_name: str, shape: tuple[int, ...], layout: str,
                 flat_from: tuple[int, int, int] | None = None) -> _Act:
        name = self._unique(onnx_name)
        self.tensors[name] = Tensor(name, tuple(int(s) for s in shape), "float32")
        act = _Act(name, layout, flat_from)
        self.acts[onnx_name] = act
        return act

    def _alias(self, onnx_out: str, act: _Act) -> None:
        self.acts[onnx_out] = act

    def _const(self, node, idx: int) -> np.ndarray:
        if idx >= len(node.input) or not node.input[idx]:
            raise UnsupportedOpError(f"node '{node.name}' ({node.op_type}) lacks input {idx}")
        name = node.input[idx]
        if name not in self.consts:
            raise UnsupportedOpError(
                f"node '{node.name}' ({node.op_type}): input '{name}' must be a constant "
                "(weights computed at run time are not supported)")
        return self.consts[name]

    def _act_in(self, node, idx: int = 0) -> _Act:
        name = node.input[idx]
        if name not in self.acts:
            raise UnsupportedOpError(
                f"node '{node.name}' ({node.op_type}): input '{name}' is not produced by a "
                "supported op")
        return self.acts[name]

    def _shape(self, name: str) -> tuple[int, ...]:
        if name not in self.shapes:
            raise ModelLoadError(f"ONNX tensor '{name}' has no static shape; export with a fixed "
                                 "input shape (batch 1)")
        return self.shapes[name]

    @staticmethod
    def _attrs(node) -> dict:
        import onnx

        return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}

    def _single_consumer(self, onnx_name: str):
        cons = self.consumers.get(onnx_name, [])
        graph_outputs = {o.name for o in self.model.graph.output}
        if len(cons) == 1 and onnx_name not in graph_outputs:
            return cons[0]
        return None

    # -- conversion ------------------------------------------------------------
    def run(self) -> Graph:
        g = self.model.graph
        inputs = [i for i in g.input if i.name not in self.consts]
        if len(inputs) != 1:
            raise UnsupportedOpError(f"model has {len(inputs)} inputs; microfit supports one")
        for inp in inputs:
            shape = self._shape(inp.name)
            if len(shape) == 4:
                n, c, h, w = shape
                self._add_act(inp.name, (n, h, w, c), "NHWC")
            elif len(shape) == 2:
                self._add_act(inp.name, shape, "NC")
            else:
                raise UnsupportedOpError(f"input '{inp.name}' has rank {len(shape)}; "
                                         "microfit takes NCHW images or 2-D feature vectors")
        self.fused: set[str] = set()
        for idx, node in enumerate(g.node):
            if node.name in self.fused:
                continue
            if not node.name:
                node.name = f"{node.op_type}_{idx}"
            handler = getattr(self, f"_op_{node.op_type}", None)
            if handler is None:
                raise UnsupportedOpError(
                    f"ONNX node '{node.name}' has op type '{node.op_type}', which microfit does "
                    f"not support. Supported: {', '.join(SUPPORTED_ONNX_OPS)}.")
            handler(node)
        outs = []
        for o in g.output:
            act = self.acts.get(o.name)
            if act is None:
                raise UnsupportedOpError(f"graph output '{o.name}' is not computed by supported ops")
            if act.flat_from is not None and act.flat_from[0] * act.flat_from[1] > 1:
                raise UnsupportedOpError(
                    f"graph output '{o.name}' is a flattened feature map; its element order "
                    "would differ between NCHW and NHWC. End the model with a Linear layer.")
            outs.append(act.name)
        graph = Graph(self.tensors, self.nodes, [self.acts[i.name].name for i in inputs], outs)
        _remove_dead(graph)
        return graph

    def _emit(self, op: str, node, inputs: list[str], out: _Act, attrs: dict) -> Node:
        n = Node(self._unique(node.name), op, inputs, [out.name], attrs)
        self.nodes.append(n)
        return n

    def _try_fuse_activation(self, onnx_out: str, ir_node: Node) -> str:
        """Fuse a following Relu/Clip into ``ir_node``; returns the ONNX name to bind."""
        nxt = self._single_consumer(onnx_out)
        if nxt is None:
            return onnx_out
        act = None
        if nxt.op_type == "Relu":
            act = "RELU"
        elif nxt.op_type == "Clip":
            lo, hi = self._clip_bounds(nxt)
            if lo == 0.0 and hi == 6.0:
                act = "RELU6"
            elif lo == 0.0 and hi == float("inf"):
                act = "RELU"
        if act is None:
            return onnx_out
        ir_node.attrs["activation"] = act
        self.fused.add(nxt.name)
        return nxt.output[0]

    def _clip_bounds(self, node) -> tuple[float, float]:
        attrs = self._attrs(node)
        lo, hi = attrs.get("min", -np.inf), attrs.get("max", np.inf)
        if len(node.input) > 1 and node.input[1]:
            lo = float(self._const(node, 1))
        if len(node.input) > 2 and node.input[2]:
            hi = float(self._const(node, 2))
        return float(lo), float(hi)

    def _fold_batchnorm(self, onnx_out: str, w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
        """Fold a following BatchNormalization into conv weights ``w`` [O, ...] and bias."""
        nxt = self._single_consumer(onnx_out)
        if nxt is None or nxt.op_type != "BatchNormalization":
            return w, b, onnx_out
        scale, beta, mean, var = (self._const(nxt, i).astype(np.float64) for i in range(1, 5))
        eps = float(self._attrs(nxt).get("epsilon", 1e-5))
        k = scale / np.sqrt(var + eps)
        w = w * k.reshape((-1,) + (1,) * (w.ndim - 1))
        b = (b - mean) * k + beta
        self.fused.add(nxt.name)
        return w, b, nxt.output[0]

    def _op_Constant(self, node) -> None:
        attrs = self._attrs(node)
        if "value" not in attrs:
            raise UnsupportedOpError(f"Constant node '{node.name}' without a tensor value")
        self.consts[node.output[0]] = self.numpy_helper.to_array(attrs["value"])

    def _op_Identity(self, node) -> None:
        if node.input[0] in self.consts:
            self.consts[node.output[0]] = self.consts[node.input[0]]
        else:
            self._alias(node.output[0], self._act_in(node))

    def _op_Dropout(self, node) -> None:
        self._alias(node.output[0], self._act_in(node))

    def _op_Pad(self, node) -> None:
        """Constant zero padding: folded into a Conv that alone reads it (exact: both add
        zeros), otherwise a standalone PAD (int8: filled with the zero point, a real 0)."""
        x = self._act_in(node)
        attrs = self._attrs(node)
        mode = attrs.get("mode", b"constant")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        if mode != "constant":
            raise UnsupportedOpError(
                f"Pad '{node.name}' uses mode '{mode}'; only constant (zero) padding is supported, "
                "as TFLite's PAD. Pad with zeros instead (torch.nn.ZeroPad2d, or F.pad with "
                "mode='constant')")
        if len(node.input) > 3 and node.input[3]:
            raise UnsupportedOpError(f"Pad '{node.name}' names its axes (input 'axes'); export "
                                     "it with pads for every axis (opset 13 style)")
        for idx, what in ((1, "pads"), (2, "constant_value")):
            if len(node.input) > idx and node.input[idx] and node.input[idx] not in self.consts:
                raise UnsupportedOpError(
                    f"Pad '{node.name}': its {what} come from the run-time tensor "
                    f"'{node.input[idx]}'; microfit needs them constant. Export with fixed "
                    "padding sizes (plain ints in F.pad) and constant folding on")
        pads = (self._const(node, 1) if len(node.input) > 1 and node.input[1]
                else np.array(attrs.get("pads", []))).astype(int).tolist()
        value = (float(np.ravel(self._const(node, 2))[0]) if len(node.input) > 2 and node.input[2]
                 else float(attrs.get("value", 0.0)))
        if value != 0.0:
            raise UnsupportedOpError(
                f"Pad '{node.name}' fills with {value}; only 0 is supported (an int8 PAD fills "
                "with the zero point, i.e. a real 0). Pad with zeros")
        if min(pads, default=0) < 0:
            raise UnsupportedOpError(
                f"Pad '{node.name}' has negative pads {pads} (cropping); crop with a Slice "
                "instead, or remove the negative padding")
        rank = len(self.tensors[x.name].shape)
        if len(pads) != 2 * rank or x.layout not in ("NHWC", "NC"):
            raise UnsupportedOpError(f"Pad '{node.name}' pads {pads} do not fit its rank-{rank} "
                                     "input; microfit pads 4-D NCHW feature maps and 2-D "
                                     "[N, C] tensors")
        if pads[0] or pads[rank]:
            raise UnsupportedOpError(f"Pad '{node.name}' pads the batch axis ({pads}); pad only "
                                     "channels, height or width")
        reader = self._single_consumer(node.output[0])
        if (x.layout == "NHWC" and not any(pads[i] for i in (1, 5))
                and reader is not None and reader.op_type == "Conv"):
            # ONNX NCHW pads: [n0, c0, h0, w0, n1, c1, h1, w1] -> (top, left, bottom, right)
            self.pending_pads[node.output[0]] = (x, [pads[2], pads[3], pads[6], pads[7]])
            return
        self._standalone_pad(node, x, pads)

    def _standalone_pad(self, node, x: _Act, pads: list[int]) -> None:
        """A PAD node; ``pads`` in ONNX order (all befores, then all afters)."""
        if x.flat_from is not None and x.flat_from[0] * x.flat_from[1] > 1:
            raise UnsupportedOpError(
                f"Pad '{node.name}' pads a flattened feature map; its element order differs "
                "between NCHW and NHWC. Pad the feature map before flattening")
        rank = len(pads) // 2
        pairs = [[pads[i], pads[i + rank]] for i in range(rank)]
        if x.layout == "NHWC":
            pairs = [pairs[0], pairs[2], pairs[3], pairs[1]]  # NCHW -> NHWC
        shape = tuple(d + b + a for d, (b, a) in zip(self.tensors[x.name].shape, pairs,
                                                      strict=True))
        out = self._add_act(node.output[0], shape, x.layout)
        self._emit("PAD", node, [x.name], out, {"paddings": pairs})

    def _elementwise(self, node, op: str) -> None:
        x = self._act_in(node)
        out = self._add_act(node.output[0], self.tensors[x.name].shape, x.layout, x.flat_from)
        self._emit(op, node, [x.name], out, {})

    def _op_Sigmoid(self, node) -> None:
        self._elementwise(node, "LOGISTIC")

    def _op_Tanh(self, node) -> None:
        self._elementwise(node, "TANH")

    def _op_Conv(self, node) -> None:
        extra = [0, 0, 0, 0]
        if node.input[0] in self.pending_pads:
            x, extra = self.pending_pads.pop(node.input[0])
        else:
            x = self._act_in(node)
        if x.layout != "NHWC":
            raise UnsupportedOpError(f"Conv '{node.name}' needs a 4-D input")
        attrs = self._attrs(node)
        w = self._const(node, 1).astype(np.float64)
        cout, cin_g, kh, kw = w.shape
        b = (self._const(node, 2).astype(np.float64) if len(node.input) > 2 and node.input[2]
             else np.zeros(cout))
        group = int(attrs.get("group", 1))
        _, h, wd, cin = self.tensors[x.name].shape
        strides = list(attrs.get("strides", [1, 1]))
        dil = list(attrs.get("dilations", [1, 1]))
        hp, wp = h + extra[0] + extra[2], wd + extra[1] + extra[3]
        pads = [p + e for p, e in zip(self._pads(node, attrs, (hp, wp), (kh, kw), strides, dil),
                                      extra, strict=True)]
        w, b, onnx_out = self._fold_batchnorm(node.output[0], w, b)
        oshape = self._shape(node.output[0])
        out = self._add_act(node.output[0], (oshape[0], oshape[2], oshape[3], oshape[1]), "NHWC")
        common = {"stride": strides, "dilation": dil, "padding": pads, "activation": "NONE"}
        if group == 1:
            wt = np.transpose(w, (0, 2, 3, 1))  # OIHW -> OHWI
            op = "CONV_2D"
            attrs_ir = dict(common)
        elif group == cin and cin_g == 1 and cout % cin == 0:
            wt = np.transpose(w, (1, 2, 3, 0))  # [O,1,KH,KW] -> [1,KH,KW,O]
            op = "DEPTHWISE_CONV_2D"
            attrs_ir = dict(common, depth_multiplier=cout // cin)
        else:
            raise UnsupportedOpError(
                f"Conv '{node.name}' has group={group} with {cin} input channels: grouped "
                "convolution other than depthwise is not supported yet")
        wname = self._add_const(f"{node.name}_weights", wt)
        bname = self._add_const(f"{node.name}_bias", b)
        ir = self._emit(op, node, [x.name, wname, bname], out, attrs_ir)
        final = onnx_out
        if onnx_out != node.output[0]:
            self._alias(onnx_out, out)
        final = self._try_fuse_activation(onnx_out, ir)
        self._alias(final, out)

    def _pads(self, node, attrs, hw, k, strides, dil) -> list[int]:
        auto = attrs.get("auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else auto
        if auto in ("NOTSET", ""):
            p = list(attrs.get("pads", [0, 0, 0, 0]))
            return [int(p[0]), int(p[1]), int(p[2]), int(p[3])]  # top, left, bottom, right
        if auto == "VALID":
            return [0, 0, 0, 0]
        res = []
        for i in range(2):
            eff = (k[i] - 1) * dil[i] + 1
            out = -(-hw[i] // strides[i])
            total = max(0, (out - 1) * strides[i] + eff - hw[i])
            small, big = total // 2, total - total // 2
            res.append((small, big) if auto == "SAME_UPPER" else (big, small))
        return [res[0][0], res[1][0], res[0][1], res[1][1]]

    def _op_BatchNormalization(self, node) -> None:
        raise UnsupportedOpError(
            f"BatchNormalization '{node.name}' does not follow a convolution or a Linear "
            "(Gemm/MatMul) read only by it, so it cannot be folded; put each BatchNorm right "
            "after a Conv or Linear")

    def _fuse_standalone_activation(self, node, kind: str) -> None:
        x = self._act_in(node)
        prod = next((n for n in reversed(self.nodes) if n.outputs[0] == x.name), None)
        if prod is not None and prod.op in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD") \
                and prod.attrs.get("activation", "NONE") == "NONE" \
                and len(self.consumers.get(node.input[0], [])) == 1:
            prod.attrs["activation"] = kind
            self._alias(node.output[0], x)
            return
        raise UnsupportedOpError(
            f"{node.op_type} '{node.name}' does not directly follow a Conv, Gemm or Add, so it "
            "cannot be fused; standalone activations are not supported yet")

    def _op_Relu(self, node) -> None:
        self._fuse_standalone_activation(node, "RELU")

    def _op_Clip(self, node) -> None:
        lo, hi = self._clip_bounds(node)
        if lo == 0.0 and hi == 6.0:
            self._fuse_standalone_activation(node, "RELU6")
        elif lo == 0.0 and hi == float("inf"):
            self._fuse_standalone_activation(node, "RELU")
        else:
            raise UnsupportedOpError(f"Clip '{node.name}' with range [{lo}, {hi}]: only ReLU "
                                     "(0, inf) and ReLU6 (0, 6) are supported")

    def _pool(self, node, op: str) -> None:
        x = self._act_in(node)
        attrs = self._attrs(node)
        if int(attrs.get("ceil_mode", 0)):
            raise UnsupportedOpError(f"{node.op_type} '{node.name}' uses ceil_mode=1; export "
                                     "with ceil_mode=False")
        k = list(attrs["kernel_shape"])
        strides = list(attrs.get("strides", [1, 1]))
        dil = list(attrs.get("dilations", [1, 1]))
        if dil != [1, 1]:
            raise UnsupportedOpError(f"{node.op_type} '{node.name}' with dilation {dil}")
        _, h, w, c = self.tensors[x.name].shape
        pads = self._pads(node, attrs, (h, w), k, strides, dil)
        if op == "AVERAGE_POOL_2D" and any(pads) and int(attrs.get("count_include_pad", 0)):
            raise UnsupportedOpError(f"AveragePool '{node.name}' counts padding "
                                     "(count_include_pad=1); TFLite semantics exclude it")
        oshape = self._shape(node.output[0])
        out = self._add_act(node.output[0], (oshape[0], oshape[2], oshape[3], oshape[1]), "NHWC")
        self._emit(op, node, [x.name], out,
                   {"filter": k, "stride": strides, "padding": pads, "activation": "NONE"})

    def _op_MaxPool(self, node) -> None:
        if len(node.output) > 1 and node.output[1]:
            raise UnsupportedOpError(f"MaxPool '{node.name}' returns indices")
        self._pool(node, "MAX_POOL_2D")

    def _op_AveragePool(self, node) -> None:
        self._pool(node, "AVERAGE_POOL_2D")

    def _global_avg(self, node, keepdims: bool) -> None:
        x = self._act_in(node)
        n, h, w, c = self.tensors[x.name].shape
        attrs = {"filter": [h, w], "stride": [1, 1], "padding": [0, 0, 0, 0], "activation": "NONE"}
        if keepdims:
            out = self._add_act(node.output[0], (n, 1, 1, c), "NHWC")
            self._emit("AVERAGE_POOL_2D", node, [x.name], out, attrs)
            return
        # TFLite's pools need 4-D outputs (a 2-D one makes its kernels read garbage
        # dimensions): pool to [N, 1, 1, C], then a RESHAPE view drops the 1s.
        pooled = _Act(self._unique(f"{node.output[0]}_pooled"), "NHWC")
        self.tensors[pooled.name] = Tensor(pooled.name, (n, 1, 1, c), "float32")
        self._emit("AVERAGE_POOL_2D", node, [x.name], pooled, attrs)
        out = self._add_act(node.output[0], (n, c), "NC", flat_from=(1, 1, c))
        self._emit("RESHAPE", node, [pooled.name], out, {"new_shape": [n, c]})

    def _op_GlobalAveragePool(self, node) -> None:
        self._global_avg(node, True)

    def _op_ReduceMean(self, node) -> None:
        attrs = self._attrs(node)
        axes = attrs.get("axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            axes = self._const(node, 1).tolist()
        axes = sorted(int(a) % 4 for a in (axes or []))
        if axes != [2, 3]:
            raise UnsupportedOpError(f"ReduceMean '{node.name}' over axes {axes}: only the "
                                     "spatial mean (global average pooling) is supported")
        self._global_avg(node, bool(attrs.get("keepdims", 1)))

    def _flatten_to_2d(self, node) -> None:
        x = self._act_in(node)
        oshape = self._shape(node.output[0])
        src = self.tensors[x.name].shape
        if x.layout == "NC":
            self._alias(node.output[0], x)
            return
        n, h, w, c = src
        if len(oshape) != 2 or oshape[0] != n or oshape[1] != h * w * c:
            raise UnsupportedOpError(f"{node.op_type} '{node.name}' reshapes {src} to {oshape}; "
                                     "only flattening a feature map to [N, C*H*W] is supported")
        # After a layout-change Transpose (NCHW -> NHWC) ONNX flattens in our order already.
        flat = None if x.layout == "NHWC_T" else (h, w, c)
        out = self._add_act(node.output[0], (n, h * w * c), "NC", flat_from=flat)
        self._emit("RESHAPE", node, [x.name], out, {"new_shape": [n, h * w * c]})

    def _op_Flatten(self, node) -> None:
        if int(self._attrs(node).get("axis", 1)) != 1:
            raise UnsupportedOpError(f"Flatten '{node.name}' with axis != 1")
        self._flatten_to_2d(node)

    def _op_Reshape(self, node) -> None:
        self._flatten_to_2d(node)

    def _fc(self, node, x: _Act, w_oi: np.ndarray, b: np.ndarray) -> None:
        if x.layout != "NC":
            raise UnsupportedOpError(f"{node.op_type} '{node.name}' needs a 2-D input; flatten first")
        if x.flat_from is not None:
            h, w, c = x.flat_from
            # ONNX column index is c*H*W + h*W + w; ours is (h*W + w)*C + c.
            w_oi = w_oi.reshape(w_oi.shape[0], c, h, w).transpose(0, 2, 3, 1).reshape(w_oi.shape[0], -1)
        # BatchNorm1d after a Linear folds into it as into a convolution.
        w_oi, b, onnx_out = self._fold_batchnorm(node.output[0], w_oi, b)
        oshape = self._shape(node.output[0])
        out = self._add_act(node.output[0], oshape, "NC")
        wname = self._add_const(f"{node.name}_weights", w_oi)
        bname = self._add_const(f"{node.name}_bias", b)
        ir = self._emit("FULLY_CONNECTED", node, [x.name, wname, bname], out, {"activation": "NONE"})
        if onnx_out != node.output[0]:
            self._alias(onnx_out, out)
        final = self._try_fuse_activation(onnx_out, ir)
        self._alias(final, out)

    def _op_Gemm(self, node) -> None:
        x = self._act_in(node)
        attrs = self._attrs(node)
        if int(attrs.get("transA", 0)):
            raise UnsupportedOpError(f"Gemm '{node.name}' with transA=1")
        w = self._const(node, 1).astype(np.float64) * float(attrs.get("alpha", 1.0))
        w_oi = w if int(attrs.get("transB", 0)) else w.T
        b = (self._const(node, 2).astype(np.float64) * float(attrs.get("beta", 1.0))
             if len(node.input) > 2 and node.input[2] else np.zeros(w_oi.shape[0]))
        self._fc(node, x, w_oi, np.broadcast_to(b, (w_oi.shape[0],)).copy())

    def _op_MatMul(self, node) -> None:
        x = self._act_in(node)
        w_oi = self._const(node, 1).astype(np.float64).T
        b = np.zeros(w_oi.shape[0])
        nxt = self._single_consumer(node.output[0])
        if nxt is not None and nxt.op_type == "Add":
            other = [i for i in nxt.input if i != node.output[0]]
            if len(other) == 1 and other[0] in self.consts:
                b = b + np.broadcast_to(self.consts[other[0]].astype(np.float64), b.shape)
                self.fused.add(nxt.name)
                node.output[0], orig = nxt.output[0], node.output[0]
                self.shapes.setdefault(node.output[0], self.shapes.get(orig, ()))
        self._fc(node, x, w_oi, b)

    def _op_Add(self, node) -> None:
        if any(i in self.consts for i in node.input):
            raise UnsupportedOpError(f"Add '{node.name}' adds a constant; only the sum of two "
                                     "activations (a residual) or a MatMul bias is supported")
        a, b = self._act_in(node, 0), self._act_in(node, 1)
        if self.tensors[a.name].shape != self.tensors[b.name].shape:
            raise UnsupportedOpError(f"Add '{node.name}' broadcasts {self.tensors[a.name].shape} "
                                     f"with {self.tensors[b.name].shape}")
        out = self._add_act(node.output[0], self.tensors[a.name].shape, a.layout, a.flat_from)
        ir = self._emit("ADD", node, [a.name, b.name], out, {"activation": "NONE"})
        final = self._try_fuse_activation(node.output[0], ir)
        self._alias(final, out)

    def _op_Softmax(self, node) -> None:
        x = self._act_in(node)
        axis = int(self._attrs(node).get("axis", -1))
        rank = len(self.tensors[x.name].shape)
        if x.layout != "NC" or axis % rank != rank - 1:
            raise UnsupportedOpError(f"Softmax '{node.name}' must act on the last axis of a 2-D "
                                     "tensor")
        out = self._add_act(node.output[0], self.tensors[x.name].shape, "NC")
        self._emit("SOFTMAX", node, [x.name], out, {"beta": 1.0})

    # -- concatenation, split, slice, layout transposes (issue 4) ---------------
    def _ir_axis(self, node, x: _Act, axis: int) -> int:
        """The IR (NHWC) axis of ONNX ``axis`` on ``x``; the batch axis is an error."""
        rank = len(self.tensors[x.name].shape)
        ax = axis % rank if -rank <= axis < rank else None
        ir_axis = None
        if x.layout == "NHWC" and ax is not None:
            ir_axis = {1: 3, 2: 1, 3: 2}.get(ax)
        elif x.layout == "NC" and ax == 1:
            if x.flat_from is not None and x.flat_from[0] * x.flat_from[1] > 1:
                raise UnsupportedOpError(
                    f"{node.op_type} '{node.name}' acts on a flattened feature map, whose element "
                    "order differs between NCHW and NHWC; apply it before the flatten")
            ir_axis = 1
        if ir_axis is None:
            raise UnsupportedOpError(
                f"{node.op_type} '{node.name}' along axis {axis} of a rank-{rank} tensor is not "
                "supported: only the channel, height or width axis of a feature map, or axis 1 "
                "of a 2-D tensor (never the batch axis)")
        return ir_axis

    def _op_Concat(self, node) -> None:
        """CONCATENATION; a Relu/Clip after it moves into its inputs' producers (exact:
        relu(cat(a, b)) = cat(relu(a), relu(b))), as TFLite's int8 concat has no activation."""
        xs = [self._act_in(node, i) for i in range(len(node.input))]
        if any(x.layout != xs[0].layout for x in xs):
            raise UnsupportedOpError(f"Concat '{node.name}' mixes feature maps and 2-D tensors")
        axis = self._ir_axis(node, xs[0], int(self._attrs(node).get("axis", 0)))
        for x in xs:
            self._ir_axis(node, x, int(self._attrs(node).get("axis", 0)))
        shapes = [self.tensors[x.name].shape for x in xs]
        for s in shapes[1:]:
            if s[:axis] + s[axis + 1:] != shapes[0][:axis] + shapes[0][axis + 1:]:
                raise UnsupportedOpError(f"Concat '{node.name}' joins shapes {shapes} that differ "
                                         "outside the concatenation axis")
        oshape = list(shapes[0])
        oshape[axis] = sum(s[axis] for s in shapes)
        out = self._add_act(node.output[0], tuple(oshape), xs[0].layout)
        self._emit("CONCATENATION", node, [x.name for x in xs], out, {"axis": axis})
        nxt = self._single_consumer(node.output[0])
        act = None
        if nxt is not None and nxt.op_type == "Relu":
            act = "RELU"
        elif nxt is not None and nxt.op_type == "Clip":
            act = {(0.0, 6.0): "RELU6", (0.0, float("inf")): "RELU"}.get(self._clip_bounds(nxt))
        if act is None:
            return
        producers = {n.outputs[0]: n for n in self.nodes}
        for idx, x in enumerate(xs):
            prod = producers.get(x.name)
            readers = {id(n) for n in self.consumers.get(node.input[idx], [])}
            ok = (prod is not None and prod.op in ("CONV_2D", "DEPTHWISE_CONV_2D",
                                                    "FULLY_CONNECTED", "ADD")
                  and readers == {id(node)} and node.input[idx] not in
                  {o.name for o in self.model.graph.output})
            if ok and prod.attrs.get("activation", "NONE") in ("NONE", act):
                continue
            raise UnsupportedOpError(
                f"{nxt.op_type} '{nxt.name}' after Concat '{node.name}': TFLite's concatenation "
                f"has no fused activation, and input '{node.input[idx]}' is not the sole output "
                "of a Conv, Gemm or Add it could move into; apply the activation before the concat")
        for x in xs:
            producers[x.name].attrs["activation"] = act
        self.fused.add(nxt.name)
        self._alias(nxt.output[0], out)

    def _emit_slice(self, node, x: _Act, onnx_out: str, axis: int, begin: int, size: int) -> None:
        shape = list(self.tensors[x.name].shape)
        if begin < 0 or size < 1 or begin + size > shape[axis]:
            raise UnsupportedOpError(f"{node.op_type} '{node.name}': slice [{begin}, "
                                     f"{begin + size}) is empty or leaves axis size {shape[axis]}")
        shape[axis] = size
        out = self._add_act(onnx_out, tuple(shape), x.layout)
        self._emit("SLICE", node, [x.name], out, {"axis": axis, "begin": begin, "size": size})

    def _op_Split(self, node) -> None:
        x = self._act_in(node)
        attrs = self._attrs(node)
        onnx_axis = int(attrs.get("axis", 0))
        axis = self._ir_axis(node, x, onnx_axis)
        dim = self.tensors[x.name].shape[axis]
        if len(node.input) > 1 and node.input[1]:
            sizes = [int(v) for v in self._const(node, 1).reshape(-1)]
        elif "split" in attrs:
            sizes = [int(v) for v in attrs["split"]]
        else:  # equal parts, the last one smaller (opset 18's num_outputs)
            part = -(-dim // len(node.output))
            sizes = [min(part, dim - k * part) for k in range(len(node.output))]
        if len(sizes) != len(node.output) or sum(sizes) != dim:
            raise UnsupportedOpError(f"Split '{node.name}': sizes {sizes} do not split axis "
                                     f"{onnx_axis} of size {dim} into {len(node.output)} outputs")
        begin = 0
        for out, size in zip(node.output, sizes, strict=True):
            if out:
                self._emit_slice(node, x, out, axis, begin, size)
            begin += size

    def _op_Slice(self, node) -> None:
        x = self._act_in(node)
        starts = [int(v) for v in self._const(node, 1).reshape(-1)]
        ends = [int(v) for v in self._const(node, 2).reshape(-1)]
        rank = len(self.tensors[x.name].shape)
        axes = ([int(v) for v in self._const(node, 3).reshape(-1)]
                if len(node.input) > 3 and node.input[3] else list(range(len(starts))))
        steps = ([int(v) for v in self._const(node, 4).reshape(-1)]
                 if len(node.input) > 4 and node.input[4] else [1] * len(starts))
        onnx_shape = self._shape(node.input[0])
        cut = [(a % rank, s, e, st) for a, s, e, st in zip(axes, starts, ends, steps, strict=True)
               if not (st == 1 and s == 0 and e >= onnx_shape[a % rank])]
        if len(cut) != 1 or cut[0][3] != 1:
            raise UnsupportedOpError(f"Slice '{node.name}' (axes {axes}, starts {starts}, ends "
                                     f"{ends}, steps {steps}): only a step-1 slice along one "
                                     "axis is supported")
        a, s, e, _ = cut[0]
        n = onnx_shape[a]
        s = max(0, min(n, s + n if s < 0 else s))
        e = max(0, min(n, e + n if e < 0 else e))
        self._emit_slice(node, x, node.output[0], self._ir_axis(node, x, a), s, e - s)

    def _op_Transpose(self, node) -> None:
        """A Transpose that only changes layout: identity, or NCHW -> NHWC right before a
        flatten (the importer's tensors are NHWC already, so it disappears)."""
        x = self._act_in(node)
        rank = len(self.tensors[x.name].shape)
        perm = [int(p) for p in self._attrs(node).get("perm", list(range(rank))[::-1])]
        if perm == list(range(rank)):
            self._alias(node.output[0], x)
            return
        reader = self._single_consumer(node.output[0])
        if x.layout == "NHWC" and perm == [0, 2, 3, 1] and reader is not None and \
                reader.op_type in ("Flatten", "Reshape"):
            self._alias(node.output[0], _Act(x.name, "NHWC_T"))
            return
        raise UnsupportedOpError(
            f"Transpose '{node.name}' with perm {perm} is not a layout change microfit can absorb "
            "(only the identity, or NCHW -> NHWC [0, 2, 3, 1] directly before a Flatten/Reshape)")


def _remove_dead(graph: Graph) -> None:
    """Drop nodes whose outputs nobody reads and tensors nobody references."""
    live = set(graph.outputs)
    kept = []
    for n in reversed(graph.nodes):
        if any(o in live for o in n.outputs):
            kept.append(n)
            live.update(i for i in n.inputs if i)
    graph.nodes = list(reversed(kept))
    used = set(graph.inputs) | set(graph.outputs)
    for n in graph.nodes:
        used.update(n.inputs)
        used.update(n.outputs)
    graph.tensors = {k: v for k, v in graph.tensors.items() if k in used}


def import_onnx(path_or_model) -> Graph:
    """Load a float ONNX model into the IR (NHWC, fused, folded)."""
    import onnx

    if isinstance(path_or_model, (str, Path)):
        path = Path(path_or_model)
        if not path.exists():
            raise ModelLoadError(f"ONNX file {path} does not exist")
        try:
            model = onnx.load(str(path))
        except Exception as exc:  # noqa: BLE001
            raise ModelLoadError(f"{path} is not a readable ONNX model: {exc}") from exc
    else:
        model = path_or_model
    graph = _Importer(model).run()
    graph.meta["source"] = "onnx"
    return graph


def nchw_to_ir(x: np.ndarray) -> np.ndarray:
    """Put a batch of NCHW inputs into the IR's NHWC layout (2-D inputs pass through)."""
    x = np.asarray(x)
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if x.ndim == 4 else x
