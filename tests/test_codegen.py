"""Generated C gives the numpy reference's bytes: on the host (ASan + UBSan),
with the portable kernels and with the fast ones (their DSP code emulated or
not), and on emulated Cortex-M4 and M3 (QEMU) for the pruning engine's models.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import export_torch, randomize_bn
from models import MODELS, mlp

from microfit.codegen.generate import generate
from microfit.codegen.host import build_host_model, run_host_model
from microfit.codegen.planner import plan_memory
from microfit.ir.onnx_import import import_onnx, nchw_to_ir
from microfit.quantize.quantize import QuantizeConfig, quantize, quantize_input
from microfit.reference.executor import run_int8

# Every model of tests/models.py, and one that ends in SOFTMAX.
CODEGEN_MODELS = {**MODELS, "mlp_softmax": mlp}


_QUANTIZED: dict[tuple[str, str], tuple] = {}


def _quantized(name: str, tmp_path, mode: str = "double"):
    """The int8 graph of a test model and 300 quantized inputs (cached per process)."""
    if (name, mode) not in _QUANTIZED:
        torch.manual_seed(0)
        model = CODEGEN_MODELS[name]()
        randomize_bn(model)
        graph = import_onnx(export_torch(model, (1, 1, 8, 8), tmp_path / f"{name}.onnx"))
        x = nchw_to_ir(np.random.default_rng(0).random((300, 1, 8, 8), dtype=np.float32))
        q = quantize(graph, x[:100], QuantizeConfig(rounding=mode))
        _QUANTIZED[name, mode] = q, quantize_input(x, q.tensors[q.inputs[0]].quant)
    return _QUANTIZED[name, mode]


def _defines(mode: str, simd: bool = False) -> dict[str, str]:
    d = {"MF_SINGLE_ROUNDING": "1"} if mode == "single" else {}
    if simd:
        d["MF_SIMD_EMULATE"] = "1"
    return d


@pytest.mark.parametrize("mode", ["double", "single"])
@pytest.mark.parametrize("name", sorted(CODEGEN_MODELS))
def test_host_build_matches_reference_bytes(name, mode, tmp_path):
    q, xq = _quantized(name, tmp_path, mode)
    ref = run_int8(q, xq).reshape(len(xq), -1)
    gen = generate(q, tmp_path / "gen")
    defines = {"MF_SINGLE_ROUNDING": "1"} if mode == "single" else None
    exe = build_host_model(gen.out_dir, tmp_path / "model_host", sanitize=True, defines=defines)
    out = run_host_model(exe, xq.reshape(len(xq), -1), ref.shape[1])
    assert len(np.unique(ref)) > 3, "degenerate test: reference output nearly constant"
    np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize("name,mode", [(n, "double") for n in sorted(CODEGEN_MODELS)]
                         + [("ds_cnn", "single"), ("residual", "single")])
def test_fast_kernels_on_host_match_reference_bytes(name, mode, tmp_path):
    """kernels="fast": packed weights, folded biases, scratch; DSP code emulated and not."""
    q, xq = _quantized(name, tmp_path, mode)
    xq = xq[:100]
    ref = run_int8(q, xq).reshape(len(xq), -1)
    gen = generate(q, tmp_path / "gen", kernels="fast")
    assert gen.kernels == "fast"
    model_c = (gen.out_dir / "model.c").read_text()
    if any(n.op in ("CONV_2D", "FULLY_CONNECTED") for n in q.nodes):
        assert "mf_conv2d_s8_fast(" in model_c
    for simd in (False, True):
        exe = build_host_model(gen.out_dir, tmp_path / f"model_{simd}", sanitize=True,
                               defines=_defines(mode, simd))
        np.testing.assert_array_equal(run_host_model(exe, xq.reshape(len(xq), -1), ref.shape[1]),
                                      ref, err_msg=f"simd={simd}")


def test_kernel_set_follows_the_board_core():
    from microfit.codegen.generate import kernels_for_board, kernels_for_core

    assert kernels_for_board("qemu-mps2-an386") == "fast"
    assert kernels_for_board("qemu-mps2-an385") == "fast"
    assert kernels_for_board("arduino-uno") == "avr"
    assert kernels_for_board("host") == "portable"
    assert kernels_for_core("cortex-m0plus") == "fast"


def test_wrong_rounding_mode_is_detected(tmp_path):
    """The comparison can fail: the other rounding mode differs on some bytes of some layer."""
    q, xq = _quantized("ds_cnn", tmp_path, "double")
    a = run_int8(q, xq, mode="double", keep_all=True)
    b = run_int8(q, xq, mode="single", keep_all=True)
    assert any((a[t] != b[t]).any() for t in a), "rounding modes never differed on 300 inputs"


def test_generated_sources_are_deterministic(tmp_path):
    q, _ = _quantized("residual", tmp_path)
    g1 = generate(q, tmp_path / "a")
    g2 = generate(q, tmp_path / "b")
    for f in g1.files + [g1.out_dir / "memory_plan.json"]:
        assert f.read_bytes() == (tmp_path / "b" / f.name).read_bytes(), f.name
    assert g1.model_hash == g2.model_hash


def test_memory_plan_never_overlaps_live_tensors(tmp_path):
    q, _ = _quantized("residual", tmp_path)
    plan = plan_memory(q)
    bufs = plan.buffers
    for i, a in enumerate(bufs):
        for b in bufs[i + 1:]:
            if a.overlaps_in_time(b):
                assert a.offset + a.size <= b.offset or b.offset + b.size <= a.offset, (a, b)
    assert plan.lower_bound <= plan.arena_size <= plan.total_tensor_bytes
    assert all(b.offset % plan.alignment == 0 for b in bufs)


def test_chain_arena_equals_lower_bound(tmp_path):
    q, _ = _quantized("plain_cnn", tmp_path)
    plan = plan_memory(q)
    assert plan.arena_size == plan.lower_bound


@pytest.mark.parametrize("kernels", ["portable", "fast", "avr"])
@pytest.mark.parametrize("name", sorted(CODEGEN_MODELS))
def test_arena_equals_lower_bound_with_scratch(name, kernels, tmp_path):
    q, _ = _quantized(name, tmp_path)
    gen = generate(q, tmp_path / "gen", kernels=kernels)
    assert gen.plan.arena_size == gen.plan.lower_bound
    assert gen.plan.lower_bound <= gen.plan.total_tensor_bytes


def test_add_runs_in_place(tmp_path):
    q, _ = _quantized("residual", tmp_path)
    add = next(n for n in q.nodes if n.op == "ADD")
    plan = plan_memory(q)
    assert plan.offsets[add.outputs[0]] in (plan.offsets[add.inputs[0]], plan.offsets[add.inputs[1]])
    apart = plan_memory(q, in_place=False)
    assert apart.offsets[add.outputs[0]] not in (apart.offsets[add.inputs[0]],
                                                 apart.offsets[add.inputs[1]])
    assert plan.total_tensor_bytes < apart.total_tensor_bytes
    assert plan.lower_bound <= apart.lower_bound


def test_planner_search_closes_the_gap_greedy_leaves():
    """A chain where largest-first leaves a hole (MobileNet's first layers): the search finds
    the lower bound."""
    from microfit.codegen.planner import Buffer, _greedy, _search

    bufs = [Buffer("in", 27648, -1, 0), Buffer("a", 18432, 0, 1), Buffer("b", 18432, 1, 2),
            Buffer("c", 36864, 2, 3)]
    sizes = {b.name: b.size for b in bufs}
    greedy = _greedy(sorted(bufs, key=lambda b: -b.size), sizes)
    assert max(greedy[b.name] + b.size for b in bufs) > 55296
    found = _search(sorted(bufs, key=lambda b: -b.size), sizes, 55296, 4)
    assert found is not None and max(found[b.name] + b.size for b in bufs) == 55296


def test_generated_model_uses_no_float_and_no_malloc(tmp_path):
    q, _ = _quantized("ds_cnn", tmp_path)
    gen = generate(q, tmp_path / "gen")
    text = "\n".join(f.read_text() for f in gen.files)
    for banned in ("float ", "double ", "malloc", "calloc", "free("):
        assert banned not in text, banned


def test_every_ir_op_has_a_kernel_emitter():
    from microfit.codegen.kernels import EMITTERS
    from microfit.ir.graph import OPS

    assert set(OPS) <= set(EMITTERS)


def test_op_without_kernel_is_a_clear_error(tmp_path, monkeypatch):
    from microfit.codegen import kernels
    from microfit.errors import UnsupportedOpError

    q, _ = _quantized("mlp_softmax", tmp_path)
    monkeypatch.delitem(kernels.EMITTERS, "SOFTMAX")
    with pytest.raises(UnsupportedOpError, match="SOFTMAX"):
        generate(q, tmp_path / "gen")


def test_softmax_model_output_is_a_distribution(tmp_path):
    """The generated softmax writes probabilities in 1/256 units that sum to about one."""
    q, xq = _quantized("mlp_softmax", tmp_path)
    assert q.nodes[-1].op == "SOFTMAX"
    gen = generate(q, tmp_path / "gen")
    assert "mf_softmax_s8(" in (gen.out_dir / "model.c").read_text()
    exe = build_host_model(gen.out_dir, tmp_path / "model_host", sanitize=True)
    out = run_host_model(exe, xq[:50].reshape(50, -1), 10).astype(int) + 128
    assert np.all(np.abs(out.sum(axis=1) - 256) <= 10)


# The pruning engine's architectures (tests/prune_models.py) that the int8 IR imports.
PRUNE_CNNS = ["plain_cnn", "ds_cnn", "mobilenet_v1", "mobilenet_v2", "resnet8",
              "mlp_autoencoder", "concat_net"]


_PRUNE_QUANTIZED: dict[str, tuple] = {}


def _prune_model_quantized(name: str, tmp_path):
    """A pruning-engine model with random weights, quantized, and two inputs (cached)."""
    if name not in _PRUNE_QUANTIZED:
        import prune_models

        factory, shape, _ = prune_models.MODELS[name]
        torch.manual_seed(0)
        model = factory()
        randomize_bn(model)
        graph = import_onnx(export_torch(model, shape, tmp_path / f"{name}.onnx"))
        x = nchw_to_ir(np.random.default_rng(0).standard_normal((34, *shape[1:]),
                                                                 dtype=np.float32))
        q = quantize(graph, x[:32], QuantizeConfig())
        _PRUNE_QUANTIZED[name] = q, quantize_input(x[32:], q.tensors[q.inputs[0]].quant)
    return _PRUNE_QUANTIZED[name]


@pytest.mark.parametrize("name", PRUNE_CNNS)
def test_pruning_models_match_reference_bytes_on_host_and_in_qemu(name, tmp_path):
    """Host: portable and fast kernels (DSP code emulated), no sanitizers (the kernel tests
    run those). QEMU: fast kernels with the DSP assembly on the M4, and without the DSP
    extension on the M3 (ResNet-8)."""
    import shutil

    from microfit.icount import measure_model

    q, xq = _prune_model_quantized(name, tmp_path)
    ref = run_int8(q, xq).reshape(len(xq), -1)
    assert len(np.unique(ref)) > 2, "degenerate test: reference output nearly constant"
    gens = {k: generate(q, tmp_path / k, kernels=k) for k in ("portable", "fast")}
    gens["avr"] = generate(q, tmp_path / "avr", kernels="avr")
    for kernels, simd in (("portable", False), ("fast", True), ("avr", False)):
        exe = build_host_model(gens[kernels].out_dir, tmp_path / f"{kernels}_{simd}",
                               sanitize=False, defines=_defines("double", simd))
        np.testing.assert_array_equal(run_host_model(exe, xq.reshape(len(xq), -1), ref.shape[1]),
                                      ref, err_msg=f"host, {kernels} kernels, simd={simd}")
    if not (shutil.which("qemu-system-arm") and shutil.which("arm-none-eabi-gcc")):
        pytest.skip("apt-get install qemu-system-arm gcc-arm-none-eabi libnewlib-arm-none-eabi")
    for gen in gens.values():
        assert gen.plan.arena_size == gen.plan.lower_bound, gen.kernels
    boards = ["qemu-mps2-an386", "qemu-mps2-an385"] if name == "resnet8" else ["qemu-mps2-an386"]
    for board in boards:
        count = measure_model(gens["fast"].out_dir, xq, board, per_layer=False)
        np.testing.assert_array_equal(count.outputs, ref, err_msg=board)
        assert count.per_inference[0] > q.macs() // 2  # at most two MACs per instruction


def test_cli_generate_takes_a_kernel_set(tmp_path):
    """`microfit generate RUN --kernels portable` overrides the board's default (fast)."""
    from microfit.cli import main

    q, _ = _quantized("plain_cnn", tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    q.save(run / "quant.json", run / "quant.npz")
    for kernels, call in (("portable", "mf_conv2d_s8("), (None, "mf_conv2d_s8_fast(")):
        args = ["-q", "generate", str(run), "--target", "qemu-mps2-an386"]
        assert main(args + (["--kernels", kernels] if kernels else [])) == 0
        assert call in (run / "generated" / "model.c").read_text()
