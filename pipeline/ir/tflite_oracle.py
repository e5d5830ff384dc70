"""Run a microfit int8 graph in TFLite's own interpreters and compare every layer.

Two interpreters nobody here wrote check the numpy reference:

- TFLite Micro (PyPI ``tflite-micro``), what devices run: equal to
  :func:`microfit.reference.executor.run_int8` in mode ``"double"``;
- LiteRT (``ai-edge-litert``) with its reference kernels
  (``OpResolverType.BUILTIN_REF``; the default resolver adds XNNPACK, which
  rounds in float): equal in mode ``"litert"``.

The graph is exported with every activation tensor as a model output, so one
invoke per input yields every layer's bytes and a wrong intermediate byte
cannot hide behind a final argmax.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import MicrofitError
from .graph import Graph
from .tflite_export import export_tflite

ORACLES = ("tflm", "litert")
#: The reference mode each oracle computes.
ORACLE_MODES = {"tflm": "double", "litert": "litert"}


@dataclass
class LayerDiff:
    tensor: str
    compared: int
    different: int
    max_abs: int
    first_index: tuple[int, ...] | None = None


@dataclass
class OracleComparison:
    """Result of comparing the reference with one interpreter, tensor by tensor."""

    oracle: str
    mode: str
    inputs: int
    layers: list[LayerDiff] = field(default_factory=list)

    @property
    def equal(self) -> bool:
        return all(d.different == 0 for d in self.layers)

    @property
    def bytes_compared(self) -> int:
        return sum(d.compared for d in self.layers)

    def summary(self) -> str:
        bad = [d for d in self.layers if d.different]
        head = (f"{self.oracle} vs reference ({self.mode}): {self.inputs} inputs x "
                f"{len(self.layers)} layers, {self.bytes_compared} bytes")
        if not bad:
            return head + ", all equal"
        lines = [head + f", {len(bad)} layers differ:"]
        lines += [f"  {d.tensor}: {d.different} of {d.compared} bytes differ (max {d.max_abs}), "
                  f"first at {d.first_index}" for d in bad]
        return "\n".join(lines)


def layer_tensors(graph: Graph) -> list[str]:
    """Every tensor a node writes, in execution order (the graph input excluded)."""
    return [t for t in graph.activation_tensors() if t not in graph.inputs]


def run_tflm(model_path: str | Path, x: np.ndarray, n_outputs: int) -> list[np.ndarray]:
    """Invoke TFLite Micro's interpreter once per input; returns each output, batched."""
    try:
        from tflite_micro.python.tflite_micro import runtime
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise MicrofitError("TFLite Micro's interpreter is missing: pip install tflite-micro") from exc
    interp = runtime.Interpreter.from_file(str(model_path))
    outs: list[list[np.ndarray]] = [[] for _ in range(n_outputs)]
    for i in range(len(x)):
        interp.set_input(x[i:i + 1], 0)
        interp.invoke()
        for k in range(n_outputs):
            outs[k].append(np.array(interp.get_output(k), copy=True))
    return [np.concatenate(o) for o in outs]


def run_litert(model_path: str | Path, x: np.ndarray, n_outputs: int) -> list[np.ndarray]:
    """Invoke LiteRT with its reference kernels once per input; returns each output, batched."""
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise MicrofitError("LiteRT is missing: pip install ai-edge-litert") from exc
    interp = Interpreter(model_path=str(model_path),
                         experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    interp.allocate_tensors()
    in_idx = interp.get_input_details()[0]["index"]
    out_idx = [d["index"] for d in interp.get_output_details()]
    if len(out_idx) != n_outputs:
        raise MicrofitError(f"LiteRT sees {len(out_idx)} outputs, expected {n_outputs}")
    outs: list[list[np.ndarray]] = [[] for _ in range(n_outputs)]
    for i in range(len(x)):
        interp.set_tensor(in_idx, x[i:i + 1])
        interp.invoke()
        for k, idx in enumerate(out_idx):
            outs[k].append(interp.get_tensor(idx).copy())
    return [np.concatenate(o) for o in outs]


def run_oracle(oracle: str, model_path: str | Path, x: np.ndarray, n_outputs: int) -> list[np.ndarray]:
    if oracle == "tflm":
        return run_tflm(model_path, x, n_outputs)
    if oracle == "litert":
        return run_litert(model_path, x, n_outputs)
    raise ValueError(f"unknown oracle {oracle!r}; use one of {ORACLES}")


def expose_tensors(model: bytes, tensor_indices: list[int]) -> bytes:
    """The same .tflite with its subgraph outputs replaced by ``tensor_indices``.

    Operators, tensors and buffers stay as they are: only the output list
    changes, so a foreign file (e.g. from TensorFlow's converter) is checked
    as written, at every layer.
    """
    import flatbuffers

    from .tflite_schema import FILE_IDENTIFIER, schema

    m = schema().ModelT.InitFromPackedBuf(model, 0)
    m.subgraphs[0].outputs = np.array(tensor_indices, dtype=np.int32)
    builder = flatbuffers.Builder(len(model) + 1024)
    builder.Finish(m.Pack(builder), file_identifier=FILE_IDENTIFIER)
    return bytes(builder.Output())


def compare_with_oracle(graph: Graph, x: np.ndarray, oracle: str, *,
                        reference_graph: Graph | None = None,
                        tflite: bytes | str | Path | None = None,
                        workdir: str | Path | None = None,
                        reference: dict[str, np.ndarray] | None = None) -> OracleComparison:
    """Compare every layer of ``graph`` on int8 inputs ``x`` with one TFLite interpreter.

    By default the interpreter runs microfit's export of ``graph``. With
    ``tflite`` (the file ``graph`` was imported from), it runs that file
    instead, with every layer the importer mapped exposed as an output.
    ``reference_graph`` (default: ``graph``) is what the numpy reference runs;
    tests pass a perturbed copy to prove a one-byte change is caught.
    ``reference`` (every tensor, as ``run_int8(..., keep_all=True)`` returns
    in the oracle's mode) skips the reference run when the caller has it.
    """
    from ..reference.executor import run_int8

    mode = ORACLE_MODES[oracle]
    x = np.ascontiguousarray(x, dtype=np.int8)
    names = layer_tensors(graph)
    ref = reference if reference is not None else run_int8(reference_graph or graph, x, mode=mode,
                                                           keep_all=True)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        path = Path(tmp) / "model.tflite"
        if tflite is None:
            export_tflite(graph, path, outputs=names)
        else:
            index = graph.meta.get("tflite_tensor_index")
            if not index:
                raise ValueError("tflite= needs a graph made by import_tflite (it maps tensors)")
            names = [n for n in names if n in index]  # importer-made views have no index
            raw = Path(tflite).read_bytes() if isinstance(tflite, (str, Path)) else bytes(tflite)
            path.write_bytes(expose_tensors(raw, [int(index[n]) for n in names]))
        got = run_oracle(oracle, path, x, len(names))
    result = OracleComparison(oracle, mode, len(x))
    for name, g in zip(names, got, strict=True):
        r = ref[name]
        g = g.reshape(r.shape)
        d = g.astype(np.int64) - r.astype(np.int64)
        nz = np.argwhere(d != 0)
        result.layers.append(LayerDiff(name, int(d.size), int(len(nz)),
                                       int(np.abs(d).max()) if d.size else 0,
                                       tuple(int(i) for i in nz[0]) if len(nz) else None))
    return result
