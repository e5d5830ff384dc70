"""The pruning side of sparse weights (issue 8): block and N:M masks, the schedules,
masks held through fine-tuning, and float zeros staying exact int8 zeros."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import export_torch, randomize_bn
from torch import nn

from microfit.ir.onnx_import import import_onnx, nchw_to_ir
from microfit.prune.unstructured import (
    apply_masks,
    block_masks,
    make_masks,
    nm_masks,
    sparsify,
    sparsity_steps,
    weight_sparsity,
)
from microfit.quantize.quantize import QuantizeConfig, quantize
from microfit.train.data import load_digits_splits
from microfit.train.models import make_default_model


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 12, 1),
                         nn.ReLU(), nn.Flatten(), nn.Linear(12 * 8 * 8, 10))


@pytest.mark.parametrize("pattern", ["unstructured", "block", "n:m"])
def test_float_zeros_stay_exact_int8_zeros(pattern, tmp_path):
    """Per-channel symmetric quantization maps 0.0 to int8 0, with BatchNorm folded in and
    with a whole output channel zero (its scale is degenerate)."""
    model = _net()
    randomize_bn(model)
    masks = make_masks(model, 0.8, pattern, scope="layer")
    masks["3"][5] = 0.0  # an empty output channel
    apply_masks(model, masks)
    graph = import_onnx(export_torch(model, (1, 1, 8, 8), tmp_path / "m.onnx"))
    x = nchw_to_ir(np.random.default_rng(0).random((50, 1, 8, 8), dtype=np.float32))
    q = quantize(graph, x, QuantizeConfig())
    layers = [n for n in q.nodes if n.op in ("CONV_2D", "FULLY_CONNECTED")]
    for node, name in zip(layers, ["0", "3", "5", "8"], strict=True):
        w8 = q.tensors[node.inputs[1]].data
        mask = masks[name].numpy()
        if node.op == "CONV_2D":
            mask = mask.transpose(0, 2, 3, 1)  # OIHW -> OHWI
            np.testing.assert_array_equal(w8[mask == 0], 0, err_msg=name)
        # FC columns are reordered for NHWC; every row keeps at least its float zeros.
        zeros = (mask == 0).reshape(len(mask), -1).sum(1)
        assert ((w8 == 0).reshape(len(w8), -1).sum(1) >= zeros).all(), name
    assert not q.tensors[layers[1].inputs[1]].data[5].any()


def test_block_masks_zero_whole_blocks_along_input_channels():
    model = make_default_model(seed=0)
    for block in ((1, 4), (4, 1)):
        masks = block_masks(model, 0.6, block, scope="layer")
        for name, m in masks.items():
            rows = m.permute(0, 2, 3, 1) if m.dim() == 4 else m  # OHWI rows
            cout, cin = rows.shape[0], rows.shape[-1]
            if cout % block[0] or cin % block[1]:
                continue
            r = rows.reshape(cout // block[0], block[0], -1, cin // block[1], block[1])
            sums = r.sum(dim=(1, 4))
            assert bool(((sums == 0) | (sums == block[0] * block[1])).all()), (name, block)
            nblocks = sums.numel()
            assert int((sums == 0).sum()) == int(0.6 * nblocks), (name, block)


def test_block_masks_keep_the_strongest_block():
    lin = nn.Linear(8, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1., 1, 1, 1, 9, -9, 0, 0], [0.1, 0, 0, 0, -3, 3, 3, 3]]))
    m = block_masks(nn.Sequential(lin), 0.5, (1, 4), scope="layer")["0"]
    np.testing.assert_array_equal(m.numpy(), [[0, 0, 0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 1, 1, 1, 1]])
    m = block_masks(nn.Sequential(lin), 0.5, (2, 1), scope="layer")["0"]
    np.testing.assert_array_equal(m.numpy(), [[0, 0, 0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 1, 1, 1, 1]])


def test_nm_masks_keep_n_of_every_m_input_channels():
    model = make_default_model(seed=0)
    masks = nm_masks(model, 2, 4)
    for name, m in masks.items():
        rows = m.permute(0, 2, 3, 1) if m.dim() == 4 else m
        cin = rows.shape[-1]
        if cin % 4 == 0:
            assert bool((rows.reshape(-1, 4).sum(1) == 2).all()), name
        else:  # Cin = 1: each (row, tap) is one partial group and keeps its one weight
            assert bool((rows == 1).all()), name
    lin = nn.Linear(6, 1, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1., -5, 2, 2, 7, 0.5]]))
    m = nm_masks(nn.Sequential(lin), 2, 4)["0"]  # last group [7, 0.5] is partial
    np.testing.assert_array_equal(m.numpy(), [[0, 1, 1, 0, 1, 1]])


def test_bad_pattern_arguments_are_clear_errors():
    model = make_default_model(seed=0)
    with pytest.raises(ValueError, match="unknown sparsity pattern 'blocks'"):
        make_masks(model, 0.5, "blocks")
    with pytest.raises(ValueError, match="N:M needs 1 <= n <= m, got 5:4"):
        nm_masks(model, 5, 4)
    with pytest.raises(ValueError, match="block must be"):
        block_masks(model, 0.5, (0, 4))
    with pytest.raises(ValueError, match="unknown schedule 'cubic'"):
        sparsity_steps(0.8, 3, "cubic")


def test_sparsity_schedules_end_at_the_target():
    for sched in ("one-shot", "iterative", "gradual", "imp-weight-rewind"):
        steps = sparsity_steps(0.9, 4, sched)
        assert steps[-1] == pytest.approx(0.9)
        assert steps == sorted(steps)
    g = sparsity_steps(0.8, 4, "gradual")
    assert g[0] > 0.8 / 4  # cubic: most of it early
    it = sparsity_steps(0.75, 2, "iterative")
    assert it[0] == pytest.approx(0.5)


@pytest.mark.parametrize("pattern,schedule", [("unstructured", "gradual"), ("block", "iterative"),
                                              ("n:m", "one-shot"),
                                              ("unstructured", "imp-weight-rewind")])
def test_masks_survive_fine_tuning(pattern, schedule):
    """After every schedule step and fine-tuning, exactly the masked weights are zero."""
    splits = load_digits_splits(seed=0)
    model = make_default_model(seed=0)
    masks = sparsify(model, splits, 0.7, pattern=pattern, schedule=schedule, steps=2,
                     epochs_per_step=1, scope="layer")
    for name, m in masks.items():
        w = model.get_submodule(name).weight.detach()
        assert bool((w[m == 0] == 0).all()), name
        assert bool((w[m == 1] != 0).any()), name
    target = 0.5 if pattern == "n:m" else 0.7
    assert weight_sparsity(model) == pytest.approx(target, abs=0.03)
