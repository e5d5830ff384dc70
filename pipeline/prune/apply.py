"""Carry out a plan: physically remove channels, or zero them for comparison.

``apply_plan`` builds a smaller model (new layers with fewer channels, every
coupled layer cut consistently); ``mask_model`` keeps the original shapes and
zeroes the removed channels. Before fine-tuning the two compute the same
function, which is DESIGN invariant 2 and what the tests hold them to.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from .functions import rule_for
from .graph import analyze
from .plan import validate_plan


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def _rule(module: nn.Module, name: str):
    rule = rule_for(module)
    assert rule is not None, f"analyze() accepted '{name}' without a rule"
    return rule


def _feature_index(kept: torch.Tensor, per_channel: int) -> torch.Tensor:
    """Features a flattened ``[C, H, W]`` keeps: channel c owns c*HW .. c*HW + HW-1."""
    offsets = torch.arange(per_channel, dtype=torch.long)
    return (kept[:, None] * per_channel + offsets[None, :]).reshape(-1)


def apply_plan(model: nn.Module, plan: Mapping[str, Sequence[int]]) -> nn.Module:
    """A copy of ``model`` with only the planned channels (``model`` is untouched).

    Each group's producer loses output channels, its BatchNorms lose the same
    channels, and the next producer loses the matching inputs (``H*W``
    features per channel after a Flatten, channel-major as torch flattens
    NCHW).
    """
    graph = analyze(model)
    validate_plan(plan, graph)
    pruned = copy.deepcopy(model)
    for name, kept_list in plan.items():
        group = graph.groups[name]
        kept = torch.tensor(list(kept_list), dtype=torch.long)
        for layer in (group.name, *group.channelwise):
            module = pruned.get_submodule(layer)
            prune_out = _rule(module, layer).prune_out
            assert prune_out is not None
            _replace(pruned, layer, prune_out(module, kept))
        for layer, per_channel in group.consumers:
            module = pruned.get_submodule(layer)
            prune_in = _rule(module, layer).prune_in
            assert prune_in is not None
            _replace(pruned, layer, prune_in(module, _feature_index(kept, per_channel)))
    return pruned


def mask_model(model: nn.Module, plan: Mapping[str, Sequence[int]]) -> nn.Module:
    """A copy of ``model`` with the channels the plan removes forced to exactly 0.

    The filter weights and bias of each removed channel are zeroed, and so is
    any BatchNorm on it (gamma, beta and running mean), so the channel is 0
    after every layer; the next layer then gets nothing from it, exactly as
    if it were gone.
    """
    graph = analyze(model)
    validate_plan(plan, graph)
    masked = copy.deepcopy(model)
    for name, kept_list in plan.items():
        group = graph.groups[name]
        keep = set(kept_list)
        removed = torch.tensor([c for c in range(group.channels) if c not in keep],
                               dtype=torch.long)
        if len(removed) == 0:
            continue
        for layer in (group.name, *group.channelwise):
            module = masked.get_submodule(layer)
            mask_out = _rule(module, layer).mask_out
            assert mask_out is not None
            mask_out(module, removed)
    return masked
