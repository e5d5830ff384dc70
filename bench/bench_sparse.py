"""Sparse weights on the device: the default model at 0/50/70/80/90% sparsity.

The default digits CNN (make_default_model) is trained once, then pruned by
magnitude to each sparsity (every Conv/Linear layer at that sparsity,
scope "layer", one-shot) and fine-tuned briefly with the masks held. Each
pruned model is quantized and generated three ways: all dense
(``sparse="off"``), the fewest-bytes choice (``"auto"``: bitmap or
compressed rows per layer) and compressed rows only (``"rows"``). For each:

- accuracy (float and int8 reference, test split);
- flash bytes of the Conv/FC weights plus their indices (what the storage
  choice changes; bias, multipliers and shifts are the same in every form);
- instructions per inference on the Cortex-M4 (QEMU mps2-an386, exact counts
  by microfit's plugin, not cycles), with the "fast" kernel set (DSP dense
  layers) and with the portable one, per layer too;
- cycles per inference on an AVR core in simavr (the "avr" kernel set,
  constants in PROGMEM): an ATmega2560 at 16 MHz, because the default
  model's 3 KB arena does not fit the Uno's 2 KB of RAM. The core and its
  instruction timings are the Uno's ATmega328P's, except that calls and
  returns take one cycle more (22-bit program counter).

Every run's output bytes are checked against the numpy reference first. The
crossover per kernel and core is the lowest measured sparsity at which a
layer's sparse kernel takes fewer instructions (cycles) than its dense one.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from .common import RESULTS, BenchResult

TESTS = Path(__file__).resolve().parent.parent / "tests"
M4 = "qemu-mps2-an386"
VARIANTS = ("off", "auto", "rows")

AVR_MAIN = r"""
#include <avr/interrupt.h>
#include <avr/io.h>
#include <avr/pgmspace.h>
#include <avr/sleep.h>
#include <stdint.h>
#include <string.h>

#include "model.h"

%(inputs)s

/* Timer1 at clk/8 with its overflows counted: cycles with an 8-cycle resolution. */
static volatile uint16_t overflows;
ISR(TIMER1_OVF_vect) { ++overflows; }

static void put(char c)
{
    while (!(UCSR0A & (1 << UDRE0))) {
    }
    UDR0 = (uint8_t)c;
}

static void put_hex(uint32_t v, uint8_t digits)
{
    while (digits-- > 0) {
        put("0123456789abcdef"[(v >> (4 * digits)) & 0xF]);
    }
}

