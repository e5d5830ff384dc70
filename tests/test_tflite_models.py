"""Whole models, quantized by microfit, against TFLite Micro and LiteRT, every layer.

The models are those of tests/models.py (the importer's coverage models), the
MLP (ending in SOFTMAX) and the default digits CNN. Each is quantized in the oracle's rounding
mode and compared on 1,000 random int8 inputs, on every activation tensor.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import export_torch, randomize_bn
from models import MODELS, mlp

from microfit.ir.onnx_import import import_onnx
from microfit.ir.tflite_oracle import ORACLE_MODES, ORACLES, compare_with_oracle
from microfit.quantize.quantize import QuantizeConfig, quantize

pytest.importorskip("ai_edge_litert")
pytest.importorskip("tflite_micro")

N_INPUTS = 1000


def _torch_model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if name == "mlp":
        return mlp()
    if name == "digits_cnn":
        from microfit.train.models import make_default_model

        return make_default_model(seed=0)
    model = MODELS[name]()
    randomize_bn(model)
    return model


@pytest.mark.parametrize("name", sorted(MODELS) + ["mlp", "digits_cnn"])
def test_model_equals_both_oracles_at_every_layer(name, tmp_path):
    # One test per model (both oracles inside) so the ONNX export, the slow
    # part, happens once per model even when xdist spreads the tests.
    fgraph = import_onnx(export_torch(_torch_model(name), (1, 1, 8, 8), tmp_path / "m.onnx"))
    rng = np.random.default_rng(len(name))
    shape = fgraph.tensors[fgraph.inputs[0]].shape
    calib = rng.random((200,) + tuple(shape[1:])).astype(np.float32)
    # "litert" is a reference-only mode: quantize as for devices, compare in it.
    qgraph = quantize(fgraph, calib, QuantizeConfig(rounding="double"))
    x = rng.integers(-128, 128, size=(N_INPUTS,) + tuple(shape[1:]), dtype=np.int8)
    for oracle in ORACLES:
        res = compare_with_oracle(qgraph, x, oracle)
        print(f"[{name}] {res.summary()}")
        assert res.mode == ORACLE_MODES[oracle]
        assert len(res.layers) == len(qgraph.nodes)
        assert res.equal, res.summary()
