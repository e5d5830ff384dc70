"""LOGISTIC, TANH (table lookup) and standalone PAD through the whole int8 path.

- the C kernels mf_lut_s8 and mf_pad_s8 equal the numpy reference byte for
  byte on hundreds of random cases, under ASan + UBSan (tests/c/lut_pad_driver.c),
  and on emulated boards: 15 cases each on the ATmega328P (simavr, tables and
  params in flash), 40 each on Cortex-M4 and M3 (QEMU; tests/emulated_kernels.py);
- the reference tables are what TFLite computes (the oracle tests in
  test_tflite_oracles.py check them against TFLite Micro and LiteRT; here:
  their shape against the real functions, and where the modes part);
- ONNX Sigmoid / Tanh / Pad import, with clear errors for what cannot map;
- a small torch model with a standalone pad, a sigmoid and a tanh: ONNX ->
  quantize -> both TFLite interpreters layer by layer -> generated C on the
  host, all equal.
"""

from __future__ import annotations

import os
import struct
import subprocess
from pathlib import Path

import emulated_kernels as emu
import numpy as np
import pytest
from onnx import TensorProto, helper

from microfit.codegen.kernels import pad_fields
from microfit.errors import ToolchainMissingError, UnsupportedOpError
from microfit.ir.onnx_import import import_onnx
from microfit.reference import ops
from microfit.toolchain.host import compile_host, runtime_dir

DRIVER_SRC = Path(__file__).parent / "c" / "lut_pad_driver.c"
OP_LUT, OP_LUT_IN_PLACE, OP_PAD = 1, 2, 3
N_CASES = 300


@pytest.fixture(scope="module")
def driver(tmp_path_factory) -> Path:
    src = runtime_dir() / "src"
    try:
        return compile_host([DRIVER_SRC, src / "lut_s8.c", src / "pad_s8.c"],
                            tmp_path_factory.mktemp("lut_pad") / "lut_pad_driver",
                            [runtime_dir() / "include"], extra_flags=("-pedantic",))
    except ToolchainMissingError as exc:
        pytest.skip(str(exc))


def _run(driver: Path, blob: bytes) -> bytes:
    proc = subprocess.run([str(driver)], input=blob, capture_output=True, timeout=120,
                          env={**os.environ, "ASAN_OPTIONS": "detect_leaks=0"})
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
    return proc.stdout


def _words(*v: int) -> bytes:
    return struct.pack(f"<{len(v)}i", *v)


# -- C kernels == numpy ------------------------------------------------------------------------


def test_lut_kernel_matches_reference_bytes(driver):
    rng = np.random.default_rng(1)
    blobs, expected = [], []
    modes = ("double", "single", "litert")
    for k in range(N_CASES):
        op = ops.LUT_OPS[k % 2]
        scale = float(np.exp(rng.uniform(np.log(1e-3), np.log(2.0))))
        zp = int(rng.integers(-128, 128))
        table = ops.lut_table(op, scale, zp, modes[k % 3])
        size = int(rng.choice([0, 1, 3, 256, int(rng.integers(1, 700))]))
        x = rng.integers(-128, 128, size).astype(np.int8)
        in_place = bool(k % 4 == 3)
        blobs.append(_words(OP_LUT_IN_PLACE if in_place else OP_LUT, size) + table.tobytes()
                     + x.tobytes())
        expected.append(ops.lut_s8(x, table))
    out = _run(driver, b"".join(blobs))
    want = np.concatenate(expected)
    assert len(out) == want.size
    np.testing.assert_array_equal(np.frombuffer(out, np.int8), want)


