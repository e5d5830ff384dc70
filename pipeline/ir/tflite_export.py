"""int8 IR -> .tflite flatbuffer, written with the schema's object API (no TensorFlow).

The IR already speaks TFLite (op names, NHWC, OHWI / [1, KH, KW, C*M] weights,
float32 scales, per-channel weight quantization with its axis), so most of the
work is bookkeeping: one flatbuffer tensor per IR tensor, one buffer per
constant, one operator per node. The model takes int8 and returns int8 (no
QUANTIZE / DEQUANTIZE ops), which is what microfit's generated C does too.

Two things do not map one to one:

- **Padding.** The IR stores explicit ``(top, left, bottom, right)`` pads;
  TFLite only knows SAME and VALID. Pads that equal TFLite's SAME (or are all
  zero, VALID) are written as such. Other pads on a convolution become an
  explicit int8 PAD op (padding with the input zero point, which is exactly a
  skipped tap) before a VALID convolution. A pooling window cannot be padded
  that way (a padded max or mean counts the padding), so such a pool is an
  :class:`~microfit.errors.UnsupportedOpError`.
- **RESHAPE** gets its target shape both as an int32 shape tensor (second
  input, what the converter writes) and in its options.

``outputs`` lets a caller expose intermediate tensors as extra model outputs:
the layer-by-layer oracle tests use it to compare every layer's bytes with
TFLite Micro and LiteRT.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import UnsupportedOpError
from ..reference.ops import same_padding
from .graph import Graph, Node, QuantParams, Tensor
from .tflite_schema import FILE_IDENTIFIER, SCHEMA_VERSION, schema

#: Lowest operator version that accepts int8 tensors (what TFLite's converter
#: writes for these ops); interpreters pick kernels by (op, version).
_OP_VERSIONS = {
    "CONV_2D": 3,
    "DEPTHWISE_CONV_2D": 3,
    "FULLY_CONNECTED": 4,
    "MAX_POOL_2D": 2,
    "AVERAGE_POOL_2D": 2,
    "RESHAPE": 1,
    "ADD": 2,
    "SOFTMAX": 2,
    "PAD": 2,
    "LOGISTIC": 2,
    "TANH": 2,
    "CONCATENATION": 2,
    "SLICE": 2,
}

_DTYPES = {"int8": "INT8", "int32": "INT32", "float32": "FLOAT32", "int64": "INT64"}

# flatbuffers aligns byte vectors to 1; TFLite Micro reads int32 biases in
# place, and its own tooling aligns buffers to 16 bytes, so do the same.
_BUFFER_ALIGNMENT = 16


def tflite_padding(in_hw: Sequence[int], kernel: Sequence[int], stride: Sequence[int],
                   dilation: Sequence[int], pads: Sequence[int]) -> str | None:
    """"VALID", "SAME" or None (neither) for explicit IR pads (top, left, bottom, right)."""
    top, left, bottom, right = (int(p) for p in pads)
    if top == left == bottom == right == 0:
        return "VALID"
    same_h = same_padding(int(in_hw[0]), int(kernel[0]), int(stride[0]), int(dilation[0]))
    same_w = same_padding(int(in_hw[1]), int(kernel[1]), int(stride[1]), int(dilation[1]))
    if (top, bottom) == same_h and (left, right) == same_w:
        return "SAME"
    return None


class _Writer:
    """Accumulates flatbuffer tables for one subgraph."""

    def __init__(self, graph: Graph) -> None:
        self.s = schema()
        self.g = graph
        self.tensors: list = []
        self.index: dict[str, int] = {}
        self.buffers: list = [self.s.BufferT()]  # buffer 0: the empty sentinel
        self.opcodes: list = []
        self.opcode_index: dict[str, int] = {}
        self.operators: list = []

    # -- tensors ---------------------------------------------------------------
    def _quant(self, q: QuantParams | None):
        if q is None:
            return None
        qp = self.s.QuantizationParametersT()
        qp.scale = [float(v) for v in q.scale.astype(np.float32)]
        qp.zeroPoint = [int(v) for v in q.zero_point]
        qp.quantizedDimension = int(q.axis or 0)
        return qp

    def _buffer(self, data: np.ndarray | None) -> int:
        if data is None:
            return 0
        b = self.s.BufferT()
        b.data = np.frombuffer(np.ascontiguousarray(data).astype(data.dtype.newbyteorder("<"))
                               .tobytes(), dtype=np.uint8)
        self.buffers.append(b)
        return len(self.buffers) - 1

    def add_tensor(self, name: str, shape: Sequence[int], dtype: str, data: np.ndarray | None,
                   quant: QuantParams | None) -> int:
        if name in self.index:
            return self.index[name]
        if dtype not in _DTYPES:
            raise UnsupportedOpError(f".tflite export: tensor '{name}' has dtype {dtype}")
        t = self.s.TensorT()
        t.name = name
        t.shape = np.array(shape, dtype=np.int32)
        t.type = getattr(self.s.TensorType, _DTYPES[dtype])
        t.buffer = self._buffer(data)
        t.quantization = self._quant(quant)
        self.tensors.append(t)
        self.index[name] = len(self.tensors) - 1
        return self.index[name]

    def aux_name(self, base: str) -> str:
        """A name for an exporter-made tensor that no IR tensor already uses."""
        name, k = base, 1
        while name in self.g.tensors or name in self.index:
            k += 1
            name = f"{base}_{k}"
        return name

    def ir_tensor(self, name: str) -> int:
        t: Tensor = self.g.tensors[name]
        data = t.data.astype(t.dtype) if t.data is not None else None
        return self.add_tensor(name, t.shape, t.dtype, data, t.quant)

    # -- operators -------------------------------------------------------------
    def _opcode(self, op: str) -> int:
        if op not in self.opcode_index:
            code = self.s.OperatorCodeT()
            builtin = getattr(self.s.BuiltinOperator, op)
            code.builtinCode = builtin
            # Codes above 127 live only in builtinCode; the old int8 field caps there.
            code.deprecatedBuiltinCode = min(builtin, 127)
            code.version = _OP_VERSIONS[op]
            self.opcodes.append(code)
            self.opcode_index[op] = len(self.opcodes) - 1
        return self.opcode_index[op]

    def add_operator(self, op: str, inputs: list[int], outputs: list[int],
                     options_type: str | None = None, options=None) -> None:
        o = self.s.OperatorT()
        o.opcodeIndex = self._opcode(op)
        o.inputs = np.array(inputs, dtype=np.int32)
        o.outputs = np.array(outputs, dtype=np.int32)
        if options_type is not None:
            o.builtinOptionsType = getattr(self.s.BuiltinOptions, options_type)
            o.builtinOptions = options
        self.operators.append(o)

    def _activation(self, node: Node) -> int:
        act = node.attrs.get("activation", "NONE")
        return getattr(self.s.ActivationFunctionType, {"NONE": "NONE", "RELU": "RELU",
                                                        "RELU6": "RELU6"}[act])

    def _padding(self, name: str) -> int:
        return getattr(self.s.Padding, name)

    # -- per op ----------------------------------------------------------------
    def node(self, node: Node) -> None:
        handler = getattr(self, f"_op_{node.op}", None)
        if handler is None:
            raise UnsupportedOpError(f".tflite export: op {node.op} ('{node.name}') has no "
                                     "TFLite mapping yet")
        handler(node)

    def _conv_input(self, node: Node, kernel: Sequence[int]) -> tuple[int, str]:
        """The conv's input tensor index and padding, inserting a PAD op when needed."""
        a = node.attrs
        x = self.g.tensors[node.inputs[0]]
        pads = [int(p) for p in a["padding"]]
        mode = tflite_padding(x.shape[1:3], kernel, a["stride"], a["dilation"], pads)
        xi = self.ir_tensor(x.name)
        if mode is not None:
            return xi, mode
        top, left, bottom, right = pads
        padded_shape = (x.shape[0], x.shape[1] + top + bottom, x.shape[2] + left + right,
                        x.shape[3])
        paddings = np.array([[0, 0], [top, bottom], [left, right], [0, 0]], dtype=np.int32)
        # Auxiliary tensors are named after the node's output tensor (the only
        # name a .tflite keeps), so export -> import -> export is byte-identical.
        out = node.outputs[0]
        pi = self.add_tensor(self.aux_name(f"{out}_paddings"), (4, 2), "int32", paddings, None)
        yi = self.add_tensor(self.aux_name(f"{out}_padded"), padded_shape, "int8", None, x.quant)
        self.add_operator("PAD", [xi, pi], [yi], "PadOptions", self.s.PadOptionsT())
        return yi, "VALID"

    def _op_CONV_2D(self, node: Node) -> None:
        w = self.g.tensors[node.inputs[1]]
        xi, pad = self._conv_input(node, w.shape[1:3])
        o = self.s.Conv2DOptionsT()
        o.padding = self._padding(pad)
        o.strideH, o.strideW = (int(v) for v in node.attrs["stride"])
        o.dilationHFactor, o.dilationWFactor = (int(v) for v in node.attrs["dilation"])
        o.fusedActivationFunction = self._activation(node)
        self.add_operator("CONV_2D", [xi, self.ir_tensor(w.name), self.ir_tensor(node.inputs[2])],
                          [self.ir_tensor(node.outputs[0])], "Conv2DOptions", o)

    def _op_DEPTHWISE_CONV_2D(self, node: Node) -> None:
        w = self.g.tensors[node.inputs[1]]
        xi, pad = self._conv_input(node, w.shape[1:3])
        o = self.s.DepthwiseConv2DOptionsT()
        o.padding = self._padding(pad)
        o.strideH, o.strideW = (int(v) for v in node.attrs["stride"])
        o.dilationHFactor, o.dilationWFactor = (int(v) for v in node.attrs["dilation"])
        o.depthMultiplier = int(node.attrs.get("depth_multiplier", 1))
        o.fusedActivationFunction = self._activation(node)
        self.add_operator("DEPTHWISE_CONV_2D",
                          [xi, self.ir_tensor(w.name), self.ir_tensor(node.inputs[2])],
                          [self.ir_tensor(node.outputs[0])], "DepthwiseConv2DOptions", o)

    def _op_FULLY_CONNECTED(self, node: Node) -> None:
        o = self.s.FullyConnectedOptionsT()
        o.fusedActivationFunction = self._activation(node)
        o.keepNumDims = False
        self.add_operator("FULLY_CONNECTED", [self.ir_tensor(i) for i in node.inputs[:3]],
                          [self.ir_tensor(node.outputs[0])], "FullyConnectedOptions", o)

    def _pool(self, node: Node, op: str) -> None:
        a = node.attrs
        x = self.g.tensors[node.inputs[0]]
        pad = tflite_padding(x.shape[1:3], a["filter"], a["stride"], (1, 1), a["padding"])
        if pad is None:
            raise UnsupportedOpError(
                f".tflite export: {op} '{node.name}' has padding {list(a['padding'])}, which is "
                "neither TFLite's SAME nor VALID; a pool cannot take an explicit PAD (the padding "
                "would count in the max or mean). Change the model's pooling padding.")
        o = self.s.Pool2DOptionsT()
        o.padding = self._padding(pad)
        o.strideH, o.strideW = (int(v) for v in a["stride"])
        o.filterHeight, o.filterWidth = (int(v) for v in a["filter"])
        o.fusedActivationFunction = self._activation(node)
        self.add_operator(op, [self.ir_tensor(x.name)], [self.ir_tensor(node.outputs[0])],
                          "Pool2DOptions", o)

    def _op_MAX_POOL_2D(self, node: Node) -> None:
        self._pool(node, "MAX_POOL_2D")

    def _op_AVERAGE_POOL_2D(self, node: Node) -> None:
        self._pool(node, "AVERAGE_POOL_2D")

    def _op_RESHAPE(self, node: Node) -> None:
        out = self.g.tensors[node.outputs[0]]
        shape = np.array(out.shape, dtype=np.int32)
        si = self.add_tensor(self.aux_name(f"{out.name}_shape"), (len(shape),), "int32", shape, None)
        o = self.s.ReshapeOptionsT()
        o.newShape = [int(v) for v in shape]
        self.add_operator("RESHAPE", [self.ir_tensor(node.inputs[0]), si],
                          [self.ir_tensor(out.name)], "ReshapeOptions", o)

    def _op_ADD(self, node: Node) -> None:
        o = self.s.AddOptionsT()
        o.fusedActivationFunction = self._activation(node)
        self.add_operator("ADD", [self.ir_tensor(i) for i in node.inputs[:2]],
                          [self.ir_tensor(node.outputs[0])], "AddOptions", o)

    def _op_SOFTMAX(self, node: Node) -> None:
        o = self.s.SoftmaxOptionsT()
        o.beta = float(node.attrs.get("beta", 1.0))
        self.add_operator("SOFTMAX", [self.ir_tensor(node.inputs[0])],
                          [self.ir_tensor(node.outputs[0])], "SoftmaxOptions", o)

    def _op_CONCATENATION(self, node: Node) -> None:
        o = self.s.ConcatenationOptionsT()
        o.axis = int(node.attrs["axis"])
        o.fusedActivationFunction = self.s.ActivationFunctionType.NONE
        self.add_operator("CONCATENATION", [self.ir_tensor(i) for i in node.inputs],
                          [self.ir_tensor(node.outputs[0])], "ConcatenationOptions", o)

    def _op_SLICE(self, node: Node) -> None:
        a = node.attrs
        x = self.g.tensors[node.inputs[0]]
        out = node.outputs[0]
        begin = np.zeros(len(x.shape), np.int32)
        size = np.array(x.shape, np.int32)
        begin[int(a["axis"])], size[int(a["axis"])] = int(a["begin"]), int(a["size"])
        bi = self.add_tensor(self.aux_name(f"{out}_begin"), (len(begin),), "int32", begin, None)
        si = self.add_tensor(self.aux_name(f"{out}_size"), (len(size),), "int32", size, None)
        self.add_operator("SLICE", [self.ir_tensor(x.name), bi, si], [self.ir_tensor(out)],
                          "SliceOptions", self.s.SliceOptionsT())

    def _op_LOGISTIC(self, node: Node) -> None:
        self.add_operator("LOGISTIC", [self.ir_tensor(node.inputs[0])],
                          [self.ir_tensor(node.outputs[0])])

    def _op_TANH(self, node: Node) -> None:
        self.add_operator("TANH", [self.ir_tensor(node.inputs[0])],
                          [self.ir_tensor(node.outputs[0])])

    def _op_PAD(self, node: Node) -> None:
        """A standalone PAD (int8 PAD fills with the input zero point)."""
        out = node.outputs[0]
        paddings = np.array(node.attrs["paddings"], dtype=np.int32)
        pi = self.add_tensor(self.aux_name(f"{out}_paddings"), paddings.shape, "int32", paddings,
                             None)
        self.add_operator("PAD", [self.ir_tensor(node.inputs[0]), pi], [self.ir_tensor(out)],
                          "PadOptions", self.s.PadOptionsT())

    # -- assembly ----------------------------------------------------------------
    def model(self, inputs: list[str], outputs: list[str], description: str):
        sub = self.s.SubGraphT()
        sub.tensors = self.tensors
        sub.operators = self.operators
        sub.inputs = np.array([self.index[n] for n in inputs], dtype=np.int32)
        sub.outputs = np.array([self.index[n] for n in outputs], dtype=np.int32)
        sub.name = "main"
        m = self.s.ModelT()
        m.version = SCHEMA_VERSION
        m.operatorCodes = self.opcodes
        m.subgraphs = [sub]
        m.buffers = [_AlignedBuffer.of(b) for b in self.buffers]
        m.description = description
        return m


