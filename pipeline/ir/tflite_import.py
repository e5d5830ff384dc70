""".tflite (int8) -> microfit's int8 IR, without TensorFlow or PyTorch.

Reads a flatbuffer written by TensorFlow's converter, by microfit's exporter
or by anything else that follows the schema, and maps it onto the IR one
operator at a time. The IR already uses TFLite's layouts and op names, so the
mapping is direct except for:

- **Padding.** SAME becomes the explicit pads TFLite computes; a PAD (or
  PADV2 padding with the zero point) whose only reader is a convolution is
  folded into that convolution's explicit pads, which is exact: a tap in the
  padding adds ``(zero_point - zero_point) * w = 0``. Any other such PAD is a
  standalone PAD node; PADV2 with another fill value is an error.
- **Boundaries.** A float model with a QUANTIZE after its input and a
  DEQUANTIZE before its output (TensorFlow's default) loses both: the IR's
  input and output are the int8 tensors, as in every microfit model.
- **FULLY_CONNECTED** on a tensor of rank other than 2 gets an explicit
  RESHAPE (TFLite flattens implicitly).

Operators outside the IR raise :class:`~microfit.errors.UnsupportedOpError`
naming the operator and its index in the subgraph.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..errors import ModelLoadError, UnsupportedOpError
from ..reference.ops import LUT_OUTPUT_QUANT, output_size, same_padding
from .graph import OPS, Graph, Node, QuantParams, Tensor
from .tflite_schema import FILE_IDENTIFIER, enum_names, schema

_NP_TYPES = {"INT8": np.int8, "INT32": np.int32, "FLOAT32": np.float32, "INT64": np.int64,
             "UINT8": np.uint8, "INT16": np.int16}
_ACTIVATIONS = {"NONE": "NONE", "RELU": "RELU", "RELU6": "RELU6"}
_MAX_NAME = 48


def _sane(name: str) -> str:
    s = re.sub(r"[^0-9A-Za-z_]", "_", name).strip("_")
    return s or "t"


class _Importer:
    def __init__(self, buf: bytes, source: str) -> None:
        self.s = schema()
        self.source = source
        if len(buf) < 8 or buf[4:8] != FILE_IDENTIFIER:
            raise ModelLoadError(f"{source} is not a .tflite flatbuffer (no 'TFL3' identifier)")
        try:
            self.model = self.s.ModelT.InitFromPackedBuf(buf, 0)
        except Exception as exc:  # noqa: BLE001 - a corrupt buffer raises many types
            raise ModelLoadError(f"{source}: cannot parse the flatbuffer: {exc}") from exc
        if not self.model.subgraphs:
            raise ModelLoadError(f"{source} has no subgraph")
        if len(self.model.subgraphs) > 1:
            raise UnsupportedOpError(f"{source} has {len(self.model.subgraphs)} subgraphs "
                                     "(control flow); microfit supports one")
        self.sub = self.model.subgraphs[0]
        self.op_names = enum_names(self.s.BuiltinOperator)
        self.type_names = enum_names(self.s.TensorType)
        self.act_names = enum_names(self.s.ActivationFunctionType)
        self.pad_names = enum_names(self.s.Padding)
        self.tensors: dict[str, Tensor] = {}
        self.nodes: list[Node] = []
        self.names: dict[int, str] = {}  # flatbuffer tensor index -> IR name
        self.alias: dict[int, int] = {}  # tensor index -> index it stands for (stripped ops)

    # -- tensors ---------------------------------------------------------------------
    def _name(self, idx: int) -> str:
        if idx in self.names:
            return self.names[idx]
        raw = self.sub.tensors[idx].name
        raw = raw.decode() if isinstance(raw, bytes) else (raw or f"t{idx}")
        # The converter names a tensor after every op fused into it, joined by
        # ';': the first one says enough. Names already short stay as they are
        # (so export -> import keeps them); the length test leaves room for
        # the uniqueness suffix.
        base = _sane(raw.split(";")[0])
        if len(base) > _MAX_NAME + 8:
            base = _sane(base[-_MAX_NAME:])
        name, k = base, 1
        used = set(self.names.values())
        while name in used:
            k += 1
            name = f"{base}_{k}"
        self.names[idx] = name
        return name

    def _type(self, idx: int) -> str:
        return self.type_names.get(self.sub.tensors[idx].type, str(self.sub.tensors[idx].type))

    def _data(self, idx: int) -> np.ndarray | None:
        t = self.sub.tensors[idx]
        buf = self.model.buffers[t.buffer] if t.buffer < len(self.model.buffers) else None
        if buf is None or buf.data is None or len(buf.data) == 0:
            if buf is not None and getattr(buf, "size", 0):
                raise UnsupportedOpError(f"tensor '{self._name(idx)}' keeps its data outside the "
                                         "flatbuffer (an offset buffer); re-save the model whole")
            return None
        dtype = _NP_TYPES.get(self._type(idx))
        if dtype is None:
            raise UnsupportedOpError(f"tensor '{self._name(idx)}' has type {self._type(idx)}")
        shape = tuple(int(d) for d in (t.shape if t.shape is not None else []))
        raw = np.asarray(buf.data, dtype=np.uint8).tobytes()
        return np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype).reshape(shape)

    def _quant(self, idx: int) -> QuantParams | None:
        q = self.sub.tensors[idx].quantization
        if q is None or q.scale is None or len(q.scale) == 0:
            return None
        scale = np.asarray(q.scale, dtype=np.float32)
        zp = np.asarray(q.zeroPoint if q.zeroPoint is not None else np.zeros(len(scale)),
                        dtype=np.int64)
        if zp.size == 1 and scale.size > 1:
            zp = np.full(scale.size, int(zp[0]))
        axis = int(q.quantizedDimension) if scale.size > 1 else None
        return QuantParams(scale, zp, axis)

    def tensor(self, idx: int) -> str:
        idx = self.alias.get(idx, idx)
        name = self._name(idx)
        if name not in self.tensors:
            t = self.sub.tensors[idx]
            shape = tuple(int(d) for d in (t.shape if t.shape is not None else []))
            typ = self._type(idx)
            data = self._data(idx)
            dtype = {"INT8": "int8", "INT32": "int32", "FLOAT32": "float32"}.get(typ)
            if dtype is None:
                raise UnsupportedOpError(f"tensor '{name}' has type {typ}; microfit imports int8 "
                                         "models (int8 activations and weights, int32 biases)")
            self.tensors[name] = Tensor(name, shape, dtype, data, self._quant(idx))
        return name

    def _activation(self, tensor: str, op_index: int, op: str) -> None:
        t = self.tensors[tensor]
        if t.dtype != "int8" or t.quant is None or t.quant.per_channel:
            raise UnsupportedOpError(f"operator {op_index} ({op}): activation '{tensor}' must be "
                                     f"int8 with per-tensor quantization, got {t.dtype}")

    # -- operators --------------------------------------------------------------------
    def run(self) -> Graph:
        ops = list(self.sub.operators or [])
        codes = self.model.operatorCodes or []
        opnames = []
        for i, o in enumerate(ops):
            c = codes[o.opcodeIndex]
            code = max(int(c.builtinCode), int(c.deprecatedBuiltinCode))
            if c.customCode:
                raise UnsupportedOpError(f"operator {i} is the custom op '{c.customCode.decode()}'"
                                         "; microfit supports builtin ops only")
            opnames.append(self.op_names.get(code, f"builtin {code}"))
        consumers: dict[int, list[int]] = {}
        for i, o in enumerate(ops):
            for t in o.inputs if o.inputs is not None else []:
                consumers.setdefault(int(t), []).append(i)
        inputs = [int(i) for i in self.sub.inputs]
        outputs = [int(i) for i in self.sub.outputs]
        skip: set[int] = set()
        # Strip QUANTIZE right after a float input and DEQUANTIZE right before a float output.
        for i, (o, name) in enumerate(zip(ops, opnames, strict=True)):
            src, dst = int(o.inputs[0]), int(o.outputs[0])
            if name == "QUANTIZE" and src in inputs and self._type(src) == "FLOAT32":
                inputs[inputs.index(src)] = dst
                skip.add(i)
            elif name == "DEQUANTIZE" and dst in outputs and self._type(dst) == "FLOAT32":
                outputs[outputs.index(dst)] = src
                skip.add(i)
        pending_pad: dict[int, tuple[int, list[int]]] = {}  # PAD output -> (PAD input, pads)
        for i, (o, name) in enumerate(zip(ops, opnames, strict=True)):
            if i in skip:
                continue
            if name in ("PAD", "PADV2"):
                src, dst, pads = self._pad(o, i, name)
                readers = consumers.get(dst, [])
                if (dst not in outputs and len(readers) == 1 and pads.shape == (4, 2)
                        and not pads[3].any()
                        and opnames[readers[0]] in ("CONV_2D", "DEPTHWISE_CONV_2D")
                        and int(ops[readers[0]].inputs[0]) == dst):
                    pending_pad[dst] = (src, [int(pads[1][0]), int(pads[2][0]),
                                              int(pads[1][1]), int(pads[2][1])])
                    continue
                self._standalone_pad(src, dst, pads, i, name)
                continue
            handler = getattr(self, f"_op_{name}", None)
            if handler is None:
                raise UnsupportedOpError(
                    f"operator {i} is {name}, which microfit does not support; supported: "
                    f"{', '.join(OPS)} (and PADV2 filling with the zero point, QUANTIZE/DEQUANTIZE at "
                    "the float boundaries)")
            handler(o, i, pending_pad)
        graph = Graph(self.tensors, self.nodes, [self.tensor(i) for i in inputs],
                      [self.tensor(o) for o in outputs],
                      {"source": "tflite", "rounding": "double"})
        # Where each activation lives in the file: lets the oracle tests run the
        # original flatbuffer (not a re-export) with every layer exposed.
        graph.meta["tflite_tensor_index"] = {
            name: idx for idx, name in sorted(self.names.items())
            if name in self.tensors and not self.tensors[name].is_const}
        for name in graph.inputs + graph.outputs:
            self._activation(name, -1, "graph boundary")
        return graph

    def _pad(self, o, i: int, name: str) -> tuple[int, int, np.ndarray]:
        """(input, output, paddings [rank, 2]) of a PAD / PADV2 that fills with the zero point."""
        src, dst = int(o.inputs[0]), int(o.outputs[0])
        pads = self._data(int(o.inputs[1]))
        rank = len(self.sub.tensors[src].shape)
        if pads is None or pads.shape != (rank, 2):
            raise UnsupportedOpError(f"operator {i} ({name}): paddings must be a constant "
                                     f"[{rank}, 2] tensor")
        pads = pads.astype(int)
        if pads[0].any() or (pads < 0).any():
            raise UnsupportedOpError(f"operator {i} ({name}): only non-negative padding of the "
                                     f"non-batch axes is supported, got {pads.tolist()}")
        qi, qo = self._quant(src), self._quant(dst)
        if qi is None or qo is None or qi.to_json() != qo.to_json():
            raise UnsupportedOpError(f"operator {i} ({name}) changes the quantization")
        if name == "PADV2" and len(o.inputs) > 2 and int(o.inputs[2]) >= 0:
            value = self._data(int(o.inputs[2]))
            if value is None or int(np.ravel(value)[0]) != int(qi.zero_point[0]):
                raise UnsupportedOpError(f"operator {i} (PADV2) pads with a value other than the "
                                         "zero point (a real value other than 0); microfit's PAD "
                                         "fills with zeros")
        return src, dst, pads

    def _standalone_pad(self, src: int, dst: int, pads: np.ndarray, i: int, name: str) -> None:
        x, y = self.tensor(src), self.tensor(dst)
        self._activation(x, i, name)
        self._activation(y, i, name)
        want = tuple(int(d + b + a) for d, (b, a) in zip(self.tensors[x].shape, pads, strict=True))
        if want != self.tensors[y].shape:
            raise ModelLoadError(f"operator {i} ({name}): output '{y}' is "
                                 f"{self.tensors[y].shape}, padding gives {want}")
        self._emit("PAD", [x], [y], {"paddings": pads.tolist()})

    def _lut_op(self, o, i: int, op: str) -> None:
        x = self.tensor(int(o.inputs[0]))
        y = self.tensor(int(o.outputs[0]))
        self._activation(x, i, op)
        self._activation(y, i, op)
        scale, zp = LUT_OUTPUT_QUANT[op]
        q = self.tensors[y].quant
        if abs(float(q.scale[0]) - scale) > 1e-3 * scale or int(q.zero_point[0]) != zp:
            raise UnsupportedOpError(
                f"operator {i} ({op}): output '{y}' has scale {float(q.scale[0])}, zero point "
                f"{int(q.zero_point[0])}; TFLite's int8 {op} needs {scale}, {zp}")
        self._emit(op, [x], [y], {})

    def _op_LOGISTIC(self, o, i, pending_pad) -> None:
        self._lut_op(o, i, "LOGISTIC")

    def _op_TANH(self, o, i, pending_pad) -> None:
        self._lut_op(o, i, "TANH")

    def _fused(self, options, i: int, op: str) -> str:
        act = self.act_names.get(int(getattr(options, "fusedActivationFunction", 0)), "?")
        if act not in _ACTIVATIONS:
            raise UnsupportedOpError(f"operator {i} ({op}) has fused activation {act}; "
                                     "supported: NONE, RELU, RELU6")
        return _ACTIVATIONS[act]

    def _emit(self, op: str, ins: list[str], outs: list[str], attrs: dict) -> None:
        self.nodes.append(Node(f"{op.lower()}_{len(self.nodes)}", op, ins, outs, attrs))

    def _bias(self, o, i: int, x: str, w: str, cout: int) -> str:
        if len(o.inputs) > 2 and int(o.inputs[2]) >= 0:
            b = self.tensor(int(o.inputs[2]))
            if self.tensors[b].dtype != "int32":
                raise UnsupportedOpError(f"operator {i}: bias '{b}' is {self.tensors[b].dtype}, "
                                         "microfit needs int32 biases")
            return b
        # No bias: an explicit zero bias keeps every kernel's signature one shape.
        name = f"{w}_zero_bias"
        wq = self.tensors[w].quant
        scale = (np.float32(self.tensors[x].quant.scale[0]) * wq.scale.astype(np.float64))
        self.tensors[name] = Tensor(name, (cout,), "int32", np.zeros(cout, np.int32),
                                    QuantParams(scale.astype(np.float32),
                                                np.zeros(scale.size, np.int64),
                                                0 if scale.size > 1 else None))
        return name

    def _weights(self, idx: int, i: int, op: str) -> str:
        w = self.tensor(idx)
        t = self.tensors[w]
        if t.data is None or t.dtype != "int8" or t.quant is None:
            raise UnsupportedOpError(f"operator {i} ({op}): weights '{w}' must be constant int8 "
                                     "(run-time weights or float weights are not supported)")
        if np.any(t.quant.zero_point != 0):
            raise UnsupportedOpError(f"operator {i} ({op}): weights '{w}' are asymmetric "
                                     "(zero point != 0); TFLite's int8 scheme needs symmetric")
        return w

    def _conv_like(self, o, i: int, pending_pad: dict, op: str) -> None:
        opts = o.builtinOptions
        x_idx = int(o.inputs[0])
        extra = [0, 0, 0, 0]
        if x_idx in pending_pad:
            x_idx, extra = pending_pad.pop(x_idx)
        x = self.tensor(x_idx)
        self._activation(x, i, op)
        w = self._weights(int(o.inputs[1]), i, op)
        y = self.tensor(int(o.outputs[0]))
        self._activation(y, i, op)
        wshape = self.tensors[w].shape
        cout = wshape[0] if op == "CONV_2D" else wshape[3]
        b = self._bias(o, i, x, w, cout)
        stride = [int(opts.strideH), int(opts.strideW)]
        dil = [int(opts.dilationHFactor), int(opts.dilationWFactor)]
        _, h, wd, cin = self.tensors[x].shape
        pads = self._explicit_pads(opts.padding, (h + extra[0] + extra[2], wd + extra[1] + extra[3]),
                                   wshape[1:3], stride, dil, i, op)
        pads = [p + e for p, e in zip(pads, extra, strict=True)]
        attrs = {"stride": stride, "dilation": dil, "padding": pads,
                 "activation": self._fused(opts, i, op)}
        if op == "DEPTHWISE_CONV_2D":
            if cout % cin:
                raise UnsupportedOpError(f"operator {i} (DEPTHWISE_CONV_2D): {cout} output "
                                         f"channels are not a multiple of {cin} input channels")
            attrs["depth_multiplier"] = cout // cin
        self._check_out_hw(x, y, wshape[1:3], stride, dil, pads, i, op)
        self._emit(op, [x, w, b], [y], attrs)

    def _explicit_pads(self, padding: int, hw, k, stride, dil, i: int, op: str) -> list[int]:
        mode = self.pad_names.get(int(padding), "?")
        if mode == "VALID":
            return [0, 0, 0, 0]
        if mode == "SAME":
            th, bh = same_padding(int(hw[0]), int(k[0]), stride[0], dil[0])
            tw, bw = same_padding(int(hw[1]), int(k[1]), stride[1], dil[1])
            return [th, tw, bh, bw]
        raise UnsupportedOpError(f"operator {i} ({op}) has padding {mode}")

    def _check_out_hw(self, x: str, y: str, k, stride, dil, pads, i: int, op: str) -> None:
        _, h, w, _ = self.tensors[x].shape
        want = (output_size(h, int(k[0]), stride[0], dil[0], pads[0], pads[2]),
                output_size(w, int(k[1]), stride[1], dil[1], pads[1], pads[3]))
        got = tuple(self.tensors[y].shape[1:3])
        if got != want:
            raise ModelLoadError(f"operator {i} ({op}): output '{y}' is {got} but the window "
                                 f"arithmetic gives {want}")

    def _op_CONV_2D(self, o, i, pending_pad) -> None:
        self._conv_like(o, i, pending_pad, "CONV_2D")

    def _op_DEPTHWISE_CONV_2D(self, o, i, pending_pad) -> None:
        self._conv_like(o, i, pending_pad, "DEPTHWISE_CONV_2D")

    def _op_FULLY_CONNECTED(self, o, i, pending_pad) -> None:
        opts = o.builtinOptions
        if opts is not None and int(opts.weightsFormat) != 0:
            raise UnsupportedOpError(f"operator {i} (FULLY_CONNECTED) uses shuffled weights")
        if opts is not None and opts.keepNumDims:
            raise UnsupportedOpError(f"operator {i} (FULLY_CONNECTED) keeps its input's dims")
        x = self.tensor(int(o.inputs[0]))
        self._activation(x, i, "FULLY_CONNECTED")
        w = self._weights(int(o.inputs[1]), i, "FULLY_CONNECTED")
        y = self.tensor(int(o.outputs[0]))
        self._activation(y, i, "FULLY_CONNECTED")
        cout, cin = self.tensors[w].shape
        if len(self.tensors[x].shape) != 2:
            flat = f"{x}_flat"
            xt = self.tensors[x]
            self.tensors[flat] = Tensor(flat, (xt.shape[0], xt.size // xt.shape[0]), "int8", None,
                                        xt.quant)
            self._emit("RESHAPE", [x], [flat], {"new_shape": list(self.tensors[flat].shape)})
            x = flat
        if self.tensors[x].shape[1] != cin:
            raise ModelLoadError(f"operator {i} (FULLY_CONNECTED): input has "
                                 f"{self.tensors[x].shape[1]} features, weights expect {cin}")
        b = self._bias(o, i, x, w, cout)
        self._emit("FULLY_CONNECTED", [x, w, b], [y],
                   {"activation": self._fused(opts, i, "FULLY_CONNECTED") if opts else "NONE"})

    def _pool(self, o, i, op: str) -> None:
        opts = o.builtinOptions
        x = self.tensor(int(o.inputs[0]))
        y = self.tensor(int(o.outputs[0]))
        self._activation(x, i, op)
        self._activation(y, i, op)
        if self.tensors[x].quant.to_json() != self.tensors[y].quant.to_json():
            raise UnsupportedOpError(f"operator {i} ({op}) rescales (input and output "
                                     "quantization differ); TFLite's int8 pools do not")
        k = [int(opts.filterHeight), int(opts.filterWidth)]
        stride = [int(opts.strideH), int(opts.strideW)]
        _, h, w, _ = self.tensors[x].shape
        pads = self._explicit_pads(opts.padding, (h, w), k, stride, [1, 1], i, op)
        self._check_out_hw(x, y, k, stride, [1, 1], pads, i, op)
        self._emit(op, [x], [y], {"filter": k, "stride": stride, "padding": pads,
                                  "activation": self._fused(opts, i, op)})

    def _op_MAX_POOL_2D(self, o, i, pending_pad) -> None:
        self._pool(o, i, "MAX_POOL_2D")

    def _op_AVERAGE_POOL_2D(self, o, i, pending_pad) -> None:
        self._pool(o, i, "AVERAGE_POOL_2D")

    def _op_RESHAPE(self, o, i, pending_pad) -> None:
        x = self.tensor(int(o.inputs[0]))
        y = self.tensor(int(o.outputs[0]))
        self._activation(x, i, "RESHAPE")
        self._activation(y, i, "RESHAPE")
        if self.tensors[x].size != self.tensors[y].size:
            raise ModelLoadError(f"operator {i} (RESHAPE) changes the element count")
        if self.tensors[x].quant.to_json() != self.tensors[y].quant.to_json():
            raise UnsupportedOpError(f"operator {i} (RESHAPE) changes the quantization")
        self._emit("RESHAPE", [x], [y], {"new_shape": list(self.tensors[y].shape)})

    def _op_ADD(self, o, i, pending_pad) -> None:
        a, b = self.tensor(int(o.inputs[0])), self.tensor(int(o.inputs[1]))
        y = self.tensor(int(o.outputs[0]))
        for t in (a, b, y):
            if self.tensors[t].is_const:
                raise UnsupportedOpError(f"operator {i} (ADD) adds the constant '{t}'; only the "
                                         "sum of two activations is supported")
            self._activation(t, i, "ADD")
        if not (self.tensors[a].shape == self.tensors[b].shape == self.tensors[y].shape):
            raise UnsupportedOpError(f"operator {i} (ADD) broadcasts {self.tensors[a].shape} with "
                                     f"{self.tensors[b].shape}; only equal shapes are supported")
        self._emit("ADD", [a, b], [y], {"activation": self._fused(o.builtinOptions, i, "ADD")})

    def _op_SOFTMAX(self, o, i, pending_pad) -> None:
        x = self.tensor(int(o.inputs[0]))
        y = self.tensor(int(o.outputs[0]))
        self._activation(x, i, "SOFTMAX")
        self._activation(y, i, "SOFTMAX")
        beta = float(o.builtinOptions.beta) if o.builtinOptions is not None else 1.0
        self._emit("SOFTMAX", [x], [y], {"beta": beta})

    # -- concatenation and slicing (issue 4) -----------------------------------------
    def _same_quant(self, names: list[str], i: int, op: str) -> None:
        first = self.tensors[names[0]].quant.to_json()
        for t in names[1:]:
            if self.tensors[t].quant.to_json() != first:
                raise UnsupportedOpError(
                    f"operator {i} ({op}): '{t}' is quantized differently from '{names[0]}'; "
                    "TFLite's int8 kernels need one scale and zero point for all inputs and "
                    "outputs of this op (its converter arranges that)")

    def _axis(self, axis: int, rank: int, i: int, op: str) -> int:
        if not -rank <= axis < rank or axis % rank == 0:
            raise UnsupportedOpError(f"operator {i} ({op}) along axis {axis} of a rank-{rank} "
                                     "tensor; the batch axis is not supported")
        return axis % rank

    def _op_CONCATENATION(self, o, i, pending_pad) -> None:
        xs = [self.tensor(int(t)) for t in o.inputs]
        y = self.tensor(int(o.outputs[0]))
        for t in xs + [y]:
            if self.tensors[t].is_const:
                raise UnsupportedOpError(f"operator {i} (CONCATENATION) joins the constant '{t}'")
            self._activation(t, i, "CONCATENATION")
        self._same_quant(xs + [y], i, "CONCATENATION")
        opts = o.builtinOptions
        if opts is not None and self._fused(opts, i, "CONCATENATION") != "NONE":
            raise UnsupportedOpError(f"operator {i} (CONCATENATION) has a fused activation, "
                                     "which TFLite's int8 kernels reject")
        axis = self._axis(int(opts.axis) if opts is not None else 0,
                          len(self.tensors[y].shape), i, "CONCATENATION")
        shapes = [self.tensors[t].shape for t in xs]
        want = list(shapes[0])
        want[axis] = sum(s[axis] for s in shapes)
        if tuple(want) != self.tensors[y].shape or any(
                s[:axis] + s[axis + 1:] != shapes[0][:axis] + shapes[0][axis + 1:] for s in shapes):
            raise ModelLoadError(f"operator {i} (CONCATENATION): shapes {shapes} do not join "
                                 f"into {self.tensors[y].shape} along axis {axis}")
        self._emit("CONCATENATION", xs, [y], {"axis": axis})

    def _slices(self, x: str, outs: list[int], axis: int, sizes: list[int], i: int, op: str) -> None:
        shape = self.tensors[x].shape
        if sum(sizes) != shape[axis] or min(sizes) < 1:
            raise ModelLoadError(f"operator {i} ({op}): sizes {sizes} do not split axis {axis} "
                                 f"of {shape}")
        begin = 0
        for t, size in zip(outs, sizes, strict=True):
            y = self.tensor(t)
            self._activation(y, i, op)
            self._same_quant([x, y], i, op)
            self._emit("SLICE", [x], [y], {"axis": axis, "begin": begin, "size": size})
            begin += size

    def _const_ints(self, idx: int, i: int, op: str) -> list[int]:
        data = self._data(idx)
        if data is None:
            raise UnsupportedOpError(f"operator {i} ({op}): its axis and sizes must be constants")
        return [int(v) for v in np.ravel(data)]

    def _op_SPLIT(self, o, i, pending_pad) -> None:
        x = self.tensor(int(o.inputs[1]))
        self._activation(x, i, "SPLIT")
        shape = self.tensors[x].shape
        axis = self._axis(self._const_ints(int(o.inputs[0]), i, "SPLIT")[0], len(shape), i, "SPLIT")
        n = len(o.outputs)
        if shape[axis] % n:
            raise ModelLoadError(f"operator {i} (SPLIT): {shape[axis]} is not divisible by {n}")
        self._slices(x, [int(t) for t in o.outputs], axis, [shape[axis] // n] * n, i, "SPLIT")

    def _op_SPLIT_V(self, o, i, pending_pad) -> None:
        x = self.tensor(int(o.inputs[0]))
        self._activation(x, i, "SPLIT_V")
        shape = self.tensors[x].shape
        sizes = self._const_ints(int(o.inputs[1]), i, "SPLIT_V")
        axis = self._axis(self._const_ints(int(o.inputs[2]), i, "SPLIT_V")[0], len(shape), i,
                          "SPLIT_V")
        if sizes.count(-1) == 1:
            sizes[sizes.index(-1)] = shape[axis] - (sum(sizes) + 1)
        self._slices(x, [int(t) for t in o.outputs], axis, sizes, i, "SPLIT_V")

    def _op_SLICE(self, o, i, pending_pad) -> None:
        x = self.tensor(int(o.inputs[0]))
        y = self.tensor(int(o.outputs[0]))
        self._activation(x, i, "SLICE")
        self._activation(y, i, "SLICE")
        self._same_quant([x, y], i, "SLICE")
        shape = self.tensors[x].shape
        begin = self._const_ints(int(o.inputs[1]), i, "SLICE")
        size = self._const_ints(int(o.inputs[2]), i, "SLICE")
        size = [shape[d] - begin[d] if s == -1 else s for d, s in enumerate(size)]
        cut = [d for d in range(len(shape)) if (begin[d], size[d]) != (0, shape[d])]
        if len(cut) != 1 or cut[0] == 0:
            raise UnsupportedOpError(f"operator {i} (SLICE) with begin {begin} and size {size}: "
                                     "only a slice along one non-batch axis is supported")
        d = cut[0]
        if begin[d] < 0 or begin[d] + size[d] > shape[d] or size[d] < 1:
            raise ModelLoadError(f"operator {i} (SLICE): [{begin[d]}, {begin[d] + size[d]}) "
                                 f"leaves axis {d} of {shape}")
        self._emit("SLICE", [x], [y], {"axis": d, "begin": begin[d], "size": size[d]})


def import_tflite(path_or_bytes: str | Path | bytes) -> Graph:
    """Load an int8 .tflite model (file path or its bytes) into microfit's int8 IR."""
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        buf, source = bytes(path_or_bytes), "<bytes>"
    else:
        path = Path(path_or_bytes)
        if not path.exists():
            raise ModelLoadError(f".tflite file {path} does not exist")
        buf, source = path.read_bytes(), str(path)
    return _Importer(buf, source).run()
