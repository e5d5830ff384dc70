"""Generated C on the host (ASan + UBSan) gives the numpy reference's bytes."""

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


def _quantized(name: str, tmp_path, mode: str = "double"):
    torch.manual_seed(0)
    model = CODEGEN_MODELS[name]()
    randomize_bn(model)
    graph = import_onnx(export_torch(model, (1, 1, 8, 8), tmp_path / f"{name}.onnx"))
    x = nchw_to_ir(np.random.default_rng(0).random((300, 1, 8, 8), dtype=np.float32))
    q = quantize(graph, x[:100], QuantizeConfig(rounding=mode))
    return q, quantize_input(x, q.tensors[q.inputs[0]].quant)


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
