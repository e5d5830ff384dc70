"""Carry out a plan: physically remove channels, or zero them for comparison.

``apply_plan`` builds a smaller model (new layers with fewer channels, every
coupled layer cut consistently); ``mask_model`` keeps the original shapes and
zeroes every weight that touches a removed channel. Before fine-tuning the
two compute the same function, which is DESIGN invariant 2 and what the
tests hold them to.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .graph import DependencyGraph, analyze, rewrite_graph
from .plan import plan_input_shape, validate_plan


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def graph_for(model: nn.Module, plan: Mapping[str, Sequence[int]],
              input_shape: Sequence[int] | None = None,
              graph: DependencyGraph | None = None) -> DependencyGraph:
    """The dependency graph to apply ``plan`` with (analysed unless given)."""
    if graph is not None:
        return graph
    return analyze(model, plan_input_shape(plan, input_shape))


def apply_plan(model: nn.Module, plan: Mapping[str, Sequence[int]],
               input_shape: Sequence[int] | None = None, *,
               graph: DependencyGraph | None = None) -> nn.Module:
    """A copy of ``model`` with only the planned channels (``model`` is untouched).

    Every layer of a group loses the same channels: producers their output
    filters, BatchNorm and depthwise convs the matching channels, consumers
    the matching input columns (``H*W`` per channel after a flatten, at the
    right offset after a concat). ``input_shape`` defaults to the one the
    plan was made for. When forward() holds channel counts as constants
    (``torch.split`` sizes, a ``x[:, :8]`` slice, ``x.view(-1, 512)``), the
    result is a torch.fx GraphModule with those constants updated; its
    state_dict keys are the original model's.
    """
    graph = graph_for(model, plan, input_shape, graph)
    validate_plan(plan, graph)
    vec = graph.keep_vector(plan)
    pruned = copy.deepcopy(model)
    for name, entry in graph.layers.items():
        kept = {axis: graph.kept_elements(name, axis, vec) for axis in entry.axes}
        if all(len(k) == len(entry.axes[a]) for a, k in kept.items()):
            continue
        assert entry.rule.prune is not None, f"rule for {entry.type_name} cannot prune"
        module = pruned.get_submodule(name)
        _replace(pruned, name, entry.rule.prune(
            module, {a: torch.from_numpy(k) for a, k in kept.items()}))
    new_graph = rewrite_graph(graph, vec)
    if new_graph is not None:
        pruned = torch.fx.GraphModule(pruned, new_graph, graph.model_name)
    return pruned


def mask_model(model: nn.Module, plan: Mapping[str, Sequence[int]],
               input_shape: Sequence[int] | None = None, *,
               graph: DependencyGraph | None = None) -> nn.Module:
    """A copy of ``model`` where every weight touching a removed channel is 0.

    Producers lose their filters and bias, BatchNorms their gamma, beta and
    mean (so the channel is exactly 0), and consumers the input columns that
    read it. The pruned model must compute exactly this function.
    """
    graph = graph_for(model, plan, input_shape, graph)
    validate_plan(plan, graph)
    vec = graph.keep_vector(plan)
    masked = copy.deepcopy(model)
    for name, entry in graph.layers.items():
        removed = {a: torch.from_numpy(np.nonzero(~vec[ids])[0]) for a, ids in entry.axes.items()}
        if not any(len(r) for r in removed.values()):
            continue
        if entry.rule.mask is not None:
            entry.rule.mask(masked.get_submodule(name), removed)
    return masked
