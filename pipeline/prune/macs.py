"""MAC and parameter counts: the numbers a pruning target and a report are about.

Counted by running the model once on a zero input with forward hooks, so the
spatial sizes are the real ones (padding, stride, pooling) without
re-deriving them. Only convolutions and fully connected layers count:
activations, pooling and BatchNorm cost little next to them and fold away on
the device.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def _example(input_shape: Sequence[int]) -> torch.Tensor:
    return torch.zeros(tuple(int(d) for d in input_shape), dtype=torch.float32)


def layer_macs(model: nn.Module, input_shape: Sequence[int]) -> dict[str, int]:
    """MACs per Conv / Linear layer (qualified name) for one input of ``input_shape``.

    ``input_shape`` is the model input's full shape including the batch
    dimension, e.g. ``(1, *splits.input_shape)``; with batch 1 the counts are
    per sample. A conv costs ``out_h * out_w * c_out * k_h * k_w * c_in /
    groups``; a linear layer ``in * out`` per output row.
    """
    macs: dict[str, int] = {}
    names = {id(m): n for n, m in model.named_modules()}

    def hook(module: nn.Module, _inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        name = names[id(module)]
        if isinstance(module, nn.modules.conv._ConvNd):
            # Weight is [c_out, c_in / groups, *kernel]: each output element costs one row.
            per_output = module.weight[0].numel()
        else:
            per_output = module.in_features
        macs[name] = macs.get(name, 0) + output.numel() * per_output

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))
    ]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(_example(input_shape))
    except Exception as exc:
        raise ValueError(
            f"running {type(model).__name__} on a zero input of shape "
            f"{tuple(int(d) for d in input_shape)} failed ({type(exc).__name__}: {exc}); "
            "input_shape is the full input shape including the batch dimension, "
            "e.g. (1, *splits.input_shape)"
        ) from exc
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return macs


def count_params(model: nn.Module) -> int:
    """Trainable and frozen parameters (buffers such as BN running stats excluded)."""
    return sum(p.numel() for p in model.parameters())


def count_macs_params(model: nn.Module, input_shape: Sequence[int]) -> tuple[int, int]:
    """``(MACs, parameter count)`` of ``model`` for an input of ``input_shape`` (with batch)."""
    return sum(layer_macs(model, input_shape).values()), count_params(model)
