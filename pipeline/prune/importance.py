"""Importance criteria: a score per output channel of a producer layer.

Policy, not mechanism: a criterion only ranks channels; plan.py decides how
many to keep and apply.py removes them. New criteria register by name.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

Criterion = Callable[[nn.Module], torch.Tensor]

_CRITERIA: dict[str, Criterion] = {}


def register_criterion(name: str, fn: Criterion) -> None:
    """Make ``fn(producer) -> scores[out_channels]`` available as ``criterion=name``."""
    _CRITERIA[name] = fn


def get_criterion(name: str) -> Criterion:
    try:
        return _CRITERIA[name]
    except KeyError:
        raise ValueError(
            f"unknown pruning criterion {name!r}; available: {', '.join(sorted(_CRITERIA))}"
        ) from None


def _filter_weights(module: nn.Module) -> torch.Tensor:
    # Conv2d [c_out, c_in, k_h, k_w] and Linear [out, in] both keep one filter per row.
    return module.weight.detach().float().flatten(1)


# L1 magnitude (Li et al., "Pruning Filters for Efficient ConvNets"): filters
# with small absolute weight sums contribute least to the next layer.
register_criterion("l1", lambda m: _filter_weights(m).abs().sum(dim=1))
register_criterion("l2", lambda m: _filter_weights(m).pow(2).sum(dim=1).sqrt())