class _AlignedBuffer:
    """Packs a Buffer table whose byte vector starts on a 16-byte boundary."""

    def __init__(self, data: np.ndarray | None) -> None:
        self.data = data

    @classmethod
    def of(cls, b) -> _AlignedBuffer:
        return cls(b.data)

    def Pack(self, builder) -> int:  # noqa: N802 - the flatbuffers object-API name
        s = schema()
        vec = None
        if self.data is not None:
            raw = bytes(np.asarray(self.data, dtype=np.uint8))
            builder.StartVector(1, len(raw), _BUFFER_ALIGNMENT)
            builder.head = builder.head - len(raw)
            builder.Bytes[builder.head:builder.head + len(raw)] = raw
            builder.vectorNumElems = len(raw)
            vec = builder.EndVector()
        s.BufferStart(builder)
        if vec is not None:
            s.BufferAddData(builder, vec)
        return s.BufferEnd(builder)


def export_tflite(graph: Graph, path: str | Path | None = None, *,
                  outputs: Sequence[str] | None = None,
                  description: str = "microfit int8 model") -> bytes:
    """Serialise an int8 IR graph as a .tflite flatbuffer; returns its bytes.

    ``outputs`` replaces the graph's outputs (e.g. every activation tensor, for
    a layer-by-layer comparison). The same graph always gives the same bytes.
    """
    import flatbuffers

    if not graph.is_quantized():
        raise UnsupportedOpError(".tflite export needs the int8 graph (quant.json); quantize "
                                 "the float graph first")
    for name in graph.activation_tensors():
        t = graph.tensors[name]
        if t.dtype != "int8" or t.quant is None:
            raise UnsupportedOpError(f".tflite export: activation '{name}' is {t.dtype} "
                                     "without quantization; every activation must be int8")
    out_names = list(outputs) if outputs is not None else list(graph.outputs)
    unknown = [n for n in out_names if n not in graph.tensors]
    if unknown:
        raise ValueError(f"unknown output tensors {unknown}")
    w = _Writer(graph)
    for name in graph.inputs:
        w.ir_tensor(name)
    for node in graph.nodes:
        w.node(node)
    model = w.model(list(graph.inputs), out_names, description)
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=FILE_IDENTIFIER)
    data = bytes(builder.Output())
    if path is not None:
        Path(path).write_bytes(data)
    return data
