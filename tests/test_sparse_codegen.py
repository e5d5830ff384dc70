"""Sparse storage wired into code generation (issue 8): magnitude-pruned models
generated with ``sparse="auto"`` give the dense generation's bytes on the host
(ASan+UBSan, every kernel set) and in QEMU (Cortex-M4), in fewer weight bytes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import export_torch, randomize_bn, requires_qemu
from models import MODELS, mlp

from microfit.codegen.generate import generate
from microfit.codegen.host import build_host_model, run_host_model
from microfit.ir.onnx_import import import_onnx, nchw_to_ir
from microfit.prune.unstructured import apply_masks, magnitude_masks
from microfit.quantize.quantize import QuantizeConfig, quantize, quantize_input
from microfit.reference.executor import run_int8


def odd_convs() -> torch.nn.Module:
    """General convolutions in every shape the sparse KxK kernel must walk: non-square
    kernels, stride, dilation, asymmetric padding, and a padded strided 1x1."""
    nn = torch.nn
    # 8x8 -> 8x8 -> 8x9 -> 7x5 (interior and border pixels with dilation along w) -> 9x7;
    # the last 1x1 reads every pixel, so no border output is dropped before the FC.
    return nn.Sequential(nn.Conv2d(1, 12, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(12, 16, (3, 2), dilation=(2, 1), padding=(2, 1)), nn.ReLU(),
                         nn.Conv2d(16, 24, (2, 3), stride=(1, 2), dilation=(1, 2), padding=(0, 2)),
                         nn.ReLU(), nn.Conv2d(24, 8, 1, padding=1),
                         nn.Flatten(), nn.LazyLinear(10))


SPARSE_MODELS = {**MODELS, "mlp": mlp, "odd_convs": odd_convs}
_CACHE: dict = {}


def _sparse_quantized(name: str, sparsity: float, tmp_path):
    """A test model with ``sparsity`` of its weights zeroed by magnitude, int8, and inputs."""
    key = (name, sparsity)
    if key not in _CACHE:
        torch.manual_seed(0)
        model = SPARSE_MODELS[name]()
        model(torch.zeros(1, 1, 8, 8))  # materialise lazy layers
        randomize_bn(model)
        apply_masks(model, magnitude_masks(model, sparsity, scope="layer"))
        graph = import_onnx(export_torch(model, (1, 1, 8, 8), tmp_path / f"{name}.onnx"))
        x = nchw_to_ir(np.random.default_rng(0).random((120, 1, 8, 8), dtype=np.float32))
        q = quantize(graph, x[:100], QuantizeConfig())
        _CACHE[key] = q, quantize_input(x[100:], q.tensors[q.inputs[0]].quant)
    return _CACHE[key]


def _zeros(q) -> float:
    ws = [q.tensors[n.inputs[1]].data for n in q.nodes if n.op in ("CONV_2D", "FULLY_CONNECTED")]
    return sum(int((w == 0).sum()) for w in ws) / sum(w.size for w in ws)


@pytest.mark.parametrize("name", sorted(SPARSE_MODELS))
def test_sparse_generation_equals_dense_bytes_on_host(name, tmp_path):
    """Every kernel set, ASan+UBSan: sparse layers byte-equal to the reference (= the dense C)."""
    q, xq = _sparse_quantized(name, 0.8, tmp_path)
    assert _zeros(q) >= 0.75, "float zeros must stay exact int8 zeros"
    ref = run_int8(q, xq).reshape(len(xq), -1)
    assert len(np.unique(ref)) > 2, "degenerate test: reference output nearly constant"
    for kernels in ("portable", "fast", "avr"):
        dense = generate(q, tmp_path / f"dense_{kernels}", kernels=kernels, sparse="off")
        gen = generate(q, tmp_path / f"sparse_{kernels}", kernels=kernels)
        stored = [r for r in gen.summary()["sparse_layers"] if r["format"] != "dense"]
        assert stored, "no layer went sparse at 80% sparsity"
        assert gen.weight_bytes < dense.weight_bytes
        assert dense.summary()["sparse_layers"] == []
        model_c = (gen.out_dir / "model.c").read_text()
        for r in stored:
            assert f"{r['kernel']}(&p" in model_c
        defines = {"MF_SIMD_EMULATE": "1"} if kernels == "fast" else None
        exe = build_host_model(gen.out_dir, tmp_path / f"exe_{kernels}", sanitize=True,
                               defines=defines)
        out = run_host_model(exe, xq.reshape(len(xq), -1), ref.shape[1])
        np.testing.assert_array_equal(out, ref, err_msg=f"{kernels} kernels")


def test_every_sparse_kernel_is_exercised(tmp_path):
    """FC rows and bitmap, 1x1 and KxK conv rows all appear across the test models."""
    seen = set()
    for name in SPARSE_MODELS:
        for s in (0.6, 0.8, 0.95):
            q, _ = _sparse_quantized(name, s, tmp_path)
            seen |= {r["kernel"] for r in generate(q, tmp_path / f"{name}{s}").sparse_layers}
    assert {"mf_sparse_fully_connected_s8", "mf_bitmap_fully_connected_s8",
            "mf_sparse_conv1x1_s8", "mf_sparse_conv2d_s8"} <= seen


def test_kxk_and_strided_sparse_convs_at_ninety_five_percent_on_host(tmp_path):
    """Whole output channels empty, strides, dilation, padding (ds_cnn, plain_cnn)."""
    for name in ("odd_convs", "ds_cnn", "plain_cnn"):
        q, xq = _sparse_quantized(name, 0.95, tmp_path)
        ref = run_int8(q, xq).reshape(len(xq), -1)
        gen = generate(q, tmp_path / name, kernels="portable")
        assert any(r["kernel"] == "mf_sparse_conv2d_s8" for r in gen.sparse_layers)
        exe = build_host_model(gen.out_dir, tmp_path / f"exe_{name}", sanitize=True)
        np.testing.assert_array_equal(run_host_model(exe, xq.reshape(len(xq), -1), ref.shape[1]),
                                      ref, err_msg=name)


def test_dense_model_stays_dense_and_records_why(tmp_path):
    """Unpruned weights: sparse="auto" changes no byte of the sources, and says why per layer."""
    q, _ = _sparse_quantized("plain_cnn", 0.0, tmp_path)
    auto = generate(q, tmp_path / "auto")
    off = generate(q, tmp_path / "off", sparse="off")
    for f in ("model.c", "model_weights.c", "model_weights.h"):
        assert (auto.out_dir / f).read_text() == (off.out_dir / f).read_text()
    recs = auto.summary()["sparse_layers"]
    assert len(recs) == 3 and all(r["format"] == "dense" for r in recs)
    assert all(r["bytes_chosen"] == r["bytes_dense"] < r["candidates"]["rows"] for r in recs)
    assert all(r["reason"].startswith("dense: no sparse format is smaller") for r in recs)
    json.dumps(auto.summary())


def test_unknown_sparse_mode_is_a_clear_error(tmp_path):
    q, _ = _sparse_quantized("mlp", 0.8, tmp_path)
    with pytest.raises(ValueError, match="unknown sparse mode 'on'.*auto.*rows.*off"):
        generate(q, tmp_path / "g", sparse="on")


@requires_qemu
def test_sparse_model_on_emulated_cortex_m4_equals_reference(tmp_path):
    """Fast kernel set on the M4 (DSP dense layers beside portable sparse ones)."""
    from microfit.icount import measure_model

    q, xq = _sparse_quantized("ds_cnn", 0.8, tmp_path)
    ref = run_int8(q, xq[:8]).reshape(8, -1)
    gen = generate(q, tmp_path / "gen", board_name="qemu-mps2-an386")
    assert gen.kernels == "fast" and any(r["format"] != "dense" for r in gen.sparse_layers)
    count = measure_model(gen.out_dir, xq[:8], "qemu-mps2-an386", per_layer=False)
    np.testing.assert_array_equal(count.outputs, ref)


def test_cli_sparse_option_and_report_say_which_and_why(tmp_path):
    """`microfit generate RUN [--sparse off]`: generate.json and report.md name each layer's form."""
    from microfit.cli import main

    q, _ = _sparse_quantized("mlp", 0.8, tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    q.save(run / "quant.json", run / "quant.npz")
    base = ["-q", "generate", str(run), "--target", "host"]
    assert main(base + ["--sparse", "off"]) == 0
    off = json.loads((run / "generate.json").read_text())
    assert off["sparse"] == "off" and off["sparse_layers"] == []
    assert main(base) == 0
    auto = json.loads((run / "generate.json").read_text())
    assert auto["sparse"] == "auto" and auto["weight_bytes"] < off["weight_bytes"]
    assert [r["format"] for r in auto["sparse_layers"]] == ["bitmap", "bitmap"]
    assert main(base + ["--sparse", "rows"]) == 0
    rows = json.loads((run / "generate.json").read_text())
    assert [r["format"] for r in rows["sparse_layers"]] == ["rows", "rows"]
    assert rows["weight_bytes"] < off["weight_bytes"]
    assert main(["-q", "report", str(run)]) == 0
    md = (run / "report.md").read_text()
    assert "## Weight storage" in md and "| rows |" in md and "B instead of" in md


def test_sparse_model_on_simulated_avr_equals_reference(tmp_path):
    """"avr" kernel set, streams in PROGMEM, 16-bit products: FC rows/bitmap and KxK/1x1 conv
    rows on an AVR core in simavr (ATmega2560: these models' arenas outgrow the Uno's RAM)."""
    import shutil
    import sys
    from pathlib import Path

    for tool in ("avr-gcc", "simavr"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} missing: apt-get install gcc-avr avr-libc simavr")
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench.bench_sparse import avr_cycles

    kernels_seen = set()
    for name, s in (("odd_convs", 0.8), ("mlp", 0.7)):
        q, xq = _sparse_quantized(name, s, tmp_path)
        ref = run_int8(q, xq[:3]).reshape(3, -1)
        gen = generate(q, tmp_path / name, kernels="avr")
        kernels_seen |= {r["kernel"] for r in gen.sparse_layers}
        cycles, outs = avr_cycles(gen.out_dir, xq[:3], tmp_path / f"avr_{name}")
        np.testing.assert_array_equal(outs, ref, err_msg=name)
        assert min(cycles) > 0
    assert {"mf_sparse_conv2d_s8", "mf_sparse_conv1x1_s8", "mf_bitmap_fully_connected_s8"} \
        <= kernels_seen


def _requant_flags(gen) -> dict[str, int]:
    """Each fast layer's requantization flags (the first int32 of its *_requant array)."""
    import re

    text = (gen.out_dir / "model_weights.c").read_text()
    return {m.group(1): int(m.group(2))
            for m in re.finditer(r"const int32_t (\w+)_requant\[\d+\][^{]*\{\s*(-?\d+)", text)}


@pytest.mark.parametrize("mode", ["double", "single"])
def test_empty_output_channels_keep_the_fast_requantization(mode, tmp_path):
    """An output channel pruned to zero (shift 0 or +1) must not send its layer down the slow
    path: the dense fast kernels keep MF_RQ_FAST | MF_RQ_SMALL and the reference's bytes."""
    from microfit.codegen import layouts

    q, xq = _sparse_quantized("ds_cnn", 0.95, tmp_path)
    empty = [n.name for n in q.nodes if n.op in ("CONV_2D", "FULLY_CONNECTED",
                                                 "DEPTHWISE_CONV_2D")
             and not q.tensors[n.inputs[1]].data.reshape(
                 q.tensors[n.inputs[1]].data.shape[0], -1).any(axis=1).all()]
    assert empty, "degenerate test: no layer with an all-zero output channel"
    ref = run_int8(q, xq, mode=mode).reshape(len(xq), -1)
    gen = generate(q, tmp_path / "gen", kernels="fast", sparse="off", mode=mode)
    flags = _requant_flags(gen)
    fast_both = layouts.RQ_FAST | layouts.RQ_SMALL
    assert flags and all(f == fast_both for f in flags.values()), flags
    defines = {"MF_SIMD_EMULATE": "1"}
    if mode == "single":
        defines["MF_SINGLE_ROUNDING"] = "1"
    exe = build_host_model(gen.out_dir, tmp_path / "exe", sanitize=True, defines=defines)
    np.testing.assert_array_equal(run_host_model(exe, xq.reshape(len(xq), -1), ref.shape[1]),
                                  ref)


def test_constant_channel_requantization_forms():
    """pack_requant's constant channels: multiplier 0, e 2, round 4c, for zero rows and for
    multiplier 0; without weights the old behaviour (slow path) stays."""
    from microfit.codegen import layouts

    w = np.array([[1, 2], [0, 0], [3, 0]], np.int8)
    packed = layouts.pack_requant([1 << 30, 1 << 30, 0], [-5, 1, 0], 3,
                                  weights=w, bias=np.array([10, 1000, 7]))
    assert packed[0] == layouts.RQ_FAST
    # channel 1: 1000 * 2^1 * 2^30 / 2^31 = 1000, + 3 -> saturated to 127; channel 2: 0 + 3
    assert packed[4:].tolist() == [0, 2, 4 * 127, 0, 2, 4 * 3]
    assert layouts.pack_requant([1 << 30, 1 << 30], [-5, 1], 3)[0] == 0


_BLOCK_CACHE: dict = {}


def _block_quantized(name: str, sparsity: float, tmp_path):
    """A test model with ``sparsity`` of its 1x4 blocks (along the input channels) zeroed."""
    from microfit.prune.unstructured import block_masks

    key = (name, sparsity)
    if key not in _BLOCK_CACHE:
        torch.manual_seed(1)
        model = SPARSE_MODELS[name]()
        model(torch.zeros(1, 1, 8, 8))
        randomize_bn(model)
        apply_masks(model, block_masks(model, sparsity, (1, 4), scope="layer"))
        graph = import_onnx(export_torch(model, (1, 1, 8, 8), tmp_path / f"{name}_blk.onnx"))
        x = nchw_to_ir(np.random.default_rng(1).random((110, 1, 8, 8), dtype=np.float32))
        q = quantize(graph, x[:100], QuantizeConfig())
        _BLOCK_CACHE[key] = q, quantize_input(x[100:], q.tensors[q.inputs[0]].quant)
    return _BLOCK_CACHE[key]


BLOCK_KERNELS = {"mf_block_fully_connected_s8", "mf_block_conv2d_s8", "mf_block_conv2d_s8_fast"}


@pytest.mark.parametrize("name", ["odd_convs", "ds_cnn", "residual", "mlp"])
def test_block_sparse_generation_equals_reference_on_host(name, tmp_path):
    """1x4-block-pruned models stored as blocks (sparse="blocks" and "auto"): every kernel
    set, ASan+UBSan, the reference's bytes, fewer weight bytes than dense."""
    q, xq = _block_quantized(name, 0.8, tmp_path)
    ref = run_int8(q, xq).reshape(len(xq), -1)
    assert len(np.unique(ref)) > 2, "degenerate test: reference output nearly constant"
    for kernels in ("portable", "fast", "avr"):
        dense = generate(q, tmp_path / f"dense_{kernels}", kernels=kernels, sparse="off")
        for mode in ("blocks", "auto"):
            gen = generate(q, tmp_path / f"{mode}_{kernels}", kernels=kernels, sparse=mode)
            used = {r["kernel"] for r in gen.sparse_layers if r["format"] == "blocks"}
            if mode == "blocks":
                assert used and used <= BLOCK_KERNELS
                assert all(r["format"] in ("blocks", "dense") for r in gen.sparse_layers)
                assert ("mf_block_conv2d_s8_fast" in used) == (kernels == "fast"
                                                               and name != "mlp")
            assert gen.weight_bytes < dense.weight_bytes
            defines = {"MF_SIMD_EMULATE": "1"} if kernels == "fast" else None
            exe = build_host_model(gen.out_dir, tmp_path / f"exe_{mode}_{kernels}",
                                   sanitize=True, defines=defines)
            np.testing.assert_array_equal(
                run_host_model(exe, xq.reshape(len(xq), -1), ref.shape[1]), ref,
                err_msg=f"{kernels} kernels, sparse={mode}")


def test_blocks_mode_keeps_layers_without_channel_fours_dense(tmp_path):
    """sparse="blocks": the first convolution (1 input channel) stays dense, and says why."""
    q, _ = _block_quantized("odd_convs", 0.8, tmp_path)
    recs = generate(q, tmp_path / "g", sparse="blocks").sparse_layers
    first = q.nodes[0].name
    assert first not in {r["layer"] for r in recs}
    assert {r["format"] for r in recs} == {"blocks"}


@requires_qemu
def test_block_sparse_model_on_emulated_cortex_m4_is_exact_and_faster(tmp_path):
    """Fast kernel set on the M4: the SMLAD block kernels give the reference's bytes, and at
    80% block sparsity the model runs fewer instructions than the DSP dense path."""
    from microfit.icount import measure_model

    q, xq = _block_quantized("odd_convs", 0.8, tmp_path)
    ref = run_int8(q, xq[:4]).reshape(4, -1)
    counts = {}
    for mode in ("off", "blocks"):
        gen = generate(q, tmp_path / mode, board_name="qemu-mps2-an386", sparse=mode)
        count = measure_model(gen.out_dir, xq[:4], "qemu-mps2-an386", per_layer=False,
                              work_dir=tmp_path / f"w_{mode}")
        np.testing.assert_array_equal(count.outputs, ref, err_msg=mode)
        counts[mode] = int(np.median(count.per_inference))
    assert counts["blocks"] < counts["off"], counts


def test_block_sparse_model_on_simulated_avr_equals_reference(tmp_path):
    """"avr" kernel set: block streams, folded bias and requantization read from PROGMEM."""
    import shutil
    import sys
    from pathlib import Path

    for tool in ("avr-gcc", "simavr"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} missing: apt-get install gcc-avr avr-libc simavr")
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench.bench_sparse import avr_cycles

    for name in ("odd_convs", "mlp"):
        q, xq = _block_quantized(name, 0.8, tmp_path)
        ref = run_int8(q, xq[:3]).reshape(3, -1)
        gen = generate(q, tmp_path / name, kernels="avr", sparse="blocks")
        assert {r["kernel"] for r in gen.sparse_layers} & BLOCK_KERNELS
        _, outs = avr_cycles(gen.out_dir, xq[:3], tmp_path / f"avr_{name}")
        np.testing.assert_array_equal(outs, ref, err_msg=name)
