"""MAC and parameter counts: the numbers a pruning target and a report are about.

Counted by running the model once on a zero input with forward hooks, so the
spatial sizes are the real ones (padding, stride, pooling) without
re-deriving them. Only convolutions and fully connected layers count:
activations, pooling and BatchNorm cost little next to them and fold away on
the device.

``CostModel`` predicts the MACs and parameters of any plan from one count of
the unpruned model and the dependency graph, exactly (a layer's MACs are its
output channels times its input channels per group times a constant), so a
search can try thousands of plans without rebuilding the model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from .graph import DependencyGraph


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


class CostModel:
    """Exact MACs and parameters of ``model`` pruned by any keep vector of ``graph``."""

    def __init__(self, model: nn.Module, graph: DependencyGraph,
                 input_shape: Sequence[int] | None = None) -> None:
        shape = tuple(input_shape) if input_shape is not None else (1, *graph.input_shape[1:])
        self.graph = graph
        self.base_macs = layer_macs(model, shape)
        self.macs_before = sum(self.base_macs.values())
        self.params_before = count_params(model)
        # (base count, [flat index arrays of the axes that scale it]) per cost term.
        self._mac_terms: list[tuple[int, list[np.ndarray]]] = []
        self._param_terms: list[tuple[int, list[np.ndarray]]] = []
        fixed_macs = dict(self.base_macs)
        fixed_params = self.params_before
        for name, entry in graph.layers.items():
            module = model.get_submodule(name)
            if entry.rule.cost_axes is not None and name in self.base_macs:
                axes = [entry.axes[a] for a in entry.rule.cost_axes(module) if a in entry.axes]
                self._mac_terms.append((fixed_macs.pop(name), axes))
            if entry.rule.param_axes is not None:
                for pname, paxes in entry.rule.param_axes(module).items():
                    p = getattr(module, pname, None)
                    if isinstance(p, nn.Parameter):
                        axes = [entry.axes[a] for a in paxes if a in entry.axes]
                        self._param_terms.append((p.numel(), axes))
                        fixed_params -= p.numel()
        self._fixed_macs = sum(fixed_macs.values())
        self._fixed_params = fixed_params

    @staticmethod
    def _sum(terms: list[tuple[int, list[np.ndarray]]], vec: np.ndarray) -> int:
        total = 0
        for base, axes in terms:
            num, den = base, 1
            for idx in axes:
                num *= int(vec[idx].sum())
                den *= len(idx)
            total += num // den
        return total

    def macs(self, vec: np.ndarray) -> int:
        """MACs per sample after keeping the classes where ``vec`` is True."""
        return self._fixed_macs + self._sum(self._mac_terms, vec)

    def params(self, vec: np.ndarray) -> int:
        return self._fixed_params + self._sum(self._param_terms, vec)