def _random_pad_case(rng):
    if rng.random() < 0.25:  # a [N, C] tensor
        shape = (1, int(rng.integers(1, 20)))
        paddings = [[0, 0], [int(v) for v in rng.integers(0, 4, 2)]]
    else:
        shape = (1, *(int(v) for v in rng.integers(1, 7, 3)))
        paddings = [[0, 0]] + [[int(v) for v in rng.integers(0, 4, 2)] for _ in range(3)]
        for axis in rng.choice(3, int(rng.integers(0, 3)), replace=False):
            paddings[1 + axis] = [0, 0]  # often leave some axes unpadded
    return shape, paddings, int(rng.integers(-128, 128))


def test_pad_kernel_matches_reference_bytes(driver):
    rng = np.random.default_rng(2)
    blobs, expected = [], []
    for _ in range(N_CASES):
        shape, paddings, fill = _random_pad_case(rng)
        x = rng.integers(-128, 128, shape).astype(np.int8)
        f = pad_fields(shape, paddings, fill)  # what code generation writes
        blobs.append(_words(OP_PAD, *f.values()) + x.tobytes())
        expected.append(ops.pad_s8(x, paddings, fill).ravel())
    out = _run(driver, b"".join(blobs))
    want = np.concatenate(expected)
    assert len(out) == want.size
    np.testing.assert_array_equal(np.frombuffer(out, np.int8), want)


# -- the reference tables ----------------------------------------------------------------------


@pytest.mark.parametrize("op", ops.LUT_OPS)
@pytest.mark.parametrize("mode", ["double", "single", "litert"])
def test_tables_follow_the_real_function_to_one_step(op, mode):
    # TFLite's arithmetic is exact to the output step but for rounding; a wrong
    # Q format, shift or sign would be off by far more.
    rng = np.random.default_rng(3)
    out_scale, out_zp = ops.LUT_OUTPUT_QUANT[op]
    fn = (lambda v: 1 / (1 + np.exp(-v))) if op == "LOGISTIC" else np.tanh
    for _ in range(40):
        scale = float(np.exp(rng.uniform(np.log(1e-3), np.log(1.0))))
        zp = int(rng.integers(-128, 128))
        table = ops.lut_table(op, scale, zp, mode).astype(np.int64)
        real = fn(np.float32(scale) * (np.arange(-128, 128) - zp))
        exact = np.clip(np.round(real / out_scale) + out_zp, -128, 127)
        assert np.abs(table - exact).max() <= 1, (scale, zp)
        assert (np.diff(table) >= 0).all()  # monotonic


def test_tflite_micro_prepare_constants():
    # scale 1/16: 2^-4 * 2^27 = 2^23 = 0.5 * 2^24 -> multiplier 2^30, shift 24;
    # radius floor(15 * 2^27 / 2^24) = 120 steps of 1/16 (7.5).
    assert ops.lut_input_params(1 / 16) == {"input_multiplier": 1 << 30, "input_left_shift": 24,
                                            "input_range_radius": 120}
    table = ops.lut_table("LOGISTIC", 1 / 16, 0)
    assert table[128] == 0  # sigmoid(0) = 0.5 = (0 - (-128)) / 256
    assert table[128 - 120] == -128 and table[128 + 119] == 127  # saturated at the radius
    assert ops.lut_table("TANH", 1 / 16, 0)[128] == 0
    with pytest.raises(ValueError, match="below 2\\^-28"):
        ops.lut_input_params(1e-9)


# -- ONNX import ------------------------------------------------------------------------------


def _onnx_model(nodes, inits=(), in_shape=(1, 2, 3, 3)):
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _pads(values):
    return helper.make_tensor("pads", TensorProto.INT64, [len(values)], values)


def test_onnx_sigmoid_tanh_and_standalone_pad_import():
    nodes = [helper.make_node("Pad", ["x", "pads"], ["p"], name="pad"),
             helper.make_node("Sigmoid", ["p"], ["s"], name="sig"),
             helper.make_node("Tanh", ["s"], ["y"], name="th")]
    g = import_onnx(_onnx_model(nodes, [_pads([0, 1, 2, 0, 0, 0, 1, 3])]))
    assert [n.op for n in g.nodes] == ["PAD", "LOGISTIC", "TANH"]
    # NCHW pads (c 1/0, h 2/1, w 0/3) become NHWC pairs.
    assert g.nodes[0].attrs["paddings"] == [[0, 0], [2, 1], [0, 3], [1, 0]]
    assert g.tensors[g.outputs[0]].shape == (1, 6, 6, 3)


