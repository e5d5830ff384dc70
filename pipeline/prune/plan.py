"""Which channels to keep: the pruning plan and the search that makes it.

A plan is a JSON-able ``dict`` mapping each prunable group (named by its
producer layer, e.g. ``"features.0"``) to the sorted indices of the output
channels it keeps. It says nothing about how to cut; apply.py does that, so
a plan made here, edited by hand, or made by another tool all apply the same
way, and a plan saved in a run folder rebuilds the pruned architecture from a
fresh model.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from ..errors import ModelLoadError, RunFolderError
from .graph import DependencyGraph, analyze
from .importance import get_criterion
from .macs import layer_macs

Plan = dict[str, list[int]]

DEFAULT_TARGET_MAC_RATIO = 0.5
_SEARCH_STEPS = 1000


def keep_count(channels: int, prune_ratio: float, round_to: int = 1) -> int:
    """Channels left after removing ``prune_ratio`` of ``channels``.

    Rounds the kept count up (to a multiple of ``round_to`` when asked, which
    SIMD kernels like) and never goes below one channel or above all of them.
    """
    keep = max(1, math.ceil(channels * (1.0 - prune_ratio) - 1e-9))
    if round_to > 1:
        keep = math.ceil(keep / round_to) * round_to
    return min(channels, keep)


def estimate_macs(graph: DependencyGraph, base: Mapping[str, int],
                  keep: Mapping[str, int]) -> int:
    """MACs after keeping ``keep[group]`` channels per group, from unpruned per-layer MACs.

    A dense conv or linear layer costs in proportion to its input channels
    times its output channels, so scaling each by the kept fractions is exact
    (and lets the search try thousands of candidates without rebuilding).
    """
    total = 0
    for layer, macs in base.items():
        num, den = 1, 1
        own = graph.groups.get(layer)
        if own is not None and layer in keep:
            num, den = num * keep[layer], den * own.channels
        src = graph.input_group(layer)
        if src is not None and src.name in keep:
            num, den = num * keep[src.name], den * src.channels
        total += macs * num // den
    return total


def _input_shape(example_input: torch.Tensor | Sequence[int]) -> tuple[int, ...]:
    if isinstance(example_input, torch.Tensor):
        return tuple(example_input.shape)
    return tuple(int(d) for d in example_input)


def make_plan(
    model: nn.Module,
    example_input: torch.Tensor | Sequence[int],
    target_mac_ratio: float | None = None,
    *,
    ratios: Mapping[str, float] | None = None,
    criterion: str = "l1",
    protect: Iterable[str] = (),
    round_to: int = 1,
) -> Plan:
    """Choose the channels to keep in every prunable group of ``model``.

    ``example_input`` is an input batch (e.g. a ``[1, C, H, W]`` tensor) or
    its shape; it sets the spatial sizes the MAC count depends on.

    Either ``target_mac_ratio`` (MACs after / MACs before; default 0.5) or
    ``ratios`` ({group: fraction of its channels to remove}) decides how many
    channels go. With a target, one removal fraction is searched for all
    unprotected groups: the smallest that reaches the target. ``protect``
    names groups to leave whole; the classifier's outputs are never pruned.
    Within each group the channels with the highest ``criterion`` scores stay
    (ties keep the lower index, so plans are deterministic).
    """
    if round_to < 1:
        raise ValueError(f"round_to must be >= 1, got {round_to}")
    if ratios is not None and target_mac_ratio is not None:
        raise ValueError("give either target_mac_ratio or ratios, not both")
    graph = analyze(model)
    protected = set(protect)
    unknown = sorted(protected - set(graph.groups))
    if unknown:
        raise ValueError(
            f"protect names {', '.join(map(repr, unknown))}, which are not producer layers of "
            f"{graph.model_name}; layers: {', '.join(graph.groups)}"
        )
    candidates = [g for g in graph.prunable() if g.name not in protected]
    score = get_criterion(criterion)

    if ratios is not None:
        keep: dict[str, int] = {}
        for name, ratio in ratios.items():
            group = graph.groups.get(name)
            if group is None or not group.prunable or name in protected:
                why = "is protected" if name in protected else (
                    group.reason if group is not None else "is not a producer layer")
                raise ValueError(
                    f"ratios names {name!r}, which cannot be pruned: {why}; prunable: "
                    f"{', '.join(g.name for g in candidates) or 'none'}"
                )
            if not 0.0 <= ratio < 1.0:
                raise ValueError(f"ratio for {name!r} must be in [0, 1), got {ratio}")
            keep[name] = keep_count(group.channels, ratio, round_to)
    else:
        target = DEFAULT_TARGET_MAC_RATIO if target_mac_ratio is None else float(target_mac_ratio)
        if not 0.0 < target <= 1.0:
            raise ValueError(f"target_mac_ratio must be in (0, 1], got {target}")
        keep = _search_uniform(graph, layer_macs(model, _input_shape(example_input)),
                               candidates, target, round_to)

    plan: Plan = {}
    for group in graph.groups.values():
        if group.name not in keep:
            continue
        module = model.get_submodule(group.name)
        scores = score(module)
        order = torch.argsort(scores, descending=True, stable=True)[: keep[group.name]]
        plan[group.name] = sorted(int(i) for i in order)
    return plan


def _search_uniform(graph: DependencyGraph, base: Mapping[str, int], candidates: list,
                    target: float, round_to: int) -> dict[str, int]:
    """Smallest single removal fraction over ``candidates`` with MACs <= target * before."""
    total = sum(base.values())
    if not candidates:
        if target >= 1.0:
            return {}
        raise ValueError(
            f"{graph.model_name} has no prunable layers (all protected or feeding the output); "
            f"cannot reach target_mac_ratio={target}"
        )
    keep: dict[str, int] = {}
    for step in range(_SEARCH_STEPS + 1):
        p = step / _SEARCH_STEPS
        keep = {g.name: keep_count(g.channels, p, round_to) for g in candidates}
        if estimate_macs(graph, base, keep) <= target * total:
            return keep
    best = estimate_macs(graph, base, keep) / total
    raise ValueError(
        f"cannot reach target_mac_ratio={target} for {graph.model_name}: with every prunable "
        f"layer cut to {max(1, round_to)} channel(s) MACs are still {best:.3f} of the original; "
        "raise the target, unprotect layers, or lower round_to"
    )


def validate_plan(plan: Mapping[str, Sequence[int]], graph: DependencyGraph) -> None:
    """Raise ValueError if ``plan`` does not fit ``graph`` (unknown or unprunable
    group, unsorted/duplicate/out-of-range indices, or no channel kept)."""
    for name, kept in plan.items():
        group = graph.groups.get(name)
        if group is None:
            raise ValueError(
                f"plan names {name!r}, which is not a producer layer of {graph.model_name}; "
                f"layers: {', '.join(graph.groups)}"
            )
        if not group.prunable:
            raise ValueError(f"plan prunes {name!r}, which cannot be pruned: {group.reason}")
        kept = list(kept)
        if not kept:
            raise ValueError(f"plan keeps no channel of {name!r}; keep at least one")
        if any(not isinstance(i, int) or isinstance(i, bool) for i in kept):
            raise ValueError(f"plan for {name!r} must list integer channel indices")
        if kept != sorted(set(kept)):
            raise ValueError(f"plan for {name!r} must list sorted, distinct channel indices")
        if kept[0] < 0 or kept[-1] >= group.channels:
            raise ValueError(
                f"plan for {name!r} keeps channel {kept[-1] if kept[0] >= 0 else kept[0]}, "
                f"but the layer has channels 0..{group.channels - 1}"
            )


def save_plan(plan: Mapping[str, Sequence[int]], path: str | Path) -> Path:
    """Write the plan as JSON, one group per line (readable diffs, stable bytes)."""
    path = Path(path)
    lines = [f"  {json.dumps(name)}: {json.dumps([int(i) for i in kept])}"
             for name, kept in plan.items()]
    body = "{\n" + ",\n".join(lines) + "\n}\n" if lines else "{}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body, encoding="utf-8")
    return path


def load_plan(path: str | Path) -> Plan:
    """Read a plan written by save_plan (or by hand); checks its shape, not the model."""
    path = Path(path)
    if not path.is_file():
        raise RunFolderError(f"pruning plan '{path}' does not exist; run the prune stage first")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"pruning plan '{path}' is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, list)
        and all(isinstance(i, int) and not isinstance(i, bool) for i in v)
        for k, v in data.items()
    ):
        raise ModelLoadError(
            f"pruning plan '{path}' must be a JSON object of layer name -> list of channel indices"
        )
    return {k: list(v) for k, v in data.items()}
