"""The C runtime on emulated Cortex-M3 and M4: exact instructions per MAC, arena, code size.

Models of the MLPerf Tiny shapes the issue's yardstick was measured on
(ResNet-8, DS-CNN, MobileNetV1-0.25 at 96x96), with random weights and
calibration data: instruction counts do not depend on the values. Each model
is generated with the portable kernels and with the fast ones, built
bare-metal for QEMU mps2-an385 (Cortex-M3) and mps2-an386 (Cortex-M4), and
counted exactly by microfit's QEMU plugin (microfit.icount); every run's
output bytes are checked against the numpy reference first.

Beside our figures, the issue's yardstick: TFLite Micro with CMSIS-NN on the
same emulated M4 (2.39 / 2.90 / 3.22 instructions per MAC; arenas 54,996 /
22,820 / 100,708 B; about 50 KB of code), and TFLite Micro's arena for our
own .tflite export of the same graph, from its Python interpreter on this
64-bit host (tflite-micro's print_allocations; its "head" is the activation
plan, comparable to our arena; the total adds interpreter bookkeeping whose
size differs on a 32-bit MCU).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .common import RESULTS, BenchResult, _fmt

LAYER_COLS = ["model", "layer", "op", "shape", "MACs", "M4 portable", "per MAC (M4 portable)",
              "M4 fast", "per MAC (M4 fast)", "M3 fast", "per MAC (M3 fast)"]


@dataclass
class RuntimeResult(BenchResult):
    """The per-model table, then a per-layer table (instructions of each path)."""

    layers: list[dict] = field(default_factory=list)

    def markdown(self) -> str:
        head = "| " + " | ".join(LAYER_COLS) + " |"
        sep = "|" + "|".join("---" for _ in LAYER_COLS) + "|"
        body = ["| " + " | ".join(_fmt(r.get(c)) for c in LAYER_COLS) + " |" for r in self.layers]
        return (super().markdown() + "\n### Per layer (instructions; each figure includes ~3 "
                "instructions of the measuring hooks)\n\n" + "\n".join([head, sep, *body]) + "\n")

    def write(self, out_dir: Path = RESULTS) -> Path:
        path = super().write(out_dir)
        data = json.loads((out_dir / f"{self.name}.json").read_text())
        data["layers"] = self.layers
        (out_dir / f"{self.name}.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
        path.write_text(self.markdown())
        return path

TESTS = Path(__file__).resolve().parent.parent / "tests"
BOARDS = {"M3": "qemu-mps2-an385", "M4": "qemu-mps2-an386"}
# name -> (factory, NCHW input shape, TFLM + CMSIS-NN instructions/MAC on the M4, TFLM arena)
YARDSTICK = {
    "resnet8": (2.39, 54_996),
    "ds_cnn": (2.90, 22_820),
    "mobilenet_v1_025": (3.22, 100_708),
}


def _models(quick: bool) -> dict:
    sys.path.insert(0, str(TESTS))
    import prune_models as pm

    models = {
        "resnet8": (lambda: pm.ResNet8(), (1, 3, 32, 32)),
        "ds_cnn": (lambda: pm.DSCNN(width=64, blocks=4), (1, 1, 49, 10)),
        "mobilenet_v1_025": (lambda: pm.MobileNetV1(alpha=0.25, num_classes=2), (1, 3, 96, 96)),
    }
    if quick:
        models = {"ds_cnn": models["ds_cnn"]}
    return models


def _quantize(factory, shape, work: Path):
    import torch

    from microfit.ir.onnx_import import import_onnx, nchw_to_ir
    from microfit.quantize.quantize import QuantizeConfig, quantize, quantize_input

    sys.path.insert(0, str(TESTS))
    from conftest import export_torch, randomize_bn

    torch.manual_seed(0)
    model = factory()
    randomize_bn(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = import_onnx(export_torch(model, shape, work / "model.onnx"))
    x = nchw_to_ir(np.random.default_rng(0).standard_normal((33, *shape[1:]), dtype=np.float32))
    q = quantize(graph, x[:32], QuantizeConfig())
    return q, quantize_input(x[32:], q.tensors[q.inputs[0]].quant)


def tflm_arena(qgraph) -> dict[str, int] | None:
    """TFLite Micro's arena for the graph's .tflite (64-bit host), or None if unavailable."""
    try:
        from tflite_micro.python.tflite_micro import runtime

        from microfit.ir.tflite_export import export_tflite
    except ImportError:
        return None
    try:
        interp = runtime.Interpreter.from_bytes(export_tflite(qgraph), arena_size=4 << 20)
    except Exception:  # noqa: BLE001 - an op TFLM lacks: no column, not a failed benchmark
        return None
    shape = qgraph.tensors[qgraph.inputs[0]].shape
    interp.set_input(np.zeros(shape, np.int8), 0)
    interp.invoke()
    import ctypes

    libc = ctypes.CDLL(None)
    # TFLite Micro prints the figures on stderr, from C.
    with tempfile.TemporaryFile(mode="w+b") as f:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(f.fileno(), 2)
        try:
            interp.print_allocations()
            libc.fflush(None)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        f.seek(0)
        text = f.read().decode(errors="replace")
    found = dict(re.findall(r"Arena allocation (total|head) (\d+) bytes", text))
    return {k: int(v) for k, v in found.items()} or None


def run(quick: bool = False) -> BenchResult:
    from microfit.codegen.codesize import code_size_from_map
    from microfit.codegen.generate import generate
    from microfit.icount import measure_model
    from microfit.reference.executor import run_int8

    rows, layer_rows, notes, all_layers = [], [], [], []
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for name, (factory, shape) in _models(quick).items():
            work = Path(tmp) / name
            work.mkdir()
            q, xq = _quantize(factory, shape, work)
            ref = run_int8(q, xq).reshape(len(xq), -1)
            macs = q.macs()
            tflm = tflm_arena(q)
            per_layer: dict[str, list[dict]] = {}
            for kernels in ("portable", "fast"):
                gen = generate(q, work / kernels, kernels=kernels)
                for core, board in BOARDS.items():
                    count = measure_model(gen.out_dir, xq, board, per_layer=not quick,
                                          work_dir=work / f"{kernels}-{core}")
                    if not np.array_equal(count.outputs, ref):
                        raise SystemExit(f"{name} {kernels} on {board}: output differs from the "
                                         "numpy reference")
                    size = code_size_from_map(count.map_file)
                    insns = count.per_inference[0]
                    yard = YARDSTICK.get(name)
                    rows.append({
                        "model": name, "core": core, "kernels": kernels, "MACs": macs,
                        "instructions": insns, "per MAC": insns / macs,
                        "TFLM+CMSIS-NN per MAC (M4)": yard[0] if yard and core == "M4" else None,
                        "arena": gen.plan.arena_size, "lower bound": gen.plan.lower_bound,
                        "sum of tensors": gen.plan.total_tensor_bytes,
                        "TFLM arena head/total (64-bit host)":
                            f"{tflm['head']:,} / {tflm['total']:,}" if tflm else None,
                        "TFLM arena (M4, issue)": yard[1] if yard else None,
                        "runtime code B": size.runtime_code, "model code B": size.model_code,
                        "weights B": size.weights,
                    })
                    if count.per_layer:
                        per_layer[f"{core} {kernels}"] = _layers(name, q, count.per_layer)
                    if kernels == "fast" and core == "M4":
                        notes.append(f"{name}: runtime code on the M4 by object (bytes): "
                                     + ", ".join(f"{k} {v:,}" for k, v in
                                                 size.runtime_functions().items()))
            notes.append(f"{name}: input {list(q.tensors[q.inputs[0]].shape)}, {macs:,} MACs, "
                         f"{len(q.nodes)} nodes")
            fast = per_layer.get("M4 fast", [])
            layer_rows += fast
            for i, r in enumerate(fast):
                row = {k: r[k] for k in ("model", "layer", "op", "shape", "MACs")}
                for key in ("M4 portable", "M4 fast", "M3 fast"):
                    if key in per_layer:
                        n = per_layer[key][i]["instructions"]
                        row[key] = n
                        row[f"per MAC ({key})"] = n / r["MACs"] if r["MACs"] else None
                all_layers.append(row)
    worst = sorted((r for r in layer_rows if r["MACs"]), key=lambda r: -r["per MAC"])[:8]
    notes.append("worst layers of the fast path on the M4 (instructions per MAC; each layer "
                 "figure includes ~3 instructions of the measuring hooks):")
    notes += [f"  {r['model']} layer {r['layer']} {r['op']} {r['shape']}: {r['MACs']:,} MACs, "
              f"{r['instructions']:,} instructions, {r['per MAC']:.2f}/MAC" for r in worst]
    heavy = sorted((r for r in layer_rows if not r["MACs"]), key=lambda r: -r["instructions"])[:4]
    notes += [f"  {r['model']} layer {r['layer']} {r['op']} (no MACs): {r['instructions']:,} "
              "instructions" for r in heavy]
    notes.append("instructions are exact counts of executed instructions (QEMU TCG plugin), "
                 "not cycles; counts include model_invoke and every kernel it calls")
    notes.append("arena: ours (the fast one includes im2col scratch) beside its lower bound (the "
                 "largest total of buffers alive at one step) and the sum of all tensors; TFLM "
                 "arena head/total: the tflite-micro wheel's interpreter on our .tflite of the "
                 f"same graph, run on this {platform.machine()} 64-bit host (head = activation "
                 "plan; total adds interpreter data, smaller on a 32-bit MCU); TFLM arena (M4, "
                 "issue): the issue's firmware figures")
    notes.append("runtime code B: kernels' .text + .rodata linked with --gc-sections, -O2 "
                 "(libc memcpy/memset not included); weights B: model_weights.c")
    notes.append(f"wall time {time.time() - t0:.0f} s")
    cols = ["model", "core", "kernels", "MACs", "instructions", "per MAC",
            "TFLM+CMSIS-NN per MAC (M4)", "arena", "lower bound", "sum of tensors",
            "TFLM arena head/total (64-bit host)", "TFLM arena (M4, issue)", "runtime code B",
            "model code B", "weights B"]
    return RuntimeResult("runtime", "C runtime: instructions per MAC (QEMU, exact), memory, code",
                         cols, rows, notes, layers=all_layers)


def _layers(model: str, q, per_layer: dict[int, int]) -> list[dict]:
    out = []
    for i, node in enumerate(q.nodes):
        if i not in per_layer:
            continue
        t = q.tensors
        macs = 0
        if node.op in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            w = t[node.inputs[1]].shape
            per_out = w[1] * w[2] * (w[3] if node.op == "CONV_2D" else 1)
            macs = int(np.prod(t[node.outputs[0]].shape)) * per_out
        elif node.op == "FULLY_CONNECTED":
            w = t[node.inputs[1]].shape
            macs = w[0] * w[1]
        shape = f"{list(t[node.inputs[0]].shape[1:])}->{list(t[node.outputs[0]].shape[1:])}"
        out.append({"model": model, "layer": i, "op": node.op, "shape": shape, "MACs": macs,
                    "instructions": per_layer[i],
                    "per MAC": per_layer[i] / macs if macs else 0.0})
    return out


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        print(run(quick="--quick" in sys.argv).markdown())