@pytest.mark.parametrize("make,match", [
    (lambda: _onnx_model([helper.make_node("Pad", ["x", "pads"], ["y"], name="mirror",
                                           mode="reflect")], [_pads([0, 0, 1, 1, 0, 0, 1, 1])]),
     r"Pad 'mirror' uses mode 'reflect'.*Pad with zeros instead"),
    (lambda: _onnx_model([helper.make_node("Pad", ["x", "pads"], ["y"], name="crop")],
                         [_pads([0, 0, -1, 0, 0, 0, 0, 0])]),
     r"Pad 'crop' has negative pads .*crop with a Slice"),
    (lambda: _onnx_model([helper.make_node("Pad", ["x", "pads", "v"], ["y"], name="ones")],
                         [_pads([0, 0, 1, 1, 0, 0, 1, 1]),
                          helper.make_tensor("v", TensorProto.FLOAT, [], [1.0])]),
     r"Pad 'ones' fills with 1.0; only 0 is supported"),
    (lambda: _onnx_model([helper.make_node("Identity", ["x"], ["xi"], name="id"),
                          helper.make_node("Pad", ["x", "xi"], ["y"], name="dyn")]),
     r"Pad 'dyn': its pads come from the run-time tensor 'xi'.*fixed padding sizes"),
    (lambda: _onnx_model([helper.make_node("Pad", ["x", "pads"], ["y"], name="batch")],
                         [_pads([1, 0, 0, 0, 0, 0, 0, 0])]),
     r"Pad 'batch' pads the batch axis"),
])
def test_onnx_pad_errors_name_the_node_and_the_fix(make, match):
    with pytest.raises(UnsupportedOpError, match=match):
        import_onnx(make())


# -- .tflite export -> import ----------------------------------------------------------------


def test_tflite_round_trip_keeps_logistic_tanh_and_pad():
    import tflite_cases as cases

    from microfit.ir.tflite_export import export_tflite
    from microfit.ir.tflite_import import import_tflite
    from microfit.reference.executor import run_int8

    rng = np.random.default_rng(4)
    for g in (cases.lut_graph(rng, "LOGISTIC"), cases.lut_graph(rng, "TANH"),
              cases.pad_graph(rng)):
        again = import_tflite(export_tflite(g))
        assert [n.op for n in again.nodes] == [n.op for n in g.nodes]
        x = rng.integers(-128, 128, (20,) + g.tensors["x"].shape[1:]).astype(np.int8)
        np.testing.assert_array_equal(run_int8(again, x), run_int8(g, x))
        assert export_tflite(again) == export_tflite(g)


def test_tflite_logistic_with_another_output_quantization_is_rejected():
    import tflite_cases as cases

    from microfit.ir.tflite_export import export_tflite
    from microfit.ir.tflite_import import import_tflite

    g = cases.lut_graph(np.random.default_rng(9), "LOGISTIC")
    g.tensors["y"].quant = cases.qp(0.01, 0)
    with pytest.raises(UnsupportedOpError, match=r"operator 0 \(LOGISTIC\).*needs 0.00390625, -128"):
        import_tflite(export_tflite(g))


# -- one model, end to end -------------------------------------------------------------------


