"""Unstructured magnitude pruning: zero the smallest weights, keep the shapes.

It saves nothing on the device until the runtime stores sparse weights
(issue 8): a zero int8 weight still takes its byte and its multiply. So it
stays a model-level option that reports the sparsity it reached, next to
channel pruning, which is what shrinks flash and MACs today.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

Masks = dict[str, torch.Tensor]
SCOPES = ("global", "layer")


def _weights(model: nn.Module, skip: Iterable[str] = ()) -> dict[str, nn.Parameter]:
    """Conv and Linear weights (biases and BatchNorm stay dense: they are tiny)."""
    skipped = set(skip)
    return {name: m.weight for name, m in model.named_modules()
            if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)) and name not in skipped}


def magnitude_masks(model: nn.Module, sparsity: float, scope: str = "global",
                    skip: Iterable[str] = ()) -> Masks:
    """Masks (1 = keep) that zero ``sparsity`` of the weights by absolute value.

    ``scope`` "global" ranks all layers' weights together (layers with many
    redundant weights lose more); "layer" gives every layer the same
    sparsity. Ties keep the earlier weight, so masks are deterministic.
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    weights = _weights(model, skip)
    masks: Masks = {}
    if scope == "layer":
        for name, w in weights.items():
            masks[name] = _mask_of(w.detach().abs().flatten(), sparsity).view_as(w)
        return masks
    flat = torch.cat([w.detach().abs().flatten() for w in weights.values()])
    keep = _mask_of(flat, sparsity)
    start = 0
    for name, w in weights.items():
        masks[name] = keep[start:start + w.numel()].view_as(w).clone()
        start += w.numel()
    return masks


def _mask_of(values: torch.Tensor, sparsity: float) -> torch.Tensor:
    drop = int(sparsity * values.numel())
    mask = torch.ones_like(values)
    if drop:
        order = torch.argsort(values, stable=True)
        mask[order[:drop]] = 0.0
    return mask


def apply_masks(model: nn.Module, masks: Masks) -> None:
    """Zero the masked weights in place (after every optimiser step when fine-tuning)."""
    with torch.no_grad():
        for name, mask in masks.items():
            model.get_submodule(name).weight.mul_(mask)


def weight_sparsity(model: nn.Module) -> float:
    """Fraction of exactly-zero Conv/Linear weights."""
    weights = list(_weights(model).values())
    total = sum(w.numel() for w in weights)
    zeros = sum(int((w == 0).sum()) for w in weights)
    return zeros / total if total else 0.0
