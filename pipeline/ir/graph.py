"""The graph IR every stage after export speaks.

One small, explicit representation: tensors (shape, dtype, optional constant
data, optional quantization) and nodes (an op name, input and output tensor
names, attributes) in execution order. Op names and tensor layouts follow
TFLite so that the .tflite exporter and importer map one to one:

- activations are NHWC (batch first, batch 1 in practice);
- CONV_2D weights are OHWI ``[Cout, KH, KW, Cin]``;
- DEPTHWISE_CONV_2D weights are ``[1, KH, KW, Cin * multiplier]``;
- FULLY_CONNECTED weights are ``[Cout, Cin]``;
- biases are 1-D ``[Cout]`` (float32 before quantization, int32 after).

A float graph has float32 activations; the quantized graph has the same
structure with int8 activations and weights, int32 biases and a
:class:`QuantParams` on every non-float tensor.

Serialisation: ``graph.json`` (structure, shapes, quantization) beside
``graph.npz`` (constant data), written deterministically.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: Ops the IR knows. Anything else is rejected by the importers.
OPS: tuple[str, ...] = (
    "CONV_2D",
    "DEPTHWISE_CONV_2D",
    "FULLY_CONNECTED",
    "MAX_POOL_2D",
    "AVERAGE_POOL_2D",
    "RESHAPE",
    "ADD",
    "SOFTMAX",
    "LOGISTIC",
    "TANH",
    "PAD",
    "CONCATENATION",
    "SLICE",
)

#: Fused activations, as TFLite names them.
ACTIVATIONS: tuple[str, ...] = ("NONE", "RELU", "RELU6")


@dataclass
class QuantParams:
    """Affine quantization: ``real = scale * (q - zero_point)``.

    ``scale`` is float32 (TFLite stores float32, and requantization multipliers
    are derived from these exact float32 values). Per-tensor when ``axis`` is
    None (one scale), per-channel along ``axis`` otherwise.
    """

    scale: np.ndarray
    zero_point: np.ndarray
    axis: int | None = None

    def __post_init__(self) -> None:
        self.scale = np.atleast_1d(np.asarray(self.scale, dtype=np.float32))
        self.zero_point = np.atleast_1d(np.asarray(self.zero_point, dtype=np.int64))
        if self.scale.shape != self.zero_point.shape:
            raise ValueError("scale and zero_point must have the same length")
        if self.axis is None and self.scale.size != 1:
            raise ValueError("per-tensor quantization needs exactly one scale")

    @property
    def per_channel(self) -> bool:
        return self.axis is not None

    def to_json(self) -> dict[str, Any]:
        return {
            # float32 -> exact decimal via float(); reloads to the same bits.
            "scale": [float(s) for s in self.scale],
            "zero_point": [int(z) for z in self.zero_point],
            "axis": self.axis,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> QuantParams:
        return cls(np.array(d["scale"], dtype=np.float32), np.array(d["zero_point"]), d.get("axis"))


@dataclass
class Tensor:
    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    data: np.ndarray | None = None
    quant: QuantParams | None = None

    @property
    def is_const(self) -> bool:
        return self.data is not None

    @property
    def size(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1

    @property
    def nbytes(self) -> int:
        return self.size * np.dtype(self.dtype).itemsize


@dataclass
class Node:
    name: str
    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"Node({self.op} {self.name}: {self.inputs} -> {self.outputs})"


@dataclass
class Graph:
    tensors: dict[str, Tensor]
    nodes: list[Node]
    inputs: list[str]
    outputs: list[str]
    meta: dict[str, Any] = field(default_factory=dict)

    # -- queries -------------------------------------------------------------
    def tensor(self, name: str) -> Tensor:
        return self.tensors[name]

    def producers(self) -> dict[str, Node]:
        return {out: n for n in self.nodes for out in n.outputs}

    def consumers(self) -> dict[str, list[Node]]:
        cons: dict[str, list[Node]] = {}
        for n in self.nodes:
            for i in n.inputs:
                if i:
                    cons.setdefault(i, []).append(n)
        return cons

    def activation_tensors(self) -> list[str]:
        """Non-constant tensors in first-use order (graph inputs first)."""
        seen: list[str] = []
        for name in self.inputs:
            seen.append(name)
        for n in self.nodes:
            for t in n.outputs:
                if t not in seen:
                    seen.append(t)
        return seen

    def is_quantized(self) -> bool:
        return all(self.tensors[t].dtype == "int8" for t in self.inputs)

    def macs(self) -> int:
        """Multiply-accumulates of one inference (conv, depthwise, fc)."""
        total = 0
        for n in self.nodes:
            if n.op in ("CONV_2D", "DEPTHWISE_CONV_2D"):
                out = self.tensors[n.outputs[0]].shape
                w = self.tensors[n.inputs[1]].shape
                per_out = w[1] * w[2] * (w[3] if n.op == "CONV_2D" else 1)
                total += int(np.prod(out)) * per_out
            elif n.op == "FULLY_CONNECTED":
                w = self.tensors[n.inputs[1]].shape
                batch = self.tensors[n.outputs[0]].shape[0]
                total += batch * w[0] * w[1]
        return total

    def params(self) -> int:
        """Number of weight and bias values (constant tensors)."""
        return sum(t.size for t in self.tensors.values() if t.is_const and t.dtype != "int64")

    def __repr__(self) -> str:
        lines = [f"Graph({len(self.nodes)} nodes, inputs={self.inputs}, outputs={self.outputs})"]
        for n in self.nodes:
            shp = [self.tensors[o].shape for o in n.outputs]
            act = n.attrs.get("activation", "")
            lines.append(f"  {n.op:<18} {n.name:<24} -> {shp} {act}")
        return "\n".join(lines)

    # -- serialisation -------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        tensors = {}
        for name in sorted(self.tensors):
            t = self.tensors[name]
            tensors[name] = {
                "shape": list(t.shape),
                "dtype": t.dtype,
                "const": t.is_const,
                "quant": t.quant.to_json() if t.quant is not None else None,
            }
        return {
            "format": "microfit-ir",
            "version": 1,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "meta": self.meta,
            "tensors": tensors,
            "nodes": [
                {"name": n.name, "op": n.op, "inputs": n.inputs, "outputs": n.outputs, "attrs": n.attrs}
                for n in self.nodes
            ],
        }

    def save(self, json_path: Path, npz_path: Path | None = None) -> None:
        json_path = Path(json_path)
        npz_path = Path(npz_path) if npz_path else json_path.with_suffix(".npz")
        json_path.write_text(json.dumps(self.to_json(), indent=1, sort_keys=True) + "\n")
        consts = {n: t.data for n, t in sorted(self.tensors.items()) if t.data is not None}
        _save_npz_deterministic(npz_path, consts)

    @classmethod
    def load(cls, json_path: Path, npz_path: Path | None = None) -> Graph:
        json_path = Path(json_path)
        npz_path = Path(npz_path) if npz_path else json_path.with_suffix(".npz")
        d = json.loads(json_path.read_text())
        if d.get("format") != "microfit-ir":
            raise ValueError(f"{json_path} is not a microfit IR file")
        with np.load(npz_path, allow_pickle=False) as z:
            consts = {k: z[k] for k in z.files}
        tensors = {}
        for name, td in d["tensors"].items():
            q = QuantParams.from_json(td["quant"]) if td["quant"] else None
            data = consts.get(name) if td["const"] else None
            tensors[name] = Tensor(name, tuple(td["shape"]), td["dtype"], data, q)
        nodes = [Node(n["name"], n["op"], list(n["inputs"]), list(n["outputs"]), dict(n["attrs"]))
                 for n in d["nodes"]]
        return cls(tensors, nodes, list(d["inputs"]), list(d["outputs"]), dict(d.get("meta", {})))

    def content_hash(self) -> bytes:
        """sha256 over structure and constant bytes: identifies a model on a device."""
        h = hashlib.sha256()
        h.update(json.dumps(self.to_json(), sort_keys=True).encode())
        for name in sorted(self.tensors):
            t = self.tensors[name]
            if t.data is not None:
                h.update(name.encode())
                h.update(np.ascontiguousarray(t.data).tobytes())
        return h.digest()


def _save_npz_deterministic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez stamps zip entries with the current time; write fixed ones instead."""
    import io
    import zipfile

    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, buf.getvalue())