int main(void)
{
    uint16_t n, i;
    UBRR0 = 0;
    UCSR0B = (uint8_t)(1 << TXEN0);
    UCSR0C = (uint8_t)(3 << UCSZ00);
    TIMSK1 = (uint8_t)(1 << TOIE1);
    sei();
    for (n = 0; n < N_INPUTS; ++n) {
        uint16_t t;
        uint32_t cycles;
        const int8_t *out;
        memcpy_P(model_input(), inputs[n], MODEL_INPUT_SIZE);
        TCCR1A = 0; TCCR1B = 0; TCNT1 = 0; TIFR1 = (uint8_t)(1 << TOV1); overflows = 0;
        TCCR1B = (uint8_t)(1 << CS11);
        model_invoke();
        /* Read while running: simavr reads a stopped timer as 0. An overflow still
         * pending (not yet counted by the ISR) belongs to this run when t is small. */
        cli();
        t = TCNT1;
        TCCR1B = 0;
        cycles = ((uint32_t)overflows
                  + (((TIFR1 & (1 << TOV1)) && t < 0x8000u) ? 1u : 0u)) * 65536ul + t;
        sei();
        out = model_output();
        put('C'); put_hex(8ul * cycles, 8); put(' ');
        for (i = 0; i < MODEL_OUTPUT_SIZE; ++i) {
            put_hex((uint8_t)out[i], 2);
        }
        put('\n');
    }
    put('E'); put('N'); put('D'); put('\n');
    cli();
    sleep_cpu();
    for (;;) {
    }
}
"""


def avr_cycles(generated: Path, inputs: np.ndarray, work: Path, mcu: str = "atmega2560"
               ) -> tuple[list[int], np.ndarray]:
    """Build a generated model ("avr" kernels) for ``mcu`` (default the ATmega2560; the
    Uno's is "atmega328p") and run it in simavr.

    Returns (cycles per input, outputs int8 [N, out]).
    """
    from microfit.toolchain.host import runtime_dir, runtime_sources

    inputs = np.ascontiguousarray(inputs, dtype=np.int8).reshape(len(inputs), -1)
    rows = ",\n".join("{" + ", ".join(str(int(v)) for v in x) + "}" for x in inputs)
    decl = (f"#define N_INPUTS {len(inputs)}\n"
            f"static const int8_t inputs[N_INPUTS][MODEL_INPUT_SIZE] PROGMEM = {{\n{rows}\n}};")
    work.mkdir(parents=True, exist_ok=True)
    main = work / "avr_main.c"
    main.write_text(AVR_MAIN % {"inputs": decl})
    elf = work / "model_avr.elf"
    cmd = ["avr-gcc", f"-mmcu={mcu}", "-Os", "-std=c99", "-Wall", "-Wextra", "-Werror",
           "-ffunction-sections", "-fdata-sections", "-Wl,--gc-sections",
           f"-I{generated}", f"-I{runtime_dir() / 'include'}", str(main),
           str(generated / "model.c"), str(generated / "model_weights.c"),
           *map(str, runtime_sources()), "-o", str(elf)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise SystemExit(f"avr-gcc failed:\n{proc.stderr[-3000:]}")
    sim = subprocess.run(["simavr", "-m", mcu, "-f", "16000000", str(elf)],
                         capture_output=True, text=True, timeout=1800)
    text = re.sub(r"\.?\n", "", re.sub(r"\x1b\[[0-9;]*m", "", sim.stderr + sim.stdout))
    if "END" not in text:
        raise SystemExit(f"simavr run did not finish:\n{text[-2000:]}")
    size = int(re.search(r"#define MODEL_OUTPUT_SIZE\s+(\d+)",
                         (generated / "model.h").read_text()).group(1))
    found = re.findall(r"C([0-9a-f]{8}) ([0-9a-f]{" + str(2 * size) + "})", text)
    if len(found) != len(inputs):
        raise SystemExit(f"expected {len(inputs)} AVR results, got {len(found)}")
    cycles = [int(c, 16) for c, _ in found]
    outs = np.stack([np.frombuffer(bytes.fromhex(o), dtype=np.int8) for _, o in found])
    return cycles, outs


def _train(quick: bool):
    from microfit.train import load_digits_splits, make_default_model, train

    splits = load_digits_splits(seed=0)
    model = make_default_model(seed=0)
    train(model, splits, epochs=4 if quick else 15, seed=0, progress=False)
    return model, splits


def _quantize(model, splits, work: Path):
    from microfit.ir.onnx_import import import_onnx, nchw_to_ir
    from microfit.quantize.quantize import QuantizeConfig, quantize, quantize_input

    sys.path.insert(0, str(TESTS))
    from conftest import export_torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = import_onnx(export_torch(model, (1, *splits.input_shape), work / "model.onnx"))
    q = quantize(graph, nchw_to_ir(splits.x_train[:256]), QuantizeConfig())
    return q, quantize_input(nchw_to_ir(splits.x_test), q.tensors[q.inputs[0]].quant)


def _weight_bytes(q, gen) -> int:
    """Conv/FC weights plus indices as generated (dense size where a layer stays dense)."""
    chosen = {r["layer"]: r["bytes_chosen"] for r in gen.sparse_layers}
    return sum(chosen.get(n.name, q.tensors[n.inputs[1]].data.size) for n in q.nodes
               if n.op in ("CONV_2D", "FULLY_CONNECTED", "DEPTHWISE_CONV_2D"))


def run(quick: bool = False) -> BenchResult:
    from microfit.codegen.generate import generate
    from microfit.icount import measure_model
    from microfit.prune.unstructured import sparsify, weight_sparsity
    from microfit.reference.executor import run_int8
    from microfit.train import evaluate

    sparsities = (0.0, 0.8) if quick else (0.0, 0.5, 0.7, 0.8, 0.9)
    n_inputs = 2 if quick else 4
    have_avr = shutil.which("avr-gcc") and shutil.which("simavr")
    cores = [("M4", "fast"), ("M4", "portable")] if not quick else [("M4", "fast")]
    if have_avr:
        cores.append(("AVR", "avr"))
    t0 = time.time()
    trained, splits = _train(quick)
    rows, layer_rows, notes = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for s in sparsities:
            work = Path(tmp) / f"s{round(100 * s)}"
            work.mkdir()
            model = copy.deepcopy(trained)
            if s > 0:
                sparsify(model, splits, s, scope="layer", epochs_per_step=1 if quick else 3)
            float_acc = evaluate(model, splits.x_test, splits.y_test)
            q, xq = _quantize(model, splits, work)
            ref = run_int8(q, xq).reshape(len(xq), -1)
            int8_acc = float((ref.argmax(1) == splits.y_test).mean())
            for core, kernels in cores:
                for variant in VARIANTS if s > 0 else ("off",):
                    gen = generate(q, work / f"{kernels}-{variant}", kernels=kernels,
                                   sparse=variant)
                    if core == "M4":
                        count = measure_model(gen.out_dir, xq[:n_inputs], M4, per_layer=True,
                                              work_dir=work / f"m4-{kernels}-{variant}")
                        outs, per_inf, per_layer = count.outputs, count.per_inference, count.per_layer
                    else:
                        per_inf, outs = avr_cycles(gen.out_dir, xq[:n_inputs],
                                                   work / f"avr-{variant}")
                        per_layer = {}
                    if not np.array_equal(outs, ref[:n_inputs]):
                        raise SystemExit(f"{s:.0%} {kernels}/{variant} on {core}: output differs "
                                         "from the numpy reference")
                    formats = {r["layer"]: r["format"] for r in gen.sparse_layers}
                    rows.append({
                        "sparsity": s, "measured sparsity": round(weight_sparsity(model), 4),
                        "float acc": float_acc, "int8 acc": int8_acc, "core": core,
                        "kernels": kernels, "storage": variant,
                        "layer formats": " ".join(formats.get(n.name, "dense") for n in q.nodes
                                                  if n.op in ("CONV_2D", "FULLY_CONNECTED")),
                        "weights+indices B": _weight_bytes(q, gen),
                        "all constants B": gen.weight_bytes,
                        "unit": "instructions" if core == "M4" else "cycles",
                        "per inference": int(np.median(per_inf)),
                    })
                    for idx, n in enumerate(q.nodes):
                        if idx in per_layer and n.op in ("CONV_2D", "FULLY_CONNECTED"):
                            layer_rows.append({
                                "sparsity": s, "core": core, "kernels": kernels,
                                "storage": variant, "layer": n.name, "op": n.op,
                                "format": formats.get(n.name, "dense"),
                                "shape": "x".join(map(str, q.tensors[n.inputs[1]].shape)),
                                "instructions": per_layer[idx]})
        if have_avr:
            uno_rows, uno_notes = _uno(trained, splits, quick, Path(tmp))
        else:
            uno_rows, uno_notes = [], ["avr-gcc or simavr missing: no Uno figures"]
        net_rows, net_notes = _nets(quick, Path(tmp))
    BenchResult("sparse_uno", "Sparse weights on the Uno: default model, channel-pruned to fit, "
                "then 80% sparse", list(uno_rows[0]) if uno_rows else ["model"], uno_rows,
                uno_notes).write(RESULTS)
    BenchResult("sparse_nets", "Sparse weights: DS-CNN and ResNet-8 vs dense and vs channel "
                "pruning at equal flash (M4, fast kernels)",
                ["model", "method", "sparsity", "measured sparsity", "MAC ratio", "MACs",
                 "float acc", "int8 acc", "weights+indices B", "tflite B", "tflm lut B",
                 "M4 fast instructions"], net_rows, net_notes).write(RESULTS)
    _nets_plot(net_rows, RESULTS / "sparse_nets.png")
    notes += _crossovers(rows, layer_rows)
    notes.append("DS-CNN / ResNet-8: sparse_nets.md (plot sparse_nets.png); the Uno: "
                 "sparse_uno.md")
    notes.append("flash: Conv/FC weights + indices; 'all constants' adds bias, multipliers, "
                 "shifts (and the fast kernels' folded biases / requant tables)")
    notes.append("M4 figures are exact instruction counts (QEMU plugin), not cycles; AVR "
                 "figures are ATmega2560 cycles in simavr (8-cycle resolution), the Uno's "
                 "core but with 3-byte return addresses")
    notes.append(f"{n_inputs} test inputs per run; wall time {time.time() - t0:.0f} s")
    result = BenchResult(
        "sparse", "Sparse weights: default model, flash and latency vs sparsity",
        ["sparsity", "measured sparsity", "float acc", "int8 acc", "core", "kernels", "storage",
         "layer formats", "weights+indices B", "all constants B", "unit", "per inference"],
        rows, notes)
    _plot(rows, RESULTS / "sparse.png")
    (RESULTS / "sparse_layers.md").write_text(_layer_table(layer_rows))
    return result


# ----------------------------------------------------------------------------
# DS-CNN and ResNet-8: sparse vs dense vs channel pruning at equal flash


def _conv_fc_weight_count(model) -> int:
    """int8 bytes of the Conv/Linear weights as codegen stores them dense (BatchNorm folds
    into the conv without changing its shape)."""
    from torch import nn

    return sum(m.weight.numel() for m in model.modules()
               if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)))


def _depthwise_names(model) -> list[str]:
    from torch import nn

    return [n for n, m in model.named_modules()
            if isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels]


def _channel_pruned_to_bytes(model, shape, target_bytes: int, round_to: int = 4):
    """The largest channel-pruned model (local L1 ranking, MAC-ratio bisection) whose dense
    Conv/FC weights take at most ``target_bytes``; returns (model, MAC ratio)."""
    from microfit.prune import apply_plan, make_plan

    lo, hi, best = 0.0, 1.0, None
    for _ in range(12):
        mid = (lo + hi) / 2
        try:
            net = apply_plan(model, make_plan(model, shape, mid, round_to=round_to))
        except ValueError:
            lo = mid
            continue
        if _conv_fc_weight_count(net) <= target_bytes:
            lo, best = mid, (net, mid)
        else:
            hi = mid
    if best is None:
        raise SystemExit(f"no channel-pruned model fits {target_bytes} B of weights")
    return best


def tflm_lut_bytes(q) -> dict:
    """TFLite Micro's own weight compression (tflite-micro's compression tool, LUT method)
    on the same int8 model: every Conv/FC/depthwise weight tensor whose channels each hold
    at most 128 distinct values is compressed per channel with the fewest index bits (the
    tool allows 1-7). Returns the .tflite sizes before and after and what was compressed.

    The tool's other methods (huffman, pruning) raise "not yet implemented" in this
    tflite-micro release, so LUT is the only one that applies.
    """
    from tflite_micro.tensorflow.lite.micro.compression import compress, model_editor, spec

    from microfit.ir.tflite_export import export_tflite

    data = bytes(export_tflite(q))
    model = model_editor.read(data)
    specs, compressed, skipped = [], 0, 0
    ops = {3: 0, 4: 3, 9: 0}  # CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED -> channel axis
    for op in model.subgraphs[0].operators:
        axis = ops.get(int(op.opcode))
        if axis is None or len(op.inputs) < 2:
            continue
        arr = op.inputs[1].array
        moved = np.moveaxis(arr, axis, 0).reshape(arr.shape[axis], -1)
        most = max(len(np.unique(r)) for r in moved)
        bits = max(1, int(np.ceil(np.log2(most))))
        if bits > 7:
            skipped += 1
            continue
        compressed += 1
        specs.append(spec.Tensor(subgraph=0, tensor=op.inputs[1].index, compression=[
            spec.LookUpTableCompression(index_bitwidth=bits, mode=spec.PerChannel(axis=axis))]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tool warns when a tensor grows; we drop those
        kept = [t for t in specs if len(compress(data, [t])) < len(data)]
        out = bytes(compress(data, kept)) if kept else data
    return {"tflite B": len(data), "tflm lut B": len(out), "lut tensors": len(kept),
            "lut skipped": skipped + compressed - len(kept)}


def _nets(quick: bool, work: Path) -> tuple[list[dict], list[str]]:
    """DS-CNN and ResNet-8 (bench_prune's models and 16x16 shifted, noisy digits)."""
    import torch

    from microfit.codegen.generate import generate
    from microfit.icount import measure_model
    from microfit.prune.unstructured import sparsify, weight_sparsity
    from microfit.reference.executor import run_int8
    from microfit.train import evaluate, train

    from .bench_prune import _models, upscaled_digits

    splits = upscaled_digits()
    shape = (1, *splits.input_shape)
    sparsities = (0.8,) if quick else (0.5, 0.7, 0.8, 0.9)
    epochs, ft = (3, 1) if quick else (15, 3)
    n_inputs = 1 if quick else 2
    rows, notes = [], []
    for name, factory in _models().items():
        torch.manual_seed(0)
        trained = factory()
        train(trained, splits, epochs=epochs, seed=0, progress=False)
        trained.eval()
        skip = _depthwise_names(trained)

        def measure(model, label: str, s: float, methods: dict[str, str], name=name):
            """One quantization, one row per sparse mode in ``methods`` (mode -> method)."""
            d = work / f"{name}-{label}"
            d.mkdir(parents=True, exist_ok=True)
            q, xq = _quantize(model, splits, d)
            ref = run_int8(q, xq).reshape(len(xq), -1)
            try:
                lut = tflm_lut_bytes(q)
            except Exception as exc:  # the tool's own errors: record, do not hide
                lut = {"tflm lut B": None, "lut note": f"{type(exc).__name__}: {exc}"[:120]}
            common = {
                "model": name, "sparsity": s,
                "measured sparsity": round(weight_sparsity(model), 4),
                "MACs": _macs(model, shape),
                "float acc": evaluate(model, splits.x_test, splits.y_test),
                "int8 acc": float((ref.argmax(1) == splits.y_test).mean()),
                "tflite B": lut.get("tflite B"), "tflm lut B": lut.get("tflm lut B"),
            }
            out = []
            for sparse, method in methods.items():
                gen = generate(q, d / f"gen-{sparse}", kernels="fast", sparse=sparse)
                count = measure_model(gen.out_dir, xq[:n_inputs], M4, per_layer=False,
                                      work_dir=d / f"m4-{sparse}")
                if not np.array_equal(count.outputs, ref[:n_inputs]):
                    raise SystemExit(f"{name} {label} {sparse}: M4 output differs from the "
                                     "numpy reference")
                out.append({**common, "method": method,
                            "weights+indices B": _weight_bytes(q, gen),
                            "M4 fast instructions": int(np.median(count.per_inference))})
            return out

        rows += measure(trained, "dense", 0.0, {"off": "dense"})
        for s in sparsities:
            model = copy.deepcopy(trained)
            sparsify(model, splits, s, scope="layer", epochs_per_step=ft, skip=skip)
            rows += measure(model, f"s{round(100 * s)}", s,
                            {"off": "sparse, stored dense", "auto": "sparse auto"})
            target = rows[-1]["weights+indices B"]
            net, _ = _channel_pruned_to_bytes(trained, shape, target)
            train(net, splits, epochs=ft, lr=1e-3, seed=0, progress=False)
            net.eval()
            row, = measure(net, f"ch{round(100 * s)}", s, {"off": "channels, equal flash"})
            row["MAC ratio"] = round(row["MACs"] / _macs(trained, shape), 3)  # reached
            rows.append(row)
    notes.append(f"data: bench_prune's digits (12x12 at random offsets on 16x16, noise 0.3); "
                 f"float training {epochs} epochs; every sparse model and every channel-pruned "
                 f"model fine-tuned {ft} epochs; {n_inputs} inputs per QEMU run, each equal to the "
                 "numpy reference")
    notes.append("sparse: magnitude masks per layer (scope 'layer', one-shot) on every Conv/FC "
                 "except the depthwise convs (codegen keeps depthwise dense, so zeroing them "
                 "costs accuracy and saves nothing); 'sparse, stored dense' is the same model "
                 "generated with sparse='off'")
    notes.append("channels, equal flash: the channel-pruned model (local L1, round_to 4, MAC "
                 "ratio bisected) whose dense Conv/FC weights are at most the sparse model's "
                 "weights+indices, fine-tuned as long as the sparse one")
    notes.append("tflm lut B: the .tflite after tflite-micro's compression tool (LUT, per "
                 "channel, fewest index bits) - applies only where every channel has <= 128 "
                 "distinct int8 values; compare with tflite B (before), not with our "
                 "weights+indices (the .tflite also holds biases, scales and the graph)")
    return rows, notes


def _macs(model, shape) -> int:
    from microfit.prune import count_macs_params

    return int(count_macs_params(model, shape)[0])


def _uno(trained, splits, quick: bool, work: Path) -> tuple[list[dict], list[str]]:
    """The default model on a real Uno (ATmega328P, simavr-uno): channel-pruned by the
    budget search until it fits, then 80% sparse; flash from the real firmware build,
    cycles in simavr on the ATmega328P."""
    from microfit.codegen.generate import generate
    from microfit.prune import apply_plan
    from microfit.prune.budget import fit_to_budget
    from microfit.prune.unstructured import sparsify, weight_sparsity
    from microfit.reference.executor import run_int8
    from microfit.target.boards import load_board
    from microfit.target.project import render_project
    from microfit.toolchain.firmware import build_firmware
    from microfit.train import evaluate, train

    board = load_board("simavr-uno")
    ft = 1 if quick else 3
    fit = fit_to_budget(trained, splits, "simavr-uno", rankings=("local",), search_epochs=0,
                        round_to=1)
    small = apply_plan(trained, fit.plan)
    train(small, splits, epochs=ft, lr=1e-3, seed=0, progress=False)
    small.eval()
    sparse = copy.deepcopy(small)
    sparsify(sparse, splits, 0.8, scope="layer", epochs_per_step=ft)
    rows = []
    for label, model, mode in (("channels only, dense", small, "off"),
                               ("channels + 80% sparse, dense storage", sparse, "off"),
                               ("channels + 80% sparse, sparse auto", sparse, "auto")):
        d = work / f"uno-{mode}-{len(rows)}"
        d.mkdir(parents=True)
        q, xq = _quantize(model, splits, d)
        ref = run_int8(q, xq).reshape(len(xq), -1)
        gen = generate(q, d / "gen", board_name=board.name, sparse=mode)
        res = build_firmware(render_project(board, d / "gen", d / "fw"), board)
        n = 2 if quick else 4
        cycles, outs = avr_cycles(gen.out_dir, xq[:n], d / "sim", mcu="atmega328p")
        if not np.array_equal(outs, ref[:n]):
            raise SystemExit(f"Uno {label}: output differs from the numpy reference")
        c = int(np.median(cycles))
        rows.append({"model": label, "sparsity": round(weight_sparsity(model), 4),
                     "kept": " ".join(f"{k}:{len(v)}" for k, v in fit.plan.items()),
                     "MACs": fit.size.macs,
                     "int8 acc": float((ref.argmax(1) == splits.y_test).mean()),
                     "float acc": evaluate(model, splits.x_test, splits.y_test),
                     "weights+indices B": _weight_bytes(q, gen),
                     "firmware flash B": res.flash_bytes, "firmware RAM B": res.ram_bytes,
                     "arena B": gen.plan.arena_size, "cycles": c, "ms at 16 MHz": c / 16000})
    notes = [f"budget search (simavr-uno, local ranking, round_to 1): MAC ratio "
             f"{fit.target_mac_ratio:.3f}, {fit.budget.describe()}",
             "flash/RAM: microfit's real firmware for simavr-uno (serial protocol included), "
             "from the ELF; cycles: ATmega328P in simavr, the bench's runner (Timer1, median of "
             "the inputs), 'avr' kernel set, constants in PROGMEM; outputs equal the reference",
             f"fine-tune {ft} epochs after channel pruning, {ft} more with the 80% masks held"]
    return rows, notes


def _nets_plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nets = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(len(nets), 3, figsize=(12.6, 3.4 * len(nets)), squeeze=False)
    style = {"sparse auto": "s--", "sparse, stored dense": "o-", "channels, equal flash": "^:"}
    for row_axes, net in zip(axes, nets, strict=True):
        dense = next(r for r in rows if r["model"] == net and r["method"] == "dense")
        for ax, col, title in zip(row_axes, ("weights+indices B", "M4 fast instructions",
                                             "int8 acc"),
                                  ("flash (weights + indices)", "M4 instructions (QEMU)",
                                   "int8 accuracy"), strict=True):
            for method, st in style.items():
                sel = [r for r in rows if r["model"] == net and r["method"] == method]
                ax.plot([100 * r["sparsity"] for r in sel], [r[col] for r in sel], st,
                        label=method)
            ax.axhline(dense[col], color="grey", lw=0.8, label="dense, unpruned")
            ax.set_title(f"{net}: {title}")
            ax.set_xlabel("weight sparsity (%) [channels: matched flash]")
            ax.grid(alpha=0.3)
            if col != "int8 acc":
                ax.set_ylim(bottom=0)
        row_axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)



