"""The memory planner: concatenation views (inputs produced straight into their place in the
output buffer, so CONCATENATION costs no copy and no second buffer) and the exact search's
orders (docs/runtime.md, "Memory plan")."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import export_torch
from torch import nn

from microfit.codegen.generate import generate
from microfit.codegen.host import build_host_model, run_host_model
from microfit.codegen.planner import plan_memory
from microfit.ir.onnx_import import import_onnx, nchw_to_ir
from microfit.quantize.quantize import QuantizeConfig, quantize, quantize_input
from microfit.reference.executor import run_int8


class VectorConcat(nn.Module):
    """Vectors joined twice (a concat inside a concat); `a` is read again after the concat."""

    def __init__(self, sizes=(32, 48, 24)) -> None:
        super().__init__()
        self.fa, self.fb = nn.Linear(64, sizes[0]), nn.Linear(64, sizes[1])
        self.fc = nn.Linear(sizes[0], sizes[2])
        self.out, self.side = nn.Linear(sum(sizes), 10), nn.Linear(sizes[0], 10)

    def forward(self, x):
        x = torch.flatten(x, 1)
        a, b = F.relu(self.fa(x)), F.relu(self.fb(x))
        y = torch.cat([torch.cat([a, b], 1), F.relu(self.fc(a))], 1)
        return self.out(y) + self.side(a)


class RowConcat(nn.Module):
    """Two conv branches stacked along the height (torch dim 2, NHWC axis 1: one contiguous
    run each), or along the channels (dim 1, NHWC axis 3: strided)."""

    def __init__(self, dim: int = 2) -> None:
        super().__init__()
        self.dim = dim
        self.c1, self.c2 = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(1, 4, 3, padding=1)
        self.c3 = nn.Conv2d(8 if dim == 1 else 4, 4, 3, stride=2)
        self.fc = nn.Linear(4 * (7 if dim == 2 else 3) * 3, 10)

    def forward(self, x):
        y = torch.cat([F.relu(self.c1(x)), F.relu(self.c2(x))], self.dim)
        return self.fc(torch.flatten(F.relu(self.c3(y)), 1))


def _quantized(model: nn.Module, tmp_path):
    torch.manual_seed(0)
    for p in model.parameters():
        torch.nn.init.uniform_(p, -0.5, 0.5)
    graph = import_onnx(export_torch(model, (1, 1, 8, 8), tmp_path / "m.onnx"))
    x = nchw_to_ir(np.random.default_rng(0).random((120, 1, 8, 8), dtype=np.float32))
    q = quantize(graph, x[:100], QuantizeConfig())
    return q, quantize_input(x[100:], q.tensors[q.inputs[0]].quant)


def _concat_steps(q) -> list[int]:
    return [i for i, n in enumerate(q.nodes) if n.op == "CONCATENATION"]


def _check_bytes(q, xq, tmp_path, kernels: str, sanitize: bool) -> str:
    gen = generate(q, tmp_path / kernels, kernels=kernels)
    ref = run_int8(q, xq).reshape(len(xq), -1)
    exe = build_host_model(gen.out_dir, tmp_path / f"exe_{kernels}", sanitize=sanitize,
                           defines={"MF_SIMD_EMULATE": "1"} if kernels == "fast" else None)
    assert len(np.unique(ref)) > 3, "degenerate test: reference output nearly constant"
    np.testing.assert_array_equal(run_host_model(exe, xq.reshape(len(xq), -1), ref.shape[1]), ref)
    return (gen.out_dir / "model.c").read_text()


@pytest.mark.parametrize("model", [VectorConcat, RowConcat], ids=["vectors", "rows"])
def test_concat_along_the_outer_axis_is_a_view_with_the_same_bytes_and_a_smaller_arena(
        model, tmp_path):
    q, xq = _quantized(model(), tmp_path)
    steps = _concat_steps(q)
    plan = plan_memory(q)
    assert plan.concat_views == steps and steps
    for step in steps:  # each input sits where the output wants it
        node = q.nodes[step]
        base = plan.offsets[node.outputs[0]]
        for t in node.inputs:
            assert plan.offsets[t] == base
            base += q.tensors[t].nbytes
    copied = plan_memory(q, concat_views=False)
    assert copied.concat_views == []
    assert plan.arena_size < copied.arena_size and plan.lower_bound < copied.lower_bound
    assert plan.arena_size == plan.lower_bound
    for kernels, sanitize in (("portable", True), ("fast", False)):
        source = _check_bytes(q, xq, tmp_path, kernels, sanitize)
        assert "mf_concatenation_s8(" not in source
    if model is RowConcat and shutil.which("qemu-system-arm") and shutil.which("arm-none-eabi-gcc"):
        from microfit.icount import measure_model

        count = measure_model(tmp_path / "fast", xq[:4], "qemu-mps2-an386", per_layer=False)
        np.testing.assert_array_equal(count.outputs, run_int8(q, xq[:4]).reshape(4, -1))


@pytest.mark.parametrize("case", ["channels", "unaligned"])
def test_concat_that_cannot_be_a_view_still_copies(case, tmp_path):
    """Along NHWC channels each input is strided through the output; at an offset of 10 bytes
    the second input would break the kernels' word alignment."""
    model = RowConcat(dim=1) if case == "channels" else VectorConcat((10, 6, 24))
    q, xq = _quantized(model, tmp_path)
    plan = plan_memory(q)
    if case == "channels":
        assert plan.concat_views == []
    else:  # the inner concat (10 + 6 bytes) copies; the outer one (16 + 24 bytes) is a view
        inner, outer = _concat_steps(q)
        assert plan.concat_views == [outer]
    source = _check_bytes(q, xq, tmp_path, "portable", True)
    assert "mf_concatenation_s8(" in source


