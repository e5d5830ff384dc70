"""Shared fixtures: small torch models exported to ONNX, and tool availability."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest


def have(tool: str) -> bool:
    return shutil.which(tool) is not None


requires_arm = pytest.mark.skipif(
    not have("arm-none-eabi-gcc"),
    reason="arm-none-eabi-gcc missing: apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi")
requires_qemu = pytest.mark.skipif(
    not (have("qemu-system-arm") and have("arm-none-eabi-gcc")),
    reason="qemu-system-arm or arm-none-eabi-gcc missing: apt-get install qemu-system-arm "
           "gcc-arm-none-eabi libnewlib-arm-none-eabi")


def export_torch(model, input_shape, path: Path) -> Path:
    """Export a torch module to ONNX quietly (the exporter is chatty)."""
    import torch

    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            torch.onnx.export(model, (torch.zeros(input_shape),), str(path), input_names=["input"],
                              output_names=["output"], opset_version=18)
    return path


def randomize_bn(model) -> None:
    """Give BatchNorm layers non-trivial statistics so folding is really tested."""
    import torch

    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 2 - 1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) - 0.5)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