def _crossovers(rows: list[dict], layer_rows: list[dict]) -> list[str]:
    """Lowest measured sparsity where each sparse layer beats the same layer kept dense."""
    out = ["crossover (lowest measured sparsity where the sparse layer beats dense, per layer):"]
    keys = sorted({(r["core"], r["kernels"], r["layer"], r["shape"]) for r in layer_rows})
    for core, kernels, layer, shape in keys:
        for variant in ("rows", "auto"):
            sel = [r for r in layer_rows if (r["core"], r["kernels"], r["layer"]) ==
                   (core, kernels, layer)]
            dense = {r["sparsity"]: r["instructions"] for r in sel if r["storage"] == "off"}
            sparse = {r["sparsity"]: (r["instructions"], r["format"]) for r in sel
                      if r["storage"] == variant and r["format"] != "dense"}
            wins = sorted(sp for sp, (n, _) in sparse.items() if sp in dense and n < dense[sp])
            fmts = sorted({f for _, f in sparse.values()})
            if not fmts:
                continue
            tried = ", ".join(f"{sp:.0%}: {dense[sp]:,} -> {sparse[sp][0]:,}"
                              for sp in sorted(sparse) if sp in dense)
            out.append(f"  {core} {kernels} {layer} [{shape}] {'/'.join(fmts)}: "
                       + (f"from {wins[0]:.0%}" if wins else "never in the measured range")
                       + f" (dense -> sparse instructions: {tried})")
    out = list(dict.fromkeys(out))  # "rows" and "auto" often chose the same and print alike
    if not any(r["core"] == "AVR" for r in layer_rows) and any(r["core"] == "AVR" for r in rows):
        out.append("  (AVR: whole model only; the AVR runner has no per-layer marks)")
    whole = {}
    for r in rows:
        whole.setdefault((r["core"], r["kernels"], r["storage"]), {})[r["sparsity"]] = \
            r["per inference"]
    for (core, kernels, variant), by_s in sorted(whole.items()):
        if variant == "off":
            continue
        dense = whole.get((core, kernels, "off"), {})
        wins = sorted(s for s, n in by_s.items() if s in dense and n < dense[s])
        out.append(f"  whole model {core} {kernels} sparse={variant}: faster than dense "
                   + (f"from {wins[0]:.0%}" if wins else "at no measured sparsity"))
    return out