def test_model_with_pad_sigmoid_tanh_matches_oracles_and_host_c(tmp_path):
    pytest.importorskip("ai_edge_litert")
    pytest.importorskip("tflite_micro")
    import torch
    from conftest import export_torch
    from torch import nn

    from microfit.codegen.generate import generate
    from microfit.codegen.host import build_host_model, run_host_model
    from microfit.ir.onnx_import import nchw_to_ir
    from microfit.ir.tflite_oracle import ORACLES, compare_with_oracle
    from microfit.quantize.quantize import QuantizeConfig, quantize, quantize_input
    from microfit.reference.executor import run_int8

    class PadSigmoidTanh(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(1, 4, 3)
            self.conv2 = nn.Conv2d(5, 6, 3, stride=2)
            self.fc = nn.Linear(6 * 3 * 4, 5)

        def forward(self, x):
            x = self.conv1(x)
            x = nn.functional.pad(x, (1, 2, 0, 1, 1, 0))  # w 1/2, h 0/1, one channel in front
            x = torch.sigmoid(x)
            x = torch.tanh(self.conv2(x))
            return self.fc(x.flatten(1))

    torch.manual_seed(0)
    graph = import_onnx(export_torch(PadSigmoidTanh(), (1, 1, 8, 8), tmp_path / "m.onnx"))
    assert [n.op for n in graph.nodes] == ["CONV_2D", "PAD", "LOGISTIC", "CONV_2D", "TANH",
                                           "RESHAPE", "FULLY_CONNECTED"]
    x_nchw = np.random.default_rng(0).normal(0, 2, (300, 1, 8, 8)).astype(np.float32)
    import onnxruntime as ort

    from microfit.reference.float_exec import run_float

    sess = ort.InferenceSession(str(tmp_path / "m.onnx"))
    expected = np.concatenate([sess.run(None, {"input": x_nchw[i:i + 1]})[0] for i in range(8)])
    np.testing.assert_allclose(run_float(graph, nchw_to_ir(x_nchw[:8])), expected, atol=2e-5,
                               rtol=1e-5)
    x = nchw_to_ir(x_nchw)
    q = quantize(graph, x[:100], QuantizeConfig())
    for n in q.nodes:
        if n.op in ops.LUT_OUTPUT_QUANT:  # TFLite's fixed output quantization
            out_q = q.tensors[n.outputs[0]].quant
            assert (float(out_q.scale[0]), int(out_q.zero_point[0])) == ops.LUT_OUTPUT_QUANT[n.op]
        if n.op == "PAD":
            assert q.tensors[n.outputs[0]].quant.to_json() == q.tensors[n.inputs[0]].quant.to_json()
    xq = quantize_input(x, q.tensors[q.inputs[0]].quant)
    for oracle in ORACLES:
        res = compare_with_oracle(q, xq, oracle)
        assert res.equal, res.summary()
    ref = run_int8(q, xq).reshape(len(xq), -1)
    assert len(np.unique(ref)) > 3, "degenerate test: reference output nearly constant"
    gen = generate(q, tmp_path / "gen")
    exe = build_host_model(gen.out_dir, tmp_path / "model_host", sanitize=True)
    np.testing.assert_array_equal(run_host_model(exe, xq.reshape(len(xq), -1), ref.shape[1]), ref)
    # The single-rounding build: its tables come from the single-rounding reference.
    ref1 = run_int8(q, xq, mode="single").reshape(len(xq), -1)
    gen1 = generate(q, tmp_path / "gen1", mode="single")
    exe1 = build_host_model(gen1.out_dir, tmp_path / "model_host1", sanitize=True,
                            defines={"MF_SINGLE_ROUNDING": "1"})
    np.testing.assert_array_equal(run_host_model(exe1, xq.reshape(len(xq), -1), ref1.shape[1]),
                                  ref1)


def test_logistic_and_tanh_run_in_place():
    import tflite_cases as cases

    from microfit.codegen.planner import plan_memory

    g = cases.lut_graph(np.random.default_rng(5), "TANH")
    g.nodes.append(cases.lut_graph(np.random.default_rng(5), "LOGISTIC").nodes[0])
    g.nodes[1].inputs, g.nodes[1].outputs = ["y"], ["z"]
    g.tensors["z"] = cases.Tensor("z", g.tensors["y"].shape, "int8", None, cases.qp(1 / 256, -128))
    g.outputs = ["z"]
    plan = plan_memory(g)
    # Each op overwrites the input it reads for the last time: one 60-byte buffer.
    assert plan.offsets["x"] == plan.offsets["y"] == plan.offsets["z"]
    assert plan.arena_size == plan.lower_bound == 60


# -- on emulated boards: ATmega328P (tables and params in flash, PROGMEM), Cortex-M4 and M3 ----


def _emulator_cases(rng: np.random.Generator, n_each: int, arena: int):
    """C declarations, calls and expected outputs: ``n_each`` lookups and ``n_each`` pads.

    Lookups alternate between in place and a separate output; pads load their
    input 0 to 3 bytes into the arena and write right after it, so neither is
    word-aligned.
    """
    decls, calls, expected = [], [], []
    modes = ("double", "single", "litert")
    for i in range(2 * n_each):
        if i % 2 == 0:
            op = ops.LUT_OPS[i % 4 // 2]
            table = ops.lut_table(op, float(np.exp(rng.uniform(np.log(1e-3), np.log(2.0)))),
                                  int(rng.integers(-128, 128)), modes[i // 2 % 3])
            x = rng.integers(-128, 128, int(rng.integers(1, min(700, arena // 2)))).astype(np.int8)
            out = "mf_test_arena" if i % 4 == 0 else f"mf_test_arena + {x.size}"  # in place
            decls += [f"static const mf_lut_params p{i} MF_CONST = {{.size = {x.size}}};",
                      emu.c_array(f"t{i}", table), emu.c_array(f"x{i}", x)]
            calls += [f"mf_test_load(mf_test_arena, x{i}, {x.size});",
                      f"mf_lut_s8(&p{i}, t{i}, mf_test_arena, {out});",
                      f"mf_test_emit({i}, {out}, {x.size});"]
            expected.append(ops.lut_s8(x, table))
        else:
            while True:
                shape, paddings, fill = _random_pad_case(rng)
                x = rng.integers(-128, 128, shape).astype(np.int8)
                want = ops.pad_s8(x, paddings, fill)
                if 3 + x.size + want.size <= arena:
                    break
            f = pad_fields(shape, paddings, fill)
            init = ", ".join(f".{k} = {v}" for k, v in f.items())
            off = int(rng.integers(0, 4))
            decls += [f"static const mf_pad_params p{i} MF_CONST = {{{init}}};",
                      emu.c_array(f"x{i}", x)]
            calls += [f"mf_test_load(mf_test_arena + {off}, x{i}, {x.size});",
                      f"mf_pad_s8(&p{i}, mf_test_arena + {off}, mf_test_arena + {off + x.size});",
                      f"mf_test_emit({i}, mf_test_arena + {off + x.size}, {want.size});"]
            expected.append(want.ravel())
    return decls, calls, expected


_LUT_PAD_SOURCES = [runtime_dir() / "src" / "lut_s8.c", runtime_dir() / "src" / "pad_s8.c"]


def test_lut_and_pad_on_emulated_atmega328p_read_flash(tmp_path):
    decls, calls, expected = _emulator_cases(np.random.default_rng(6), 15, emu.AVR_ARENA)
    outputs = emu.run_cases(tmp_path, "atmega328p", emu.program(decls, calls), _LUT_PAD_SOURCES)
    emu.assert_outputs(outputs, expected)


@pytest.mark.qemu
@pytest.mark.parametrize("board", ["qemu-mps2-an386", "qemu-mps2-an385"], ids=["m4", "m3"])
def test_lut_and_pad_on_emulated_cortex_m_match_reference(tmp_path, board):
    decls, calls, expected = _emulator_cases(np.random.default_rng(7), 40, 4096)
    outputs = emu.run_cases(tmp_path, board, emu.program(decls, calls), _LUT_PAD_SOURCES)
    emu.assert_outputs(outputs, expected)
