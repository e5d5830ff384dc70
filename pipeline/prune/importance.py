"""Importance criteria: a score per channel of every group.

Policy, not mechanism: a criterion only ranks channels; plan.py decides how
many to keep and apply.py removes them. A criterion is a function
``(model, graph, data) -> {group: scores}`` registered by name; ``data`` is
an ``(x, y)`` pair of calibration arrays for the criteria that need it.

A group's channel is made by several layers when channels are coupled (a
residual stream is made by the stem and by the last conv of every block).
Each layer's per-channel scores are divided by their mean before they are
summed, so a wide 3x3 conv does not drown a 1x1 projection just by having
more weights per filter.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .graph import DependencyGraph

Scores = dict[str, np.ndarray]
CriterionFn = Callable[[nn.Module, DependencyGraph, "tuple[np.ndarray, np.ndarray] | None", int],
                       Scores]


@dataclass(frozen=True)
class Criterion:
    name: str
    fn: CriterionFn
    needs_data: bool = False


_CRITERIA: dict[str, Criterion] = {}


def register_criterion(name: str, fn: CriterionFn, needs_data: bool = False) -> None:
    """Make ``fn(model, graph, data, seed) -> {group: scores}`` available as ``criterion=name``."""
    _CRITERIA[name] = Criterion(name, fn, needs_data)


def get_criterion(name: str) -> Criterion:
    try:
        return _CRITERIA[name]
    except KeyError:
        raise ValueError(
            f"unknown pruning criterion {name!r}; available: {', '.join(sorted(_CRITERIA))}"
        ) from None


def criteria() -> list[str]:
    return sorted(_CRITERIA)


def _accumulate(graph: DependencyGraph, per_layer: dict[str, np.ndarray], axis: str = "out"
                ) -> Scores:
    """Sum per-element layer scores into group scores (each layer normalised by its mean)."""
    total = graph.total_classes
    acc = np.zeros(total + 1, dtype=np.float64)
    for name, values in per_layer.items():
        idx = graph.layers[name].axes[axis]
        v = np.asarray(values, dtype=np.float64)
        mean = float(v.mean()) if len(v) else 0.0
        np.add.at(acc, idx, v / mean if mean > 0 else v)
    return {name: acc[off:off + graph.groups[name].channels].copy()
            for name, off in graph.offsets.items()}


def _weighted_layers(model: nn.Module, graph: DependencyGraph) -> dict[str, torch.Tensor]:
    """Filter weights ``[out, ...]`` of every layer whose output rows belong to a group."""
    out = {}
    for name, entry in graph.layers.items():
        module = model.get_submodule(name)
        w = getattr(module, "weight", None)
        if entry.rule.kind == "producer" and "out" in entry.axes and isinstance(w, torch.Tensor):
            out[name] = w.detach().float().flatten(1)
    return out


def _input_columns(module: nn.Module) -> torch.Tensor | None:
    """``[in_channels, ...]``: the weights that read each input channel (None: not a reader)."""
    w = getattr(module, "weight", None)
    if isinstance(module, nn.Linear):
        return w.detach().float().t()
    if not isinstance(module, nn.modules.conv._ConvNd) or module.groups == module.in_channels:
        return None  # a depthwise conv's input weights are its filters, already counted
    w = w.detach().float()
    g = module.groups
    og, ig = w.shape[0] // g, w.shape[1]
    # Input channel j*ig + l is read by column l of group j's filters.
    per_group = w.reshape(g, og, ig, -1).permute(0, 2, 1, 3)  # [g, ig, og, k]
    return per_group.reshape(g * ig, -1)


def _group_magnitude(model: nn.Module, graph: DependencyGraph, norm) -> Scores:
    """Magnitude of every weight tied to a channel: its filters, its BatchNorm gamma,
    and the next layers' input columns that read it.

    After a BatchNorm a filter's own size says little (BN rescales it); how
    strongly the next layer reads the channel, and gamma, do. Each
    (layer, side) is normalised by its mean before summing.
    """
    total = graph.total_classes
    acc = np.zeros(total + 1, dtype=np.float64)

    def add(idx: np.ndarray, v: np.ndarray) -> None:
        mean = float(v.mean()) if len(v) else 0.0
        np.add.at(acc, idx, v / mean if mean > 0 else v)

    for name, entry in graph.layers.items():
        module = model.get_submodule(name)
        w = getattr(module, "weight", None)
        if not isinstance(w, torch.Tensor):
            continue
        if "out" in entry.axes:
            rows = w.detach().float().reshape(w.shape[0], -1)
            add(entry.axes["out"], norm(rows).numpy())
        if "in" in entry.axes and entry.producer:
            cols = _input_columns(module)
            if cols is not None and cols.shape[0] == len(entry.axes["in"]):
                add(entry.axes["in"], norm(cols).numpy())
    return {name: acc[off:off + graph.groups[name].channels].copy()
            for name, off in graph.offsets.items()}


def _l1(model: nn.Module, graph: DependencyGraph, data: object, seed: int) -> Scores:
    return _group_magnitude(model, graph, lambda t: t.abs().sum(1))


def _l2(model: nn.Module, graph: DependencyGraph, data: object, seed: int) -> Scores:
    return _group_magnitude(model, graph, lambda t: t.pow(2).sum(1).sqrt())


def _l1_filter(model: nn.Module, graph: DependencyGraph, data: object, seed: int) -> Scores:
    # Li et al., "Pruning Filters for Efficient ConvNets": filters with small
    # absolute weight sums contribute least to the next layer.
    return _accumulate(graph, {n: w.abs().sum(1).numpy()
                               for n, w in _weighted_layers(model, graph).items()})


def _bn_scale(model: nn.Module, graph: DependencyGraph, data: object, seed: int) -> Scores:
    """|gamma| of the BatchNorms on each group (network slimming, Liu et al. 2017).

    A group without a BatchNorm falls back to L1 of its filters, so a global
    ranking still sees every group; train with ``bn_sparsity`` > 0 to push
    the gammas of unneeded channels towards zero first.
    """
    per_layer = {}
    for name in graph.layers:
        module = model.get_submodule(name)
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine:
            per_layer[name] = module.weight.detach().abs().numpy()
    bn = _accumulate(graph, per_layer)
    l1 = _l1_filter(model, graph, data, seed)
    has_bn = {g for g, grp in graph.groups.items()
              if any(m in per_layer for m in grp.channelwise)}
    return {g: (bn[g] if g in has_bn else l1[g]) for g in graph.groups}


def _random(model: nn.Module, graph: DependencyGraph, data: object, seed: int) -> Scores:
    rng = np.random.default_rng(seed)
    return {name: rng.random(g.channels) for name, g in graph.groups.items()}


TAYLOR_SAMPLES = 256
TAYLOR_BATCH = 64


def _taylor(model: nn.Module, graph: DependencyGraph,
            data: tuple[np.ndarray, np.ndarray] | None, seed: int) -> Scores:
    """First-order Taylor: (sum over a filter of gradient x weight)^2, over calibration batches.

    Molchanov et al. 2019 estimate the loss change from removing a filter by
    this product; it is summed over batches so one batch's noise matters less.
    Runs on a copy in eval mode (BatchNorm statistics stay as trained).
    """
    if data is None:
        raise ValueError("criterion 'taylor' needs calibration data (x, y)")
    import copy

    net = copy.deepcopy(model).float().eval()
    x = torch.from_numpy(np.ascontiguousarray(data[0][:TAYLOR_SAMPLES], dtype=np.float32))
    y = torch.from_numpy(np.asarray(data[1][:TAYLOR_SAMPLES], dtype=np.int64))
    names = list(_weighted_layers(net, graph))
    acc = {n: torch.zeros(net.get_submodule(n).weight.shape[0], dtype=torch.float64)
           for n in names}
    for start in range(0, len(x), TAYLOR_BATCH):
        net.zero_grad(set_to_none=True)
        loss = F.cross_entropy(net(x[start:start + TAYLOR_BATCH]), y[start:start + TAYLOR_BATCH])
        loss.backward()
        for n in names:
            w = net.get_submodule(n).weight
            if w.grad is not None:
                acc[n] += (w.grad * w).detach().flatten(1).sum(1).double().pow(2)
    return _accumulate(graph, {n: v.numpy() for n, v in acc.items()})


register_criterion("l1", _l1)
register_criterion("l2", _l2)
register_criterion("l1_filter", _l1_filter)
register_criterion("bn_scale", _bn_scale)
register_criterion("random", _random)
register_criterion("taylor", _taylor, needs_data=True)


def score_groups(model: nn.Module, graph: DependencyGraph, criterion: str = "l1",
                 data: tuple[np.ndarray, np.ndarray] | None = None, seed: int = 0) -> Scores:
    """Scores per channel of every group of ``graph`` under ``criterion``."""
    crit = get_criterion(criterion)
    if crit.needs_data and data is None:
        raise ValueError(f"criterion {criterion!r} needs calibration data: pass data=(x, y)")
    return crit.fn(model, graph, data, seed)