def _layer_table(layer_rows: list[dict]) -> str:
    cols = ["sparsity", "core", "kernels", "storage", "layer", "op", "shape", "format",
            "instructions"]
    lines = ["# Sparse benchmark: per layer (M4, QEMU instructions)", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(f"{r[c]:.0%}" if c == "sparsity" else str(r[c]) for c in cols)
              + " |" for r in layer_rows]
    return "\n".join(lines) + "\n"


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    panels = [("flash", None)] + sorted({(r["core"], r["kernels"]) for r in rows})
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6))
    style = {"off": "o-", "auto": "s--", "rows": "^:"}
    label = {"off": "dense", "auto": "sparse auto (fewest bytes)", "rows": "sparse rows only"}
    for ax, panel in zip(axes, panels, strict=True):
        for variant in VARIANTS:
            if panel[0] == "flash":
                sel = [r for r in rows if r["storage"] == variant and r["core"] == rows[0]["core"]
                       and r["kernels"] == rows[0]["kernels"]]
                ys = [r["weights+indices B"] for r in sel]
                ax.set_ylabel("weights + indices (bytes)")
                ax.set_title("flash")
            else:
                sel = [r for r in rows if r["storage"] == variant
                       and (r["core"], r["kernels"]) == panel]
                ys = [r["per inference"] for r in sel]
                unit = sel[0]["unit"] if sel else ""
                ax.set_ylabel(f"{unit} per inference")
                ax.set_title(f"{panel[0]}, {panel[1]} kernels")
            xs = [100 * r["sparsity"] for r in sel]
            ax.plot(xs, ys, style[variant], label=label[variant])
        ax.set_xlabel("weight sparsity (%)")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    print(run(quick="--quick" in sys.argv).markdown())