def test_view_that_would_raise_the_peak_is_declined(tmp_path):
    """Placing a concat's inputs reserves the whole output from the first input on. Here the
    outer concat would keep 40 bytes alive beside the 64-byte model input: the planner keeps
    that one a copy and still views the inner one."""
    q, xq = _quantized(VectorConcat((12, 20, 8)), tmp_path)
    inner, outer = _concat_steps(q)
    plan = plan_memory(q)
    assert plan.concat_views == [inner]
    assert plan.lower_bound <= plan_memory(q, concat_views=False).lower_bound
    assert plan.arena_size == plan.lower_bound
    source = _check_bytes(q, xq, tmp_path, "portable", True)
    assert source.count("mf_concatenation_s8(") == 1


# concat_net's buffers with the fast kernels (tests/prune_models.py): (size, first, last); the
# small one-step buffers after the tensors are the kernels' scratch.
CONCAT_NET_FAST = [
    (256, -1, 0), (4096, 0, 1), (1024, 1, 14), (512, 2, 4), (768, 3, 5), (768, 4, 5),
    (1536, 5, 6), (512, 6, 8), (1024, 7, 9), (1024, 8, 9), (2048, 9, 11), (1024, 10, 13),
    (1024, 11, 12), (1024, 12, 13), (2048, 13, 15), (512, 14, 15), (2560, 15, 16), (640, 16, 18),
    (10, 18, 19)] + [(s, t, t) for s, t in ((60, 0), (64, 2), (32, 3), (288, 4), (96, 6), (32, 7),
                                             (288, 8), (576, 12), (64, 14), (1280, 18))]


def test_search_with_scratch_last_reaches_the_lower_bound_largest_first_misses():
    """Largest first, the search exhausts 10,000 nodes (and 2 million) short of the bound;
    scratch placed last finds a plan of exactly the bound at once."""
    from microfit.codegen.planner import _SEARCH_ORDERS, SEARCH_NODES, Buffer, _search

    bufs = [Buffer(f"t{i}" if i < 19 else f"#scratch{i}", s, f, last)
            for i, (s, f, last) in enumerate(CONCAT_NET_FAST)]
    sizes = {b.name: (b.size + 3) // 4 * 4 for b in bufs}
    lower = max(sum(sizes[b.name] for b in bufs if b.first <= t <= b.last) for t in range(-1, 20))
    assert lower == 5120
    assert _search(sorted(bufs, key=lambda b: (-b.size, b.first, b.name)), sizes, lower, 4) is None
    found = _search(sorted(bufs, key=_SEARCH_ORDERS[0]), sizes, lower, 4)
    assert found is not None and max(found[b.name] + sizes[b.name] for b in bufs) == lower
    for i, a in enumerate(bufs):  # no two buffers alive together share a byte
        for b in bufs[i + 1:]:
            if a.overlaps_in_time(b):
                assert (found[a.name] + sizes[a.name] <= found[b.name]
                        or found[b.name] + sizes[b.name] <= found[a.name])
    assert SEARCH_NODES >= 1000
