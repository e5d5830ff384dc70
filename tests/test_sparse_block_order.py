"""Block and N:M masks of a Linear after a Flatten follow the generated code's NHWC
column order (issue 8), so the FC's 1x4 blocks are whole blocks of its stored rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import export_torch
from torch import nn

from microfit.codegen.generate import generate
from microfit.ir.onnx_import import import_onnx, nchw_to_ir
from microfit.prune.unstructured import (
    apply_masks,
    block_masks,
    flattened_layouts,
    make_masks,
    nm_masks,
)
from microfit.quantize.quantize import QuantizeConfig, quantize
from microfit.train.models import make_default_model

SHAPE = (1, 1, 8, 8)


def _nhwc_rows(mask: torch.Tensor, c: int, hw: int) -> np.ndarray:
    """A flattened Linear's mask [O, C*HW] with its columns in NHWC order [O, HW*C]."""
    return mask.reshape(len(mask), c, hw).transpose(1, 2).reshape(len(mask), -1).numpy()


def test_default_fc_stores_only_the_kept_blocks(tmp_path):
    """At 80% 1x4-block sparsity the FC's stored blocks are ~20% of its blocks: the
    old torch-order masks kept 56% of the generated rows' blocks (3,615 B)."""
    model = make_default_model(seed=0)
    apply_masks(model, make_masks(model, 0.8, "block", scope="layer", input_shape=SHAPE))
    graph = import_onnx(export_torch(model, SHAPE, tmp_path / "m.onnx"))
    x = nchw_to_ir(np.random.default_rng(0).random((50, 1, 8, 8), dtype=np.float32))
    q = quantize(graph, x, QuantizeConfig())
    fc = next(n for n in q.nodes if n.op == "FULLY_CONNECTED")
    w8 = q.tensors[fc.inputs[1]].data
    cout, cin = w8.shape
    stored = w8.reshape(cout, cin // 4, 4).any(axis=2)
    assert stored.mean() <= 0.2 + 1e-9
    out = generate(q, tmp_path / "c", board_name="host", sparse="blocks")
    rec = next(r for r in out.sparse_layers if r["op"] == "FULLY_CONNECTED")
    assert rec["format"] == "blocks"
    # 2 bytes of count per row, 5 per stored block; rows of 128 blocks need no escapes.
    assert rec["bytes_chosen"] <= 2 * cout + 5 * int(0.2 * cout * cin // 4)


def test_flattened_linear_masks_are_whole_blocks_in_nhwc_order():
    model = make_default_model(seed=0)
    assert flattened_layouts(model, SHAPE) == {"classifier": (32, 16)}
    m = block_masks(model, 0.6, (1, 4), scope="layer", input_shape=SHAPE)["classifier"]
    sums = _nhwc_rows(m, 32, 16).reshape(10, -1, 4).sum(axis=2)
    assert ((sums == 0) | (sums == 4)).all()
    assert int((sums == 0).sum()) == int(0.6 * sums.size)
    m = nm_masks(model, 2, 4, input_shape=SHAPE)["classifier"]
    assert (_nhwc_rows(m, 32, 16).reshape(10, -1, 4).sum(axis=2) == 2).all()
    # Without the input shape the columns stay in torch's order (the old behaviour).
    m = block_masks(model, 0.6, (1, 4), scope="layer")["classifier"]
    sums = m.numpy().reshape(10, -1, 4).sum(axis=2)
    assert ((sums == 0) | (sums == 4)).all()


class _FunctionalFlatten(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.drop = nn.Dropout(0.1)
        self.fc = nn.Linear(8 * 8 * 8, 16)
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(torch.relu(self.conv(x)), 1)
        return self.head(torch.relu(self.fc(self.drop(x))))


def test_layouts_follow_functional_flatten_and_elementwise_ops():
    """torch.flatten, then Dropout: still the flattened map; a Linear after a Linear is not."""
    assert flattened_layouts(_FunctionalFlatten(), SHAPE) == {"fc": (8, 64)}


class _Untraceable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        return self.fc(x) if x.sum() > 0 else self.fc(-x)  # data-dependent: torch.fx fails


def test_untraceable_model_warns_and_keeps_torch_order():
    with pytest.warns(UserWarning, match="torch's NCHW order"):
        m = block_masks(_Untraceable(), 0.5, (1, 4), scope="layer", input_shape=SHAPE)["fc"]
    sums = m.numpy().reshape(4, -1, 4).sum(axis=2)
    assert ((sums == 0) | (sums == 4)).all()
